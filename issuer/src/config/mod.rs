//! `issuer.yaml`: the issuance server's configuration.

mod aws_iid;
mod federation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshward_spiffe::TrustDomain;
use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;
use meshward_config::parse_yaml;

pub use aws_iid::AwsIidConfig;
pub use federation::{
    BundleFormat, EndpointProfileName, FederationConfig, FederationRelationshipConfig,
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerConfig {
    pub trust_domain: TrustDomain,
    /// CA keys and the SQLite file live here.
    pub data_dir: PathBuf,
    /// `sqlite:///path` or `postgres://user:pw@host/db`; default: SQLite in data_dir.
    pub datastore_url: Option<String>,
    /// The agent API (gRPC over TLS).
    pub agent_listen: SocketAddr,
    /// `/live` and `/ready` (plain HTTP).
    pub health_listen: SocketAddr,
    /// The admin API (gRPC over a unix socket, mode 0600).
    pub admin_socket: PathBuf,
    #[serde(with = "meshward_config::duration")]
    pub ca_ttl: Duration,
    #[serde(with = "meshward_config::duration")]
    pub default_x509_svid_ttl: Duration,
    #[serde(with = "meshward_config::duration")]
    pub default_jwt_svid_ttl: Duration,
    /// The `iss` claim of JWT-SVIDs (SPIRE's `jwt_issuer`), e.g. the URL of an
    /// OpenID discovery document; none by default, as SPIRE.
    pub jwt_issuer: Option<String>,
    /// TTL of node SVIDs.
    #[serde(with = "meshward_config::duration")]
    pub agent_svid_ttl: Duration,
    #[serde(with = "meshward_config::duration")]
    pub join_token_ttl: Duration,
    pub upstream_ca: Option<UpstreamCaFiles>,
    /// Where the CA keys (X.509 and JWT) live and sign: files in data_dir (the
    /// default), or `pkcs11: {...}` (generated in a token, never extractable).
    pub ca_key_manager: CaKeyManagerConfig,
    /// Node attestors beside join tokens (always on: the admin API makes them);
    /// each agent uses the one its node has.
    pub k8s_psat: Option<K8sPsatConfig>,
    /// EC2 instance identity documents (`aws_iid`).
    pub aws_iid: Option<AwsIidConfig>,
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// Trust domains whose bundles this issuer fetches and keeps.
    pub federation: FederationConfig,
    /// Watch ClusterSPIFFEID objects (`spire.spiffe.io/v1alpha1`) in this Kubernetes
    /// API as identity templates (stored as `k8s/<name>`); `{}` = in-cluster.
    pub cluster_spiffe_ids: Option<meshward_kubernetes::ApiEndpoint>,
    /// Watch ClusterFederatedTrustDomain objects (`spire.spiffe.io/v1alpha1`) in
    /// this Kubernetes API as federation relationships; `{}` = in-cluster.
    pub cluster_federated_trust_domains: Option<meshward_kubernetes::ApiEndpoint>,
    /// Keep the trust bundle (PEM) in a ConfigMap, as SPIRE's k8sbundle notifier
    /// does: the node daemons mount it as `agent.trust_bundle_path`.
    pub bundle_configmap: Option<BundleConfigMap>,
    /// The issuer's logs, as the node daemon's (`log.level`, `log.format`).
    pub log: meshward_config::LogConfig,
}

/// Where the issuer writes its trust bundle in the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfigMap {
    pub namespace: String,
    #[serde(default = "default_bundle_configmap_name")]
    pub name: String,
    /// The data key holding the PEM bundle.
    #[serde(default = "default_bundle_configmap_key")]
    pub key: String,
    /// The API to write to; `{}` or absent = in-cluster.
    #[serde(default)]
    pub kubernetes: meshward_kubernetes::ApiEndpoint,
}

fn default_bundle_configmap_name() -> String {
    "meshward-bundle".into()
}

fn default_bundle_configmap_key() -> String {
    "bundle.pem".into()
}

/// An upstream CA as files: PEM chain (signing certificate first) and its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCaFiles {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
}

/// `ca_key_manager:` absent (or `{}`): the keys are files in `data_dir`; with
/// `pkcs11:`, they are made and used in that token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaKeyManagerConfig {
    pub pkcs11: Option<Pkcs11Config>,
}

