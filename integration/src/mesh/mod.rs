//! A whole mesh on one machine: a [`Cluster`], the issuer on its own underlay host,
//! and a real `meshward proxy run` on every node with capture installed, policies
//! read from one directory. What the end-to-end tests and `meshward demo` stand on.
//! A mesh may hold further clusters ([`MeshSpec::cluster`]): each with its own
//! trust domain, issuer, nodes and policy directory, on the same underlay.
//!
//! ```no_run
//! use meshward_integration::{Mesh, MeshSpec, PodSpec};
//! let mut spec = MeshSpec::new("math.example.com", &["node-1", "node-2"]);
//! spec.pod("node-1", PodSpec::new("curl-spire").service_account("curl-spire"), true);
//! spec.pod("node-2", PodSpec::new("echoserver").namespace("echoserver"), true);
//! let mesh = Mesh::start(&meshward_integration::meshward_binary()?, spec)?;
//! # Ok::<(), meshward_integration::HarnessError>(())
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod federation;
mod issuer;
mod replicas;
mod spec;
mod upgrade;

pub use upgrade::Upgrade;

use crate::cluster::Cluster;
use crate::error::{HarnessError, Result};
use crate::process::{Process, exec, wait_for_port};
use issuer::{ClusterIssuer, IssuerSettings, IssuerSlot, path_str, write};
pub use spec::{MeshSpec, NodeAttestation, NodeSetup, SetupFn};

/// How long the mesh may take to come up (attestation, first SVIDs).
const STARTUP: Duration = Duration::from_secs(60);

/// The slow parts of [`Mesh::start_reporting`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Namespaces, links and routes for the underlay, nodes and pods.
    Network,
    /// The issuers start and become healthy.
    Issuer,
    /// Registration, then every node daemon attests and gets its pods' SVIDs.
    Nodes,
}

/// The running mesh; dropping it stops the daemons (which remove their capture
/// rules), then the issuers, then removes the cluster.
#[derive(Debug)]
pub struct Mesh {
    daemons: BTreeMap<String, Process>,
    /// One per cluster, the first cluster's first.
    issuers: Vec<ClusterIssuer>,
    /// The first cluster's further issuer replicas (`MeshSpec::replicated_issuer`).
    replicas: Vec<ClusterIssuer>,
    /// Last: namespaces go after the processes in them.
    pub cluster: Cluster,
    bin: PathBuf,
    /// node -> index of its cluster in `issuers`
    node_cluster: BTreeMap<String, usize>,
    /// The daemons' `RUST_LOG`.
    log: String,
    /// How many daemons each node has had (upgrades).
    generations: BTreeMap<String, u32>,
}

impl Mesh {
    pub fn start(bin: &Path, spec: MeshSpec) -> Result<Self> {
        Self::start_reporting(bin, spec, &mut |_| {})
    }

    /// [`Mesh::start`], telling `progress` as each slow phase begins.
    pub fn start_reporting(
        bin: &Path,
        spec: MeshSpec,
        progress: &mut dyn FnMut(Phase),
    ) -> Result<Self> {
        progress(Phase::Network);
        let mut cluster = match &spec.prefix {
            Some((prefix, block)) => Cluster::with_prefix(prefix, *block)?,
            None => Cluster::new()?,
        };
        let clusters: Vec<(String, Vec<String>)> =
            std::iter::once((spec.trust_domain.clone(), spec.nodes.clone()))
                .chain(spec.clusters.iter().cloned())
                .collect();
        let mut node_cluster = BTreeMap::new();
        for (index, (_, nodes)) in clusters.iter().enumerate() {
            for node in nodes {
                cluster.add_node(node)?;
                node_cluster.insert(node.clone(), index);
            }
        }
        for (node, pod, _) in &spec.pods {
            cluster.add_pod(node, pod.clone())?;
        }
        for (node, attestation) in &spec.attestations {
            if let Some(setup) = &attestation.setup {
                (setup.0)(cluster.node(node)?.netns())?;
            }
        }
        progress(Phase::Issuer);
        let (issuers, replicas) = start_issuers(&mut cluster, bin, &spec, &clusters)?;
        let mut mesh = Self {
            daemons: BTreeMap::new(),
            log: spec.log.clone(),
            generations: BTreeMap::new(),
            issuers,
            replicas,
            cluster,
            bin: bin.to_owned(),
            node_cluster,
        };
        progress(Phase::Nodes);
        for (index, (_, nodes)) in clusters.iter().enumerate() {
            for node in nodes {
                mesh.enroll_node(&spec, index, node)?;
                let daemon = mesh.spawn_daemon(node)?;
                mesh.daemons.insert(node.clone(), daemon);
            }
        }
        for node in mesh.node_cluster.keys() {
            mesh.wait_ready(node)?;
        }
        Ok(mesh)
    }

