//! `meshward`: the one binary. Subcommands appear as they work.

mod policy_cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meshward",
    version,
    about = "Sidecar-free mTLS node proxy for Kubernetes: SPIFFE identities, Istio AuthorizationPolicy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check AuthorizationPolicy files; decide or explain requests against them.
    #[command(subcommand)]
    Policy(policy_cli::PolicyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy_cli::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshward: {e:#}");
            // EX_USAGE-like: bad input or configuration, as linkerd2-proxy does.
            ExitCode::from(2)
        }
    }
}
