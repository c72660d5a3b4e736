//! A simulated EKS cluster: nodes and pods as network namespaces.
//!
//! ```text
//!            underlay namespace <prefix>-underlay: bridge br0 (10.B.0.0/24)
//!              |                      |                         |
//!   node <prefix>-node-1      node <prefix>-node-2      host <prefix>-issuer
//!   eth0 10.B.0.11            eth0 10.B.0.12            eth0 10.B.0.201
//!   pod CIDR 10.B.1.0/24      pod CIDR 10.B.2.0/24
//!   veth1 --- pod eth0 10.B.1.2/32, default via 169.254.1.1 (static ARP to veth1)
//! ```
//!
//! Pods are wired as the EKS VPC CNI wires them: a /32 on the pod's `eth0`, a
//! default route through the link-local gateway `169.254.1.1` whose MAC is the
//! node-side veth's, and a /32 route per pod on the node. All pod traffic, same-node
//! traffic included, is therefore routed by the node's stack, where capture rules
//! see it. Clusters are isolated by their namespaces; `B` differs per cluster too,
//! so addresses in logs are never ambiguous.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meshward_proxy::config::{PodInfo, WorkloadsFile};

use crate::curl::{CurlResponse, curl};
use crate::error::{HarnessError, Result};
use crate::netns::Netns;
use crate::process::{CommandOutput, Process, exec};

mod members;
pub use members::{Host, Node, Pod, PodSpec};

/// Every namespace a test cluster creates starts with this; `cluster-cleanup`
/// removes leftovers by it.
pub const TEST_PREFIX: &str = "mwt";

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// The cluster; dropping it (also while a test panics) removes every namespace,
/// interface and process it made. Field order is drop order: pods, then nodes and
/// hosts, then the underlay.
#[derive(Debug)]
pub struct Cluster {
    pods: Vec<Pod>,
    nodes: Vec<Node>,
    hosts: Vec<Host>,
    underlay: Netns,
    prefix: String,
    block: u8,
    log_dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// A cluster under a fresh unique prefix (`mwt<pid>x<n>`).
    pub fn new() -> Result<Self> {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() as usize;
        let prefix = format!("{TEST_PREFIX}{:x}x{n}", pid & 0xffff);
        let block = ((pid.wrapping_mul(31) + n * 7) % 230 + 16) as u8;
        Self::with_prefix(&prefix, block)
    }