    /// Registers `node` and its pods with its cluster's issuer and writes its
    /// `proxy.yaml`.
    fn enroll_node(&self, spec: &MeshSpec, index: usize, node: &str) -> Result<()> {
        let issuer = &self.issuers[index];
        let td = &issuer.trust_domain;
        let (parent_id, method) = match spec.attestations.get(node) {
            Some(attestation) => (
                attestation.alias_id.clone(),
                self.alias(issuer, attestation)?,
            ),
            None => {
                let node_id = format!("spiffe://{td}/node/{node}");
                let token = self.join_token(issuer, &node_id)?;
                (node_id, format!("  join_token: {token}\n"))
            }
        };
        for (_, pod, _) in spec
            .pods
            .iter()
            .filter(|(on, _, identity)| on == node && *identity)
        {
            let info = self.cluster.pod(&pod.name)?.info();
            let (ns, sa) = (&info.namespace, &info.service_account);
            issuer.cli(
                &self.bin,
                &[
                    "entry",
                    "create",
                    "-spiffeID",
                    &format!("spiffe://{td}/ns/{ns}/sa/{sa}"),
                    "-parentID",
                    &parent_id,
                    "-selector",
                    &format!("k8s:ns:{ns}"),
                    "-selector",
                    &format!("k8s:sa:{sa}"),
                    "-x509SVIDTTL",
                    &spec.svid_ttl.to_string(),
                ],
            )?;
        }
        // every cluster's pod addresses are the mesh's: they route between clusters
        let mesh_cidrs: String = self
            .cluster
            .nodes()
            .map(|n| n.pod_cidr().to_owned())
            .chain(spec.mesh_cidrs.iter().cloned())
            .map(|cidr| format!("  - {cidr}\n"))
            .collect();
        let exclude_cidrs = if spec.exclude_issuer {
            format!("  exclude_cidrs: [{}/32]\n", issuer.ip)
        } else {
            String::new()
        };
        let dir = self.cluster.log_dir();
        let issuer_addresses: Vec<String> = std::iter::once(issuer)
            .chain(self.replicas.iter().filter(|_| index == 0))
            .map(ClusterIssuer::agent_address)
            .collect();
        write(
            &self.node_config(node),
            &format!(
                "trust_domain: {td}\nreadiness_listen: 127.0.0.1:15021\n\
                 agent:\n  issuer_address: {issuer_addresses:?}\n  trust_bundle_path: {}\n  data_dir: {}\n{method}  workloads:\n    file: {}\n  workload_api_socket: {}\n  sync_interval: 1s\n\
                 capture:\n  pod_interface_prefix: veth\n  exclude_ports: {:?}\n{}{}\
                 outbound:\n  mesh_cidrs:\n{}{}\
                 authorization:\n  default: {}\n  policy_paths: [{}]\n{}{}",
                issuer.bundle_file.display(),
                dir.join(format!("{node}-agent")).display(),
                self.cluster.node(node)?.workloads_file().display(),
                self.workload_api_socket(node).display(),
                spec.exclude_ports,
                exclude_cidrs,
                spec.capture_yaml,
                mesh_cidrs,
                spec.outbound_yaml,
                spec.default_mode,
                issuer.policy_dir.display(),
                spec.authorization_yaml,
                spec.proxy_yaml,
            ),
        )
    }

