//! Replacing a node's daemon as a DaemonSet rolling update with `maxSurge: 1,
//! maxUnavailable: 0` does: the new daemon starts beside the running one, and the
//! old one is stopped (SIGTERM, so it drains) once the new one is ready.

use std::time::{Duration, Instant};

use super::{Mesh, STARTUP};
use crate::error::{HarnessError, Result};
use crate::process::Process;

/// How an upgrade of one node's daemon went.
#[derive(Debug)]
pub struct Upgrade {
    /// From the new daemon's start until it was ready.
    pub new_ready_after: Duration,
    /// From the old daemon's SIGTERM until it exited.
    pub old_drained_after: Duration,
    /// The old daemon's exit status and log.
    pub old_status: String,
    pub old_log: String,
}

impl Mesh {
    /// Starts a new daemon on `node` beside the running one, waits until it is
    /// ready, then SIGTERMs the old one and waits (at most `drain`) for it to exit.
    pub fn upgrade_daemon(&mut self, node: &str, drain: Duration) -> Result<Upgrade> {
        let generation = self.generations.entry(node.to_owned()).or_insert(1);
        *generation += 1;
        let name = format!("{node}-proxy-{generation}");
        // readiness is asked of the new process itself, on a socket of its own, as
        // the kubelet does (`meshward proxy ready`): the TCP port is shared
        let dir = self.cluster.log_dir().to_owned();
        let socket = super::path_str(&dir.join(format!("{name}-ready.sock")));
        let config = dir.join(format!("{name}.yaml"));
        let base = std::fs::read_to_string(self.node_config(node))
            .map_err(HarnessError::io("read the node's proxy.yaml"))?;
        super::write(&config, &format!("{base}\nreadiness_socket: {socket}\n"))?;
        let mut new = Process::spawn(
            self.cluster.node(node)?.netns(),
            &name,
            &super::path_str(&self.bin),
            &["proxy", "run", "-c", &super::path_str(&config)],
            &[("RUST_LOG", self.log.as_str())],
            &dir,
        )?;
        let started = Instant::now();
        while !self.ready_on(&socket) {
            if started.elapsed() > STARTUP || !new.is_running() {
                return Err(HarnessError::Invalid(format!(
                    "the new daemon on {node} never became ready:\n{}",
                    new.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let new_ready_after = started.elapsed();
        let mut old = self
            .daemons
            .insert(node.to_owned(), new)
            .ok_or_else(|| HarnessError::Invalid(format!("no daemon on {node}")))?;
        let (old_status, old_drained_after) = old.terminate(drain);
        Ok(Upgrade {
            new_ready_after,
            old_drained_after,
            old_status,
            old_log: old.log(),
        })
    }

    /// `meshward proxy ready --socket <socket>` exits 0.
    fn ready_on(&self, socket: &str) -> bool {
        std::process::Command::new(&self.bin)
            .args(["proxy", "ready", "--socket", socket])
            .output()
            .is_ok_and(|out| out.status.success())
    }
}
