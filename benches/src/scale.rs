//! The figures of many connections, taken once at the end of a run: memory
//! (idle, and per idle connection) and churn beside held connections.

use std::time::Duration;

use anyhow::Context;

use crate::env::{ECHO, Env, Variant};
use crate::{Table, client_ns, load, measure, record};

pub(crate) fn memory(
    env: &Env,
    variants: &[Variant],
    idle: usize,
    table: &mut Table,
) -> anyhow::Result<()> {
    for &variant in variants.iter().filter(|v| **v != Variant::Direct) {
        let pids = env.proxy_pids(variant);
        #[allow(clippy::cast_precision_loss)]
        let before = measure::rss_bytes(&pids) as f64;
        record(
            table,
            "RSS (anonymous) idle per node, MB",
            variant,
            before / 2.0 / 1e6,
        );
        let per_process: Vec<u64> = pids.iter().map(|p| measure::rss_bytes(&[*p])).collect();
        // meshward's own count of its live objects: RSS less the allocator's pages
        let heap = |env: &Env| match variant {
            Variant::Meshward => env.meshward_allocator().map(|(allocated, ..)| allocated),
            _ => None,
        };
        let heap_before = heap(env);
        let (opened, (after, heap_after)) = holding_idle(env, variant, idle, |opened| {
            std::thread::sleep(Duration::from_secs(1));
            // each side on its own line: where a connection's memory is
            for (pid, before) in pids.iter().zip(&per_process) {
                let grown = measure::rss_bytes(&[*pid]).saturating_sub(*before);
                #[allow(clippy::cast_precision_loss)]
                let per = grown as f64 / opened as f64 / 1e3;
                eprintln!(
                    "{}: process {pid}: {per:.2} KB per idle connection",
                    variant.name()
                );
            }
            #[allow(clippy::cast_precision_loss)]
            Ok((measure::rss_bytes(&pids) as f64, heap(env)))
        })?;
        #[allow(clippy::cast_precision_loss)]
        let per = (after - before) / opened as f64 / 1e3;
        record(
            table,
            "RSS (anonymous) per idle connection, both nodes, KB",
            variant,
            per,
        );
        if let (Some(before), Some(after)) = (heap_before, heap_after) {
            // averaged per node by `meshward_allocator`: twice that for both
            #[allow(clippy::cast_precision_loss)]
            let per = 2.0 * (after - before) / opened as f64 / 1e3;
            record(
                table,
                "heap allocated per idle connection, both nodes, KB",
                variant,
                per,
            );
        }
    }
    Ok(())
}

/// Connection churn beside many held ones (issue 18 item 5): `held` idle
/// connections open (`--idle-connections`, 10,000 by default), then 1,000 new
/// connections per second for 10 s, each one 1 KiB exchange. What the proxies spend on it (CPU, peak memory) and what the
/// clients see (rate reached, p99 from when each was due, failures).
pub(crate) fn churn(
    env: &Env,
    variants: &[Variant],
    held: usize,
    table: &mut Table,
) -> anyhow::Result<()> {
    const RATE: u32 = 1_000;
    const SECONDS: u64 = 10;
    for &variant in variants {
        let pids = env.proxy_pids(variant);
        let target = env.target(variant, ECHO);
        let ns = client_ns(env, variant)?;
        let (_, (result, cpu, peak)) = holding_idle(env, variant, held, |_| {
            let cpu_before = measure::cpu_seconds(&pids);
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                let sampler = scope.spawn(|| {
                    let mut peak = measure::rss_bytes(&pids);
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        peak = peak.max(measure::rss_bytes(&pids));
                    }
                    peak
                });
                let result = ns.run(move || {
                    load::paced_new_connections(target, RATE, Duration::from_secs(SECONDS), 32)
                });
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                let peak = sampler.join().unwrap_or(0);
                let cpu = measure::cpu_seconds(&pids) - cpu_before;
                Ok((result?, cpu, peak))
            })
        })?;
        record(
            table,
            "churn: new conn/s reached (1,000/s asked)",
            variant,
            result.rate(),
        );
        let p99 = measure::percentile(&result.sorted, 0.99).as_secs_f64() * 1e3;
        record(
            table,
            "churn: new connection p99 ms, from when due",
            variant,
            p99,
        );
        #[allow(clippy::cast_precision_loss)]
        record(
            table,
            "churn: failed connections",
            variant,
            result.errors as f64,
        );
        if variant != Variant::Direct {
            #[allow(clippy::cast_precision_loss)]
            let per_thousand = cpu / result.sorted.len().max(1) as f64 * 1e3;
            record(
                table,
                "churn: proxy CPU-seconds per 1,000 new conns",
                variant,
                per_thousand,
            );
            #[allow(clippy::cast_precision_loss)]
            record(
                table,
                "churn: RSS (anonymous) peak per node, MB",
                variant,
                peak as f64 / 2.0 / 1e6,
            );
        }
    }
    Ok(())
}

/// Runs `during` while `count` connections through `variant` stay open and idle
/// (each made one exchange), then closes them. Returns how many opened, and what
/// `during` returned.
fn holding_idle<T: Send>(
    env: &Env,
    variant: Variant,
    count: usize,
    during: impl FnOnce(usize) -> anyhow::Result<T>,
) -> anyhow::Result<(usize, T)> {
    let target = env.target(variant, ECHO);
    let (tx, rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let ns = client_ns(env, variant)?;
    std::thread::scope(|scope| {
        let holder = scope.spawn(move || {
            ns.run(move || {
                let (open, failed) = load::idle_connections(target, count, Duration::from_secs(60));
                let _ = tx.send((open.len(), failed));
                let _ = release_rx.recv_timeout(Duration::from_secs(120));
                drop(open);
            })
        });
        let (opened, failed) = rx
            .recv_timeout(Duration::from_secs(90))
            .context("idle connections")?;
        eprintln!(
            "{}: {opened} idle connections ({failed} failed)",
            variant.name()
        );
        let result = if opened == 0 {
            Err(anyhow::anyhow!(
                "{}: no idle connection opened ({failed} failed)",
                variant.name()
            ))
        } else {
            during(opened)
        };
        let _ = release_tx.send(());
        let _ = holder.join();
        Ok((opened, result?))
    })
}
