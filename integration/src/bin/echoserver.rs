//! `echoserver [--listen ADDR] [--format json|text] [--tcp]`: see `meshward_integration::echo`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use meshward_integration::echo::{Format, PodEnv, serve_http, serve_tcp_echo};

#[derive(Parser)]
#[command(about = "Answers every HTTP request with every detail of it (or echoes TCP bytes)")]
struct Args {
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// json: like ealen/echo-server; text: like Kubernetes' e2e echoserver.
    #[arg(long, value_enum, default_value_t = BodyFormat::Json)]
    format: BodyFormat,
    /// Echo TCP bytes instead of serving HTTP.
    #[arg(long)]
    tcp: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BodyFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
