//! `echoserver [--listen ADDR] [--format json|text] [--tcp]`: see `meshward_integration::echo`.

use std::process::ExitCode;

use clap::Parser;
use meshward_integration::echo::cli::{EchoArgs, run};

#[derive(Parser)]
#[command(about = "Answers every HTTP request with every detail of it (or echoes TCP bytes)")]
struct Cli {
    #[command(flatten)]
    args: EchoArgs,
}

fn main() -> ExitCode {
    run(Cli::parse().args)
}
