//! `meshward-bench`: the end-to-end performance budget. Builds two nodes with
//! meshward daemons (and an nginx mTLS pair as the peer) in network namespaces,
//! drives load from the client pod to the server pod, and prints every figure as
//! median, min, max over the runs, with its ratio to direct (no proxy) and to the
//! peer, measured in the same run. Needs root; see `benches/README.md`.

mod env;
mod instructions;
mod load;
mod measure;
mod profile;
mod scale;
mod settle;
mod ztunnel;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use env::{BULK, ECHO, Env, HTTP, Variant};
use meshward_integration::exec;
use ztunnel::ZtunnelPair;

#[derive(Parser)]
#[command(about = "meshward's end-to-end benchmarks (root; run benches/run.sh)")]
struct Args {
    /// Runs per figure.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Idle connections for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Which figures to take (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    figures: Vec<Figure>,
    /// Which variants to measure (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    variants: Vec<Variant>,
    /// Runtime threads per meshward daemon. Both daemons, the load generator and
    /// the servers share this machine's cores; one each is what two one-core
    /// nodes would give them (the daemon's own default is max(2, cores / 4)).
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
    /// HBONE's key exchange groups, most preferred first (the daemons'
    /// `hbone.key_exchange` and the handshake figure's client), e.g. `X25519` to
    /// measure what the hybrid post-quantum default costs.
    #[arg(long, value_delimiter = ',', default_value = "X25519MLKEM768,X25519")]
    key_exchange: Vec<meshward_tls::KeyExchangeGroup>,
    /// Record the meshward daemons with `perf` while each figure runs, into
    /// DIR/<figure>.data (read with `perf report -i`).
    #[arg(long, value_name = "DIR")]
    perf: Option<std::path::PathBuf>,
    /// Instead of every figure: the meshward daemons' instructions per request
    /// under callgrind, over this many requests of each kind (`instructions.rs`).
    #[arg(long, value_name = "REQUESTS")]
    instructions: Option<usize>,
}

/// The figures, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, ValueEnum)]
enum Figure {
    Bulk,
    Held,
    NewConnections,
    Http1,
    Http2,
    Handshakes,
    /// From here on, once at the end (not per run, not profiled):
    Memory,
    Churn,
    /// RSS fresh, at peak, and after the pools' idle timeout (`settle.rs`).
    Settle,
}

/// figure -> variant -> samples
type Table = BTreeMap<&'static str, BTreeMap<Variant, Vec<f64>>>;

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.figures.is_empty() {
        args.figures = Figure::value_variants().to_vec();
    }
    if args.variants.is_empty() {
        args.variants = Variant::value_variants().to_vec();
    }
    raise_open_files_limit();
    meshward_tls_provider();
    let bin = meshward_integration::meshward_binary()?;
    eprintln!(
        "meshward-bench: building the environment with {}",
        bin.display()
    );
    let mut env = Env::start(
        &bin,
        args.worker_threads,
        &args.key_exchange,
        settle::POOL_IDLE_TIMEOUT,
    )?;
    if let Some(requests) = args.instructions {
        let mut table = Table::new();
        let dir = std::env::temp_dir().join("meshward-bench-callgrind");
        instructions::measure(&mut env, &dir, requests, &mut table)?;
        print(&table, 1);
        return Ok(());
    }
    if args.variants.contains(&Variant::Ztunnel) {
        match ZtunnelPair::unavailable() {
            Some(why) => {
                eprintln!("meshward-bench: ztunnel skipped: {why}");
                args.variants.retain(|v| *v != Variant::Ztunnel);
            }
            None => {
                // long enough for every figure of every run
                let pair = ZtunnelPair::start(&bin, 7200, settle::POOL_IDLE_TIMEOUT)?;
                let client = meshward_integration::Netns::existing(ztunnel::CLIENT_NS);
                env.ztunnel = Some((pair, client));
            }
        }
    }
    env.reuse_time_wait_ports()?;
    let memory_watch = args.figures.contains(&Figure::Settle).then(|| {
        let pids = args.variants.iter().filter(|v| **v != Variant::Direct);
        settle::MemoryWatch::start(&env, pids.map(|v| (*v, env.proxy_pids(*v))).collect())
    });
    let duration = Duration::from_secs(args.seconds);
    let mut table = Table::new();
    for run in 1..=args.runs {
        eprintln!("run {run}/{}", args.runs);
        for &variant in &args.variants {
            for &figure in &args.figures {
                let recording = match (&args.perf, variant) {
                    (Some(dir), Variant::Meshward) if figure < Figure::Memory => {
                        let name = format!("{figure:?}-{run}").to_lowercase();
                        Some(profile::Recording::start(
                            dir,
                            &name,
                            &env.proxy_pids(variant),
                        )?)
                    }
                    _ => None,
                };
                take(&env, figure, variant, duration, &mut table)?;
                if let Some(recording) = recording {
                    eprintln!("perf: {}", recording.finish()?.display());
                }
            }
        }
    }
    if args.figures.contains(&Figure::Memory) {
        scale::memory(&env, &args.variants, args.idle_connections, &mut table)?;
    }
    if args.figures.contains(&Figure::Churn) {
        scale::churn(&env, &args.variants, args.idle_connections, &mut table)?;
    }
    if let Some(watch) = memory_watch {
        watch.finish(&env, &mut table);
    }
    print(&table, args.runs);
    Ok(())
}

