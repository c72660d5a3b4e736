//! `meshward demo`: the quick start. Builds the integration environment on this
//! machine (an issuer, two nodes with daemons, an echoserver, a curl pod with an
//! identity and one without) and a second cluster of another trust domain (its
//! issuer, a node, a `payments` pod serving on 8080), replays the zero-trust talk
//! and then the federation act, and stays up for the user to try things
//! (`meshward demo exec`) until Ctrl-C removes everything.
//! `--check` runs the same steps without waiting and fails on any surprise.
//! `--kube` puts the policies in a real kube-apiserver the daemons watch, applied
//! with kubectl (`kube.rs`).

mod kube;
mod scenario;
mod steps;

use meshward_spiffe::TrustDomain;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use meshward_integration::{Mesh, MeshSpec, Phase, PodSpec};
use serde::{Deserialize, Serialize};

/// Namespaces of the demo start with this (tests use `mwt`).
const PREFIX: &str = "mwdemo";
/// Addresses: 10.40.0.0/16.
const BLOCK: u8 = 40;
/// Where a running demo says what it built, for `meshward demo exec`.
const STATE_FILE: &str = "/run/meshward-demo.json";

#[derive(Args)]
pub(crate) struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    /// The mesh's trust domain.
    #[arg(long, default_value = steps::TALK_TRUST_DOMAIN)]
    trust_domain: TrustDomain,
    /// Run the scenario without pauses, then exit: non-zero if any step differs.
    #[arg(long)]
    check: bool,
    /// Start a real control plane (etcd, kube-apiserver: `scripts/peers.sh`) and
    /// apply the policies with kubectl; the daemons watch them there.
    #[arg(long)]
    kube: bool,
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Run a command in a pod of the running demo, e.g. `exec curl-spire -- curl ...`.
    Exec {
        /// curl-spire, curl, echoserver, or payments (the second cluster's pod)
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// What `demo exec` needs to find a pod.
#[derive(Serialize, Deserialize)]
struct DemoState {
    pid: u32,
    /// pod name -> network namespace
    pods: Vec<(String, String)>,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(DemoCommand::Exec { pod, command }) => exec(&pod, &command),
        None => demo(&args.trust_domain, args.check, args.kube),
    }
}

fn demo(trust_domain: &TrustDomain, check: bool, kube: bool) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "meshward demo needs root: it creates network namespaces, veth pairs, and iptables rules inside those namespaces (nothing outside them changes). Run it as root: sudo ./scripts/demo.sh (or sudo meshward demo)"
        );
    }
    preflight()?;
    let stop = watch_signals()?;
    clear_leftovers()?;
    let partner = steps::PARTNER_TRUST_DOMAIN;
    if trust_domain.as_str() == partner {
        bail!("--trust-domain: {partner} is the second cluster's; choose another");
    }
    let bin = std::env::current_exe().context("where is this meshward binary?")?;
    let mut spec = MeshSpec::new(trust_domain.as_str(), &["node-1", "node-2"]);
    spec.prefix(PREFIX, BLOCK)
        // Istio's default, as in the talk: no policy yet means allowed; the talk's
        // first policy is the namespace's default deny (meshward's own default is
        // `deny` even without any policy)
        .default_mode("allow-if-no-policy")
        .pod(
            "node-1",
            PodSpec::new("curl-spire").service_account("curl-spire"),
            true,
        )
        .pod("node-1", PodSpec::new("curl"), false)
        .pod(
            "node-2",
            PodSpec::new("echoserver")
                .namespace("echoserver")
                .label("app", "echoserver"),
            true,
        )
        // the federation act's second cluster: pod addresses route between the
        // clusters (as two peered VPCs); trust is what federation adds
        .cluster(partner, &["node-3"])
        .pod(
            "node-3",
            PodSpec::new("payments")
                .namespace("payments")
                .service_account("checkout"),
            true,
        );
    println!(
        "meshward demo: trust domain {trust_domain} (two nodes, an issuer, three pods) and \
         a second cluster, {partner} (a node, its issuer, one pod)"
    );
    let started = Instant::now();
    let kube = kube.then(start_control_plane).transpose()?;
    if let Some(kube) = &kube {
        kube.configure(&mut spec);
    }
    let mut phase_started = Instant::now();
    let mut report = |phase: Phase| {
        if phase != Phase::Network {
            println!("   done ({:.1}s)", phase_started.elapsed().as_secs_f64());
        }
        phase_started = Instant::now();
        println!(
            "-- {}",
            match phase {
                Phase::Network =>
                    "creating the environment: network namespaces, veth pairs, routes",
                Phase::Issuer => "starting the issuers (CA, SQLite datastore), one per cluster",
                Phase::Nodes =>
                    "registering the pods; node daemons attest, install capture, fetch SVIDs",
            }
        );
    };
    let mesh = match Mesh::start_reporting(&bin, spec, &mut report) {
        Ok(mesh) => mesh,
        Err(e) => return Err(e).context("building the demo environment"),
    };
    println!("   done ({:.1}s)", phase_started.elapsed().as_secs_f64());
    let _api_forwards = match &kube {
        Some(kube) => kube.reach_from(&mesh)?,
        None => Vec::new(),
    };
    let servers = ["echoserver", "payments"]
        .into_iter()
        .map(|pod| serve_echo(&mesh, &bin, pod))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let echo_ip = mesh.pod_ip("echoserver")?;
    write_state(&mesh)?;
    println!("ready in {:.1}s", started.elapsed().as_secs_f64());

    let echo_url = format!("http://{echo_ip}:8080");
    let stopped = || stop.load(Ordering::Relaxed);
    let policies = match &kube {
        Some(kube) => scenario::Policies::Kube(kube),
        None => scenario::Policies::Directory,
    };
    let failures = scenario::run(&mesh, &policies, &stopped);
    let outcome = if failures == 0 && !stopped() {
        println!("\nevery step showed what the talk shows");
        ExitCode::SUCCESS
    } else {
        println!("\n{failures} step(s) showed something else");
        ExitCode::FAILURE
    };
    if !check && !stopped() {
        hints(&mesh, &bin, &echo_url);
        if let Some(kube) = &kube {
            println!("{}", kube.hints());
        }
        while !stopped() {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("\nremoving everything...");
    }
    drop(servers);
    drop(mesh);
    let _ = std::fs::remove_file(STATE_FILE);
    Ok(outcome)
}

