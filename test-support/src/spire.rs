//! A real SPIRE deployment for tests: `spire-server` and one `spire-agent`, built
//! from `github.com/spiffe/spire` by `scripts/peers.sh`, with a trust domain of
//! their own. What meshward federates with in the tests, set up as a SPIRE
//! operator would:
//!
//! - the server: SQLite datastore and disk key manager in a temporary directory,
//!   the agent API on 127.0.0.1, the admin socket in the directory, the
//!   federation bundle endpoint (`https_spiffe`, the server's own SVID
//!   `spiffe://<td>/spire/server`) on the address the test gives, with the
//!   `refresh_hint` it gives; `join_token` node attestation;
//! - the agent: attested with a join token (`spiffe://<td>/spire/agent/join_token/<token>`),
//!   the `unix` workload attestor, its Workload API socket in the directory;
//! - workloads: processes of a Unix user of the test's choosing, registered with
//!   `unix:uid:<uid>` ([`Spire::register`]), which call the Workload API with
//!   `spire-agent api fetch` as that user ([`Spire::fetch_jwt`], [`Spire::fetch_x509`]).
//!
//! Both processes run in one process group under a guardian (`guarded.rs`), in a
//! network namespace when [`SpireOptions::netns`] names one (`ip netns exec`).
//! The binaries come from `MESHWARD_SPIRE_SERVER` and `MESHWARD_SPIRE_AGENT` or
//! the peers cache ([`crate::peers`]); without them [`Spire::start_or_skip`]
//! prints `SKIPPED` (a panic in CI).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::free_port;
use crate::guarded::{new_dir, remove_stale_dirs, spawn, spawn_guardian, wait_output};
use crate::peers;

pub const SPIRE_SERVER_VAR: &str = "MESHWARD_SPIRE_SERVER";
pub const SPIRE_AGENT_VAR: &str = "MESHWARD_SPIRE_AGENT";

