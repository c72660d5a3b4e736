//! A whole mesh on one machine: a [`Cluster`], the issuer on its own underlay host,
//! and a real `meshward proxy run` on every node with capture installed, policies
//! read from one directory. What the end-to-end tests and `meshward demo` stand on.
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

use crate::cluster::{Cluster, PodSpec};
use crate::error::{HarnessError, Result};
use crate::process::{Process, exec, wait_for_port};

/// How long the mesh may take to come up (attestation, first SVIDs).
const STARTUP: Duration = Duration::from_secs(60);

/// The slow parts of [`Mesh::start_reporting`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Namespaces, links and routes for the underlay, nodes and pods.
    Network,
    /// The issuer starts and becomes healthy.
    Issuer,
    /// Registration, then every node daemon attests and gets its pods' SVIDs.
    Nodes,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    trust_domain: String,
    nodes: Vec<String>,
    /// (node, pod, whether an entry grants it `ns/<ns>/sa/<sa>`)
    pods: Vec<(String, PodSpec, bool)>,
    /// Extra `proxy.yaml` text for every node (e.g. `inbound:` settings).
    proxy_yaml: String,
    outbound_yaml: String,
    /// `outbound.mesh_cidrs` beyond the nodes' pod CIDRs.
    mesh_cidrs: Vec<String>,
    capture_yaml: String,
    /// `-x509SVIDTTL` of the pods' entries (seconds; 0: the issuer's default).
    svid_ttl: u32,
    /// `authorization.default` of every node.
    default_mode: String,
    /// Namespace prefix and address block; `None`: a unique test prefix.
    prefix: Option<(String, u8)>,
    /// `capture.exclude_ports`: traffic to these ports bypasses the daemons.
    exclude_ports: Vec<u16>,
    /// `capture.exclude_cidrs` holds the issuer's address (as a node excludes its
    /// API server).
    exclude_issuer: bool,
    /// The daemons' `RUST_LOG`.
    log: String,
}

impl MeshSpec {
    pub fn new(trust_domain: &str, nodes: &[&str]) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            pods: Vec::new(),
            proxy_yaml: String::new(),
            outbound_yaml: String::new(),
            mesh_cidrs: Vec::new(),
            capture_yaml: String::new(),
            svid_ttl: 0,
            default_mode: "deny".into(),
            prefix: None,
            exclude_ports: Vec::new(),
            exclude_issuer: false,
            log: "info,access=debug".into(),
        }
    }

    /// The daemons' log directives (default `info,access=debug`: every request and
    /// connection, the outbound side included).
    pub fn log(&mut self, directives: &str) -> &mut Self {
        directives.clone_into(&mut self.log);
        self
    }

    /// Ports capture leaves alone (direct paths beside the mesh, for comparisons).
    pub fn exclude_ports(&mut self, ports: &[u16]) -> &mut Self {
        self.exclude_ports.extend_from_slice(ports);
        self
    }

    /// The issuer's address in `capture.exclude_cidrs`: pods reach it beside the
    /// daemons, as a node excludes its API server or the instance metadata.
    pub fn exclude_issuer_address(&mut self) -> &mut Self {
        self.exclude_issuer = true;
        self
    }

    /// `authorization.default`: `deny` (meshward's) or `allow-if-no-policy` (Istio's).
    pub fn default_mode(&mut self, mode: &str) -> &mut Self {
        mode.clone_into(&mut self.default_mode);
        self
    }

    /// Namespaces named `<prefix>-...`, addresses in `10.<block>.0.0/16`.
    pub fn prefix(&mut self, prefix: &str, block: u8) -> &mut Self {
        self.prefix = Some((prefix.to_owned(), block));
        self
    }

    /// Short-lived pod SVIDs, to see rotation within a test.
    pub fn svid_ttl(&mut self, seconds: u32) -> &mut Self {
        self.svid_ttl = seconds;
        self
    }

    /// A pod on `node`; `identity`: register `spiffe://<td>/ns/<ns>/sa/<sa>` for it.
    pub fn pod(&mut self, node: &str, spec: PodSpec, identity: bool) -> &mut Self {
        self.pods.push((node.to_owned(), spec, identity));
        self
    }

    /// Adds an address block the nodes treat as the mesh's (`outbound.mesh_cidrs`),
    /// beyond their pod CIDRs: what tests put something unexpected in.
    pub fn mesh_cidr(&mut self, cidr: &str) -> &mut Self {
        self.mesh_cidrs.push(cidr.to_owned());
        self
    }

    /// Appends fields of the `outbound:` section (indented two spaces) for every node.
    pub fn outbound_yaml(&mut self, yaml: &str) -> &mut Self {
        self.outbound_yaml.push_str(yaml);
        self
    }

    /// Appends lines (indented two spaces) to every node's `capture:` section.
    pub fn capture_yaml(&mut self, yaml: &str) -> &mut Self {
        self.capture_yaml.push_str(yaml);
        self
    }

    /// Appends top-level `proxy.yaml` sections for every node.
    pub fn proxy_yaml(&mut self, yaml: &str) -> &mut Self {
        self.proxy_yaml.push_str(yaml);
        self
    }
}