/// `--kube`: etcd and kube-apiserver, with meshward's CRDs and RBAC.
fn start_control_plane() -> anyhow::Result<kube::KubeDemo> {
    let started = Instant::now();
    println!("-- starting the control plane: etcd, kube-apiserver, meshward's CRDs and RBAC");
    let kube = kube::KubeDemo::start()?;
    println!("   done ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(kube)
}

/// The echoserver on port 8080 of `pod`.
fn serve_echo(mesh: &Mesh, bin: &Path, pod: &str) -> anyhow::Result<meshward_integration::Process> {
    let server = mesh
        .cluster
        .spawn_in_pod(
            pod,
            &bin.display().to_string(),
            &["echoserver", "--listen", "0.0.0.0:8080"],
        )
        .with_context(|| format!("starting the echoserver in {pod}"))?;
    meshward_integration::wait_for_port(
        mesh.cluster.pod(pod)?.netns(),
        (mesh.pod_ip(pod)?, 8080).into(),
        Duration::from_secs(10),
    )?;
    Ok(server)
}

fn hints(mesh: &Mesh, bin: &Path, echo_url: &str) {
    let socket = mesh.workload_api_socket("node-1");
    let logs = mesh.cluster.log_dir();
    println!(
        "\nThe mesh stays up. In another terminal (as root), try:\n\
         \x20 meshward demo exec curl-spire -- curl -sS -X POST {echo_url}/api/payment\n\
         \x20 meshward demo exec curl-spire -- curl -sS {echo_url}/list\n\
         \x20 meshward demo exec curl -- curl -sS {echo_url}/            (no identity: refused)\n\
         \x20 meshward demo exec payments -- curl -sS {echo_url}/       (the partner cluster, federated)\n\
         \x20 meshward demo exec curl-spire -- {} api fetch x509 -socketPath {}\n\
         Policies, reloaded within a second of any edit: {}\n\
         Logs (issuer, node daemons with every refusal, echoserver): {}\n\
         Readiness of a node: ip netns exec {PREFIX}-node-1 curl -s 127.0.0.1:15021/healthz/ready\n\
         Ctrl-C removes everything.",
        bin.display(),
        socket.display(),
        mesh.policy_dir().display(),
        logs.display(),
    );
}

/// The tools the environment is built with.
fn preflight() -> anyhow::Result<()> {
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables-restore", "iptables"),
        ("curl", "curl"),
    ] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!(
                "meshward demo needs `{tool}`: apt-get install {package} (or run ./scripts/demo.sh, which installs what it needs)"
            );
        }
    }
    Ok(())
}

/// Ctrl-C and SIGTERM set the flag; the demo then removes what it built.
fn watch_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            let interrupt = tokio::signal::ctrl_c();
            let _ = ready_tx.send(());
            tokio::select! {
                _ = interrupt => {},
                _ = term.recv() => {},
            }
            flag.store(true, Ordering::Relaxed);
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("cannot watch for Ctrl-C")?;
    Ok(stop)
}

/// A demo killed without its cleanup leaves namespaces behind; a running one is
/// left alone.
fn clear_leftovers() -> anyhow::Result<()> {
    if let Some(state) = read_state() {
        if Path::new(&format!("/proc/{}", state.pid)).exists() && state.pid != std::process::id() {
            bail!(
                "a demo is already running (pid {}); stop it with Ctrl-C first",
                state.pid
            );
        }
    }
    for name in meshward_integration::remove_by_prefix(&format!("{PREFIX}-")) {
        println!("removed {name}, left by an earlier demo");
    }
    Ok(())
}

fn write_state(mesh: &Mesh) -> anyhow::Result<()> {
    let state = DemoState {
        pid: std::process::id(),
        pods: mesh
            .cluster
            .pods()
            .map(|p| (p.name().to_owned(), p.netns().name().to_owned()))
            .collect(),
    };
    std::fs::write(STATE_FILE, serde_json::to_string(&state)?)
        .with_context(|| format!("write {STATE_FILE}"))
}

fn read_state() -> Option<DemoState> {
    serde_json::from_str(&std::fs::read_to_string(STATE_FILE).ok()?).ok()
}

/// `meshward demo exec POD -- COMMAND...`: the command in the pod's network namespace.
fn exec(pod: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let state = read_state()
        .filter(|s| PathBuf::from(format!("/proc/{}", s.pid)).exists())
        .context("no demo is running: start one with `meshward demo`")?;
    let Some((_, netns)) = state.pods.iter().find(|(name, _)| name == pod) else {
        let names: Vec<&str> = state.pods.iter().map(|(n, _)| n.as_str()).collect();
        bail!("no pod {pod:?} in the demo; pods: {}", names.join(", "));
    };
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .args(command)
        .status()
        .context("running `ip netns exec`")?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}
