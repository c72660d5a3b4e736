//! `--perf DIR`: a `perf record` of the meshward daemons while one figure runs,
//! so every budget that is missed can be explained by where the CPU went
//! (`perf report -i DIR/<figure>.data`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `perf record`; `finish` stops it and waits for the data file.
pub(crate) struct Recording {
    child: Child,
    output: PathBuf,
}

impl Recording {
    /// Samples `pids` (with DWARF call graphs: the release binary keeps its line
    /// tables) into `dir/<name>.data`.
    pub(crate) fn start(dir: &Path, name: &str, pids: &[i32]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let output = dir.join(format!("{name}.data"));
        let pids: Vec<String> = pids.iter().map(ToString::to_string).collect();
        let child = Command::new("perf")
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
            .arg(&output)
            .args(["-p", &pids.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record (is linux-perf installed?)")?;
        Ok(Self { child, output })
    }

    /// Stops the recording (SIGINT, as perf expects) and waits, bounded, for it
    /// to write its file.
    pub(crate) fn finish(mut self) -> anyhow::Result<PathBuf> {
        let pid = i32::try_from(self.child.id()).context("perf's pid")?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        for _ in 0..600 {
            if self.child.try_wait()?.is_some() {
                return Ok(self.output.clone());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        anyhow::bail!("perf record did not stop within 60 s")
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
