//! What the end-to-end test files share: the echo mesh, retries, curl checks.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use meshward_integration::{CurlResponse, Mesh, MeshSpec, PodSpec, Process, meshward_binary};

pub const TD: &str = "math.example.com";
const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/examples/policies");

pub fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{POLICIES}/{name}.yaml")).unwrap()
}

/// Retries until `check` passes (policy reloads take a second or two), at most 20 s.
pub fn eventually<T>(mesh: &Mesh, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e}\n{}", mesh.logs()),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

pub fn status(mesh: &Mesh, pod: &str, args: &[&str], want: u16) -> Result<CurlResponse, String> {
    let r = mesh.cluster.curl(pod, args).map_err(|e| e.to_string())?;
    if r.status == Some(want) {
        Ok(r)
    } else {
        Err(format!(
            "want {want}, got {:?} (curl exit {:?}): {}{}",
            r.status, r.exit_code, r.body, r.stderr
        ))
    }
}

/// Two nodes; on node-2 the `echoserver` pod (namespace `echoserver`, label
/// `app: echoserver`, with identity) serving the echoserver on 8080. `configure`
/// adds the callers and settings.
pub fn echo_mesh(configure: impl FnOnce(&mut MeshSpec)) -> (Mesh, Process) {
    let mut spec = MeshSpec::new(TD, &["node-1", "node-2"]);
    spec.pod(
        "node-2",
        PodSpec::new("echoserver")
            .namespace("echoserver")
            .label("app", "echoserver"),
        true,
    );
    configure(&mut spec);
    let mesh = Mesh::start(&meshward_binary().unwrap(), spec).unwrap();
    let echo = mesh
        .cluster
        .spawn_in_pod(
            "echoserver",
            env!("CARGO_BIN_EXE_echoserver"),
            &["--listen", "0.0.0.0:8080"],
        )
        .unwrap();
    (mesh, echo)
}

pub fn curl_spire() -> PodSpec {
    PodSpec::new("curl-spire").service_account("curl-spire")
}
