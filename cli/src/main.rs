//! `meshward`: the one binary. Subcommands appear as they work.

mod api_cli;
mod demo_cli;
mod issuer_cli;
mod policy_cli;
mod proxy_cli;

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
    /// The built-in SPIFFE issuance server and its admin CLI (spire-server's verbs).
    #[command(subcommand)]
    Issuer(issuer_cli::IssuerCommand),
    /// A SPIFFE Workload API client, like `spire-agent api`.
    #[command(subcommand)]
    Api(api_cli::ApiCommand),
    /// The node daemon: identities, Workload API, capture, mTLS data path, policy.
    #[command(subcommand)]
    Proxy(proxy_cli::ProxyCommand),
    /// The quick start: a two-node mesh on this machine replaying the zero-trust talk.
    Demo(demo_cli::DemoArgs),
    /// The echoserver the demo runs in its pod (JSON like ealen/echo-server).
    Echoserver(meshward_integration::echo::cli::EchoArgs),
}

/// jemalloc (as ztunnel) rather than glibc's malloc: the data path allocates and frees buffers
/// of 16 KiB to 1 MiB per chunk (HTTP/2 frames, TLS records), which glibc serves
/// from fresh pages each time (mmap above its threshold, trimmed heaps below):
/// page faults and zeroing were ~8% of the bulk-transfer profile. It serves the
/// C libraries' `malloc` too (cli/Cargo.toml), and its slab sizes are set where it
/// is built (.cargo/config.toml): both for the memory a daemon keeps after load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc purges freed pages only when the thread that freed them allocates
/// again, so a daemon gone idle after a burst of load kept them (ztunnel's users'
/// most repeated complaint). Its background threads purge on a timer instead.
fn return_freed_pages() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("meshward: jemalloc background purging is off: {e}");
    }
}

/// The allocator's figures as metrics, so a memory figure can be told apart:
/// live objects (allocated) or pages jemalloc keeps (resident).
fn allocator_stats() {
    use tikv_jemalloc_ctl::{epoch, stats};
    // the figures are a snapshot taken at the latest epoch
    if epoch::advance().is_err() {
        return;
    }
    let read = |value: tikv_jemalloc_ctl::Result<usize>| value.unwrap_or(0) as u64;
    meshward_proxy::metrics::allocator(meshward_proxy::metrics::AllocatorStats {
        allocated: read(stats::allocated::read()),
        active: read(stats::active::read()),
        resident: read(stats::resident::read()),
        retained: read(stats::retained::read()),
        metadata: read(stats::metadata::read()),
    });
}

fn main() -> ExitCode {
    return_freed_pages();
    let cli = Cli::parse_from(issuer_cli::normalize_flags(std::env::args()));
    let result = match cli.command {
        Command::Policy(cmd) => policy_cli::run(cmd),
        Command::Issuer(cmd) => issuer_cli::run(cmd),
        Command::Proxy(cmd) => proxy_cli::run(cmd),
        Command::Api(cmd) => api_cli::run(cmd),
        Command::Demo(args) => demo_cli::run(args),
        Command::Echoserver(args) => return meshward_integration::echo::cli::run(args),
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
