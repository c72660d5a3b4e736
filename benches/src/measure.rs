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

/// What the scheduler counted for every thread of `pids` (what `perf stat -e
/// task-clock,context-switches` counts, read without `perf`): nanoseconds on a
/// CPU (`schedstat`, exact where `stat`'s ticks are 10 ms), those ticks in user
/// space and in the kernel, and context switches, voluntary (a wait: a wake-up
/// follows) and not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Scheduled {
    pub(crate) cpu_ns: u64,
    pub(crate) user_ticks: u64,
    pub(crate) kernel_ticks: u64,
    pub(crate) switches: u64,
}

/// [`Scheduled`] counting from a start, for the processes it names.
pub(crate) struct Counting {
    pids: Vec<i32>,
    start: Scheduled,
}

impl Counting {
    pub(crate) fn start(pids: Vec<i32>) -> Self {
        let start = Scheduled::of(&pids);
        Self { pids, start }
    }

    /// What was counted since the start, per `count` events.
    pub(crate) fn per(&self, count: usize) -> PerEvent {
        Scheduled::of(&self.pids).per(self.start, count)
    }
}

impl Scheduled {
    fn of(pids: &[i32]) -> Self {
        let mut total = Self::default();
        for pid in pids {
            let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for thread in threads.flatten() {
                let dir = thread.path();
                let read = |name| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
                total.cpu_ns += read("schedstat")
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
                // utime and stime: fields 14 and 15, 12 and 13 after the name
                let stat = read("stat");
                let times = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                let mut times = times.split_whitespace().skip(11);
                let mut tick = || times.next().and_then(|t| t.parse::<u64>().ok());
                total.user_ticks += tick().unwrap_or(0);
                total.kernel_ticks += tick().unwrap_or(0);
                total.switches += read("status")
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        total
    }

    /// What was counted since `before`, per `count` events (threads that ended
    /// in between are not counted).
    fn per(self, before: Self, count: usize) -> PerEvent {
        #[allow(clippy::cast_precision_loss)]
        let n = count.max(1) as f64;
        #[allow(clippy::cast_precision_loss)]
        let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / n;
        let user = self.user_ticks.saturating_sub(before.user_ticks);
        let kernel = self.kernel_ticks.saturating_sub(before.kernel_ticks);
        #[allow(clippy::cast_precision_loss)]
        let user_share = user as f64 / (user + kernel).max(1) as f64;
        PerEvent {
            cpu_us: per(self.cpu_ns, before.cpu_ns) / 1e3,
            user_share,
            switches: per(self.switches, before.switches),
        }
    }
}

/// [`Scheduled`]'s counts per event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PerEvent {
    pub(crate) cpu_us: f64,
    /// The share of that CPU time spent in user space, 0 to 1.
    pub(crate) user_share: f64,
    pub(crate) switches: f64,
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
        let counting = Counting::start(vec![std::process::id().try_into().unwrap()]);
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        std::thread::sleep(Duration::from_millis(5));
        let counted = counting.per(1);
        // at least 1 ms of the 20 ms spun, however loaded the machine, and
        // spinning is user time
        assert!(
            counted.cpu_us >= 1_000.0,
            "{counted:?} after spinning 20 ms"
        );
        assert!(counted.user_share > 0.5, "{counted:?} after spinning");
        assert!(
            counted.switches >= 1.0,
            "a sleep is a context switch: {counted:?}"
        );
    }
}
