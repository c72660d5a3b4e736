//! Network namespaces: create, delete, run commands and closures inside them.
//!
//! Namespaces are named (`ip netns add`), so `ip netns exec NAME` and the cleanup
//! command can find them. Nothing is ever added to the root namespace: veth pairs
//! are created with both ends placed directly in their namespaces.

use std::process::{Command, Output, Stdio};

use crate::error::{HarnessError, Result};

const NETNS_DIR: &str = "/var/run/netns";

/// A named network namespace: one this harness created, deleted on drop, or one
/// that exists already ([`Netns::existing`]), left as it is.
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Creates the namespace with `lo` up.
    pub fn create(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Takes ownership of an existing namespace (for cleanup).
    pub(crate) fn adopt(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: true,
        }
    }

    /// A namespace something else made (a peer's topology): commands and closures
    /// run in it; dropping this leaves it alone.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.command("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .run()?;
        Ok(())
    }

    /// A command that will run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs `f` on a thread that has entered the namespace, for socket work from the
    /// test itself (connect, wait for a port). The calling thread is untouched.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        run_in(&self.name, f)
    }

    /// Whether `pid` has entered this namespace (`ip netns exec` needs a moment
    /// between fork and exec).
    pub fn contains(&self, pid: i32) -> bool {
        use std::os::unix::fs::MetadataExt;
        let ino = |path: String| std::fs::metadata(path).map(|m| m.ino()).ok();
        let ours = ino(format!("{NETNS_DIR}/{}", self.name));
        ours.is_some() && ours == ino(format!("/proc/{pid}/ns/net"))
    }

    /// PIDs of the processes whose network namespace this is.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        kill_all(&self.pids());
        // Deleting the namespace removes its interfaces, and with them the veth peers.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub trait RunExt {
    fn run(&mut self) -> Result<Output>;
}

impl RunExt for Command {
    fn run(&mut self) -> Result<Output> {
        let description = format!("{self:?}");
        let output = self
            .stdin(Stdio::null())
            .output()
            .map_err(HarnessError::io(format!("spawn {description}")))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(HarnessError::Command {
                command: description,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

/// Runs `f` on a thread that has entered the named namespace.
fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("{NETNS_DIR}/{name}");
    let name = name.to_owned();
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path).map_err(HarnessError::io(format!("open {path}")))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| HarnessError::Invalid(format!("setns {path}: {e}")))?;
        Ok(f())
    })
    .join()
    .map_err(|_| HarnessError::Invalid(format!("a closure in namespace {name} panicked")))?
}

/// `ip ARGS...`, returning stdout.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).run()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every named network namespace on the machine.
pub fn list() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn pids_in(name: &str) -> Vec<i32> {
    ip(&["netns", "pids", name])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL, then wait (bounded) until each process is gone, so a namespace is
/// deleted only after everything in it stopped.
pub(crate) fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|&pid| is_running(pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Alive and not a zombie (a zombie has exited; only its parent's wait is missing).
pub fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        // the state follows the parenthesised command name, which may hold spaces
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(|c| c != 'Z'))
        })
        .unwrap_or(false)
}
