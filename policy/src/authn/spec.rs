//! The wire form of `security.istio.io/v1` / `v1beta1` RequestAuthentication.
//! Unknown fields are errors, as for AuthorizationPolicy.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::spec::{ObjectMeta, TargetRef, WorkloadSelector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestAuthenticationDocument {
    #[allow(dead_code)] // checked before this type is parsed
    pub(crate) api_version: String,
    #[allow(dead_code)]
    pub(crate) kind: String,
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: RequestAuthenticationSpec,
    #[allow(dead_code)]
    pub(crate) status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestAuthenticationSpec {
    pub(crate) selector: Option<WorkloadSelector>,
    pub(crate) target_ref: Option<TargetRef>,
    pub(crate) target_refs: Option<Vec<TargetRef>>,
    #[serde(default)]
    pub(crate) jwt_rules: Vec<JwtRuleSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct JwtRuleSpec {
    #[serde(default)]
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    pub(crate) jwks_uri: Option<String>,
    pub(crate) jwks: Option<String>,
    #[serde(default)]
    pub(crate) from_headers: Vec<HeaderSpec>,
    #[serde(default)]
    pub(crate) from_params: Vec<String>,
    #[serde(default)]
    pub(crate) from_cookies: Vec<String>,
    #[serde(default)]
    pub(crate) forward_original_token: bool,
    pub(crate) output_payload_to_header: Option<String>,
    #[serde(default)]
    pub(crate) output_claim_to_headers: Vec<ClaimToHeaderSpec>,
    pub(crate) timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderSpec {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimToHeaderSpec {
    #[serde(default)]
    pub(crate) header: String,
    #[serde(default)]
    pub(crate) claim: String,
}