/// One measurement of one figure for one variant (memory runs once, at the end).
fn take(
    env: &Env,
    figure: Figure,
    variant: Variant,
    duration: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    match figure {
        Figure::Bulk => bulk(env, variant, duration, table),
        Figure::Held => held(env, variant, duration, table),
        Figure::NewConnections => new_connections(env, variant, duration, table),
        Figure::Http1 => http1(env, variant, duration, table),
        // the client nginx tunnels TCP: no ALPN, so no HTTP/2 through the pair
        Figure::Http2 if variant == Variant::Nginx => Ok(()),
        Figure::Http2 => http2(env, variant, duration, table),
        Figure::Handshakes => handshakes(env, variant, duration, table),
        Figure::Memory | Figure::Churn | Figure::Settle => Ok(()),
    }
}

fn record(table: &mut Table, figure: &'static str, variant: Variant, value: f64) {
    table
        .entry(figure)
        .or_default()
        .entry(variant)
        .or_default()
        .push(value);
}

fn client_ns(env: &Env, variant: Variant) -> anyhow::Result<&meshward_integration::Netns> {
    match (variant, &env.ztunnel) {
        (Variant::Ztunnel, Some((_, ns))) => Ok(ns),
        (Variant::Ztunnel, None) => anyhow::bail!("the ztunnel pair is not running"),
        _ => Ok(env.mesh.cluster.pod("client")?.netns()),
    }
}

fn bulk(env: &Env, variant: Variant, duration: Duration, table: &mut Table) -> anyhow::Result<()> {
    let target = env.target(variant, BULK);
    let pids = env.proxy_pids(variant);
    let cpu = measure::cpu_seconds(&pids);
    let out = exec(
        client_ns(env, variant)?,
        "iperf3",
        &[
            "-c",
            &target.ip().to_string(),
            "-p",
            &target.port().to_string(),
            "-t",
            &duration.as_secs().to_string(),
            "-J",
        ],
        duration + Duration::from_secs(30),
    )?;
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("iperf3 to {target}: {}{}", out.stdout, out.stderr))?;
    let received = &report["end"]["sum_received"];
    let bits = received["bits_per_second"].as_f64().unwrap_or(0.0);
    let bytes = received["bytes"].as_f64().unwrap_or(0.0);
    record(table, "bulk TCP throughput, Gbit/s", variant, bits / 1e9);
    if variant != Variant::Direct && bytes > 0.0 {
        let spent = measure::cpu_seconds(&pids) - cpu;
        record(
            table,
            "bulk TCP, proxy CPU-seconds per GB",
            variant,
            spent / (bytes / 1e9),
        );
    }
    Ok(())
}

