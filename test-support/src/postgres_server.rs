//! A PostgreSQL server of one test's own, for the tests that stop and start the
//! datastore under a running issuer (the shared server of `postgres.rs` serves
//! every other test, and must not go away under them).
//!
//! Debian's PostgreSQL binaries (`/usr/lib/postgresql/<version>/bin`, installed by
//! `scripts/test.sh`), run as the `postgres` user (the server refuses root), on
//! 127.0.0.1 at a free port, with a data directory in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::free_port;

/// Stopped (fast) and its data removed on drop.
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PostgresServer {
    /// Initialises and starts a server (the caller runs as root); `None` (after
    /// saying why) where this machine has no PostgreSQL, a failure in CI.
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = binaries() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{test}: PostgreSQL is not installed; CI must run this test (scripts/test.sh installs it)"
                );
            }
            eprintln!("SKIPPED {test}: PostgreSQL is not installed (scripts/test.sh installs it)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("meshward-pg-")
            .tempdir()
            .expect("a temporary directory");
        run("chown", &["-R", "postgres:postgres", &path_str(dir.path())]);
        let server = Self {
            bin,
            port: free_port(),
            dir,
        };
        server.as_postgres(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "meshward",
                "--auth=trust",
                "--no-sync",
            ],
        );
        server.resume();
        Some(server)
    }

    /// `postgres://meshward@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://meshward@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`-m fast`: sessions are cut, as on a crash of
    /// the database host or a failover).
    pub fn pause(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts it (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            path_str(self.dir.path())
        );
        let log = path_str(&self.dir.path().join("server.log"));
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        path_str(&self.dir.path().join("data"))
    }

    fn as_postgres(&self, program: &str, args: &[&str]) {
        let program = path_str(&self.bin.join(program));
        let mut all = vec!["-u", "postgres", "--", program.as_str()];
        all.extend_from_slice(args);
        run("runuser", &all);
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// The newest installed version's `bin` directory.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}