    /// A join token for `node_id`.
    fn join_token(&self, issuer: &ClusterIssuer, node_id: &str) -> Result<String> {
        let token = issuer.cli(&self.bin, &["token", "generate", "-spiffeID", node_id])?;
        token
            .lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .map(|t| t.trim().to_owned())
            .ok_or_else(|| HarnessError::Invalid(format!("no token in {token:?}")))
    }

    /// Creates the node alias entry `attestation` names (once: nodes may share
    /// it); returns its `agent:` lines.
    fn alias(&self, issuer: &ClusterIssuer, attestation: &NodeAttestation) -> Result<String> {
        let mut args = vec![
            "entry",
            "create",
            "-node",
            "-spiffeID",
            &attestation.alias_id,
        ];
        for selector in &attestation.alias_selectors {
            args.extend(["-selector", selector.as_str()]);
        }
        match issuer.cli(&self.bin, &args) {
            Err(e) if e.to_string().to_lowercase().contains("already exists") => {}
            created => {
                created?;
            }
        }
        Ok(attestation.agent_yaml.clone())
    }

    /// The first cluster's trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.issuers[0].trust_domain
    }

    /// The issuer of `trust_domain`'s cluster.
    fn issuer_of(&self, trust_domain: &str) -> Result<&ClusterIssuer> {
        self.issuers
            .iter()
            .find(|i| i.trust_domain == trust_domain)
            .ok_or_else(|| HarnessError::Invalid(format!("no cluster of {trust_domain}")))
    }

    /// The SPIFFE ID a registered pod gets: `spiffe://<its cluster's trust
    /// domain>/ns/<namespace>/sa/<service account>`.
    pub fn pod_spiffe_id(&self, pod: &str) -> Result<String> {
        let pod = self.cluster.pod(pod)?;
        let info = pod.info();
        let index = self.node_cluster.get(pod.node()).copied().unwrap_or(0);
        Ok(format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.issuers[index].trust_domain, info.namespace, info.service_account
        ))
    }

    /// Where the cluster of `trust_domain` serves its bundle (https_spiffe, the
    /// issuer's SVID `spiffe://<td>/spire/server`).
    pub fn bundle_endpoint_url(&self, trust_domain: &str) -> Result<String> {
        Ok(self.issuer_of(trust_domain)?.bundle_endpoint_url())
    }

    /// A JWT-SVID for `audience`, fetched inside `pod` from its node's Workload
    /// API with `meshward api fetch jwt`, as a workload would.
    pub fn fetch_jwt_svid(&self, pod: &str, audience: &str) -> Result<String> {
        let node = self.cluster.pod(pod)?.node().to_owned();
        let socket = path_str(&self.workload_api_socket(&node));
        let args = [
            "api",
            "fetch",
            "jwt",
            "-audience",
            audience,
            "-socketPath",
            socket.as_str(),
        ];
        let out =
            self.cluster
                .exec_in_pod(pod, &path_str(&self.bin), &args, Duration::from_secs(10))?;
        // `token(<SPIFFE ID>):` then the token on the next line, as SPIRE prints it
        out.stdout
            .lines()
            .nth(1)
            .map(|line| line.trim().to_owned())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| HarnessError::Invalid(format!("no JWT-SVID from {pod}: {out:?}")))
    }

    /// The first issuer's newest signing CA (`ca.pem`, `ca.key`): what tests mint
    /// hand-made certificates with.
    pub fn issuer_ca_dir(&self) -> Result<PathBuf> {
        let ca = self.issuers[0].data_dir(self.cluster.log_dir()).join("ca");
        let mut generations: Vec<PathBuf> = std::fs::read_dir(&ca)
            .map_err(HarnessError::io(format!("read {}", ca.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("ca.key").exists())
            .collect();
        generations.sort();
        generations
            .pop()
            .ok_or_else(|| HarnessError::Invalid(format!("no signing CA in {}", ca.display())))
    }

    /// The directory every node daemon reads policies from (hot reloaded).
    pub fn policy_dir(&self) -> &Path {
        &self.issuers[0].policy_dir
    }

    /// Writes (or replaces) one policy file, atomically.
    pub fn apply_policy(&self, name: &str, yaml: &str) -> Result<()> {
        let file = self.policy_dir().join(format!("{name}.yaml"));
        let tmp = self.policy_dir().join(format!(".{name}.tmp"));
        write(&tmp, yaml)?;
        std::fs::rename(&tmp, &file)
            .map_err(HarnessError::io(format!("rename to {}", file.display())))
    }

    pub fn delete_policy(&self, name: &str) -> Result<()> {
        let file = self.policy_dir().join(format!("{name}.yaml"));
        std::fs::remove_file(&file).map_err(HarnessError::io(format!("remove {}", file.display())))
    }

    /// `GET` of a node daemon's admin endpoint (localhost:15000 in the node's
    /// namespace): the status code (none when curl failed) and the body.
    pub fn admin_get(&self, node: &str, path: &str) -> Result<(Option<i32>, String)> {
        let url = format!("http://127.0.0.1:15000{path}");
        let ns = self.cluster.node(node)?.netns();
        let out = exec(
            ns,
            "curl",
            &["-sS", "--max-time", "5", &url],
            Duration::from_secs(10),
        )?;
        Ok((out.code, out.stdout))
    }

    /// Waits until every daemon's policy set in force has exactly `count`
    /// policies: the daemons reload the policy directory within a second or two of
    /// `apply_policy`, and load generators must not start before.
    pub fn wait_for_policy_count(&self, count: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        for node in self.daemons.keys() {
            loop {
                let (_, body) = self.admin_get(node, "/policies")?;
                let in_force = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["count"].as_u64());
                if in_force == Some(count as u64) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(HarnessError::Timeout {
                        what: format!(
                            "{node}'s daemon to hold {count} policies (has {in_force:?})"
                        ),
                        after: Duration::from_secs(15),
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// The Workload API socket of a node's daemon.
    pub fn workload_api_socket(&self, node: &str) -> PathBuf {
        self.cluster.log_dir().join(format!("{node}-agent.sock"))
    }

    pub fn pod_ip(&self, pod: &str) -> Result<IpAddr> {
        Ok(self.cluster.pod(pod)?.ip())
    }

    /// The process ID of a node's daemon.
    pub fn daemon_pid(&self, node: &str) -> Option<i32> {
        self.daemons.get(node).map(Process::pid)
    }

    /// The `proxy.yaml` a node's daemon runs with.
    pub fn node_config(&self, node: &str) -> PathBuf {
        self.cluster.log_dir().join(format!("{node}-proxy.yaml"))
    }

    /// `meshward proxy run` on `node` with its `proxy.yaml`.
    fn spawn_daemon(&self, node: &str) -> Result<Process> {
        self.spawn_daemon_under(node, &[])
    }

    /// The same, as the arguments of `wrapper` (e.g. `valgrind --tool=callgrind`).
    fn spawn_daemon_under(&self, node: &str, wrapper: &[&str]) -> Result<Process> {
        let (bin, config) = (path_str(&self.bin), path_str(&self.node_config(node)));
        let mut command = wrapper.to_vec();
        command.extend([bin.as_str(), "proxy", "run", "-c", config.as_str()]);
        Process::spawn(
            self.cluster.node(node)?.netns(),
            &format!("{node}-proxy"),
            command[0],
            &command[1..],
            &[("RUST_LOG", self.log.as_str())],
            self.cluster.log_dir(),
        )
    }

    /// Starts a node's daemon again (after [`Mesh::stop_daemon`]), as a restart or
    /// an upgrade does, and waits until it is ready. Its log starts afresh.
    pub fn start_daemon(&mut self, node: &str) -> Result<()> {
        self.start_daemon_under(node, &[])
    }

    /// [`Mesh::start_daemon`] with the daemon run by `wrapper` (a profiler),
    /// whose process is then the one [`Mesh::daemon_pid`] names.
    pub fn start_daemon_under(&mut self, node: &str, wrapper: &[&str]) -> Result<()> {
        let daemon = self.spawn_daemon_under(node, wrapper)?;
        self.daemons.insert(node.to_owned(), daemon);
        self.wait_ready(node)
    }

    /// Stops a node's daemon (SIGTERM, as the kubelet stops a pod); its exit status.
    pub fn stop_daemon(&mut self, node: &str) -> Option<String> {
        self.daemons.get_mut(node).map(Process::stop)
    }

    /// A node daemon's log so far.
    pub fn daemon_log(&self, node: &str) -> String {
        self.daemons.get(node).map(Process::log).unwrap_or_default()
    }

    /// A node daemon's log once `holds` is true of it, or as it is after five
    /// seconds. For the access log: a worker thread writes its lines when it next
    /// goes idle, a moment after the response they log (`proxy/src/logging/stderr.rs`).
    pub fn daemon_log_when(&self, node: &str, holds: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let log = self.daemon_log(node);
            if holds(&log) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|(node, d)| format!("--- {node} daemon ---\n{}", d.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `meshward issuer <args>` against the first cluster's issuer: stdout, or
    /// the error.
    pub fn issuer_cli(&self, args: &[&str]) -> Result<String> {
        self.issuers[0].cli(&self.bin, args)
    }

    /// `meshward issuer <args>` against the issuer of `trust_domain`'s cluster.
    pub fn issuer_cli_of(&self, trust_domain: &str, args: &[&str]) -> Result<String> {
        self.issuer_of(trust_domain)?.cli(&self.bin, args)
    }

    /// The first issuer's log so far.
    pub fn issuer_log(&self) -> String {
        self.issuers[0].log()
    }

    /// Waits for a node daemon's readiness (attested, first SVIDs in hand).
    fn wait_ready(&self, node: &str) -> Result<()> {
        let ns = self.cluster.node(node)?.netns();
        let ready = SocketAddr::from(([127, 0, 0, 1], 15021));
        wait_for_port(ns, ready, STARTUP)?;
        let deadline = Instant::now() + STARTUP;
        loop {
            if http_status(ns, "http://127.0.0.1:15021/healthz/ready")? == Some(200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("{node}'s daemon to be ready:\n{}", self.daemon_log(node)),
                    after: STARTUP,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The status of `GET <url>` made inside `ns` (2 s at most); `None` when nothing
/// answered.
fn http_status(ns: &crate::Netns, url: &str) -> Result<Option<u16>> {
    let args = [
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        url,
    ];
    let out = exec(ns, "curl", &args, Duration::from_secs(5))?;
    Ok(out.stdout.trim().parse().ok().filter(|code| *code != 0))
}

/// Every cluster's issuer, and the first cluster's further replicas; with
/// replicas, the bootstrap bundle is written once all of them have a CA in it.
fn start_issuers(
    cluster: &mut Cluster,
    bin: &Path,
    spec: &MeshSpec,
    clusters: &[(String, Vec<String>)],
) -> Result<(Vec<ClusterIssuer>, Vec<ClusterIssuer>)> {
    let (replica_count, datastore_url) = &spec.issuer_replicas;
    let mut issuers = Vec::new();
    let mut replicas = Vec::new();
    for (index, (td, _)) in clusters.iter().enumerate() {
        let count = if index == 0 { *replica_count } else { 1 };
        for replica in 0..count {
            let settings = IssuerSettings {
                extra_yaml: &spec.issuer_yaml,
                refresh_hint_seconds: spec.bundle_refresh_hint,
                datastore_url: datastore_url.as_deref().filter(|_| index == 0),
                loopback_ports: &spec.issuer_loopback_ports,
            };
            let slot = IssuerSlot {
                cluster: index,
                replica,
            };
            let issuer = ClusterIssuer::start(cluster, bin, slot, td, &settings)?;
            if replica == 0 {
                issuers.push(issuer);
            } else {
                replicas.push(issuer);
            }
        }
    }
    if !replicas.is_empty() {
        issuers[0].refresh_bundle_file(bin)?;
    }
    Ok((issuers, replicas))
}

/// The `meshward` binary built next to the running test or program
/// (`cargo test --workspace` builds it into the same target directory).
pub fn meshward_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(HarnessError::io("find the running executable"))?;
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("meshward"))
        .collect::<Vec<_>>();
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        HarnessError::Invalid(format!(
            "no meshward binary near {}: build it first (cargo build -p meshward)",
            exe.display()
        ))
    })
}
