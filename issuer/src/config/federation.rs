//! `issuer.yaml` `federation:`: the trust domains this issuer federates with
//! (SPIRE's `federates_with`), and the roots that authenticate `https_web`
//! bundle endpoints.

use std::path::PathBuf;

use meshward_spiffe::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// PEM roots for `https_web` endpoints instead of the system's (a private CA).
    pub https_web_ca_file: Option<PathBuf>,
    pub federates_with: Vec<FederationRelationshipConfig>,
}

/// One federation relationship; the same fields as
/// `meshward issuer federation create`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationRelationshipConfig {
    pub trust_domain: TrustDomain,
    /// `https://host[:port][/path]`, never inferred from the trust domain.
    pub bundle_endpoint_url: String,
    pub bundle_endpoint_profile: EndpointProfileName,
    /// `https_spiffe` only: the SPIFFE ID the endpoint's certificate must carry.
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// The first bundle of that domain, until the endpoint is reached (needed by
    /// `https_spiffe`, whose endpoint is authenticated with it).
    pub trust_domain_bundle_path: Option<PathBuf>,
    #[serde(default)]
    pub trust_domain_bundle_format: BundleFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointProfileName {
    HttpsWeb,
    HttpsSpiffe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleFormat {
    #[default]
    Spiffe,
    Pem,
}

impl FederationConfig {
    pub(crate) fn validate(&self, source: &str, own: &TrustDomain) -> Result<(), ConfigError> {
        for (i, r) in self.federates_with.iter().enumerate() {
            let field = |name: &str| format!("federation.federates_with[{i}].{name}");
            let invalid =
                |name: &str, reason: &str| Err(ConfigError::invalid(source, &field(name), reason));
            if r.trust_domain == *own {
                return invalid("trust_domain", "is this issuer's own trust domain");
            }
            if !r.bundle_endpoint_url.starts_with("https://") {
                return invalid("bundle_endpoint_url", "must be an https:// URL");
            }
            match (r.bundle_endpoint_profile, &r.endpoint_spiffe_id) {
                (EndpointProfileName::HttpsSpiffe, None) => {
                    return invalid("endpoint_spiffe_id", "is required by https_spiffe");
                }
                (EndpointProfileName::HttpsWeb, Some(_)) => {
                    return invalid("endpoint_spiffe_id", "is for https_spiffe only");
                }
                _ => {}
            }
            if r.bundle_endpoint_profile == EndpointProfileName::HttpsSpiffe
                && r.trust_domain_bundle_path.is_none()
            {
                return invalid(
                    "trust_domain_bundle_path",
                    "is required by https_spiffe: the endpoint is authenticated with that bundle",
                );
            }
            let duplicate = self.federates_with[..i]
                .iter()
                .any(|other| other.trust_domain == r.trust_domain);
            if duplicate {
                return invalid("trust_domain", "is listed twice");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::IssuerConfig;

    use super::*;

    const B: &str = "trust_domain: b.example\n    bundle_endpoint_url: https://10.0.0.2:8443\n";

    #[test]
    fn relationships_read_as_spire_spells_them() {
        let yaml = format!(
            "trust_domain: a.example\nfederation:\n  https_web_ca_file: /etc/ca.pem\n  federates_with:\n  - {B}    bundle_endpoint_profile: https_spiffe\n    endpoint_spiffe_id: spiffe://b.example/spire/server\n    trust_domain_bundle_path: /etc/b.json\n  - trust_domain: c.example\n    bundle_endpoint_url: https://bundles.c.example/\n    bundle_endpoint_profile: https_web\n"
        );
        let config = IssuerConfig::from_yaml(&yaml, "i.yaml").unwrap();
        let [b, c] = config.federation.federates_with.as_slice() else {
            panic!("{:?}", config.federation);
        };
        assert_eq!(b.trust_domain, "b.example");
        assert_eq!(b.bundle_endpoint_profile, EndpointProfileName::HttpsSpiffe);
        assert_eq!(b.trust_domain_bundle_format, BundleFormat::Spiffe);
        assert_eq!(
            b.endpoint_spiffe_id.as_ref().map(SpiffeId::as_str),
            Some("spiffe://b.example/spire/server")
        );
        assert_eq!(c.bundle_endpoint_profile, EndpointProfileName::HttpsWeb);
    }

    #[test]
    fn errors_name_the_relationship_and_field() {
        let spiffe = "    bundle_endpoint_profile: https_spiffe\n";
        let cases = [
            (
                format!("  - {B}{spiffe}    trust_domain_bundle_path: /b\n"),
                "federates_with[0].endpoint_spiffe_id: is required by https_spiffe",
            ),
            (
                format!(
                    "  - {B}{spiffe}    endpoint_spiffe_id: spiffe://b.example/spire/server\n"
                ),
                "federates_with[0].trust_domain_bundle_path: is required by https_spiffe",
            ),
            (
                "  - trust_domain: b.example\n    bundle_endpoint_url: http://b\n    bundle_endpoint_profile: https_web\n".into(),
                "federates_with[0].bundle_endpoint_url: must be an https:// URL",
            ),
            (
                "  - trust_domain: a.example\n    bundle_endpoint_url: https://b\n    bundle_endpoint_profile: https_web\n".into(),
                "federates_with[0].trust_domain: is this issuer's own trust domain",
            ),
            (
                "  - trust_domain: B.example\n    bundle_endpoint_url: https://b\n    bundle_endpoint_profile: https_web\n".into(),
                "invalid trust domain \"B.example\"",
            ),
            (
                "  - trust_domain: b.example\n    bundle_endpoint_url: https://b\n    bundle_endpoint_profile: https_web\n  - trust_domain: b.example\n    bundle_endpoint_url: https://b\n    bundle_endpoint_profile: https_web\n".into(),
                "federates_with[1].trust_domain: is listed twice",
            ),
        ];
        for (relationships, want) in cases {
            let yaml =
                format!("trust_domain: a.example\nfederation:\n  federates_with:\n{relationships}");
            let e = IssuerConfig::from_yaml(&yaml, "i.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "want {want:?}, got {e:?}");
        }
    }
}
