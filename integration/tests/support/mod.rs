//! What the end-to-end test files share: the echo mesh, retries, curl checks.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use meshward_integration::{
    CurlResponse, LoopbackForward, Mesh, MeshSpec, PodSpec, Process, meshward_binary,
};
use meshward_test_support::control_plane::{self, ControlPlane};

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

/// The node daemons' `kubernetes:` block: the API server as the `meshward-node`
/// ServiceAccount, under the RBAC of the rendered `docker/k8s/base` (applied
/// first), with a token from the TokenRequest API (written in `dir`).
pub fn as_meshward_node(plane: &ControlPlane, dir: &std::path::Path) -> String {
    let token_file = plane.component_token_file("meshward-node", dir).unwrap();
    plane.api_yaml_with_token(&token_file)
}

/// The daemons dial the API server's 127.0.0.1:<port> in their node: forwarded
/// there from each node while the forwards live.
pub fn forward_api(mesh: &Mesh, api_url: &str) -> Vec<LoopbackForward> {
    let api: SocketAddr = api_url.trim_start_matches("https://").parse().unwrap();
    ["node-1", "node-2"]
        .iter()
        .map(|node| {
            let ns = mesh.cluster.node(node).unwrap().netns();
            LoopbackForward::start(ns, api.port(), api).unwrap()
        })
        .collect()
}

/// [`echo_mesh`] whose daemons watch Services and EndpointSlices in the real
/// control plane of this test binary (`control_plane::shared`), as the
/// `meshward-node` ServiceAccount; the echoserver's namespace exists there.
pub struct ApiMesh {
    pub mesh: Mesh,
    pub echo: Process,
    pub plane: &'static ControlPlane,
    _forwards: Vec<LoopbackForward>,
    _dir: tempfile::TempDir,
}

/// `None`: the mesh or the control plane cannot run here, and `test` is skipped.
pub fn echo_mesh_with_api(test: &str, configure: impl FnOnce(&mut MeshSpec)) -> Option<ApiMesh> {
    meshward_integration::available_or_skip(test)?;
    let plane = control_plane::shared(test)?;
    let dir = tempfile::tempdir().unwrap();
    let api_yaml = as_meshward_node(plane, dir.path());
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: echoserver}\n")
        .unwrap();
    let (mesh, echo) = echo_mesh(|spec| {
        configure(spec);
        spec.outbound_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let forwards = forward_api(&mesh, plane.url());
    Some(ApiMesh {
        mesh,
        echo,
        plane,
        _forwards: forwards,
        _dir: dir,
    })
}

/// [`echo_mesh`] with curl-spire on node-1 allowed to call the echoserver, its TCP
/// echo on 9000 too, and `limits.drain_grace_period` set: what the drain and
/// upgrade tests stop daemons in. The processes: HTTP echo, TCP echo.
pub fn draining_echo_mesh(grace: Duration) -> (Mesh, Process, Process) {
    let (mesh, echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true).proxy_yaml(&format!(
            "limits:\n  drain_grace_period: {}s\n",
            grace.as_secs()
        ));
    });
    let tcp = tcp_echo(&mesh);
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    (mesh, echo, tcp)
}

/// The echoserver's TCP echo on 9000, beside its HTTP on 8080.
pub fn tcp_echo(mesh: &Mesh) -> Process {
    mesh.cluster
        .spawn_in_pod(
            "echoserver",
            env!("CARGO_BIN_EXE_echoserver"),
            &["--listen", "0.0.0.0:9000", "--tcp"],
        )
        .unwrap()
}

/// Sends `GET /` from curl-spire to the echoserver with `headers`.
pub fn call(mesh: &Mesh, headers: &[String]) -> CurlResponse {
    let url = format!("http://{}:8080/", mesh.pod_ip("echoserver").unwrap());
    let mut args: Vec<&str> = Vec::new();
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    mesh.cluster.curl("curl-spire", &args).unwrap()
}

pub fn bearer(token: &str) -> Vec<String> {
    vec![format!("authorization: Bearer {token}")]
}

/// A refusal as Envoy's jwt_authn gives it.
pub fn unauthorized(r: &CurlResponse, body: &str) -> Result<(), String> {
    if r.status != Some(401) || r.body != body {
        return Err(format!("{:?} {:?}", r.status, r.body));
    }
    match r.header("www-authenticate") {
        Some(v) if v.starts_with("Bearer realm=\"http://") && v.contains("invalid_token") => Ok(()),
        other => Err(format!("www-authenticate: {other:?}")),
    }
}

pub fn curl_spire() -> PodSpec {
    PodSpec::new("curl-spire").service_account("curl-spire")
}

/// A TCP connection made from inside `pod`'s network namespace, held by the test.
pub fn connect_from(mesh: &Mesh, pod: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let ns = mesh.cluster.pod(pod).unwrap().netns();
    ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap()
}

/// Four bytes that cannot begin an HTTP request, so a daemon takes the stream as
/// TCP at once (undeclared ports are detected).
pub const TCP_PROBE: &[u8; 4] = b"\0tcp";

