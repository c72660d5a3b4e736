//! Memory that comes back (issue 30 item 4): each proxy's anonymous RSS per node
//! fresh (before any load), at its peak (sampled through every figure), and once
//! every pooled connection has passed its idle timeout and a minute more. Both
//! proxies get the same idle timeout: meshward's `limits.pool_idle_timeout`,
//! ztunnel's `POOL_UNUSED_RELEASE_TIMEOUT`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::env::{Env, Variant};
use crate::{Table, measure, record};

/// The pools' idle timeout in this benchmark (meshward's default is 5 min).
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the timeout the last figure is read.
const AFTER_TIMEOUT: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

type PerVariant = BTreeMap<Variant, u64>;

/// The fresh figure, and a thread keeping each variant's peak.
pub(crate) struct MemoryWatch {
    pids: Vec<(Variant, Vec<i32>)>,
    fresh: PerVariant,
    /// meshward's anonymous mappings, fresh (pid, mapping).
    mappings_fresh: Vec<(i32, measure::Mapping)>,
    /// meshward's allocator (allocated, resident, metadata) per node, fresh.
    allocator_fresh: Option<(f64, f64, f64)>,
    peak: Arc<Mutex<PerVariant>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl MemoryWatch {
    /// Reads the fresh figure of each variant's proxies (`pids`) and starts
    /// sampling their peak.
    pub(crate) fn start(env: &Env, pids: Vec<(Variant, Vec<i32>)>) -> Self {
        let fresh = rss(&pids);
        let mappings_fresh = meshward_mappings(&pids);
        let allocator_fresh = env.meshward_allocator();
        let peak = Arc::new(Mutex::new(fresh.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (pids, peak, stop) = (pids.clone(), peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = rss(&pids);
                    if let Ok(mut peak) = peak.lock() {
                        for (variant, bytes) in now {
                            let kept = peak.entry(variant).or_default();
                            *kept = (*kept).max(bytes);
                        }
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Self {
            pids,
            fresh,
            mappings_fresh,
            allocator_fresh,
            peak,
            stop,
            sampler: Some(sampler),
        }
    }

    /// Waits out the idle timeout and a minute, then records fresh, peak and
    /// settled per node; for meshward also what its allocator holds, fresh and
    /// settled (live objects against the pages kept).
    pub(crate) fn finish(mut self, env: &Env, table: &mut Table) {
        let wait = POOL_IDLE_TIMEOUT + AFTER_TIMEOUT;
        eprintln!("memory: waiting {wait:?} (the pools' idle timeout and a minute)");
        std::thread::sleep(wait);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let settled = rss(&self.pids);
        self.report_grown_mappings();
        if let (Some(fresh), Some(settled)) = (self.allocator_fresh, env.meshward_allocator()) {
            for (name, bytes) in [
                ("allocator per node: allocated, fresh, MB", fresh.0),
                ("allocator per node: allocated, settled, MB", settled.0),
                ("allocator per node: resident, fresh, MB", fresh.1),
                ("allocator per node: resident, settled, MB", settled.1),
                ("allocator per node: metadata, fresh, MB", fresh.2),
                ("allocator per node: metadata, settled, MB", settled.2),
            ] {
                record(table, name, Variant::Meshward, bytes / 1e6);
            }
        }
        let peak = self.peak.lock().map(|p| p.clone()).unwrap_or_default();
        for (name, figures) in [
            ("RSS (anonymous) per node: fresh, MB", &self.fresh),
            ("RSS (anonymous) per node: peak, MB", &peak),
            (
                "RSS (anonymous) per node: 60 s after pool idle timeout, MB",
                &settled,
            ),
        ] {
            for (variant, bytes) in figures {
                #[allow(clippy::cast_precision_loss)]
                record(table, name, *variant, *bytes as f64 / 2.0 / 1e6);
            }
        }
    }
}

impl MemoryWatch {
    /// Where meshward's settled memory is: the anonymous mappings that grew most
    /// since fresh (an unnamed one of 2 MiB and a page is a thread's stack, of
    /// 64 MiB glibc's arena for a thread; jemalloc's are the rest).
    fn report_grown_mappings(&self) {
        let now = meshward_mappings(&self.pids);
        let mut grown: Vec<(u64, &(i32, measure::Mapping))> = now
            .iter()
            .map(|entry @ (pid, m)| {
                let before = self
                    .mappings_fresh
                    .iter()
                    .find(|(p, f)| p == pid && f.range == m.range)
                    .map_or(0, |(_, f)| f.anonymous_kb);
                (m.anonymous_kb.saturating_sub(before), entry)
            })
            .filter(|(grown, _)| *grown > 0)
            .collect();
        grown.sort_by_key(|(kb, _)| std::cmp::Reverse(*kb));
        for (kb, (pid, m)) in grown.iter().take(12) {
            eprintln!(
                "memory: meshward {pid}: +{kb} KB anonymous in {} ({} KB mapped) {}",
                m.range, m.size_kb, m.name
            );
        }
    }
}

/// meshward's processes' anonymous mappings.
fn meshward_mappings(pids: &[(Variant, Vec<i32>)]) -> Vec<(i32, measure::Mapping)> {
    pids.iter()
        .filter(|(variant, _)| *variant == Variant::Meshward)
        .flat_map(|(_, pids)| pids.iter())
        .flat_map(|pid| {
            measure::anonymous_mappings(*pid)
                .into_iter()
                .map(|m| (*pid, m))
        })
        .collect()
}

fn rss(pids: &[(Variant, Vec<i32>)]) -> PerVariant {
    pids.iter()
        .map(|(variant, pids)| (*variant, measure::rss_bytes(pids)))
        .collect()
}
