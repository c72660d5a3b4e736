//! `inbound:`, `outbound:` and `limits:`: how the node proxy treats pod traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

/// Plaintext arriving for a local pod (port 15006), as Istio's PeerAuthentication modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlaintextMode {
    /// Refused: only mTLS (HBONE) reaches pods.
    #[default]
    Strict,
    /// Let through as a request without a principal, still subject to policy.
    Permissive,
}

/// What a destination port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1 or HTTP/2 (gRPC included): authorized per request.
    Http,
    /// Opaque bytes: authorized once per connection.
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    pub plaintext: PlaintextMode,
    /// Protocol per destination (container) port; other ports are detected from
    /// the first bytes the client sends.
    pub ports: BTreeMap<u16, AppProtocol>,
    /// How long detection waits for the client's first bytes. A client that sends
    /// nothing by then is refused, unless its port is declared `tcp` (server-first
    /// protocols); bytes that began an HTTP request stay HTTP however slow.
    #[serde(with = "meshward_config::duration")]
    pub protocol_detection_timeout: Duration,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            plaintext: PlaintextMode::Strict,
            ports: BTreeMap::new(),
            protocol_detection_timeout: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Where meshed pods live (the cluster's pod CIDRs; on EKS the VPC subnets pods
    /// get addresses from). A connection from an enrolled pod to an address in
    /// these goes over HBONE; anything else passes through as it is.
    pub mesh_cidrs: Vec<IpNet>,
    /// Where Services and EndpointSlices are watched, so a connection to a
    /// Service's cluster IP goes to one of its ready pods over HBONE (`{}`:
    /// in-cluster). Absent: cluster IPs pass through to kube-proxy.
    pub kubernetes: Option<meshward_kubernetes::ApiEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// TCP connect to a peer node or a pod.
    #[serde(with = "meshward_config::duration")]
    pub connect_timeout: Duration,
    /// A TLS handshake, either side.
    #[serde(with = "meshward_config::duration")]
    pub handshake_timeout: Duration,
    /// A connection (or tunnelled stream) with no bytes either way is closed.
    #[serde(with = "meshward_config::duration")]
    pub idle_timeout: Duration,
    /// Connections accepted at once, per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// HTTP/2 streams on one HBONE connection (and the pool opens another past it).
    pub max_streams_per_connection: u32,
    /// A pooled HBONE connection to another node with no stream for this long is
    /// closed (ztunnel's pool release timeout).
    #[serde(with = "meshward_config::duration")]
    pub pool_idle_timeout: Duration,
    /// Request header block, HTTP/1 and HTTP/2.
    pub max_header_bytes: usize,
    /// On SIGTERM, how long connections still open may finish before the daemon
    /// exits (keep it below the pod's `terminationGracePeriodSeconds`).
    #[serde(with = "meshward_config::duration")]
    pub drain_grace_period: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 16_384,
            max_streams_per_connection: 100,
            pool_idle_timeout: Duration::from_secs(300),
            max_header_bytes: 64 * 1024,
            drain_grace_period: Duration::from_secs(25),
        }
    }
}

impl LimitsConfig {
    pub(crate) fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| Err(ConfigError::invalid(source, field, reason));
        for (field, value) in [
            ("limits.connect_timeout", self.connect_timeout),
            ("limits.handshake_timeout", self.handshake_timeout),
            ("limits.idle_timeout", self.idle_timeout),
            ("limits.pool_idle_timeout", self.pool_idle_timeout),
            ("limits.drain_grace_period", self.drain_grace_period),
        ] {
            if value.is_zero() {
                return invalid(field, "must be more than 0s");
            }
        }
        if self.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.max_streams_per_connection == 0 {
            return invalid("limits.max_streams_per_connection", "must be at least 1");
        }
        if self.max_header_bytes < 1024 {
            return invalid("limits.max_header_bytes", "must be at least 1024");
        }
        Ok(())
    }
}
