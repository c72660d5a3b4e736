//! Engine-wide settings: Istio MeshConfig's knobs that change decisions.

use meshward_spiffe::TrustDomain;
use std::fmt;
use std::str::FromStr;

use crate::normalize::PathNormalization;

/// What happens to a request no ALLOW policy matched when no ALLOW policy applies
/// to the workload at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultMode {
    /// meshward's default: denied, even when no policy selects the workload.
    #[default]
    Deny,
    /// Istio's rule: a workload without ALLOW policies allows everything.
    AllowIfNoPolicy,
}

impl DefaultMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::AllowIfNoPolicy => "allow-if-no-policy",
        }
    }
}

impl fmt::Display for DefaultMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DefaultMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(Self::Deny),
            "allow-if-no-policy" => Ok(Self::AllowIfNoPolicy),
            _ => Err(format!(
                "unknown default mode {s:?}: expected deny or allow-if-no-policy"
            )),
        }
    }
}

/// Settings every policy is compiled and evaluated under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    pub default_mode: DefaultMode,
    /// Policies here apply mesh-wide (Istio's `rootNamespace`).
    pub root_namespace: String,
    /// The mesh trust domain; `cluster.local` in a principal points to it.
    pub trust_domain: TrustDomain,
    /// Other names of the mesh trust domain (Istio's `trustDomainAliases`).
    pub trust_domain_aliases: Vec<TrustDomain>,
    pub path_normalization: PathNormalization,
    /// Ports the node serves as opaque TCP (`inbound.ports: {P: tcp}`): a rule with
    /// HTTP fields that targets one never matches there, and loading says so.
    pub tcp_ports: Vec<u16>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            default_mode: DefaultMode::Deny,
            root_namespace: "istio-system".into(),
            trust_domain: TrustDomain::default(),
            trust_domain_aliases: Vec::new(),
            path_normalization: PathNormalization::default(),
            tcp_ports: Vec::new(),
        }
    }
}

impl EngineOptions {
    /// The mesh trust domain followed by its aliases.
    pub(crate) fn mesh_trust_domains(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.trust_domain.as_str())
            .chain(self.trust_domain_aliases.iter().map(TrustDomain::as_str))
    }
}
