//! Reading the cost of processes from /proc, and summarizing samples.

use std::time::Duration;

/// CPU time (user + system) of the processes whose command name is `comm` inside
/// the network namespaces of `pids`' owners, summed.
pub(crate) fn cpu_seconds(pids: &[i32]) -> f64 {
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat, in clock ticks
    let ticks = 100.0;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let after_comm = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after_comm.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// Anonymous resident memory in bytes (heap, stacks: what the process allocated),
/// summed over `pids`. File-backed pages (the binary's text, shared and reclaimable,
/// and with debug info much larger than a stripped image's) are left out.
pub(crate) fn rss_bytes(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .sum()
}

/// One mapping of a process, from /proc/<pid>/smaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// `start-end`, which names it while it lives.
    pub(crate) range: String,
    pub(crate) size_kb: u64,
    pub(crate) anonymous_kb: u64,
    /// The file or `[heap]`/`[stack]`; empty for an anonymous mapping.
    pub(crate) name: String,
}

/// The mappings of `pid` that hold anonymous memory.
pub(crate) fn anonymous_mappings(pid: i32) -> Vec<Mapping> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // a header: range perms offset dev inode [name]
            let name = words.nth(4).unwrap_or_default().to_owned();
            mappings.push(Mapping {
                range: first.to_owned(),
                size_kb: 0,
                anonymous_kb: 0,
                name,
            });
        } else if let Some(last) = mappings.last_mut() {
            let kb = || words.clone().next().and_then(|v| v.parse::<u64>().ok());
            match first {
                "Size:" => last.size_kb = kb().unwrap_or(0),
                "Anonymous:" => last.anonymous_kb = kb().unwrap_or(0),
                _ => {}
            }
        }
    }
    mappings.retain(|m| m.anonymous_kb > 0);
    mappings
}

/// Every process named `comm` (as /proc/<pid>/comm says) among `pids`.
pub(crate) fn named(pids: &[i32], comm: &str) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// Percentile of sorted latencies.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_micros(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_micros(99));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(cpu_seconds(&[std::process::id().try_into().unwrap()]) >= 0.0);
        assert!(rss_bytes(&[std::process::id().try_into().unwrap()]) > 0);
    }
}
