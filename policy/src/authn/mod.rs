//! RequestAuthentication: which JWTs a workload accepts, from where, checked with
//! which keys. Compiled here with Istio's admission checks; the tokens themselves
//! are validated by `meshward-jwt` on the data path.
//!
//! Istio's semantics: every RequestAuthentication that selects a workload (its
//! namespace's and the root namespace's) contributes its rules. A request without
//! a token passes without a request principal (AuthorizationPolicy decides); a
//! token that does not validate under the rule of its issuer gets `401`.
//!
//! meshward's additions: an issuer `spiffe://<trust domain>` with neither `jwks`
//! nor `jwksUri` takes its keys from the node's SPIFFE bundle of that trust domain
//! (the local one or a federated one): JWT-SVIDs.

mod compile;
mod spec;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use meshward_spiffe::TrustDomain;

use crate::model::{Origin, PolicyId};

pub(crate) use compile::compile;
pub(crate) use spec::RequestAuthenticationDocument;

/// How long a JWKS fetch may take unless a rule says otherwise (Istio's default).
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// One compiled RequestAuthentication.
#[derive(Debug, Clone)]
pub struct RequestAuthentication {
    pub id: PolicyId,
    pub origin: Origin,
    pub(crate) selector: Option<BTreeMap<String, String>>,
    /// `targetRef(s)`: for gateways and waypoints, never a workload here.
    pub(crate) targets_gateway: bool,
    pub rules: Vec<Arc<JwtRule>>,
}

impl RequestAuthentication {
    pub(crate) fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.targets_gateway
            && self
                .selector
                .as_ref()
                .is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// One `jwtRules` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRule {
    /// What the token's `iss` must be.
    pub issuer: String,
    /// The token's `aud` must name one of these; empty: not checked.
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// Where tokens are looked for (Istio's default when none is given:
    /// `Authorization: Bearer <token>` and the `access_token` parameter).
    pub locations: Vec<TokenLocation>,
    /// Keep the token in the request the pod receives (default: removed).
    pub forward_original_token: bool,
    /// A header the verified payload (base64url JSON) is written to.
    pub output_payload_to_header: Option<HeaderName>,
    /// Headers claims are copied to; a claim path may be nested (`a.b`).
    pub output_claim_to_headers: Vec<(HeaderName, Vec<String>)>,
    /// Bound on fetching the keys.
    pub timeout: Duration,
}

/// Where a rule's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// `jwks`: a JWKS written in the policy.
    Inline(Arc<str>),
    /// `jwksUri`: fetched over HTTPS, cached, refreshed in the background.
    Uri(String),
    /// Neither, and an `https://` issuer: OpenID discovery
    /// (`<issuer>/.well-known/openid-configuration`, then its `jwks_uri`).
    Discovery(String),
    /// Neither, and a `spiffe://` issuer: the node's bundle of that trust domain.
    TrustBundle(TrustDomain),
}

/// Where a token may be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenLocation {
    /// A header; the value starts with `prefix` (e.g. `Bearer `), which is removed.
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

impl TokenLocation {
    /// Istio's default: `Authorization: Bearer <token>`, or `?access_token=<token>`.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            },
            Self::Param("access_token".into()),
        ]
    }
}

#[cfg(test)]
mod tests;