fn held(env: &Env, variant: Variant, duration: Duration, table: &mut Table) -> anyhow::Result<()> {
    let target = env.target(variant, ECHO);
    let counting = measure::Counting::start(env.proxy_pids(variant));
    let result =
        client_ns(env, variant)?.run(move || load::held_connection(target, duration, 2_000_000))?;
    let counted = counting.per(result.sorted.len());
    anyhow::ensure!(
        result.errors == 0,
        "{} held connection to {target} failed; the daemons' last log lines:\n{}",
        variant.name(),
        env.log_tails(20)
    );
    let us = |p| measure::percentile(&result.sorted, p).as_secs_f64() * 1e6;
    record(
        table,
        "1 KiB RR held connection, req/s",
        variant,
        result.rate(),
    );
    record(table, "1 KiB RR held connection, p50 us", variant, us(0.5));
    record(table, "1 KiB RR held connection, p90 us", variant, us(0.9));
    record(table, "1 KiB RR held connection, p99 us", variant, us(0.99));
    if variant != Variant::Direct {
        // item 2's per-exchange cost in the proxies, both nodes: CPU, context
        // switches (each wait for a socket is a sleep and a wake-up)
        let cpu = "1 KiB RR held connection, proxy CPU us per exchange";
        record(table, cpu, variant, counted.cpu_us);
        let user = "1 KiB RR held connection, proxy CPU in user space, %";
        record(table, user, variant, counted.user_share * 100.0);
        let waits = "1 KiB RR held connection, proxy context switches per exchange";
        record(table, waits, variant, counted.switches);
    }
    Ok(())
}

fn new_connections(
    env: &Env,
    variant: Variant,
    duration: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    let target = env.target(variant, ECHO);
    let result = client_ns(env, variant)?
        .run(move || load::new_connection_each(target, duration, 1_000_000))?;
    let us = |p| measure::percentile(&result.sorted, p).as_secs_f64() * 1e6;
    record(
        table,
        "new connection per 1 KiB request, conn/s",
        variant,
        result.rate(),
    );
    record(
        table,
        "new connection per 1 KiB request, p99 us",
        variant,
        us(0.99),
    );
    Ok(())
}

fn http1(env: &Env, variant: Variant, duration: Duration, table: &mut Table) -> anyhow::Result<()> {
    let target = env.target(variant, HTTP);
    let url = format!("http://{target}/bench/x");
    let counting = measure::Counting::start(env.proxy_pids(variant));
    let out = exec(
        client_ns(env, variant)?,
        "wrk",
        &[
            "-t",
            "2",
            "-c",
            "16",
            "-d",
            &format!("{}s", duration.as_secs()),
            &url,
        ],
        duration + Duration::from_secs(30),
    )?;
    let rps = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk {url}: {}{}", out.stdout, out.stderr))?;
    anyhow::ensure!(
        !out.stdout.contains("Non-2xx"),
        "{} answered non-2xx: {}",
        variant.name(),
        out.stdout
    );
    let figures = [
        "HTTP/1.1 GET, L7 policy + XFCC, 16 conns, req/s",
        "HTTP/1.1 GET, L7 policy + XFCC, proxy CPU us per request",
    ];
    record_load(table, figures, variant, (rps, duration), &counting);
    Ok(())
}

fn http2(env: &Env, variant: Variant, duration: Duration, table: &mut Table) -> anyhow::Result<()> {
    let target = env.target(variant, HTTP);
    let url = format!("http://{target}/bench/x");
    let counting = measure::Counting::start(env.proxy_pids(variant));
    let out = exec(
        client_ns(env, variant)?,
        "h2load",
        &[
            "-c",
            "4",
            "-m",
            "16",
            "-D",
            &duration.as_secs().to_string(),
            &url,
        ],
        duration + Duration::from_secs(30),
    )?;
    // "finished in 5.00s, 12345.67 req/s, ..."
    let rps = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse::<f64>().ok())
        .with_context(|| format!("h2load {url}: {}{}", out.stdout, out.stderr))?;
    let figures = [
        "HTTP/2 GET, L7 policy + XFCC, 4x16 streams, req/s",
        "HTTP/2 GET, L7 policy + XFCC, proxy CPU us per request",
    ];
    record_load(table, figures, variant, (rps, duration), &counting);
    Ok(())
}

