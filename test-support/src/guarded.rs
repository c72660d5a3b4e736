//! Real server processes for tests (etcd, kube-apiserver, spire-server, ...),
//! stopped whatever becomes of the test process.
//!
//! A test's servers run in a process group of their own, watched by a guardian (a
//! shell reading a pipe from the test process): when the test process ends,
//! however it ends (a static is never dropped; a killed process runs no code), the
//! pipe closes and the guardian kills the group and removes the test's directory.
//! A directory left anyway (the guardian killed too) is removed by the next start
//! ([`remove_stale_dirs`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::Duration;

/// Waits for a child's output; `None` (after killing it) when it outlasts `timeout`.
pub(crate) fn wait_output(mut child: Child, timeout: Duration) -> Option<std::io::Result<Output>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let err_thread = std::thread::spawn(move || {
            let mut err = Vec::new();
            if let Some(mut s) = stderr {
                let _ = s.read_to_end(&mut err);
            }
            err
        });
        let mut out = Vec::new();
        if let Some(mut s) = stdout {
            let _ = s.read_to_end(&mut out);
        }
        let err = err_thread.join().unwrap_or_default();
        let _ = tx.send((out, err));
    });
    let Ok((stdout, stderr)) = rx.recv_timeout(timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = reader.join();
        return None;
    };
    let _ = reader.join();
    Some(child.wait().map(|status| Output {
        status,
        stdout,
        stderr,
    }))
}

/// Starts a server process in process group `group` (0: a new one, its own), so
/// a terminal's Ctrl-C does not reach it before the guardian does its work; its
/// stdout and stderr go to `log`.
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    log: &Path,
    group: u32,
) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(i32::try_from(group).unwrap_or(0))
        .spawn()
}

/// A shell that waits for its stdin to close (when the test process ends, however
/// it ends, or the owner drops the pipe), then kills the process group `group`
/// and removes `dir`.
pub(crate) fn spawn_guardian(group: u32, dir: &Path) -> std::io::Result<ChildStdin> {
    let mut guardian = Command::new("sh")
        .args([
            "-c",
            "trap '' INT TERM HUP; cat >/dev/null; kill -KILL \"-$1\" 2>/dev/null; sleep 0.2; rm -rf -- \"$2\"",
            "meshward-test-guardian",
            &group.to_string(),
        ])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    guardian
        .stdin
        .take()
        .ok_or_else(|| std::io::ErrorKind::BrokenPipe.into())
}

/// A fresh directory `<tmp>/<prefix><pid>-<n>`.
pub(crate) fn new_dir(prefix: &str) -> std::io::Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes the directories of [`new_dir`]`(prefix)` whose test process is gone.
pub(crate) fn remove_stale_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The first of `children` that has exited (a server that died while others
/// waited for it), with its exit status.
pub(crate) fn first_exited<'a>(
    children: &mut [(&'a str, &mut Option<std::process::Child>)],
) -> Option<(&'a str, String)> {
    children.iter_mut().find_map(|(name, child)| {
        match child.as_mut().map(std::process::Child::try_wait) {
            Some(Ok(Some(status))) => Some((*name, status.to_string())),
            _ => None,
        }
    })
}
