//! One cluster's issuer: `meshward issuer run` on its own underlay host, with its
//! admin socket, its bundle endpoint (https_spiffe, port 8443) and the directory
//! its cluster's daemons read policies from.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::error::{HarnessError, Result};
use crate::process::Process;

/// How long an issuer may take to become healthy.
const STARTUP: Duration = Duration::from_secs(60);
/// The bundle endpoint's port on the issuer's host.
pub(super) const BUNDLE_ENDPOINT_PORT: u16 = 8443;

#[derive(Debug)]
pub(super) struct ClusterIssuer {
    pub(super) trust_domain: String,
    pub(super) ip: Ipv4Addr,
    /// `issuer`, `issuer-2`, ...: the host's name and the prefix of its files.
    name: String,
    process: Process,
    admin_socket: PathBuf,
    /// Where the cluster's daemons read policies (hot reloaded).
    pub(super) policy_dir: PathBuf,
    /// The cluster's trust bundle as the daemons bootstrap with it.
    pub(super) bundle_file: PathBuf,
}

/// What an issuer runs with beyond its trust domain.
pub(super) struct IssuerSettings<'a> {
    pub(super) extra_yaml: &'a str,
    pub(super) refresh_hint_seconds: u32,
}

impl ClusterIssuer {
    /// Starts the issuer of cluster number `index` (0: the first) on a new host,
    /// and waits until it is healthy.
    pub(super) fn start(
        cluster: &mut Cluster,
        bin: &Path,
        index: usize,
        trust_domain: &str,
        settings: &IssuerSettings<'_>,
    ) -> Result<Self> {
        let (name, policies) = match index {
            0 => ("issuer".to_owned(), "policies".to_owned()),
            n => (format!("issuer-{}", n + 1), format!("policies-{}", n + 1)),
        };
        let ip = cluster.add_host(&name)?.ip();
        let dir = cluster.log_dir().to_owned();
        let policy_dir = dir.join(policies);
        std::fs::create_dir_all(&policy_dir)
            .map_err(HarnessError::io(format!("create {}", policy_dir.display())))?;
        let admin_socket = dir.join(format!("{name}.sock"));
        let config = dir.join(format!("{name}.yaml"));
        write(
            &config,
            &format!(
                "trust_domain: {trust_domain}\ndata_dir: {}\nagent_listen: {ip}:8081\nhealth_listen: 127.0.0.1:8080\nadmin_socket: {}\n\
                 bundle_endpoint:\n  listen: {ip}:{BUNDLE_ENDPOINT_PORT}\n  profile: https_spiffe\n  refresh_hint: {}s\n{}",
                dir.join(format!("{name}-data")).display(),
                admin_socket.display(),
                settings.refresh_hint_seconds,
                settings.extra_yaml,
            ),
        )?;
        let process = Process::spawn(
            cluster.host(&name)?.netns(),
            &name,
            &path_str(bin),
            &["issuer", "run", "-c", &path_str(&config)],
            &[],
            &dir,
        )?;
        let mut issuer = Self {
            trust_domain: trust_domain.to_owned(),
            ip,
            bundle_file: dir.join(format!("{name}-bundle.pem")),
            name,
            process,
            admin_socket,
            policy_dir,
        };
        issuer.wait_healthy(bin)?;
        write(&issuer.bundle_file, &issuer.cli(bin, &["bundle", "show"])?)?;
        Ok(issuer)
    }

    /// `meshward issuer <args> -socketPath <admin>`: stdout, or the error.
    pub(super) fn cli(&self, bin: &Path, args: &[&str]) -> Result<String> {
        let socket = path_str(&self.admin_socket);
        let out = std::process::Command::new(bin)
            .arg("issuer")
            .args(args)
            .args(["-socketPath", &socket])
            .output()
            .map_err(HarnessError::io("run meshward issuer"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HarnessError::Command {
                command: format!("meshward issuer {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    pub(super) fn log(&self) -> String {
        self.process.log()
    }

    /// The issuer's data directory (its CAs under `ca/`).
    pub(super) fn data_dir(&self, log_dir: &Path) -> PathBuf {
        log_dir.join(format!("{}-data", self.name))
    }

    /// `https://<ip>:8443`: where the other clusters fetch this one's bundle.
    pub(super) fn bundle_endpoint_url(&self) -> String {
        format!("https://{}:{BUNDLE_ENDPOINT_PORT}", self.ip)
    }

    /// Waits until the issuer answers; fails at once if it exited (a config
    /// error, say).
    fn wait_healthy(&mut self, bin: &Path) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            match self.cli(bin, &["healthcheck"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline || !self.process.is_running() => {
                    return Err(HarnessError::Invalid(format!(
                        "the issuer of {} never became healthy: {e}\n{}",
                        self.trust_domain,
                        self.process.log()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

pub(super) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(HarnessError::io(format!("write {}", path.display())))
}

pub(super) fn path_str(path: &Path) -> String {
    path.display().to_string()
}
