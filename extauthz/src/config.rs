//! `extension_providers:` the external authorizers CUSTOM policies name, as
//! Istio's meshConfig `extensionProviders` (the items are written as in Istio,
//! camelCase, so a meshConfig snippet pastes unchanged).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

/// One provider: `name` plus exactly one of the two kinds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
}

/// Envoy's `envoy.service.auth.v3.Authorization/Check` over gRPC (what OPA-Envoy
/// serves). Also judges TCP connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtAuthzGrpc {
    /// Host name or address of the authorizer, reachable from the nodes.
    pub service: String,
    pub port: u16,
    #[serde(with = "meshward_config::duration", default = "default_timeout")]
    pub timeout: Duration,
    /// Let a request through when the authorizer cannot be asked (default: no).
    #[serde(default)]
    pub fail_open: bool,
    /// The status when the authorizer cannot be asked (default 403).
    pub status_on_error: Option<String>,
    pub include_request_body_in_check: Option<RequestBody>,
}

/// Envoy's HTTP ext_authz: the request's method and path (after `pathPrefix`) go
/// to the authorizer; its `200` allows, any other answer is the client's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtAuthzHttp {
    pub service: String,
    pub port: u16,
    #[serde(with = "meshward_config::duration", default = "default_timeout")]
    pub timeout: Duration,
    #[serde(default)]
    pub path_prefix: String,
    #[serde(default)]
    pub fail_open: bool,
    pub status_on_error: Option<String>,
    /// Client headers sent to the authorizer besides Host, Method, Path and
    /// Content-Length: exact names, `prefix*` or `*suffix`, case-insensitive.
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    pub include_request_body_in_check: Option<RequestBody>,
    /// Headers of the authorizer's `200` that are set on the request to the pod.
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Headers of the authorizer's refusal that go to the client.
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Headers of the authorizer's `200` that are added to the pod's response.
    #[serde(default)]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// Sending (part of) the request body to the authorizer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestBody {
    pub max_request_bytes: u32,
    /// A larger body: send its first `maxRequestBytes` (else the client gets 413).
    #[serde(default)]
    pub allow_partial_message: bool,
    /// gRPC: the body as bytes (`raw_body`) rather than text.
    #[serde(default)]
    pub pack_as_bytes: bool,
}

/// Istio's default.
fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

/// The most body a check may carry: the proxy holds it while it waits.
pub const MAX_CHECK_BODY_BYTES: u32 = 1024 * 1024;

impl ExtensionProvider {
    /// `statusOnError` as a number (default 403).
    pub fn status_on_error(&self) -> u16 {
        let text = match (&self.envoy_ext_authz_grpc, &self.envoy_ext_authz_http) {
            (Some(g), _) => g.status_on_error.as_deref(),
            (_, Some(h)) => h.status_on_error.as_deref(),
            _ => None,
        };
        text.and_then(|t| t.parse().ok()).unwrap_or(403)
    }
}

/// Checks what serde cannot: one kind per provider, unique names, body limits.
pub fn validate(providers: &[ExtensionProvider], source: &str) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (i, p) in providers.iter().enumerate() {
        let field = |name: &str| format!("extension_providers[{i}].{name}");
        let invalid =
            |name: &str, reason: String| Err(ConfigError::invalid(source, &field(name), reason));
        if p.name.is_empty() {
            return invalid("name", "is required".into());
        }
        if !names.insert(&p.name) {
            return invalid("name", format!("{:?} is defined twice", p.name));
        }
        let (kind, service, port, status, body) =
            match (&p.envoy_ext_authz_grpc, &p.envoy_ext_authz_http) {
                (Some(g), None) => (
                    "envoyExtAuthzGrpc",
                    &g.service,
                    g.port,
                    &g.status_on_error,
                    &g.include_request_body_in_check,
                ),
                (None, Some(h)) => {
                    if !h.path_prefix.is_empty() && !h.path_prefix.starts_with('/') {
                        return invalid(
                            "envoyExtAuthzHttp.pathPrefix",
                            format!("{:?} must start with /", h.path_prefix),
                        );
                    }
                    for (list, name) in [
                        (
                            &h.include_request_headers_in_check,
                            "includeRequestHeadersInCheck",
                        ),
                        (&h.headers_to_upstream_on_allow, "headersToUpstreamOnAllow"),
                        (
                            &h.headers_to_downstream_on_deny,
                            "headersToDownstreamOnDeny",
                        ),
                        (
                            &h.headers_to_downstream_on_allow,
                            "headersToDownstreamOnAllow",
                        ),
                    ] {
                        if list
                            .iter()
                            .any(|pattern| pattern.is_empty() || pattern == "*")
                        {
                            return invalid(
                                &format!("envoyExtAuthzHttp.{name}"),
                                "a pattern must name headers (exact, prefix* or *suffix)".into(),
                            );
                        }
                    }
                    (
                        "envoyExtAuthzHttp",
                        &h.service,
                        h.port,
                        &h.status_on_error,
                        &h.include_request_body_in_check,
                    )
                }
                _ => {
                    return invalid(
                        "name",
                        format!(
                            "provider {:?}: exactly one of envoyExtAuthzGrpc and envoyExtAuthzHttp",
                            p.name
                        ),
                    );
                }
            };
        if service.is_empty() {
            return invalid(&format!("{kind}.service"), "is required".into());
        }
        if port == 0 {
            return invalid(&format!("{kind}.port"), "is required".into());
        }
        if let Some(status) = status {
            if !status
                .parse::<u16>()
                .is_ok_and(|s| (200..=599).contains(&s))
            {
                return invalid(
                    &format!("{kind}.statusOnError"),
                    format!("{status:?} is not an HTTP status"),
                );
            }
        }
        if let Some(body) = body {
            if body.max_request_bytes == 0 || body.max_request_bytes > MAX_CHECK_BODY_BYTES {
                return invalid(
                    &format!("{kind}.includeRequestBodyInCheck.maxRequestBytes"),
                    format!("must be between 1 and {MAX_CHECK_BODY_BYTES}"),
                );
            }
        }
    }
    Ok(())
}
