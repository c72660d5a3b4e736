//! Instructions per request (issue 30 item 5): a regression guard whose figure
//! does not move with this machine's load, as a rate or a latency does. Both
//! meshward daemons are restarted under callgrind with instrumentation off, warmed
//! up, then counted over a fixed number of requests of each kind:
//!
//! - L4: 1 KiB exchanges on one held TCP connection (the echo port, L4 policy);
//! - HTTP/1.1: GETs on one keep-alive connection (L7 policy, XFCC);
//! - HTTP/2: GETs on one connection, one stream at a time.
//!
//! The figure is callgrind's `Ir` (user-space instructions) of both daemons over
//! the requests, less what they spend idle in a window as long (timers, pollers:
//! under callgrind a window lasts tens of seconds), divided by the count. Run alone: under valgrind every other figure crawls.
//! Each window is also dumped (`callgrind.<pid>.<n>` in the output directory, its
//! kind in the file's description) for `callgrind_annotate`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use meshward_integration::exec;

use crate::env::{ECHO, Env, HTTP, Variant};
use crate::{Table, load, record};

const NODES: [&str; 2] = ["node-1", "node-2"];
/// Requests of each kind before counting: pools, caches and allocator warm.
const WARM_UP: usize = 200;
/// Warm-ups tried before giving up. The first exchange after the restart runs
/// code valgrind has not translated yet (a new HBONE connection: its handshake,
/// h2, the policy), which may outlast the load's 5 s read timeout: the guard
/// once failed its warm-up with "0 of 200 exchanges" and passed on the next run.
const WARM_UP_TRIES: usize = 3;
/// One kind's requests must finish within this (callgrind runs ~50x slower).
const DEADLINE: Duration = Duration::from_secs(600);

/// Restarts the daemons under callgrind (its files in `dir`) and records each
/// kind's instructions per request over `requests` requests.
pub(crate) fn measure(
    env: &mut Env,
    dir: &Path,
    requests: usize,
    table: &mut Table,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let out = format!("--callgrind-out-file={}/callgrind.%p", dir.display());
    for node in NODES {
        env.mesh.stop_daemon(node);
        env.mesh
            .start_daemon_under(
                node,
                &["valgrind", "--tool=callgrind", "--instr-atstart=no", &out],
            )
            .with_context(|| format!("{node}'s daemon under callgrind"))?;
    }
    let pids = env.proxy_pids(Variant::Meshward);
    ensure!(pids.len() == NODES.len(), "a daemon has no process");
    for (figure, kind) in [
        (
            "instructions per 1 KiB RR, held connection (L4), both daemons",
            Kind::L4,
        ),
        (
            "instructions per HTTP/1.1 GET, L7 policy + XFCC, both daemons",
            Kind::Http1,
        ),
        (
            "instructions per HTTP/2 GET, L7 policy + XFCC, both daemons",
            Kind::Http2,
        ),
    ] {
        let mut warmed = kind.send(env, WARM_UP);
        for _ in 1..WARM_UP_TRIES {
            if warmed.is_ok() {
                break;
            }
            warmed = kind.send(env, WARM_UP);
        }
        warmed.with_context(|| format!("warming up; the daemons' logs:\n{}", env.log_tails(20)))?;
        control(&pids, &["--instr=on"])?;
        control(&pids, &["--zero"])?;
        let started = Instant::now();
        kind.send(env, requests)?;
        let window = started.elapsed();
        let total = counted(&pids)?;
        // a profile of the window per daemon, for callgrind_annotate
        control(&pids, &[&format!("--dump={}", kind.name())])?;
        // what the daemons do on their own (timers, pollers) in as long a window,
        // taken off: the slower callgrind runs, the more of it a window holds
        control(&pids, &["--zero"])?;
        std::thread::sleep(window);
        let idle = counted(&pids)?;
        control(&pids, &["--instr=off"])?;
        #[allow(clippy::cast_precision_loss)]
        let per = total.saturating_sub(idle) as f64 / requests as f64;
        eprintln!("{figure}: {per:.0} ({total} over {requests} in {window:.1?}, less {idle} idle)");
        record(table, figure, Variant::Meshward, per);
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    L4,
    Http1,
    Http2,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::L4 => "l4",
            Self::Http1 => "http1",
            Self::Http2 => "http2",
        }
    }

    /// Sends `n` requests from the client pod; fails unless every one succeeds.
    fn send(self, env: &Env, n: usize) -> anyhow::Result<()> {
        let ns = env.mesh.cluster.pod("client")?.netns();
        if let Self::L4 = self {
            let target = env.target(Variant::Meshward, ECHO);
            let done = ns.run(move || load::held_connection(target, DEADLINE, n))?;
            ensure!(
                done.errors == 0 && done.sorted.len() == n,
                "L4: {} of {n} exchanges",
                done.sorted.len()
            );
            return Ok(());
        }
        let url = format!("http://{}/bench/x", env.target(Variant::Meshward, HTTP));
        let n_text = n.to_string();
        let mut args = vec!["-n", n_text.as_str(), "-c", "1", "-m", "1", url.as_str()];
        if let Self::Http1 = self {
            args.insert(0, "--h1");
        }
        let output = exec(ns, "h2load", &args, DEADLINE)?;
        // "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx"
        let ok = format!("status codes: {n} 2xx");
        if !output.stdout.contains(&ok) {
            bail!(
                "h2load {}: not {ok}:\n{}{}",
                args.join(" "),
                output.stdout,
                output.stderr
            );
        }
        Ok(())
    }
}

/// The instructions of every daemon since they were zeroed.
fn counted(pids: &[i32]) -> anyhow::Result<u64> {
    pids.iter().map(|pid| instructions(*pid)).sum()
}

/// `callgrind_control ARGS PID` for each daemon.
fn control(pids: &[i32], args: &[&str]) -> anyhow::Result<()> {
    for pid in pids {
        let status = Command::new("callgrind_control")
            .args(args)
            .arg(pid.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .context("callgrind_control (apt-get install valgrind)")?;
        ensure!(
            status.success(),
            "callgrind_control {} {pid}: {status}",
            args.join(" ")
        );
    }
    Ok(())
}

/// The `Ir` callgrind counted in `pid` since it was zeroed, all threads.
fn instructions(pid: i32) -> anyhow::Result<u64> {
    let output = Command::new("callgrind_control")
        .args(["-e", "Ir"])
        .arg(pid.to_string())
        .output()
        .context("callgrind_control -e Ir")?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_totals(&text)
        .with_context(|| format!("no totals from callgrind_control -e Ir {pid}:\n{text}"))
}

/// Sums the per-thread lines of `callgrind_control -e Ir`:
/// `  Totals:  Ir` then `   Th 1  13,749,812`, one line per thread.
fn parse_totals(text: &str) -> Option<u64> {
    let totals: Vec<u64> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Totals:"))
        .filter(|l| l.trim_start().starts_with("Th "))
        .filter_map(|l| l.split_whitespace().last()?.replace(',', "").parse().ok())
        .collect();
    (!totals.is_empty()).then(|| totals.iter().sum())
}

#[cfg(test)]
mod tests {
    #[test]
    fn totals_are_summed_over_threads() {
        let two = "PID 7: meshward proxy run\n\n  Totals:        Ir \n   Th 1  13,749,812 \n   Th 2  250 \n\n";
        assert_eq!(super::parse_totals(two), Some(13_750_062));
        let off = "PID 7: x\n  No information available as instrumentation is switched off.\n";
        assert_eq!(super::parse_totals(off), None);
    }
}