const DIR_PREFIX: &str = "meshward-spire-";
/// How long the server and the agent may take to become healthy.
const READY: Duration = Duration::from_secs(60);
/// Any single CLI run.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new entry may take to reach the agent (it syncs every 5 s).
const ENTRY_SYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SpireError {
    #[error(transparent)]
    Missing(#[from] peers::MissingPeer),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{what} exited ({status}) before it was ready; its log:\n{log}")]
    Exited {
        what: &'static str,
        status: String,
        log: String,
    },
    #[error("{what} not ready after {after:?}: {last}; its log:\n{log}")]
    NotReady {
        what: &'static str,
        after: Duration,
        last: String,
        log: String,
    },
    #[error("{command}: {status}\n{stdout}{stderr}")]
    Command {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("{0} did not finish within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}")]
    Unexpected(String),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> SpireError {
    let what = what.to_string();
    move |e| SpireError::Io(what, e)
}

/// spire-server and spire-agent.
#[derive(Debug, Clone)]
pub struct SpireBinaries {
    pub server: PathBuf,
    pub agent: PathBuf,
}

impl SpireBinaries {
    pub fn find() -> Result<Self, SpireError> {
        Ok(Self {
            server: peers::find(SPIRE_SERVER_VAR)?,
            agent: peers::find(SPIRE_AGENT_VAR)?,
        })
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct SpireOptions {
    pub trust_domain: String,
    /// A network namespace to run both processes in (`ip netns exec`).
    pub netns: Option<String>,
    /// Where the federation bundle endpoint (https_spiffe) listens.
    pub bundle_endpoint: SocketAddr,
    /// The `spiffe_refresh_hint` it serves (SPIRE itself refreshes foreign
    /// bundles no more often than once a minute).
    pub bundle_refresh_hint: Duration,
    pub ca_ttl: Duration,
    pub x509_svid_ttl: Duration,
    pub jwt_svid_ttl: Duration,
    /// `ca_key_type` and `jwt_key_type` (`ec-p256`, `ec-p384`, `rsa-2048`,
    /// `rsa-4096`); `None`: SPIRE's default, `ec-p256`.
    pub ca_key_type: Option<String>,
    pub jwt_key_type: Option<String>,
}

impl SpireOptions {
    /// `trust_domain`, its bundle endpoint on `bundle_endpoint`, SPIRE's default
    /// CA TTL (1 day), SVIDs of 10 minutes, a refresh hint of 5 s.
    pub fn new(trust_domain: &str, bundle_endpoint: SocketAddr) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            netns: None,
            bundle_endpoint,
            bundle_refresh_hint: Duration::from_secs(5),
            ca_ttl: Duration::from_secs(24 * 3600),
            x509_svid_ttl: Duration::from_secs(600),
            jwt_svid_ttl: Duration::from_secs(600),
            ca_key_type: None,
            jwt_key_type: None,
        }
    }
}

/// A JWT-SVID from the agent's Workload API, and the JWT bundles it came with.
#[derive(Debug, Clone)]
pub struct JwtFetch {
    pub spiffe_id: String,
    pub token: String,
    /// Trust domain ID (`spiffe://<td>`) -> its JWKS (JSON).
    pub bundles: BTreeMap<String, String>,
}

/// An X509-SVID from the agent's Workload API (`fetch x509 -write`), PEM.
#[derive(Debug, Clone)]
pub struct X509Fetch {
    pub spiffe_id: String,
    /// The leaf first.
    pub chain_pem: String,
    pub key_pem: String,
    /// The own trust domain's bundle.
    pub bundle_pem: String,
    /// Trust domain ID (`spiffe://<td>`) -> its bundle: the federated bundles the
    /// workload's entry lets it have.
    pub federated: BTreeMap<String, String>,
    /// Where the files are (svid.0.pem, svid.0.key, bundle.0.pem, ...).
    pub dir: PathBuf,
}

/// A running SPIRE server and agent; dropping it stops both and removes the
/// directory.
pub struct Spire {
    binaries: SpireBinaries,
    options: SpireOptions,
    dir: PathBuf,
    server_socket: PathBuf,
    agent_socket: PathBuf,
    agent_id: String,
    server: Option<Child>,
    agent: Option<Child>,
    group: u32,
    guardian: Option<ChildStdin>,
    fetches: std::sync::atomic::AtomicUsize,
    /// How long [`Spire::start`] took.
    pub started_in: Duration,
}

impl std::fmt::Debug for Spire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spire")
            .field("trust_domain", &self.options.trust_domain)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Spire {
    /// [`Spire::start`] with the binaries of the peers cache; `None` (after
    /// printing `SKIPPED <test>`) when they are missing outside CI. Panics when
    /// SPIRE does not start, or in CI when the binaries are missing.
    pub fn start_or_skip(test: &str, options: SpireOptions) -> Option<Self> {
        let binaries = peers::or_skip(test, "real SPIRE", SpireBinaries::find())?;
        match Self::start(binaries, options) {
            Ok(spire) => Some(spire),
            Err(e) => panic!("{test}: SPIRE did not start: {e}"),
        }
    }

    /// Starts the server, attests an agent with a join token, and waits until
    /// both are healthy.
    pub fn start(binaries: SpireBinaries, options: SpireOptions) -> Result<Self, SpireError> {
        let started = Instant::now();
        remove_stale_dirs(DIR_PREFIX);
        let dir = new_dir(DIR_PREFIX).map_err(io("a temporary directory"))?;
        // workloads run as other users and must reach the agent's socket
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io(dir.display()))?;
        let mut spire = Self {
            server_socket: dir.join("server.sock"),
            agent_socket: dir.join("agent.sock"),
            agent_id: String::new(),
            server: None,
            agent: None,
            group: 0,
            guardian: None,
            fetches: std::sync::atomic::AtomicUsize::new(0),
            started_in: Duration::ZERO,
            binaries,
            options,
            dir,
        };
        let agent_api_port = free_port();
        let server_conf = spire.dir.join("server.conf");
        write(&server_conf, &spire.server_conf(agent_api_port))?;
        let server = spire.spawn(
            &spire.binaries.server.clone(),
            &["run", "-config", &server_conf.display().to_string()],
            "spire-server",
        )?;
        spire.group = server.id();
        spire.server = Some(server);
        spire.guardian =
            Some(spawn_guardian(spire.group, &spire.dir).map_err(io("SPIRE's guardian (sh)"))?);
        spire.wait("spire-server", |s| s.server_cli(&["healthcheck"]))?;

        let token = spire.server_cli(&["token", "generate", "-ttl", "600"])?;
        let token = token
            .lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .map(|t| t.trim().to_owned())
            .ok_or_else(|| SpireError::Unexpected(format!("no token in {token:?}")))?;
        spire.agent_id = format!(
            "spiffe://{}/spire/agent/join_token/{token}",
            spire.options.trust_domain
        );
        let bootstrap = spire.dir.join("bootstrap.pem");
        write(&bootstrap, &spire.bundle("pem")?)?;
        let agent_conf = spire.dir.join("agent.conf");
        write(
            &agent_conf,
            &spire.agent_conf(agent_api_port, &bootstrap, &token),
        )?;
        let agent = spire.spawn(
            &spire.binaries.agent.clone(),
            &["run", "-config", &agent_conf.display().to_string()],
            "spire-agent",
        )?;
        spire.agent = Some(agent);
        let socket = spire.agent_socket.display().to_string();
        let agent_binary = spire.binaries.agent.clone();
        spire.wait("spire-agent", |_| {
            run(
                Command::new(&agent_binary).args(["healthcheck", "-socketPath", &socket]),
                "spire-agent healthcheck",
            )
        })?;
        spire.started_in = started.elapsed();
        Ok(spire)
    }

    fn server_conf(&self, agent_api_port: u16) -> String {
        let o = &self.options;
        let data = self.dir.join("server");
        format!(
            r#"server {{
  bind_address = "127.0.0.1"
  bind_port = "{agent_api_port}"
  socket_path = "{socket}"
  trust_domain = "{td}"
  data_dir = "{data}"
  log_level = "DEBUG"
  ca_ttl = "{ca_ttl}s"
  default_x509_svid_ttl = "{x509_ttl}s"
  default_jwt_svid_ttl = "{jwt_ttl}s"
{key_types}  federation {{
    bundle_endpoint {{
      address = "{endpoint_ip}"
      port = {endpoint_port}
      refresh_hint = "{hint}s"
      profile "https_spiffe" {{}}
    }}
  }}
}}

plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{data}/datastore.sqlite3"
    }}
  }}
  KeyManager "disk" {{
    plugin_data {{
      keys_path = "{data}/keys.json"
    }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
}}
"#,
            socket = self.server_socket.display(),
            td = o.trust_domain,
            data = data.display(),
            ca_ttl = o.ca_ttl.as_secs(),
            x509_ttl = o.x509_svid_ttl.as_secs(),
            jwt_ttl = o.jwt_svid_ttl.as_secs(),
            endpoint_ip = o.bundle_endpoint.ip(),
            endpoint_port = o.bundle_endpoint.port(),
            hint = o.bundle_refresh_hint.as_secs().max(1),
            key_types = [
                ("ca_key_type", &o.ca_key_type),
                ("jwt_key_type", &o.jwt_key_type)
            ]
            .iter()
            .filter_map(|(name, value)| { value.as_ref().map(|v| format!("  {name} = \"{v}\"\n")) })
            .collect::<String>(),
        )
    }

    fn agent_conf(&self, agent_api_port: u16, bootstrap: &Path, token: &str) -> String {
        format!(
            r#"agent {{
  data_dir = "{data}"
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "{agent_api_port}"
  socket_path = "{socket}"
  trust_bundle_path = "{bootstrap}"
  trust_domain = "{td}"
  join_token = "{token}"
}}

plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  WorkloadAttestor "unix" {{
    plugin_data {{}}
  }}
}}
"#,
            data = self.dir.join("agent").display(),
            socket = self.agent_socket.display(),
            bootstrap = bootstrap.display(),
            td = self.options.trust_domain,
        )
    }

    /// `program args...` in SPIRE's process group (and namespace), logging to
    /// `<dir>/<name>.log`.
    fn spawn(&self, program: &Path, args: &[&str], name: &str) -> Result<Child, SpireError> {
        let log = self.dir.join(format!("{name}.log"));
        let mut full: Vec<String> = Vec::new();
        let program = match &self.options.netns {
            Some(ns) => {
                full.extend(["netns".into(), "exec".into(), ns.clone()]);
                full.push(program.display().to_string());
                PathBuf::from("ip")
            }
            None => program.to_owned(),
        };
        full.extend(args.iter().map(|a| (*a).to_owned()));
        spawn(&program, &full, &log, self.group).map_err(io(program.display()))
    }

    /// Polls `ready` until it succeeds, failing early when a process exited.
    fn wait(
        &mut self,
        what: &'static str,
        ready: impl Fn(&Self) -> Result<String, SpireError>,
    ) -> Result<(), SpireError> {
        let deadline = Instant::now() + READY;
        loop {
            let exited = crate::guarded::first_exited(&mut [
                ("spire-server", &mut self.server),
                ("spire-agent", &mut self.agent),
            ]);
            if let Some((name, status)) = exited {
                return Err(SpireError::Exited {
                    what: name,
                    status,
                    log: self.log(name),
                });
            }
            let last = match ready(self) {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(SpireError::NotReady {
                    what,
                    after: READY,
                    last,
                    log: self.log(what),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of `spire-server` or `spire-agent`'s log.
    pub fn log(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Both logs' last lines, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- spire-server ---\n{}\n--- spire-agent ---\n{}",
            self.log("spire-server"),
            self.log("spire-agent")
        )
    }

    pub fn trust_domain(&self) -> &str {
        &self.options.trust_domain
    }

    /// `https://<address>`: where its bundle is served (https_spiffe).
    pub fn bundle_endpoint_url(&self) -> String {
        format!("https://{}", self.options.bundle_endpoint)
    }

    /// The SPIFFE ID its bundle endpoint authenticates with.
    pub fn server_id(&self) -> String {
        format!("spiffe://{}/spire/server", self.options.trust_domain)
    }

    /// The agent's SPIFFE ID (the parent of the workloads' entries).
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The agent's Workload API socket.
    pub fn agent_socket(&self) -> &Path {
        &self.agent_socket
    }

    pub fn binaries(&self) -> &SpireBinaries {
        &self.binaries
    }

    /// `spire-server <args> -socketPath <admin socket>`: stdout, or the error.
    pub fn server_cli(&self, args: &[&str]) -> Result<String, SpireError> {
        let socket = self.server_socket.display().to_string();
        run(
            Command::new(&self.binaries.server)
                .args(args)
                .args(["-socketPath", &socket]),
            &format!("spire-server {}", args.join(" ")),
        )
    }

    /// `spire-server bundle show -format <pem|spiffe>`: the own bundle.
    pub fn bundle(&self, format: &str) -> Result<String, SpireError> {
        self.server_cli(&["bundle", "show", "-format", format])
    }

    /// Registers the processes of Unix user `uid` under the agent as `spiffe_id`
    /// (`-selector unix:uid:<uid>`), receiving the bundles of `federates_with`
    /// (trust domain names). Returns the entry ID.
    pub fn register(
        &self,
        spiffe_id: &str,
        uid: u32,
        federates_with: &[&str],
    ) -> Result<String, SpireError> {
        let selector = format!("unix:uid:{uid}");
        let mut args = vec![
            "entry".to_owned(),
            "create".into(),
            "-parentID".into(),
            self.agent_id.clone(),
            "-spiffeID".into(),
            spiffe_id.into(),
            "-selector".into(),
            selector,
        ];
        for td in federates_with {
            args.extend(["-federatesWith".into(), format!("spiffe://{td}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.server_cli(&args)?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Entry ID"))
            .map(|rest| rest.trim_start_matches([' ', ':']).trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| SpireError::Unexpected(format!("no entry ID in {out:?}")))
    }

    /// `spire-agent api fetch jwt -audience <audience>` as user `uid`: a JWT-SVID
    /// and the JWT bundles the workload receives. Retries while the agent has no
    /// identity for it yet (a new entry takes a sync to arrive).
    pub fn fetch_jwt(&self, uid: u32, audience: &str) -> Result<JwtFetch, SpireError> {
        let out = self.as_workload(uid, &["fetch", "jwt", "-audience", audience])?;
        parse_jwt_fetch(&out)
    }

    /// `spire-agent api fetch x509 -write <dir>` as user `uid`; retried as
    /// [`Spire::fetch_jwt`].
    pub fn fetch_x509(&self, uid: u32) -> Result<X509Fetch, SpireError> {
        let n = self
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.join(format!("x509-{uid}-{n}"));
        std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).map_err(io(dir.display()))?;
        let out = self.as_workload(
            uid,
            &["fetch", "x509", "-write", &dir.display().to_string()],
        )?;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(io(path.display()))
        };
        let spiffe_id = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("SPIFFE ID:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| SpireError::Unexpected(format!("no SPIFFE ID in {out:?}")))?;
        // "Writing federated bundle #0 for trust domain spiffe://x to file <path>."
        let mut federated = BTreeMap::new();
        for line in out.lines() {
            let Some(rest) = line.split(" for trust domain ").nth(1) else {
                continue;
            };
            let Some((td, path)) = rest.split_once(" to file ") else {
                continue;
            };
            let path = path.trim().trim_end_matches('.');
            let pem = std::fs::read_to_string(path).map_err(io(path))?;
            federated.insert(td.trim().to_owned(), pem);
        }
        Ok(X509Fetch {
            spiffe_id,
            chain_pem: read("svid.0.pem")?,
            key_pem: read("svid.0.key")?,
            bundle_pem: read("bundle.0.pem")?,
            federated,
            dir,
        })
    }

    /// `spire-agent api <args> -socketPath <socket>` run as `uid`, retried for
    /// [`ENTRY_SYNC`] while the agent has no identity for the caller.
    fn as_workload(&self, uid: u32, args: &[&str]) -> Result<String, SpireError> {
        let socket = self.agent_socket.display().to_string();
        let deadline = Instant::now() + ENTRY_SYNC;
        loop {
            let mut command = Command::new(&self.binaries.agent);
            command
                .arg("api")
                .args(args)
                .args(["-socketPath", &socket])
                .uid(uid)
                .gid(uid);
            match run(&mut command, &format!("spire-agent api {}", args.join(" "))) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() < deadline && no_identity_yet(&e) => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a fetch failed only because the agent has no SVID for the caller (yet).
pub fn no_identity_yet(e: &SpireError) -> bool {
    let text = e.to_string();
    text.contains("no identity issued") || text.contains("PermissionDenied")
}

impl Drop for Spire {
    fn drop(&mut self) {
        for mut child in [self.agent.take(), self.server.take()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.guardian.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses `spire-agent api fetch jwt`'s output: `token(<ID>):` then the token
/// on the next line; `bundle(<td ID>):` then its JWKS (over several lines).
fn parse_jwt_fetch(out: &str) -> Result<JwtFetch, SpireError> {
    let mut token = None;
    let mut bundles = BTreeMap::new();
    // (kind, name, the lines that follow)
    let mut sections: Vec<(&str, &str, String)> = Vec::new();
    for line in out.lines() {
        let head = (!line.starts_with([' ', '\t']))
            .then(|| line.strip_suffix("):"))
            .flatten()
            .and_then(|l| l.split_once('('));
        match (head, sections.last_mut()) {
            (Some((kind, name)), _) => sections.push((kind, name, String::new())),
            (None, Some((_, _, body))) => {
                body.push_str(line.trim());
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    for (kind, name, body) in sections {
        match kind {
            "token" => token = Some((name.to_owned(), body.trim().to_owned())),
            "bundle" => {
                bundles.insert(name.to_owned(), body.trim().to_owned());
            }
            _ => {}
        }
    }
    let (spiffe_id, token) = token
        .filter(|(_, t)| !t.is_empty())
        .ok_or_else(|| SpireError::Unexpected(format!("no token in {out:?}")))?;
    Ok(JwtFetch {
        spiffe_id,
        token,
        bundles,
    })
}

fn write(path: &Path, text: &str) -> Result<(), SpireError> {
    std::fs::write(path, text).map_err(io(path.display()))
}

/// Runs `command` (stdin closed) within [`CLI_TIMEOUT`]: its stdout, or an error
/// with its output.
fn run(command: &mut Command, what: &str) -> Result<String, SpireError> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(what))?;
    let output = wait_output(child, CLI_TIMEOUT)
        .ok_or_else(|| SpireError::Timeout(what.to_owned(), CLI_TIMEOUT))?
        .map_err(io(what))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(SpireError::Command {
            command: what.to_owned(),
            status: output.status.to_string(),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
