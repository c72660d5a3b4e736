//! One cluster's issuer: `meshward issuer run` on its own underlay host, with its
//! admin socket, its bundle endpoint (https_spiffe, port 8443) and the directory
//! its cluster's daemons read policies from.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::error::{HarnessError, Result};
use crate::forward::LoopbackForward;
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
    /// Its `issuer.yaml`, to start it again.
    config: PathBuf,
    /// How often it was started again.
    restarts: usize,
    /// The shared datastore, when it is on the test's loopback, and the test's
    /// other loopback servers it reaches (`MeshSpec::issuer_reaches`).
    _forwards: Vec<LoopbackForward>,
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
    /// A datastore shared by replicas; `None`: SQLite in the data directory.
    pub(super) datastore_url: Option<&'a str>,
    /// Ports of the test's loopback servers it reaches at the same address (a
    /// Kubernetes API for k8s_psat).
    pub(super) loopback_ports: &'a [u16],
}

/// Which issuer: the cluster's index (0: the first) and the replica within it.
#[derive(Debug, Clone, Copy)]
pub(super) struct IssuerSlot {
    pub(super) cluster: usize,
    pub(super) replica: usize,
}

impl IssuerSlot {
    /// `issuer`, `issuer-2` (the second cluster's), `issuer-r2` (the first
    /// cluster's second replica), ...; and the cluster's policy directory.
    fn names(self) -> (String, String) {
        let policies = match self.cluster {
            0 => "policies".to_owned(),
            n => format!("policies-{}", n + 1),
        };
        let name = match (self.cluster, self.replica) {
            (0, 0) => "issuer".to_owned(),
            (n, 0) => format!("issuer-{}", n + 1),
            (0, r) => format!("issuer-r{}", r + 1),
            (n, r) => format!("issuer-{}-r{}", n + 1, r + 1),
        };
        (name, policies)
    }
}

impl ClusterIssuer {
    /// Starts the issuer in `slot` on a new host, and waits until it is healthy.
    pub(super) fn start(
        cluster: &mut Cluster,
        bin: &Path,
        slot: IssuerSlot,
        trust_domain: &str,
        settings: &IssuerSettings<'_>,
    ) -> Result<Self> {
        let (name, policies) = slot.names();
        let ip = cluster.add_host(&name)?.ip();
        // a datastore on the test's loopback is reached at the same address here
        let servers = settings
            .datastore_url
            .and_then(loopback_server)
            .into_iter()
            .chain(
                settings
                    .loopback_ports
                    .iter()
                    .map(|&port| std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            );
        let mut forwards = Vec::new();
        for server in servers {
            let ns = cluster.host(&name)?.netns();
            forwards.push(LoopbackForward::start(ns, server.port(), server)?);
        }
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
                 bundle_endpoint:\n  listen: {ip}:{BUNDLE_ENDPOINT_PORT}\n  profile: https_spiffe\n  refresh_hint: {}s\n{}{}",
                dir.join(format!("{name}-data")).display(),
                admin_socket.display(),
                settings.refresh_hint_seconds,
                settings
                    .datastore_url
                    .map(|url| format!("datastore_url: {url}\n"))
                    .unwrap_or_default(),
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
            config,
            restarts: 0,
            _forwards: forwards,
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

    /// SIGKILL: the replica is gone at once, mid-request if it was in one.
    pub(super) fn kill(&mut self) -> String {
        self.process.kill()
    }

    /// Starts it again with the same configuration and data (its log goes on in
    /// `<name>-2.log`, ...), and waits until it is healthy.
    pub(super) fn restart(&mut self, cluster: &Cluster, bin: &Path) -> Result<()> {
        self.process.kill();
        self.restarts += 1;
        self.process = Process::spawn(
            cluster.host(&self.name)?.netns(),
            &format!("{}-{}", self.name, self.restarts + 1),
            &path_str(bin),
            &["issuer", "run", "-c", &path_str(&self.config)],
            &[],
            cluster.log_dir(),
        )?;
        self.wait_healthy(bin)
    }

    /// Rewrites the bootstrap bundle file from the datastore (every replica's CA).
    pub(super) fn refresh_bundle_file(&self, bin: &Path) -> Result<()> {
        write(&self.bundle_file, &self.cli(bin, &["bundle", "show"])?)
    }

    /// Its host's name (`issuer`, `issuer-r2`, ...).
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// `<ip>:8081`: its agent API.
    pub(super) fn agent_address(&self) -> String {
        format!("{}:8081", self.ip)
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

/// `127.0.0.1:<port>` of a `postgres://user:pw@127.0.0.1:<port>/db` URL, when the
/// server is on loopback.
fn loopback_server(url: &str) -> Option<std::net::SocketAddr> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = host_port.rsplit_once(':')?;
    let ip: Ipv4Addr = match host {
        "localhost" => Ipv4Addr::LOCALHOST,
        other => other.parse().ok()?,
    };
    let port: u16 = port.parse().ok()?;
    ip.is_loopback()
        .then(|| std::net::SocketAddr::from((ip, port)))
}

pub(super) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(HarnessError::io(format!("write {}", path.display())))
}

pub(super) fn path_str(path: &Path) -> String {
    path.display().to_string()
}