/// A request load's rate, and the proxies' CPU time (both nodes) per request
/// (item 1's per-request budget, read against ztunnel's L4 figure; none for
/// direct).
fn record_load(
    table: &mut Table,
    [rate, cpu]: [&'static str; 2],
    variant: Variant,
    (rps, duration): (f64, Duration),
    counting: &measure::Counting,
) {
    record(table, rate, variant, rps);
    let requests = rps * duration.as_secs_f64();
    if variant != Variant::Direct && requests >= 1.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        record(table, cpu, variant, counting.per(requests as usize).cpu_us);
    }
}

fn handshakes(
    env: &Env,
    variant: Variant,
    duration: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    let Some(target) = env.handshake_target(variant) else {
        return Ok(());
    };
    let config = Arc::new(client_tls(&env.client_svid, &env.key_exchange)?);
    // from node-1's namespace: a pod's connection to 15008 would itself be captured
    let ns = env.mesh.cluster.node("node-1")?.netns();
    let server_side: Vec<i32> = env
        .proxy_pids(variant)
        .into_iter()
        .filter(|pid| {
            env.mesh
                .cluster
                .node("node-2")
                .is_ok_and(|n| n.netns().contains(*pid))
        })
        .collect();
    let cpu = measure::cpu_seconds(&server_side);
    let started = Instant::now();
    let (done, errors) = ns.run(move || load::handshakes(target, config, duration, 1_000_000))?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        done > 0,
        "{}: no handshake completed ({errors} errors)",
        variant.name()
    );
    let spent = measure::cpu_seconds(&server_side) - cpu;
    #[allow(clippy::cast_precision_loss)]
    let done = done as f64;
    record(
        table,
        "mTLS handshakes/s (1 client)",
        variant,
        done / elapsed,
    );
    if spent > 0.0 {
        record(
            table,
            "mTLS handshakes per server CPU-second",
            variant,
            done / spent,
        );
    }
    Ok(())
}

fn client_tls(
    dir: &std::path::Path,
    key_exchange: &[meshward_tls::KeyExchangeGroup],
) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("svid.0.pem"))?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("svid.0.key"))?;
    let bundle: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("bundle.0.pem"))?.collect::<Result<_, _>>()?;
    let td = meshward_tls::spiffe_id_of(&chain[0])
        .context("the client SVID has no SPIFFE ID")?
        .trust_domain();
    let bundles = meshward_tls::TrustBundles::new();
    bundles.set(&td, &bundle)?;
    let mut config =
        rustls::ClientConfig::builder_with_provider(meshward_tls::crypto_provider(key_exchange))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(meshward_tls::SpiffeServerVerifier::new(
                bundles,
                meshward_tls::Authorizer::AnyTrusted,
            ))
            .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

fn print(table: &Table, runs: usize) {
    println!(
        "{:<52} {:<11} {:>10} {:>10} {:>10} {:>4} {:>9} {:>9} {:>9}",
        "figure", "variant", "median", "min", "max", "runs", "/direct", "/nginx", "/ztunnel"
    );
    for (figure, variants) in table {
        let med = |v: Variant| variants.get(&v).map(|s| measure::median(&mut s.clone()));
        let (direct, peer, ztunnel) = (
            med(Variant::Direct),
            med(Variant::Nginx),
            med(Variant::Ztunnel),
        );
        for (variant, samples) in variants {
            let m = measure::median(&mut samples.clone());
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let ratio = |base: Option<f64>| {
                base.filter(|b| *b > 0.0)
                    .map_or_else(|| "-".to_owned(), |b| format!("{:.2}x", m / b))
            };
            println!(
                "{figure:<52} {:<11} {m:>10.2} {min:>10.2} {max:>10.2} {:>4} {:>9} {:>9} {:>9}",
                variant.name(),
                samples.len().min(runs.max(samples.len())),
                ratio(direct),
                ratio(peer),
                ratio(ztunnel),
            );
        }
    }
}

/// Ten thousand idle connections need more than the default 1024 descriptors, in
/// this process and in the daemons and servers it starts (they inherit it).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn meshward_tls_provider() {
    meshward_tls::install_crypto_provider();
}
