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
}

pub(crate) fn run(cmd: ProxyCommand) -> anyhow::Result<ExitCode> {
    let ProxyCommand::Run { config } = cmd;
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
