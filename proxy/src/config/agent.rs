//! `agent:` how the node daemon gets identities: which issuer, how the node
//! attests, where the node's workloads come from, where the Workload API listens.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The issuer's agent API: `host:port`, or a list of them (replicas). A name
    /// that resolves to several addresses (a headless Service) counts as several;
    /// the agent fails over between them.
    #[serde(deserialize_with = "one_or_many")]
    pub issuer_address: Vec<String>,
    /// PEM bundle the first connection to the issuer is verified with (later ones
    /// use the bundle the issuer serves). Required: no insecure bootstrap.
    pub trust_bundle_path: Option<PathBuf>,
    /// The node SVID, its key (0600) and the last bundle, so a restart needs no new token.
    pub data_dir: PathBuf,
    pub join_token: Option<String>,
    pub join_token_file: Option<PathBuf>,
    pub k8s_psat: Option<AgentPsat>,
    /// The EC2 instance's identity document from IMDS (`aws_iid`).
    pub aws_iid: Option<AgentAwsIid>,
    pub workloads: WorkloadSourceConfig,
    /// The SPIFFE Workload API socket.
    pub workload_api_socket: PathBuf,
    /// How often entries, templates and bundles are synced.
    #[serde(with = "meshward_config::duration")]
    pub sync_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPsat {
    pub cluster: String,
    /// The projected token (audience: the issuer's), re-read at every attestation.
    #[serde(default = "default_psat_token_path")]
    pub token_path: PathBuf,
}

/// `aws_iid`: where IMDS answers and how long each request may take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAwsIid {
    /// SPIRE's `ec2_metadata_endpoint`; IMDS's link-local address by default.
    #[serde(default = "default_imds_address")]
    pub imds_address: std::net::SocketAddr,
    /// The bound on each IMDS request (token, document, signature).
    #[serde(with = "meshward_config::duration", default = "default_imds_timeout")]
    pub imds_timeout: Duration,
}

impl Default for AgentAwsIid {
    fn default() -> Self {
        Self {
            imds_address: default_imds_address(),
            imds_timeout: default_imds_timeout(),
        }
    }
}

fn default_imds_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([169, 254, 169, 254], 80))
}

fn default_imds_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_psat_token_path() -> PathBuf {
    PathBuf::from("/var/run/secrets/tokens/meshward-node")
}

/// `x` or `[x, y]`: a single value is a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(one)) => Ok(vec![one]),
        Ok(OneOrMany::Many(many)) => Ok(many),
        Err(_) => Err(serde::de::Error::custom(
            "expected host:port or a list of host:port",
        )),
    }
}

/// Exactly one source of the node's workloads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSourceConfig {
    /// A workloads file (see `WorkloadsFile`), watched and reloaded.
    pub file: Option<PathBuf>,
    /// The Kubernetes API: the pods whose spec.nodeName is this node.
    pub kubernetes: Option<KubernetesSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSource {
    /// This node's name; empty: the `NODE_NAME` environment variable (the downward
    /// API's spec.nodeName), so one ConfigMap serves a whole DaemonSet.
    #[serde(default)]
    pub node_name: String,
    /// The API server; default: the in-cluster service account configuration.
    pub api_server: Option<String>,
    pub api_ca_path: Option<PathBuf>,
    pub api_token_path: Option<PathBuf>,
    /// As in every `kubernetes:` block (`meshward_kubernetes::ApiEndpoint`).
    pub watch_timeout_seconds: Option<u32>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            issuer_address: vec!["meshward-issuer.meshward:8081".into()],
            trust_bundle_path: None,
            data_dir: PathBuf::from("/var/lib/meshward/agent"),
            join_token: None,
            join_token_file: None,
            k8s_psat: None,
            aws_iid: None,
            workloads: WorkloadSourceConfig::default(),
            workload_api_socket: PathBuf::from("/run/meshward/sockets/agent.sock"),
            sync_interval: Duration::from_secs(5),
        }
    }
}

impl AgentConfig {
    /// Cross-field rules; run by `ProxyConfig::validate`.
    pub(crate) fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| Err(ConfigError::invalid(source, field, reason));
        let methods = usize::from(self.join_token.is_some())
            + usize::from(self.join_token_file.is_some())
            + usize::from(self.k8s_psat.is_some())
            + usize::from(self.aws_iid.is_some());
        if methods > 1 {
            return invalid(
                "agent",
                "set only one of join_token, join_token_file, k8s_psat and aws_iid",
            );
        }
        if let Some(iid) = &self.aws_iid {
            if iid.imds_timeout.is_zero() || iid.imds_timeout > Duration::from_secs(60) {
                return invalid("agent.aws_iid.imds_timeout", "must be between 1ms and 1m");
            }
        }
        if self.workloads.file.is_some() && self.workloads.kubernetes.is_some() {
            return invalid("agent.workloads", "set only one of file and kubernetes");
        }
        if self.sync_interval < Duration::from_secs(1) {
            return invalid("agent.sync_interval", "must be at least 1s");
        }
        if self.issuer_address.is_empty() {
            return invalid("agent.issuer_address", "needs at least one host:port");
        }
        for (i, address) in self.issuer_address.iter().enumerate() {
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                let field = match self.issuer_address.len() {
                    1 => "agent.issuer_address".to_owned(),
                    _ => format!("agent.issuer_address[{i}]"),
                };
                return invalid(&field, &format!("{address:?} must be host:port"));
            }
        }
        Ok(())
    }

    /// Whether the agent is configured at all (an attestation method is set).
    pub fn is_enabled(&self) -> bool {
        self.join_token.is_some()
            || self.join_token_file.is_some()
            || self.k8s_psat.is_some()
            || self.aws_iid.is_some()
    }
}
