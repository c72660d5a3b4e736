//! `meshward proxy run -c proxy.yaml`: the node daemon. Today: the agent, the
//! SPIFFE Workload API and the readiness endpoint; the data path joins with its issue.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use meshward_config::ProxyConfig;

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
}

pub(crate) fn run(cmd: ProxyCommand) -> anyhow::Result<ExitCode> {
    let config = match cmd {
        ProxyCommand::Run { config } => config,
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
                meshward::capture::install(&config.capture)?;
            } else if remove {
                meshward::capture::remove(&config.capture);
            } else if print {
                print!("{}", meshward::capture::rules(&config.capture));
            } else {
                anyhow::bail!("say --print, --install or --remove");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let config = ProxyConfig::from_file(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = meshward::agent::start(&config)?;
        let listener = tokio::net::TcpListener::bind(config.readiness_listen)
            .await
            .with_context(|| format!("listen on {}", config.readiness_listen))?;
        eprintln!(
            "meshward proxy: agent for node of trust domain {}, readiness on {}",
            config.trust_domain, config.readiness_listen
        );
        let socket = config.agent.workload_api_socket.clone();
        let workload_api = meshward::workload_api::serve(&socket, handle.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = meshward::readiness::serve(listener, handle.ready.clone()) => r.context("readiness endpoint")?,
            r = workload_api => r.map_err(|e| anyhow::anyhow!("Workload API: {e}"))?,
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        Ok(ExitCode::SUCCESS)
    })
}
