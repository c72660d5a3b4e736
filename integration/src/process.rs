//! Processes inside namespaces: one-shot commands with their output, and
//! long-running ones that are stopped by PID when their handle drops.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{HarnessError, Result};
use crate::netns::Netns;

/// A long-running process started in a namespace. Its stdout and stderr go to a
/// log file; dropping the handle sends SIGTERM, then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

/// How long a stopped process may take to exit (e.g. to remove its capture rules).
const GRACE: Duration = Duration::from_secs(5);

impl Process {
    /// Starts `program args...` inside `ns`, logging to `log_dir/<name>.log`.
    pub fn spawn(
        ns: &Netns,
        name: &str,
        program: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out =
            File::create(&log).map_err(HarnessError::io(format!("create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io("clone log file"))?;
        let mut command: Command = ns.command(program, args);
        command
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = command.spawn().map_err(HarnessError::io(format!(
            "spawn {program} in {}",
            ns.name()
        )))?;
        // `ip netns exec` enters the namespace a moment after fork: wait for it, so
        // whoever cleans the namespace up finds the process there (bounded; a child
        // that already exited is left to its log)
        #[allow(clippy::cast_possible_wrap)]
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ns.contains(pid) && Instant::now() < deadline && matches!(child.try_wait(), Ok(None))
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> i32 {
        // `ip netns exec` execs the program, so the child PID is the program's own.
        self.child.id() as i32
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL at once, as a crashed machine or an OOM kill would end it; returns
    /// the exit status text.
    pub fn kill(&mut self) -> String {
        if self.is_running() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        }
        self.child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    /// SIGTERM, then waits up to `within` for the exit (SIGKILL after that); the
    /// exit status text and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (String, Duration) {
        let started = Instant::now();
        let pid = Pid::from_raw(self.pid());
        if self.is_running() {
            let _ = kill(pid, Signal::SIGTERM);
            while started.elapsed() < within && self.is_running() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let status = self.kill();
        (status, started.elapsed())
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Returns the exit status text.
    pub fn stop(&mut self) -> String {
        let pid = Pid::from_raw(self.pid());
        if self.is_running() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline && self.is_running() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.is_running() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        self.child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something accepts TCP connections on `addr` inside `ns`.
pub fn wait_for_port(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let connected = ns.run(move || {
        let deadline = Instant::now() + timeout;
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    })?;
    if connected {
        Ok(())
    } else {
        Err(HarnessError::Timeout {
            what: format!("{addr} to listen in {}", ns.name()),
            after: timeout,
        })
    }
}

/// The output of a one-shot command.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command inside `ns` to completion, whatever its exit status, bounded by `timeout`.
pub fn exec(ns: &Netns, program: &str, args: &[&str], timeout: Duration) -> Result<CommandOutput> {
    let mut child = ns
        .command(program, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(HarnessError::io(format!(
            "spawn {program} in {}",
            ns.name()
        )))?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(HarnessError::io("wait"))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Timeout {
                    what: format!("{program} {args:?} in {}", ns.name()),
                    after: timeout,
                });
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let collect = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(CommandOutput {
        code: status.code(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_in_background(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