/// Sends [`TCP_PROBE`] and reads its echo within `within`.
pub fn echoed(stream: &mut TcpStream, within: Duration) -> Result<(), String> {
    stream.set_read_timeout(Some(within)).unwrap();
    stream.write_all(TCP_PROBE).map_err(|e| e.to_string())?;
    read_echo(stream)
}

/// Reads the echo of [`TCP_PROBE`].
pub fn read_echo(stream: &mut TcpStream) -> Result<(), String> {
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).map_err(|e| e.to_string())?;
    (&got == TCP_PROBE)
        .then_some(())
        .ok_or_else(|| format!("echoed {got:?}"))
}

/// From `pod`, a raw TCP exchange with `addr`: each `(pause, bytes)` is sent after
/// sleeping `pause`; then everything that comes back until the peer closes (or 8 s
/// of silence). Empty: refused or closed without a byte.
pub fn raw_exchange(mesh: &Mesh, pod: &str, addr: &str, parts: &[(Duration, &[u8])]) -> Vec<u8> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let (ip, port) = addr.rsplit_once(':').unwrap();
    // the bytes go through a file: an argument holds at most 128 KiB
    let lines: String = parts
        .iter()
        .map(|(pause, bytes)| format!("{} {}\n", pause.as_secs_f64(), hex(bytes)))
        .collect();
    let file = mesh
        .cluster
        .log_dir()
        .join(format!("raw-{}.txt", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&file, lines).unwrap();
    let script = format!(
        r"import socket,sys,time
parts=[(float(p),bytes.fromhex(h)) for p,h in (l.rstrip('\n').split(' ') for l in open('{}'))]
s=socket.create_connection(('{ip}',{port}),timeout=8)
try:
  for pause,data in parts:
    time.sleep(pause)
    s.sendall(data)
except OSError:
  pass
got=b''
try:
  while True:
    b=s.recv(65536)
    if not b: break
    got+=b
except OSError:
  pass
sys.stdout.write(got.hex())
",
        file.display()
    );
    let out = mesh
        .cluster
        .exec_in_pod(pod, "python3", &["-c", &script], Duration::from_secs(40))
        .unwrap();
    unhex(out.stdout.trim())
}

/// From `pod`, one connection per entry to `addr` (16 at a time): the entry's
/// bytes, then what comes back until the peer closes, `wait` passes, or as many
/// bytes came back as were sent (an echo). One answer per entry, in order.
pub fn raw_exchanges(
    mesh: &Mesh,
    pod: &str,
    addr: &str,
    entries: &[Vec<u8>],
    wait: Duration,
) -> Vec<Vec<u8>> {
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let file = mesh.cluster.log_dir().join("raw-exchanges.txt");
    let lines: String = entries.iter().map(|e| hex(e) + "\n").collect();
    std::fs::write(&file, lines).unwrap();
    let script = format!(
        r"import socket,time,concurrent.futures as cf
entries=[bytes.fromhex(l.strip()) for l in open('{}')]
def one(data):
  got=b''
  try:
    s=socket.create_connection(('{ip}',{port}),timeout={wait})
    s.sendall(data)
    end=time.time()+{wait}
    while len(got)<len(data) and time.time()<end:
      s.settimeout(max(end-time.time(),0.01))
      b=s.recv(65536)
      if not b: break
      got+=b
  except OSError:
    pass
  return got.hex()
with cf.ThreadPoolExecutor(16) as pool:
  for answer in pool.map(one,entries):
    print(answer or '-')
",
        file.display(),
        wait = wait.as_secs_f64()
    );
    let out = mesh
        .cluster
        .exec_in_pod(pod, "python3", &["-c", &script], Duration::from_secs(120))
        .unwrap();
    let answers: Vec<Vec<u8>> = out
        .stdout
        .lines()
        .map(|l| unhex(l.trim_matches('-')))
        .collect();
    assert_eq!(answers.len(), entries.len(), "{}", out.stderr);
    answers
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// An HTTP/2 prior-knowledge request made of hand-written frames: the preface, an
/// empty SETTINGS, and one HEADERS frame (HPACK literals, never indexed) ending the
/// stream. `headers` are written in order, pseudo-headers first as given.
pub fn h2_request(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        assert!(name.len() < 127 && value.len() < 127);
        block.push(0x00);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], 0x1, 0x5, 0, 0, 0, 1]); // HEADERS, END_STREAM|END_HEADERS, stream 1
    out.extend_from_slice(&block);
    // GOAWAY: no more streams, so the server closes once stream 1 is answered
    out.extend_from_slice(&[0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    out
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The sum of the samples whose line starts with `name{` (or `name `) and has every
/// label given.
pub fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One sample of a node daemon's metrics (`metrics_listen`, 15020).
pub fn node_metric(mesh: &Mesh, node: &str, name: &str, labels: &[&str]) -> f64 {
    let ns = mesh.cluster.node(node).unwrap().netns();
    let url = "http://127.0.0.1:15020/stats/prometheus";
    let args = ["-sS", "--max-time", "5", url];
    let out = meshward_integration::exec(ns, "curl", &args, Duration::from_secs(10)).unwrap();
    sample(&out.stdout, name, labels)
}