/// A PKCS#11 token holding the CA keys: SoftHSM2, an HSM, AWS CloudHSM's PKCS#11
/// library, a KMS's PKCS#11 provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so` or
    /// `/opt/cloudhsm/lib/libcloudhsm_pkcs11.so`.
    pub library_path: PathBuf,
    /// The label of the token (CK_TOKEN_INFO.label) that holds the keys.
    pub token_label: String,
    /// A file holding the user PIN (trailing newline ignored); or `pin_env`.
    pub pin_file: Option<PathBuf>,
    /// The environment variable holding the user PIN; or `pin_file`.
    pub pin_env: Option<String>,
    /// Keys are labelled `<prefix>/<generation>/ca` and `.../jwt`.
    #[serde(default = "default_key_label_prefix")]
    pub key_label_prefix: String,
}

fn default_key_label_prefix() -> String {
    "meshward".into()
}

/// Kubernetes projected service-account token attestation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct K8sPsatConfig {
    pub clusters: Vec<K8sCluster>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct K8sCluster {
    pub name: String,
    /// The API server, e.g. `https://kubernetes.default.svc`.
    pub api_server: String,
    /// Token the issuer authenticates to the API server with (TokenReview create).
    pub api_token_path: Option<PathBuf>,
    /// CA bundle of the API server's certificate.
    pub api_ca_path: Option<PathBuf>,
    #[serde(default = "default_audience")]
    pub audience: Vec<String>,
    /// `namespace:serviceaccount` pairs allowed to attest.
    pub service_account_allow_list: Vec<String>,
}

fn default_audience() -> Vec<String> {
    vec!["meshward-issuer".into()]
}

/// The federation bundle endpoint (HTTPS, SPIFFE bundle format).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEndpointConfig {
    pub listen: SocketAddr,
    #[serde(with = "meshward_config::duration", default = "default_refresh_hint")]
    pub refresh_hint: Duration,
    /// `https_spiffe` (the issuer's own SVID) or `https_web` (cert_file and key_file).
    pub profile: BundleEndpointProfile,
    /// https_web only: PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// https_web only: PEM private key.
    pub key_file: Option<PathBuf>,
}

fn default_refresh_hint() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum BundleEndpointProfile {
    HttpsSpiffe,
    HttpsWeb,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::default(),
            data_dir: PathBuf::from("/var/lib/meshward/issuer"),
            datastore_url: None,
            agent_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_socket: PathBuf::from("/run/meshward/issuer.sock"),
            ca_ttl: Duration::from_secs(24 * 3600),
            default_x509_svid_ttl: Duration::from_secs(3600),
            default_jwt_svid_ttl: Duration::from_secs(300),
            jwt_issuer: None,
            agent_svid_ttl: Duration::from_secs(3600),
            join_token_ttl: Duration::from_secs(600),
            upstream_ca: None,
            ca_key_manager: CaKeyManagerConfig::default(),
            k8s_psat: None,
            aws_iid: None,
            bundle_endpoint: None,
            federation: FederationConfig::default(),
            cluster_spiffe_ids: None,
            cluster_federated_trust_domains: None,
            bundle_configmap: None,
            log: meshward_config::LogConfig::default(),
        }
    }
}

