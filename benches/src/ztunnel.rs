//! The ztunnel peer (`../shared/peers/ztunnel/`): a pair of Istio ztunnels run as
//! Istio ambient runs them, on a topology of the same shape as meshward's, with
//! meshward's echoserver as the apps, so the same load runs through both. Optional:
//! absent binary or script, the variant is skipped with a line saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The address block of the ztunnel topology (10.N.0.0/16; meshward's clusters
/// use 10.16-245).
const BLOCK: u8 = 250;
/// The client and server pods of the ztunnel topology.
pub(crate) const CLIENT_NS: &str = "zt-client";
/// Every namespace `run-pair.sh` makes.
pub(crate) const NAMESPACES: [&str; 5] = [
    CLIENT_NS,
    "zt-server",
    "zt-node-1",
    "zt-node-2",
    "zt-underlay",
];
const SERVER_IP: [u8; 4] = [10, BLOCK, 2, 2];

pub(crate) struct ZtunnelPair {
    serve: Child,
    run_dir: PathBuf,
}

impl Drop for ZtunnelPair {
    fn drop(&mut self) {
        // run-pair.sh stops what it started on SIGTERM (its documented way)
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.serve.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.serve.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

impl ZtunnelPair {
    /// Where the peer lives: `MESHWARD_ZTUNNEL_DIR`, else `../shared/peers/ztunnel`
    /// beside the repository.
    pub(crate) fn dir() -> PathBuf {
        std::env::var_os("MESHWARD_ZTUNNEL_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/ztunnel"),
            PathBuf::from,
        )
    }

    /// Why the peer cannot run here, if it cannot.
    pub(crate) fn unavailable() -> Option<String> {
        let dir = Self::dir();
        ["ztunnel", "run-pair.sh"]
            .iter()
            .find(|f| !dir.join(f).is_file())
            .map(|f| format!("no {} (set MESHWARD_ZTUNNEL_DIR)", dir.join(f).display()))
    }

    /// Starts the pair with `echo_bin`'s echoserver as the apps (one worker thread
    /// per ztunnel, as meshward's daemons get, and the same pool idle timeout),
    /// and waits until it is ready.
    pub(crate) fn start(
        echo_bin: &Path,
        seconds: u64,
        pool_idle_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let run_dir = std::env::temp_dir().join("meshward-bench-ztunnel");
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        let log = std::fs::File::create(run_dir.join("run-pair.log"))?;
        let serve = Command::new("bash")
            .arg(Self::dir().join("run-pair.sh"))
            .args(["serve", &seconds.to_string()])
            .env("ECHO_BIN", echo_bin)
            .env("RUN_DIR", &run_dir)
            .env("ZT_BLOCK", BLOCK.to_string())
            .env("ZTUNNEL_WORKER_THREADS", "1")
            // one access line per connection costs ztunnel CPU as meshward's
            // `info` level costs meshward none per request: keep both at info
            .env("ZT_LOG", "info")
            .env(
                "ZT_EXTRA_ENV",
                format!(
                    "POOL_UNUSED_RELEASE_TIMEOUT={}s",
                    pool_idle_timeout.as_secs()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting run-pair.sh")?;
        let mut pair = Self { serve, run_dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !pair.run_dir.join("ready").exists() {
            if matches!(pair.serve.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(pair.run_dir.join("run-pair.log")).unwrap_or_default();
                anyhow::bail!("the ztunnel pair did not come up:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(pair)
    }

    pub(crate) fn server_ip() -> std::net::IpAddr {
        std::net::IpAddr::from(SERVER_IP)
    }

    /// The two ztunnel processes.
    pub(crate) fn pids(&self) -> Vec<i32> {
        (1..=2)
            .filter_map(|n| {
                let file = self.run_dir.join(format!("pids/zt-ztunnel-node-{n}.pid"));
                std::fs::read_to_string(file)
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }
}
