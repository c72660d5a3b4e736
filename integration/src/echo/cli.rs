//! The echoserver's command line, shared by the `echoserver` binary and
//! `meshward echoserver` (so the demo needs one binary only).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{Format, PodEnv, serve_http, serve_tcp_echo};

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// json: like ealen/echo-server; text: like Kubernetes' e2e echoserver.
    #[arg(long, value_enum, default_value_t = BodyFormat::Json)]
    pub format: BodyFormat,
    /// Echo TCP bytes instead of serving HTTP.
    #[arg(long)]
    pub tcp: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BodyFormat {
    Json,
    Text,
}

/// Serves until SIGTERM or Ctrl-C.
pub fn run(args: EchoArgs) -> ExitCode {
    let format = match args.format {
        BodyFormat::Json => Format::Json,
        BodyFormat::Text => Format::Text,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echoserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let mode = if args.tcp { "tcp echo" } else { "http" };
        eprintln!("echoserver: listening on {} ({mode})", args.listen);
        let serve = async {
            if args.tcp {
                serve_tcp_echo(listener).await
            } else {
                serve_http(listener, format, PodEnv::from_env()).await
            }
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = serve => r,
            _ = terminate.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echoserver: {e}");
            ExitCode::FAILURE
        }
    }
}
