//! The real issuer process for tests: a config in a temp dir, loopback ports,
//! readiness wait, the admin CLI, restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use meshward_tls::TrustBundles;

use crate::daemon::{Daemon, free_port};

pub struct IssuerProcess {
    pub trust_domain: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub agent: SocketAddr,
    pub health: SocketAddr,
    binary: PathBuf,
    daemon: Option<Daemon>,
}

/// A SQLite datastore in `dir`, as most issuer tests use.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/i.sqlite3", dir.display())
}

impl IssuerProcess {
    /// Starts `binary issuer run` for trust domain `trust_domain`, waits for `/ready`.
    pub fn new(binary: &Path, trust_domain: &str, dir: &Path, datastore_url: &str) -> Self {
        Self::with_extra(binary, trust_domain, dir, datastore_url, "")
    }

    /// `extra`: more issuer.yaml lines.
    pub fn with_extra(
        binary: &Path,
        trust_domain: &str,
        dir: &Path,
        datastore_url: &str,
        extra: &str,
    ) -> Self {
        let (agent, health) = (
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            SocketAddr::from(([127, 0, 0, 1], free_port())),
        );
        let config = dir.join("issuer.yaml");
        std::fs::write(
            &config,
            format!(
                "trust_domain: {trust_domain}\ndata_dir: {}\ndatastore_url: {datastore_url}\nagent_listen: {agent}\nhealth_listen: {health}\nadmin_socket: {}\n{extra}",
                dir.join("data").display(),
                dir.join("admin.sock").display()
            ),
        )
        .expect("test setup");
        let mut issuer = Self {
            trust_domain: trust_domain.to_owned(),
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            config,
            agent,
            health,
            daemon: None,
        };
        issuer.start();
        issuer
    }

    pub fn start(&mut self) {
        let mut daemon = Daemon::spawn(
            &self.binary,
            &[
                "issuer",
                "run",
                "-c",
                self.config.to_str().expect("test setup"),
            ],
            &self.dir.join("issuer.log"),
        );
        daemon.wait_http_ok(self.health, "/ready", Duration::from_secs(30));
        self.daemon = Some(daemon);
    }

    /// SIGTERM (a clean exit is asserted), then start again.
    pub fn restart(&mut self) {
        let status = self.daemon.take().expect("test setup").stop();
        assert!(
            status.contains("exit status: 0"),
            "a clean exit on SIGTERM, got {status}"
        );
        self.start();
    }

    /// Stops the process (SIGTERM); `start` brings it back.
    /// The running issuer's log (empty when stopped).
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
        }
    }

    /// `meshward issuer ARGS... -socketPath S`: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.dir.join("admin.sock");
        let out = Command::new(&self.binary)
            .arg("issuer")
            .args(args)
            .args(["-socketPath", socket.to_str().expect("test setup")])
            .output()
            .expect("test setup");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend(["-output", "json"]);
        let (code, stdout, stderr) = self.cli(&full);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        serde_json::from_str(&stdout).expect("test setup")
    }

    /// The trust bundle PEM, as an operator copies it to agents (`bundle show`).
    pub fn bundle_pem(&self) -> String {
        let (code, pem, stderr) = self.cli(&["bundle", "show"]);
        assert_eq!(code, 0, "{stderr}");
        pem
    }

    /// The trust bundle as verifier input.
    pub fn bundle(&self) -> Arc<TrustBundles> {
        let certs = meshward_spiffe::pem::certificates(&self.bundle_pem()).expect("PEM");
        let td = meshward_spiffe::TrustDomain::parse(&self.trust_domain).expect("trust domain");
        let bundles = TrustBundles::new();
        bundles.set(&td, &certs).expect("a valid bundle");
        bundles
    }
}