impl IssuerConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(
            &meshward_config::read_file(path)?,
            &path.display().to_string(),
        )
    }

    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_yaml(text, source)?;
        config.validate(source)?;
        Ok(config)
    }

    /// The datastore URL, defaulting to a SQLite file in data_dir.
    pub fn datastore_url(&self) -> String {
        self.datastore_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("datastore.sqlite3").display()
            )
        })
    }

    fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid =
            |field: &str, reason: String| Err(ConfigError::invalid(source, field, reason));
        if self.ca_ttl < Duration::from_secs(60) {
            return invalid("ca_ttl", "must be at least 1m".into());
        }
        if let Some(issuer) = &self.jwt_issuer {
            // SPIRE requires a URL; a RequestAuthentication rule names it exactly
            let url = issuer.split_once("://");
            if !url.is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty()) {
                return invalid("jwt_issuer", format!("{issuer:?} is not a URL"));
            }
        }
        for (field, ttl) in [
            ("default_x509_svid_ttl", self.default_x509_svid_ttl),
            ("default_jwt_svid_ttl", self.default_jwt_svid_ttl),
            ("agent_svid_ttl", self.agent_svid_ttl),
            ("join_token_ttl", self.join_token_ttl),
        ] {
            if ttl.is_zero() {
                return invalid(field, "must be positive".into());
            }
            if ttl > self.ca_ttl {
                return invalid(
                    field,
                    format!(
                        "must not exceed ca_ttl ({})",
                        meshward_config::duration::format(self.ca_ttl)
                    ),
                );
            }
        }
        if let Some(url) = &self.datastore_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
            {
                return invalid(
                    "datastore_url",
                    "must start with sqlite: or postgres:".into(),
                );
            }
        }
        if let Some(pkcs11) = &self.ca_key_manager.pkcs11 {
            pkcs11.validate(source)?;
        }
        self.federation.validate(source, &self.trust_domain)?;
        if let Some(endpoint) = &self.bundle_endpoint {
            let files = endpoint.cert_file.is_some() && endpoint.key_file.is_some();
            let any_file = endpoint.cert_file.is_some() || endpoint.key_file.is_some();
            match endpoint.profile {
                BundleEndpointProfile::HttpsWeb if !files => {
                    return invalid(
                        "bundle_endpoint",
                        "profile https_web needs cert_file and key_file".into(),
                    );
                }
                BundleEndpointProfile::HttpsSpiffe if any_file => {
                    return invalid(
                        "bundle_endpoint",
                        "profile https_spiffe uses the issuer's SVID: drop cert_file and key_file"
                            .into(),
                    );
                }
                _ => {}
            }
        }
        if let Some(iid) = &self.aws_iid {
            iid.validate(source)?;
        }
        if let Some(psat) = &self.k8s_psat {
            for (i, cluster) in psat.clusters.iter().enumerate() {
                if cluster.name.is_empty() {
                    return invalid(
                        &format!("k8s_psat.clusters[{i}].name"),
                        "must not be empty".into(),
                    );
                }
                for (j, sa) in cluster.service_account_allow_list.iter().enumerate() {
                    if sa
                        .split_once(':')
                        .is_none_or(|(ns, name)| ns.is_empty() || name.is_empty())
                    {
                        return invalid(
                            &format!("k8s_psat.clusters[{i}].service_account_allow_list[{j}]"),
                            format!("{sa:?} is not namespace:serviceaccount"),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

impl Pkcs11Config {
    fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| {
            Err(ConfigError::invalid(
                source,
                &format!("ca_key_manager.pkcs11.{field}"),
                reason,
            ))
        };
        if !self.library_path.is_absolute() {
            return invalid(
                "library_path",
                format!("{} is not an absolute path", self.library_path.display()),
            );
        }
        if !self.library_path.is_file() {
            return invalid(
                "library_path",
                format!(
                    "{} does not exist (install the vendor's PKCS#11 library)",
                    self.library_path.display()
                ),
            );
        }
        if self.token_label.is_empty() || self.token_label.len() > 32 {
            return invalid(
                "token_label",
                "must be 1 to 32 bytes (a PKCS#11 token label)".into(),
            );
        }
        match (&self.pin_file, &self.pin_env) {
            (None, None) => {
                return invalid(
                    "pin_file",
                    "the user PIN is needed: set pin_file or pin_env".into(),
                );
            }
            (Some(_), Some(_)) => {
                return invalid("pin_env", "set pin_file or pin_env, not both".into());
            }
            (None, Some(var)) if var.is_empty() => {
                return invalid("pin_env", "must name an environment variable".into());
            }
            _ => {}
        }
        if self.key_label_prefix.is_empty() {
            return invalid("key_label_prefix", "must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_spire() {
        let c = IssuerConfig::from_yaml("", "i.yaml").unwrap();
        assert_eq!(c.ca_ttl, Duration::from_secs(86_400));
        assert_eq!(c.default_x509_svid_ttl, Duration::from_secs(3600));
        assert_eq!(c.default_jwt_svid_ttl, Duration::from_secs(300));
        assert_eq!(c.join_token_ttl, Duration::from_secs(600));
        assert_eq!(c.jwt_issuer, None);
        assert_eq!(c.agent_listen.port(), 8081);
        assert_eq!(
            c.datastore_url(),
            "sqlite:///var/lib/meshward/issuer/datastore.sqlite3"
        );
    }

    #[test]
    fn full_file() {
        let yaml = "trust_domain: math.example.com\ndata_dir: /tmp/i\ndatastore_url: postgres://u:p@db/issuer\nca_ttl: 12h\ndefault_x509_svid_ttl: 30m\nupstream_ca:\n  cert_chain: /etc/ca.pem\n  key: /etc/ca.key\nk8s_psat:\n  clusters:\n  - name: eks\n    api_server: https://k8s\n    service_account_allow_list: [meshward:meshward-node]\nbundle_endpoint:\n  listen: 0.0.0.0:8443\n  profile: https_spiffe\n";
        let c = IssuerConfig::from_yaml(yaml, "i.yaml").unwrap();
        assert_eq!(c.ca_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(
            c.k8s_psat.unwrap().clusters[0].audience,
            ["meshward-issuer"]
        );
        assert_eq!(
            c.bundle_endpoint.unwrap().refresh_hint,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn key_managers() {
        let c = IssuerConfig::from_yaml("", "i.yaml").unwrap();
        assert_eq!(c.ca_key_manager.pkcs11, None, "files by default");
        let c = IssuerConfig::from_yaml("ca_key_manager: {}\n", "i.yaml").unwrap();
        assert_eq!(c.ca_key_manager.pkcs11, None);
        let yaml = "ca_key_manager:\n  pkcs11:\n    library_path: /bin/sh\n    token_label: meshward\n    pin_file: /run/pin\n";
        let c = IssuerConfig::from_yaml(yaml, "i.yaml").unwrap();
        let p = c.ca_key_manager.pkcs11.expect("pkcs11");
        assert_eq!(p.token_label, "meshward");
        assert_eq!(p.key_label_prefix, "meshward");
        assert_eq!(p.pin_file.as_deref(), Some(Path::new("/run/pin")));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "ca_ttl: forever\n",
                "i.yaml: ca_ttl: \"forever\" is not a duration",
            ),
            (
                "ca_ttl: 1h\ndefault_x509_svid_ttl: 2h\n",
                "i.yaml: default_x509_svid_ttl: must not exceed ca_ttl (1h)",
            ),
            (
                "datastore_url: mysql://x\n",
                "i.yaml: datastore_url: must start with sqlite: or postgres:",
            ),
            (
                "trust_domain: TD\n",
                "i.yaml: trust_domain: invalid trust domain \"TD\"",
            ),
            (
                "agent_listen: nowhere\n",
                "i.yaml: agent_listen: invalid socket address syntax",
            ),
            (
                "k8s_psat:\n  clusters:\n  - {name: a, api_server: x, service_account_allow_list: [bad]}\n",
                "i.yaml: k8s_psat.clusters[0].service_account_allow_list[0]",
            ),
            ("tls: {}\n", "i.yaml: tls: unknown field `tls`"),
            (
                "jwt_issuer: oidc.example\n",
                "i.yaml: jwt_issuer: \"oidc.example\" is not a URL",
            ),
            (
                "bundle_endpoint: {listen: 0.0.0.0:8443, profile: https_web}\n",
                "i.yaml: bundle_endpoint: profile https_web needs cert_file and key_file",
            ),
            (
                "ca_key_manager: {pkcs11: {library_path: lib.so, token_label: t, pin_env: P}}\n",
                "i.yaml: ca_key_manager.pkcs11.library_path: lib.so is not an absolute path",
            ),
            (
                "ca_key_manager: {pkcs11: {library_path: /nowhere/lib.so, token_label: t, pin_env: P}}\n",
                "i.yaml: ca_key_manager.pkcs11.library_path: /nowhere/lib.so does not exist",
            ),
            (
                "ca_key_manager: {pkcs11: {library_path: /bin/sh, token_label: t}}\n",
                "i.yaml: ca_key_manager.pkcs11.pin_file: the user PIN is needed",
            ),
            (
                "ca_key_manager: {pkcs11: {library_path: /bin/sh, token_label: t, pin_env: P, pin_file: /p}}\n",
                "i.yaml: ca_key_manager.pkcs11.pin_env: set pin_file or pin_env, not both",
            ),
            (
                "ca_key_manager: {pkcs11: {library_path: /bin/sh, token_label: '', pin_env: P}}\n",
                "i.yaml: ca_key_manager.pkcs11.token_label: must be 1 to 32 bytes",
            ),
            (
                "ca_key_manager: {pkcs11: {library_path: /bin/sh, token_label: t, pin_env: P, slot: 1}}\n",
                "i.yaml: ca_key_manager.pkcs11.slot: unknown field `slot`",
            ),
            (
                "ca_key_manager: {kms: {}}\n",
                "i.yaml: ca_key_manager.kms: unknown field `kms`",
            ),
        ];
        for (yaml, want) in cases {
            let e = IssuerConfig::from_yaml(yaml, "i.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
    }
}
