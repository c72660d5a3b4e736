//! `authorization:` how policies are found and decided.

use std::path::PathBuf;
use std::time::Duration;

use meshward_policy::{DefaultMode, EngineOptions, PathNormalization, TrustDomain};
use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct AuthorizationConfig {
    /// `deny` (meshward's default) or `allow-if-no-policy` (Istio's).
    pub default: DefaultMode,
    /// Policies here apply mesh-wide.
    pub root_namespace: String,
    /// Other names of the mesh trust domain.
    pub trust_domain_aliases: Vec<TrustDomain>,
    pub path_normalization: PathNormalization,
    /// Files and directories of AuthorizationPolicy YAML, watched and reloaded.
    pub policy_paths: Vec<PathBuf>,
    /// Also watch AuthorizationPolicy objects (`security.istio.io/v1`) through the
    /// Kubernetes API; `{}` = in-cluster. Files and objects form one set.
    pub kubernetes: Option<meshward_kubernetes::ApiEndpoint>,
    /// Fetching RequestAuthentication keys (`jwksUri`, OpenID discovery).
    pub jwks: JwksConfig,
}

/// `authorization.jwks`: how remote JWKS are fetched and kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// PEM roots trusted for JWKS servers besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// How often keys are fetched again (Istio's default: 20 minutes). A failed
    /// refresh keeps the keys of the last good one.
    #[serde(with = "meshward_config::duration")]
    pub refresh_interval: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            refresh_interval: Duration::from_secs(20 * 60),
        }
    }
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        let engine = EngineOptions::default();
        Self {
            default: engine.default_mode,
            root_namespace: engine.root_namespace,
            trust_domain_aliases: engine.trust_domain_aliases,
            path_normalization: engine.path_normalization,
            policy_paths: Vec::new(),
            kubernetes: None,
            jwks: JwksConfig::default(),
        }
    }
}

impl AuthorizationConfig {
    pub(crate) fn validate(&self, source: &str) -> Result<(), ConfigError> {
        if self.jwks.refresh_interval < Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                source,
                "authorization.jwks.refresh_interval",
                "must be at least 10s",
            ));
        }
        if !is_dns_label(&self.root_namespace) {
            return Err(ConfigError::invalid(
                source,
                "authorization.root_namespace",
                format!(
                    "{:?} is not a Kubernetes namespace name",
                    self.root_namespace
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn engine_options(
        &self,
        trust_domain: &TrustDomain,
        tcp_ports: Vec<u16>,
    ) -> EngineOptions {
        EngineOptions {
            default_mode: self.default,
            root_namespace: self.root_namespace.clone(),
            trust_domain: trust_domain.clone(),
            trust_domain_aliases: self.trust_domain_aliases.clone(),
            path_normalization: self.path_normalization,
            tcp_ports,
        }
    }
}

/// RFC 1123 label: what Kubernetes namespace names are.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
