//! What the datastore holds.

use serde::{Deserialize, Serialize};

use meshward_spiffe::{Selector, SpiffeId, TrustDomain};

/// A registration entry: workloads with all of `selectors`, under `parent_id`,
/// get `spiffe_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Assigned by the datastore when empty.
    pub id: String,
    pub spiffe_id: SpiffeId,
    pub parent_id: SpiffeId,
    /// Sorted and without duplicates once stored.
    pub selectors: Vec<Selector>,
    /// Seconds; 0 = the server default.
    pub x509_svid_ttl: u32,
    pub jwt_svid_ttl: u32,
    pub dns_names: Vec<String>,
    /// Trust domains whose bundles this entry's workloads receive.
    pub federates_with: Vec<TrustDomain>,
    pub admin: bool,
    pub downstream: bool,
    pub hint: String,
    pub created_at: i64,
    pub revision: i64,
}

/// Which entries to list; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub spiffe_id: Option<SpiffeId>,
    pub parent_id: Option<SpiffeId>,
    /// Entries whose selectors include all of these.
    pub selectors: Vec<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub token: String,
    /// The node ID the token attests to.
    pub spiffe_id: SpiffeId,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedNode {
    pub spiffe_id: SpiffeId,
    pub attestation_type: String,
    pub selectors: Vec<Selector>,
    /// Serial of the node's current SVID (hex).
    pub serial: String,
    pub expires_at: i64,
    pub banned: bool,
    /// join_token nodes cannot attest again; k8s_psat nodes can.
    pub can_reattest: bool,
    pub created_at: i64,
}

/// The public half of one CA generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRecord {
    pub id: String,
    /// Which issuer instance owns the key.
    pub instance: String,
    pub certificate_pem: String,
    pub jwt_kid: String,
    pub jwt_x: String,
    pub jwt_y: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// A federation relationship: where a foreign trust domain's bundle is fetched
/// from, and how that endpoint is authenticated (SPIFFE Federation §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRelationship {
    pub trust_domain: TrustDomain,
    /// `https://...`; never inferred from the trust domain.
    pub bundle_endpoint_url: String,
    pub profile: EndpointProfile,
    /// `None`: an operator's (CLI, issuer.yaml); `Some("k8s/<name>")`: a
    /// ClusterFederatedTrustDomain object's, which alone changes or removes it.
    pub managed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
    /// A Web PKI certificate for the URL's host.
    HttpsWeb,
    /// An X509-SVID for `endpoint_id`, checked with the latest bundle of its domain.
    HttpsSpiffe { endpoint_id: SpiffeId },
}

impl EndpointProfile {
    pub fn name(&self) -> &'static str {
        match self {
            Self::HttpsWeb => "https_web",
            Self::HttpsSpiffe { .. } => "https_spiffe",
        }
    }

    /// From a profile name and the endpoint ID (`https_spiffe` needs one,
    /// `https_web` takes none).
    pub fn parse(name: &str, endpoint_id: Option<SpiffeId>) -> Result<Self, String> {
        match (name, endpoint_id) {
            ("https_web", None) => Ok(Self::HttpsWeb),
            ("https_web", Some(_)) => Err("endpoint_spiffe_id is for https_spiffe only".into()),
            ("https_spiffe", Some(endpoint_id)) => Ok(Self::HttpsSpiffe { endpoint_id }),
            ("https_spiffe", None) => Err("endpoint_spiffe_id is required by https_spiffe".into()),
            (other, _) => Err(format!(
                "bundle_endpoint_profile {other:?}: use https_web or https_spiffe"
            )),
        }
    }
}