/// The running mesh; dropping it stops the daemons (which remove their capture
/// rules), then removes the cluster.
#[derive(Debug)]
pub struct Mesh {
    daemons: BTreeMap<String, Process>,
    issuer: Process,
    /// Last: namespaces go after the processes in them.
    pub cluster: Cluster,
    bin: PathBuf,
    trust_domain: String,
    policy_dir: PathBuf,
    admin_socket: PathBuf,
    /// The daemons' `RUST_LOG`.
    log: String,
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
        let dir = cluster.log_dir().to_owned();
        let issuer_ip = cluster.add_host("issuer")?.ip();
        for node in &spec.nodes {
            cluster.add_node(node)?;
        }
        for (node, pod, _) in &spec.pods {
            cluster.add_pod(node, pod.clone())?;
        }
        let policy_dir = dir.join("policies");
        std::fs::create_dir_all(&policy_dir).map_err(HarnessError::io("create policies/"))?;
        let admin_socket = dir.join("issuer.sock");
        let td = &spec.trust_domain;
        let issuer_config = dir.join("issuer.yaml");
        write(
            &issuer_config,
            &format!(
                "trust_domain: {td}\ndata_dir: {}\nagent_listen: {issuer_ip}:8081\nhealth_listen: 127.0.0.1:8080\nadmin_socket: {}\n",
                dir.join("issuer-data").display(),
                admin_socket.display()
            ),
        )?;
        progress(Phase::Issuer);
        let issuer = Process::spawn(
            cluster.host("issuer")?.netns(),
            "issuer",
            &path_str(bin),
            &["issuer", "run", "-c", &path_str(&issuer_config)],
            &[],
            &dir,
        )?;
        let mut mesh = Self {
            daemons: BTreeMap::new(),
            log: spec.log.clone(),
            issuer,
            cluster,
            bin: bin.to_owned(),
            trust_domain: td.clone(),
            policy_dir,
            admin_socket,
        };
        mesh.wait_issuer()?;
        let bundle = mesh.issuer_cli(&["bundle", "show"])?;
        write(&dir.join("bundle.pem"), &bundle)?;
        let registered: Vec<(String, String, String)> = spec
            .pods
            .iter()
            .filter(|(_, _, identity)| *identity)
            .map(|(node, pod, _)| {
                let info = mesh.cluster.pod(&pod.name)?.info().clone();
                Ok((node.clone(), info.namespace, info.service_account))
            })
            .collect::<Result<_>>()?;
        let mesh_cidrs: Vec<String> = mesh
            .cluster
            .nodes()
            .map(|n| n.pod_cidr().to_owned())
            .chain(spec.mesh_cidrs.iter().cloned())
            .map(|cidr| format!("  - {cidr}\n"))
            .collect();
        let exclude_cidrs = if spec.exclude_issuer {
            format!("  exclude_cidrs: [{issuer_ip}/32]\n")
        } else {
            String::new()
        };
        progress(Phase::Nodes);
        for node in &spec.nodes {
            let node_id = format!("spiffe://{td}/node/{node}");
            let token = mesh.issuer_cli(&["token", "generate", "-spiffeID", &node_id])?;
            let token = token
                .lines()
                .find_map(|l| l.strip_prefix("Token: "))
                .ok_or_else(|| HarnessError::Invalid(format!("no token in {token:?}")))?
                .trim()
                .to_owned();
            for (_, ns, sa) in registered.iter().filter(|(n, _, _)| n == node) {
                mesh.issuer_cli(&[
                    "entry",
                    "create",
                    "-spiffeID",
                    &format!("spiffe://{td}/ns/{ns}/sa/{sa}"),
                    "-parentID",
                    &node_id,
                    "-selector",
                    &format!("k8s:ns:{ns}"),
                    "-selector",
                    &format!("k8s:sa:{sa}"),
                    "-x509SVIDTTL",
                    &spec.svid_ttl.to_string(),
                ])?;
            }
            let config = mesh.node_config(node);
            let workloads = mesh.cluster.node(node)?.workloads_file().to_owned();
            write(
                &config,
                &format!(
                    "trust_domain: {td}\nreadiness_listen: 127.0.0.1:15021\n\
                     agent:\n  issuer_address: {issuer_ip}:8081\n  trust_bundle_path: {}\n  data_dir: {}\n  join_token: {token}\n  workloads:\n    file: {}\n  workload_api_socket: {}\n  sync_interval: 1s\n\
                     capture:\n  pod_interface_prefix: veth\n  exclude_ports: {:?}\n{}{}\
                     outbound:\n  mesh_cidrs:\n{}{}\
                     authorization:\n  default: {}\n  policy_paths: [{}]\n{}",
                    dir.join("bundle.pem").display(),
                    dir.join(format!("{node}-agent")).display(),
                    workloads.display(),
                    mesh.workload_api_socket(node).display(),
                    spec.exclude_ports,
                    exclude_cidrs,
                    spec.capture_yaml,
                    mesh_cidrs.concat(),
                    spec.outbound_yaml,
                    spec.default_mode,
                    mesh.policy_dir.display(),
                    spec.proxy_yaml,
                ),
            )?;
            let daemon = mesh.spawn_daemon(node)?;
            mesh.daemons.insert(node.clone(), daemon);
        }
        for node in &spec.nodes {
            mesh.wait_ready(node)?;
        }
        Ok(mesh)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The issuer's newest signing CA (`ca.pem`, `ca.key`): what tests mint
    /// hand-made certificates with.
    pub fn issuer_ca_dir(&self) -> Result<PathBuf> {
        let ca = self.cluster.log_dir().join("issuer-data").join("ca");
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
        &self.policy_dir
    }

