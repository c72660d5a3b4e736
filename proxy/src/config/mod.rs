//! `proxy.yaml`: the node daemon's typed configuration.
//!
//! Parsed once into types, validated across fields, with errors that name the file,
//! the field path and the reason (`meshward_config`). Every field has a default, so
//! an empty file (or none) is a working configuration. The sections: the trust
//! domain, authorization, the agent, capture, the data path's inbound, outbound and
//! limits, HBONE, the external authorizers, and the workloads file.

mod agent;
mod authorization;
mod capture;
mod datapath;
mod hbone;
mod workloads;

use std::path::Path;

use meshward_config::{ConfigError, LogConfig};
use meshward_extauthz::config::ExtensionProvider;
use meshward_spiffe::TrustDomain;
use serde::{Deserialize, Serialize};

pub use agent::{AgentAwsIid, AgentConfig, AgentPsat, KubernetesSource, WorkloadSourceConfig};
pub use authorization::{AuthorizationConfig, JwksConfig};
pub use capture::{CaptureConfig, CaptureOnExit};
pub use datapath::{AppProtocol, InboundConfig, LimitsConfig, OutboundConfig, PlaintextMode};
pub use hbone::HboneConfig;
pub use workloads::{PodInfo, WorkloadsFile};

/// `proxy.yaml`: the node daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct ProxyConfig {
    /// The mesh trust domain, e.g. `cluster.local` or `math.example.com`.
    pub trust_domain: TrustDomain,
    pub authorization: AuthorizationConfig,
    pub agent: AgentConfig,
    pub capture: CaptureConfig,
    pub inbound: InboundConfig,
    pub outbound: OutboundConfig,
    pub limits: LimitsConfig,
    pub hbone: HboneConfig,
    /// `/healthz/ready`: ready once the node attested and the first sync is done.
    pub readiness_listen: std::net::SocketAddr,
    /// The same readiness on a unix socket in a directory of this daemon's own
    /// (an `emptyDir` of its pod), for `meshward proxy ready`: during an upgrade
    /// the TCP port is shared with the daemon being replaced.
    pub readiness_socket: Option<std::path::PathBuf>,
    /// Admin endpoints (`/config_dump`, `/certs`, `/explain`, `/logging`...):
    /// loopback only by default, as they show identities and change log levels.
    pub admin_listen: std::net::SocketAddr,
    /// `/stats/prometheus`.
    pub metrics_listen: std::net::SocketAddr,
    pub log: LogConfig,
    /// Threads of the async runtime. Absent: ztunnel's rule, max(2, a quarter of
    /// the cores this process may use): a node proxy leaves the cores to the pods.
    pub worker_threads: Option<usize>,
    /// External authorizers CUSTOM policies name (Istio's meshConfig
    /// `extensionProviders`).
    #[serde(alias = "extensionProviders")]
    pub extension_providers: Vec<ExtensionProvider>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::default(),
            authorization: AuthorizationConfig::default(),
            agent: AgentConfig::default(),
            capture: CaptureConfig::default(),
            inbound: InboundConfig::default(),
            outbound: OutboundConfig::default(),
            limits: LimitsConfig::default(),
            hbone: HboneConfig::default(),
            readiness_listen: std::net::SocketAddr::from(([0, 0, 0, 0], 15021)),
            readiness_socket: None,
            admin_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 15000)),
            metrics_listen: std::net::SocketAddr::from(([0, 0, 0, 0], 15020)),
            log: LogConfig::default(),
            worker_threads: None,
            extension_providers: Vec::new(),
        }
    }
}

impl ProxyConfig {
    /// Reads and validates a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(
            &meshward_config::read_file(path)?,
            &path.display().to_string(),
        )
    }

    /// Parses and validates YAML text; `source` names it in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ConfigError> {
        let config: Self = meshward_config::parse_yaml(text, source)?;
        config.validate(source)?;
        Ok(config)
    }

    fn validate(&self, source: &str) -> Result<(), ConfigError> {
        self.authorization.validate(source)?;
        self.agent.validate(source)?;
        self.capture.validate(source)?;
        self.hbone.validate(source)?;
        meshward_extauthz::config::validate(&self.extension_providers, source)?;
        if let Some(threads) = self.worker_threads
            && !(1..=1024).contains(&threads)
        {
            return Err(ConfigError::invalid(
                source,
                "worker_threads",
                format!("{threads} is not between 1 and 1024"),
            ));
        }
        self.limits.validate(source)
    }

    /// The runtime's thread count: `worker_threads`, or max(2, cores / 4).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            cores.div_ceil(4).max(2)
        })
    }

    /// The policy engine's options under this configuration.
    pub fn engine_options(&self) -> meshward_policy::EngineOptions {
        let tcp_ports = self
            .inbound
            .ports
            .iter()
            .filter(|(_, protocol)| **protocol == AppProtocol::Tcp)
            .map(|(port, _)| *port)
            .collect();
        self.authorization
            .engine_options(&self.trust_domain, tcp_ports)
    }
}

#[cfg(test)]
mod tests;
