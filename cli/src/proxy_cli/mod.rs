//! `meshward proxy run -c proxy.yaml`: the node daemon: the agent, the SPIFFE
//! Workload API, the data path (capture rules installed at start, removed at exit)
//! and the readiness endpoint. `meshward proxy capture` shows or applies the rules.

mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use meshward_proxy::config::{CaptureOnExit, ProxyConfig};

#[derive(Subcommand)]
pub(crate) enum ProxyCommand {
    /// Run the node daemon.
    Run {
        /// proxy.yaml
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// The capture rules (iptables, nat table) of this node.
    Capture {
        /// proxy.yaml [default: the built-in defaults]
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the rules without applying them.
        #[arg(long, conflicts_with_all = ["install", "remove"])]
        print: bool,
        /// Install them in this network namespace (replacing any earlier ones).
        #[arg(long, conflicts_with = "remove")]
        install: bool,
        /// Remove them.
        #[arg(long)]
        remove: bool,
    },
    /// Whether the daemon of this pod is ready (exit 0) or not (exit 1), asked on
    /// its `readiness_socket`: the kubelet's readiness probe.
    Ready {
        /// The daemon's `readiness_socket`.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
    /// What a running daemon holds: workloads, identities, policies (from its admin port).
    Status {
        /// The daemon's admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: std::net::SocketAddr,
        /// Print the raw /config_dump JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: ProxyCommand) -> anyhow::Result<ExitCode> {
    let config = match cmd {
        ProxyCommand::Run { config } => config,
        ProxyCommand::Status { admin, json } => return status::run(admin, json),
        ProxyCommand::Ready { socket } => return ready(&socket),
        ProxyCommand::Capture {
            config,
            print,
            install,
            remove,
        } => {
            let config = match config {
                Some(path) => ProxyConfig::from_file(&path)?,
                None => ProxyConfig::default(),
            };
            if install {
                meshward_proxy::capture::install(&config.capture)?;
            } else if remove {
                meshward_proxy::capture::remove(&config.capture);
            } else if print {
                print!("{}", meshward_proxy::capture::rules(&config.capture));
            } else {
                anyhow::bail!("say --print, --install or --remove");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let config = ProxyConfig::from_file(&config)?;
    let logs = meshward_proxy::logging::init(&config.log);
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .on_thread_start(meshward_proxy::logging::batch_this_thread)
        .on_thread_park(meshward_proxy::logging::write_batch)
        .on_thread_stop(meshward_proxy::logging::write_batch)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, logs))
}

async fn serve(
    config: ProxyConfig,
    logs: Option<meshward_proxy::logging::LogControl>,
) -> anyhow::Result<ExitCode> {
    let prometheus =
        meshward_proxy::metrics::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let handle = meshward_proxy::agent::start(&config)?;
    let (drain, drained) = meshward_proxy::datapath::drain_channel();
    let data_path = meshward_proxy::datapath::DataPath::bind(&config, &handle, drained)?;
    // shared with a successor during an upgrade, as the data path's
    let bind = |addr: std::net::SocketAddr| {
        meshward_proxy::capture::listener(addr, false)
            .and_then(tokio::net::TcpListener::from_std)
            .with_context(|| format!("listen on {addr}"))
    };
    let readiness = bind(config.readiness_listen)?;
    let admin = bind(config.admin_listen)?;
    let metrics = bind(config.metrics_listen)?;
    // The ports are claimed; the data path listens once the agent is ready. Until
    // then what capture takes is refused (fails closed), and during an upgrade the
    // daemon being replaced serves it.
    let _capture = if config.capture.install {
        meshward_proxy::capture::enable_listener_handover();
        meshward_proxy::capture::install(&config.capture).context("installing capture rules")?;
        Some(CaptureGuard {
            capture: config.capture.clone(),
            readiness_port: config.readiness_listen.port(),
        })
    } else {
        None
    };
    tracing::info!(
        trust_domain = %config.trust_domain,
        outbound = config.capture.outbound_port,
        hbone = config.capture.inbound_hbone_port,
        plaintext = config.capture.inbound_plaintext_port,
        readiness = %config.readiness_listen,
        admin = %meshward_proxy::admin::describe(config.admin_listen),
        metrics = %config.metrics_listen,
        capture = config.capture.install,
        "meshward proxy running"
    );
    let admin_state = meshward_proxy::admin::AdminState {
        config: std::sync::Arc::new(config.clone()),
        snapshots: handle.snapshots.clone(),
        policies: data_path.policies(),
        logs,
    };
    let readiness_socket = async {
        match &config.readiness_socket {
            Some(path) => meshward_proxy::readiness::serve_unix(path, handle.ready.clone())
                .await
                .with_context(|| format!("readiness_socket {}", path.display())),
            None => std::future::pending().await,
        }
    };
    let socket = config.agent.workload_api_socket.clone();
    let workload_api = meshward_proxy::workload_api::serve(&socket, handle.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let data_path = data_path.run();
    tokio::pin!(data_path);
    tokio::select! {
        r = meshward_proxy::readiness::serve(readiness, handle.ready.clone()) => r.context("readiness endpoint")?,
        r = readiness_socket => r?,
        r = meshward_proxy::admin::serve_admin(admin, admin_state) => r.context("admin endpoint")?,
        r = meshward_proxy::admin::serve_metrics(metrics, prometheus, crate::allocator_stats) => r.context("metrics endpoint")?,
        r = workload_api => r.map_err(|e| anyhow::anyhow!("Workload API: {e}"))?,
        r = &mut data_path => r?,
        _ = term.recv() => drain_then_stop(&drain, data_path, config.limits.drain_grace_period).await?,
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM: the data path stops accepting and winds down (`datapath/drain.rs`);
/// the daemon stops once it has drained, or when `grace` has passed, cutting
/// what is still open.
async fn drain_then_stop(
    drain: &meshward_proxy::datapath::DrainSignal,
    data_path: std::pin::Pin<
        &mut impl std::future::Future<Output = Result<(), meshward_proxy::datapath::DataPathError>>,
    >,
    grace: std::time::Duration,
) -> Result<(), meshward_proxy::datapath::DataPathError> {
    tracing::info!(grace_period = ?grace, "SIGTERM: draining");
    drain.start();
    match tokio::time::timeout(grace, data_path).await {
        Ok(result) => {
            tracing::info!("drained: every connection ended; stopping");
            result
        }
        Err(_) => {
            tracing::warn!(
                grace_period = ?grace,
                "limits.drain_grace_period passed with connections still open; stopping, which cuts them"
            );
            Ok(())
        }
    }
}

/// Every proxied connection holds two sockets: raise the soft limit on open files
/// to the hard one (as ztunnel does), so the default 1024 does not cap a node.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("open files limit stays {soft}: {e}");
            }
        }
        _ => {}
    }
}

/// When the daemon stops (also on an error return), removes the capture rules or,
/// with `capture.on_exit: keep`, leaves them so the node's captured traffic fails
/// closed until a daemon is back. A successor already serving the node (an
/// upgrade: its readiness answers on the shared port once this daemon's listener
/// is gone) keeps them either way.
struct CaptureGuard {
    capture: meshward_proxy::config::CaptureConfig,
    readiness_port: u16,
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if successor_ready(self.readiness_port) {
            tracing::info!("capture rules kept: a successor daemon serves this node");
            return;
        }
        match self.capture.on_exit {
            CaptureOnExit::Remove => meshward_proxy::capture::remove(&self.capture),
            CaptureOnExit::Keep => tracing::info!(
                "capture rules kept (capture.on_exit: keep): the node's captured traffic fails \
                 until a daemon is back; `meshward proxy capture --remove` takes them away"
            ),
        }
    }
}

/// Whether another daemon on this node says it is ready: asked on the readiness
/// port once this daemon's own listener there is closed (bounded: 1 s).
fn successor_ready(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = std::time::Duration::from_secs(1);
    std::net::TcpStream::connect_timeout(&addr, timeout)
        .and_then(|stream| {
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            ask_ready(stream)
        })
        .is_ok_and(|(ready, _)| ready)
}

/// `GET /healthz/ready` on a daemon's readiness endpoint (the caller bounds the
/// waits): whether it answered 200, and its body.
fn ask_ready(mut stream: impl std::io::Read + std::io::Write) -> std::io::Result<(bool, String)> {
    stream.write_all(
        b"GET /healthz/ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((answer.starts_with("HTTP/1.1 200"), body.to_owned()))
}

/// `meshward proxy ready --socket PATH`: `GET /healthz/ready` on the daemon's
/// readiness socket (bounded: 3 s); exit 0 when it answers 200.
fn ready(socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    let timeout = std::time::Duration::from_secs(3);
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("no daemon answers on {}", socket.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let (ready, body) = ask_ready(stream)?;
    print!("{body}");
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