    /// Writes (or replaces) one policy file, atomically.
    pub fn apply_policy(&self, name: &str, yaml: &str) -> Result<()> {
        let file = self.policy_dir.join(format!("{name}.yaml"));
        let tmp = self.policy_dir.join(format!(".{name}.tmp"));
        write(&tmp, yaml)?;
        std::fs::rename(&tmp, &file)
            .map_err(HarnessError::io(format!("rename to {}", file.display())))
    }

    pub fn delete_policy(&self, name: &str) -> Result<()> {
        let file = self.policy_dir.join(format!("{name}.yaml"));
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
        Process::spawn(
            self.cluster.node(node)?.netns(),
            &format!("{node}-proxy"),
            &path_str(&self.bin),
            &["proxy", "run", "-c", &path_str(&self.node_config(node))],
            &[("RUST_LOG", self.log.as_str())],
            self.cluster.log_dir(),
        )
    }

    /// Starts a node's daemon again (after [`Mesh::stop_daemon`]), as a restart or
    /// an upgrade does, and waits until it is ready. Its log starts afresh.
    pub fn start_daemon(&mut self, node: &str) -> Result<()> {
        let daemon = self.spawn_daemon(node)?;
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

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|(node, d)| format!("--- {node} daemon ---\n{}", d.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `meshward issuer <args> -socketPath <admin>`: stdout, or the error.
    pub fn issuer_cli(&self, args: &[&str]) -> Result<String> {
        let socket = path_str(&self.admin_socket);
        let out = std::process::Command::new(&self.bin)
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

    /// The issuer's log so far.
    pub fn issuer_log(&self) -> String {
        self.issuer.log()
    }

    fn wait_issuer(&self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            match self.issuer_cli(&["healthcheck"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(HarnessError::Invalid(format!(
                        "the issuer never became healthy: {e}\n{}",
                        self.issuer.log()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits for a node daemon's readiness (attested, first SVIDs in hand).
    fn wait_ready(&self, node: &str) -> Result<()> {
        let ns = self.cluster.node(node)?.netns();
        let ready = SocketAddr::from(([127, 0, 0, 1], 15021));
        wait_for_port(ns, ready, STARTUP)?;
        let deadline = Instant::now() + STARTUP;
        loop {
            let out = exec(
                ns,
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                    "http://127.0.0.1:15021/healthz/ready",
                ],
                Duration::from_secs(5),
            )?;
            if out.stdout.trim() == "200" {
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

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(HarnessError::io(format!("write {}", path.display())))
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
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