    /// A cluster whose namespaces start with `prefix`, addresses in `10.<block>.0.0/16`.
    pub fn with_prefix(prefix: &str, block: u8) -> Result<Self> {
        crate::root::check()?;
        let log_dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .map_err(HarnessError::io("create the log directory"))?;
        let underlay = Netns::create(&format!("{prefix}-underlay"))?;
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        Ok(Self {
            pods: Vec::new(),
            nodes: Vec::new(),
            hosts: Vec::new(),
            underlay,
            prefix: prefix.to_owned(),
            block,
            log_dir: Some(log_dir),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where process logs and workloads files live.
    pub fn log_dir(&self) -> &Path {
        self.log_dir
            .as_ref()
            .map_or(Path::new("/tmp"), |d| d.path())
    }

    /// Adds a node: a namespace on the underlay with forwarding on, a pod CIDR, and
    /// routes to (and from) every other node's pod CIDR.
    pub fn add_node(&mut self, name: &str) -> Result<&Node> {
        let index = u8::try_from(self.nodes.len() + 1)
            .ok()
            .filter(|i| *i < 100)
            .ok_or_else(|| HarnessError::Invalid("at most 99 nodes".into()))?;
        let ip = Ipv4Addr::new(10, self.block, 0, 10 + index);
        let ns = self.attach_to_underlay(
            &format!("{}-{name}", self.prefix),
            &format!("node{index}"),
            ip,
        )?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ] {
            ns.sysctl(key, "0")?;
        }
        let cidr = self.pod_cidr(index);
        for node in &self.nodes {
            node.ns
                .ip(&["route", "add", &cidr, "via", &ip.to_string()])?;
            ns.ip(&[
                "route",
                "add",
                &self.pod_cidr(node.index),
                "via",
                &node.underlay_ip.to_string(),
            ])?;
        }
        for host in &self.hosts {
            host.ns
                .ip(&["route", "add", &cidr, "via", &ip.to_string()])?;
        }
        let node = Node {
            name: name.to_owned(),
            index,
            ns,
            underlay_ip: ip,
            workloads_file: self.log_dir().join(format!("{name}-workloads.yaml")),
            pod_cidr: cidr,
            next_pod: 2,
        };
        self.nodes.push(node);
        self.write_workloads(name)?;
        self.nodes
            .last()
            .ok_or_else(|| HarnessError::Invalid("node vanished".into()))
    }

    /// Adds a namespace on the underlay that is not a node (the issuer, say), with
    /// routes to every pod CIDR.
    pub fn add_host(&mut self, name: &str) -> Result<&Host> {
        let n = u8::try_from(self.hosts.len() + 1)
            .ok()
            .filter(|i| *i < 50)
            .ok_or_else(|| HarnessError::Invalid("at most 49 hosts".into()))?;
        let ip = Ipv4Addr::new(10, self.block, 0, 200 + n);
        let ns =
            self.attach_to_underlay(&format!("{}-{name}", self.prefix), &format!("host{n}"), ip)?;
        for node in &self.nodes {
            ns.ip(&[
                "route",
                "add",
                &self.pod_cidr(node.index),
                "via",
                &node.underlay_ip.to_string(),
            ])?;
        }
        self.hosts.push(Host {
            name: name.to_owned(),
            ns,
            ip,
        });
        self.hosts
            .last()
            .ok_or_else(|| HarnessError::Invalid("host vanished".into()))
    }

    fn attach_to_underlay(&self, ns_name: &str, port: &str, ip: Ipv4Addr) -> Result<Netns> {
        let ns = Netns::create(ns_name)?;
        self.underlay.ip(&[
            "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns_name,
        ])?;
        self.underlay
            .ip(&["link", "set", port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    fn pod_cidr(&self, node_index: u8) -> String {
        format!("10.{}.{node_index}.0/24", self.block)
    }

    /// Adds a pod on `node`, wired like the VPC CNI does, and lists it in the node's
    /// workloads file.
    pub fn add_pod(&mut self, node: &str, spec: PodSpec) -> Result<&Pod> {
        if self
            .pods
            .iter()
            .any(|p| p.info.name == spec.name && p.info.namespace == spec.namespace)
        {
            return Err(HarnessError::Invalid(format!(
                "pod {}/{} exists",
                spec.namespace, spec.name
            )));
        }
        let block = self.block;
        let pod_number = self.pods.len() + 1;
        let ns_name = format!("{}-pod{pod_number}", self.prefix);
        let node_ref = self
            .nodes
            .iter_mut()
            .find(|n| n.name == node)
            .ok_or_else(|| HarnessError::Invalid(format!("no node {node}")))?;
        if node_ref.next_pod == 255 {
            return Err(HarnessError::Invalid(format!("node {node} is full")));
        }
        let ip = Ipv4Addr::new(10, block, node_ref.index, node_ref.next_pod);
        node_ref.next_pod += 1;
        let veth = format!("veth{pod_number}");
        let pod_ns = Netns::create(&ns_name)?;
        let node_ns = &node_ref.ns;
        node_ns.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns_name,
        ])?;
        node_ns.ip(&["link", "set", &veth, "up"])?;
        let gateway_mac = mac_of(node_ns, &veth)?;
        pod_ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        pod_ns.ip(&["link", "set", "eth0", "up"])?;
        pod_ns.ip(&[
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        pod_ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ])?;
        pod_ns.ip(&[
            "neigh",
            "add",
            "169.254.1.1",
            "lladdr",
            &gateway_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        node_ns.ip(&["route", "add", &format!("{ip}/32"), "dev", &veth])?;
        let pod = Pod {
            info: PodInfo {
                uid: pseudo_uuid(&ns_name),
                name: spec.name,
                namespace: spec.namespace,
                service_account: spec.service_account,
                ip: IpAddr::V4(ip),
                image: spec.image,
                labels: spec.labels,
                netns: Some(std::path::PathBuf::from(format!(
                    "/var/run/netns/{ns_name}"
                ))),
            },
            node: node.to_owned(),
            ns: pod_ns,
        };
        self.pods.push(pod);
        self.write_workloads(node)?;
        self.pods
            .last()
            .ok_or_else(|| HarnessError::Invalid("pod vanished".into()))
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| HarnessError::Invalid(format!("no node {name}")))
    }

    /// A pod by name (names are unique across namespaces in tests).
    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|p| p.info.name == name)
            .ok_or_else(|| HarnessError::Invalid(format!("no pod {name}")))
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| HarnessError::Invalid(format!("no host {name}")))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter()
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter()
    }

    /// Every namespace of this cluster.
    pub fn namespaces(&self) -> Vec<&str> {
        let pods = self.pods.iter().map(|p| p.ns.name());
        let nodes = self.nodes.iter().map(|n| n.ns.name());
        let hosts = self.hosts.iter().map(|h| h.ns.name());
        pods.chain(nodes)
            .chain(hosts)
            .chain([self.underlay.name()])
            .collect()
    }

    /// Starts a long-running process in a pod with the downward-API variables an
    /// echoserver reads (HOSTNAME, NODE_NAME, POD_NAME, POD_NAMESPACE, POD_IP).
    pub fn spawn_in_pod(&self, pod: &str, program: &str, args: &[&str]) -> Result<Process> {
        let pod = self.pod(pod)?;
        let ip = pod.info.ip.to_string();
        let env = [
            ("HOSTNAME", pod.info.name.as_str()),
            ("NODE_NAME", pod.node.as_str()),
            ("POD_NAME", pod.info.name.as_str()),
            ("POD_NAMESPACE", pod.info.namespace.as_str()),
            ("POD_IP", ip.as_str()),
        ];
        Process::spawn(&pod.ns, &pod.info.name, program, args, &env, self.log_dir())
    }

    /// Runs a command in a pod to completion.
    pub fn exec_in_pod(
        &self,
        pod: &str,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput> {
        exec(&self.pod(pod)?.ns, program, args, timeout)
    }

    /// Real curl inside a pod: `curl -sS -i --max-time 10 ARGS...`.
    pub fn curl(&self, pod: &str, args: &[&str]) -> Result<CurlResponse> {
        curl(&self.pod(pod)?.ns, args)
    }

    /// Real curl on an underlay host (no pod, no mesh: a machine beside the
    /// cluster): `curl -sS -i --max-time 10 ARGS...`.
    pub fn curl_from_host(&self, host: &str, args: &[&str]) -> Result<CurlResponse> {
        curl(self.host(host)?.netns(), args)
    }

    /// Rewrites a node's workloads file atomically (the agent watches it).
    fn write_workloads(&self, node: &str) -> Result<()> {
        let node_ref = self.node(node)?;
        let file = WorkloadsFile {
            node: node.to_owned(),
            workloads: self
                .pods
                .iter()
                .filter(|p| p.node == node)
                .map(|p| p.info.clone())
                .collect(),
        };
        let tmp = node_ref.workloads_file.with_extension("yaml.tmp");
        std::fs::write(&tmp, file.to_yaml())
            .map_err(HarnessError::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &node_ref.workloads_file).map_err(HarnessError::io(format!(
            "rename to {}",
            node_ref.workloads_file.display()
        )))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.log_dir.take() {
                let kept = dir.keep();
                eprintln!("cluster {}: logs kept in {}", self.prefix, kept.display());
            }
        }
        // Pods, nodes, hosts, then the underlay: `Netns::drop` kills each
        // namespace's processes and deletes it, taking its veth ends along.
        self.pods.clear();
        self.nodes.clear();
        self.hosts.clear();
    }
}

/// The node-side veth's MAC, which the pod uses as its gateway's.
fn mac_of(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.ip(&["-o", "link", "show", dev])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::Invalid(format!("no MAC for {dev} in {}", ns.name())))
}

/// A UUID-shaped pod uid, unique per namespace name and run.
fn pseudo_uuid(seed: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    let a = state.hash_one(seed);
    let b = state.hash_one((seed, a));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}
