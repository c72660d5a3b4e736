//! [`MeshSpec`]: what [`super::Mesh::start`] builds.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::cluster::PodSpec;
use crate::error::Result;
use crate::netns::Netns;

/// How a node's agent attests when not by a join token (the default).
#[derive(Debug, Clone)]
pub struct NodeAttestation {
    /// The `agent:` lines (indented two spaces) that choose the method, e.g.
    /// `  aws_iid: {}\n`.
    pub agent_yaml: String,
    /// The parent of the node's pods' entries: a node alias entry
    /// (`entry create -node`) the harness creates with `alias_selectors`.
    pub alias_id: String,
    pub alias_selectors: Vec<String>,
    /// Run in the node's network namespace once it exists, before its daemon
    /// starts (e.g. the instance metadata service the node has).
    pub setup: Option<NodeSetup>,
}

/// What [`NodeSetup`] runs.
pub type SetupFn = dyn Fn(&Netns) -> Result<()> + Send + Sync;

/// A closure run in a node's namespace.
#[derive(Clone)]
pub struct NodeSetup(pub Arc<SetupFn>);

impl fmt::Debug for NodeSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSetup(..)")
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// The first cluster: what a test means by "the mesh".
    pub(super) trust_domain: String,
    pub(super) nodes: Vec<String>,
    /// Further clusters (trust domain, nodes), each with its own issuer.
    pub(super) clusters: Vec<(String, Vec<String>)>,
    /// Extra `issuer.yaml` text for every issuer (e.g. `ca_ttl: 1m`).
    pub(super) issuer_yaml: String,
    /// `bundle_endpoint.refresh_hint` of every issuer (seconds).
    pub(super) bundle_refresh_hint: u32,
    /// (node, pod, whether an entry grants it `ns/<ns>/sa/<sa>`)
    pub(super) pods: Vec<(String, PodSpec, bool)>,
    /// Extra `proxy.yaml` text for every node (e.g. `inbound:` settings).
    pub(super) proxy_yaml: String,
    pub(super) outbound_yaml: String,
    /// `outbound.mesh_cidrs` beyond the nodes' pod CIDRs.
    pub(super) mesh_cidrs: Vec<String>,
    pub(super) capture_yaml: String,
    pub(super) authorization_yaml: String,
    /// `-x509SVIDTTL` of the pods' entries (seconds; 0: the issuer's default).
    pub(super) svid_ttl: u32,
    /// `authorization.default` of every node.
    pub(super) default_mode: String,
    /// Namespace prefix and address block; `None`: a unique test prefix.
    pub(super) prefix: Option<(String, u8)>,
    /// `capture.exclude_ports`: traffic to these ports bypasses the daemons.
    pub(super) exclude_ports: Vec<u16>,
    /// `capture.exclude_cidrs` holds the issuer's address (as a node excludes its
    /// API server).
    pub(super) exclude_issuer: bool,
    /// The daemons' `RUST_LOG`.
    pub(super) log: String,
    /// The first cluster's issuer runs as this many replicas (1: a single one)
    /// on this shared datastore (a PostgreSQL URL).
    pub(super) issuer_replicas: (usize, Option<String>),
    /// Nodes that attest otherwise than by a join token.
    pub(super) attestations: BTreeMap<String, NodeAttestation>,
    /// Ports of the test's loopback servers every issuer reaches.
    pub(super) issuer_loopback_ports: Vec<u16>,
}

impl MeshSpec {
    pub fn new(trust_domain: &str, nodes: &[&str]) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            clusters: Vec::new(),
            issuer_yaml: String::new(),
            bundle_refresh_hint: 300,
            pods: Vec::new(),
            proxy_yaml: String::new(),
            outbound_yaml: String::new(),
            mesh_cidrs: Vec::new(),
            capture_yaml: String::new(),
            authorization_yaml: String::new(),
            svid_ttl: 0,
            default_mode: "deny".into(),
            prefix: None,
            exclude_ports: Vec::new(),
            exclude_issuer: false,
            log: "info,access=debug".into(),
            issuer_replicas: (1, None),
            attestations: BTreeMap::new(),
            issuer_loopback_ports: Vec::new(),
        }
    }

    /// The first cluster's issuer as `replicas` replicas, each on a host of its own
    /// with a CA of its own, sharing the datastore at `datastore_url`; every node
    /// lists them all in `agent.issuer_address`.
    pub fn replicated_issuer(&mut self, replicas: usize, datastore_url: &str) -> &mut Self {
        self.issuer_replicas = (replicas.max(1), Some(datastore_url.to_owned()));
        self
    }

    /// Another cluster on the same underlay: its own trust domain, issuer and
    /// nodes. Pod addresses route between the clusters, as between two peered
    /// VPCs; trust between them is what federation adds.
    pub fn cluster(&mut self, trust_domain: &str, nodes: &[&str]) -> &mut Self {
        self.clusters.push((
            trust_domain.to_owned(),
            nodes.iter().map(|n| (*n).to_owned()).collect(),
        ));
        self
    }

    /// Appends top-level `issuer.yaml` settings for every issuer.
    pub fn issuer_yaml(&mut self, yaml: &str) -> &mut Self {
        self.issuer_yaml.push_str(yaml);
        self
    }

    /// The `spiffe_refresh_hint` every issuer's bundle endpoint serves.
    pub fn bundle_refresh_hint(&mut self, seconds: u32) -> &mut Self {
        self.bundle_refresh_hint = seconds;
        self
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

    /// Appends lines (indented two spaces) to every node's `authorization:` section.
    pub fn authorization_yaml(&mut self, yaml: &str) -> &mut Self {
        self.authorization_yaml.push_str(yaml);
        self
    }

    /// `node` attests as `attestation` says instead of by a join token.
    pub fn node_attestation(&mut self, node: &str, attestation: NodeAttestation) -> &mut Self {
        self.attestations.insert(node.to_owned(), attestation);
        self
    }

    /// Every issuer reaches the test's server on `127.0.0.1:port` at that address
    /// (a Kubernetes API its k8s_psat attestor asks).
    pub fn issuer_reaches(&mut self, port: u16) -> &mut Self {
        self.issuer_loopback_ports.push(port);
        self
    }

    /// Appends top-level `proxy.yaml` sections for every node.
    pub fn proxy_yaml(&mut self, yaml: &str) -> &mut Self {
        self.proxy_yaml.push_str(yaml);
        self
    }
}
