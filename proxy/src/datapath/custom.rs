//! CUSTOM policies: the external authorizer a matching CUSTOM policy names decides
//! first, as Envoy's ext_authz filter runs before RBAC in Istio; only a request
//! it allows goes on to DENY and ALLOW policies. A provider that is not configured
//! denies (fail closed), and so does an HTTP provider asked about TCP; one that
//! cannot be asked gives its `statusOnError` unless `failOpen`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};

use meshward_extauthz::config::ExtensionProvider;
use meshward_extauthz::{Authorizer, CheckInput, HttpInput, PeerInput, Verdict};
use meshward_policy::{CustomCheck, HttpRequest};

use super::DataPathError;
use super::body::{self, ProxyBody};

/// The configured providers, by name.
#[derive(Debug, Default)]
pub(crate) struct Providers(HashMap<String, Arc<Authorizer>>);

impl Providers {
    pub(crate) fn new(configs: &[ExtensionProvider]) -> Result<Self, DataPathError> {
        let mut providers = HashMap::new();
        for config in configs {
            let authorizer =
                Authorizer::new(config).map_err(|source| DataPathError::ExtensionProvider {
                    name: config.name.clone(),
                    source,
                })?;
            providers.insert(config.name.clone(), Arc::new(authorizer));
        }
        Ok(Self(providers))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Authorizer>> {
        self.0.get(name)
    }
}

/// What the provider said, and the words for the access log.
pub(crate) struct Asked {
    pub(crate) verdict: Verdict,
    pub(crate) reason: String,
    /// The policy names no configured provider: refused as RBAC refuses.
    pub(crate) not_configured: bool,
}

impl Asked {
    /// Refused without asking (`not_configured`: no such provider).
    fn refused(reason: String, not_configured: bool) -> Self {
        Self {
            verdict: Verdict::Deny {
                status: 403,
                headers: Vec::new(),
                body: Bytes::new(),
            },
            reason,
            not_configured,
        }
    }
}

/// Asks the provider `check` names about `input`.
pub(crate) async fn ask(
    providers: &Providers,
    check: &CustomCheck<'_>,
    input: &CheckInput,
) -> Asked {
    let which = format!(
        "CUSTOM policy {} rule {}, provider {:?}",
        check.policy, check.rule, check.provider
    );
    let Some(authorizer) = providers.get(check.provider) else {
        crate::metrics::ext_authz_check(check.provider, "not_configured");
        let reason = format!("denied: {which} is not configured (fail closed)");
        return Asked::refused(reason, true);
    };
    if input.http.is_none() && !authorizer.judges_tcp() {
        // a configuration that cannot work is not an outage: `failOpen` does not
        // apply, the connection is refused
        crate::metrics::ext_authz_check(check.provider, "not_for_tcp");
        let reason = format!(
            "denied: {which} is an HTTP authorizer, which cannot judge a TCP connection (failOpen does not apply)"
        );
        return Asked::refused(reason, false);
    }
    match authorizer.check(input).await {
        Ok(verdict) => {
            let allowed = matches!(verdict, Verdict::Allow { .. });
            crate::metrics::ext_authz_check(check.provider, if allowed { "allow" } else { "deny" });
            let reason = if allowed {
                format!("allowed by {which}")
            } else {
                format!("denied by {which}")
            };
            Asked {
                verdict,
                reason,
                not_configured: false,
            }
        }
        Err(e) => {
            crate::metrics::ext_authz_check(check.provider, "error");
            let verdict = authorizer.on_error();
            let then = match &verdict {
                Verdict::Allow { .. } => "failOpen: allowed".to_owned(),
                Verdict::Deny { status, .. } => format!("statusOnError {status}"),
            };
            tracing::warn!(provider = check.provider, "ext_authz check failed: {e}");
            Asked {
                verdict,
                reason: format!("{which} could not be asked ({e}); {then}"),
                not_configured: false,
            }
        }
    }
}

/// A check about one HTTP request, as policy judged it, between `peers` (the
/// client and the pod).
pub(crate) fn http_input(
    (source, destination): (PeerInput, PeerInput),
    http: &HttpRequest,
    protocol: &str,
) -> CheckInput {
    let headers: Vec<(String, String)> = http
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let size = http
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(-1);
    CheckInput {
        source,
        destination,
        http: Some(HttpInput {
            method: http.method().to_owned(),
            path: http.target().to_request_target(),
            host: http.host().to_owned(),
            scheme: "http".into(),
            protocol: protocol.into(),
            headers,
            body: None,
            size,
        }),
    }
}

/// How long a client may take to send the body an authorizer wants to read.
const BODY_FOR_CHECK: Duration = Duration::from_secs(30);

/// The first `maxRequestBytes` of the body, for an authorizer; the request keeps
/// the whole body. A larger body is `413` unless `allowPartialMessage`; a client
/// too slow to send it, `408`.
pub(crate) async fn read_for_check(
    request: &mut Request<ProxyBody>,
    wanted: &meshward_extauthz::config::RequestBody,
) -> Result<Bytes, (StatusCode, String)> {
    let max = wanted.max_request_bytes as usize;
    let taken = std::mem::replace(request.body_mut(), body::empty());
    let peeked = tokio::time::timeout(BODY_FOR_CHECK, body::peek(taken, max))
        .await
        .map_err(|_| {
            (
                StatusCode::REQUEST_TIMEOUT,
                "the body the authorizer reads was not sent in time".to_owned(),
            )
        })?
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad request body: {e}")))?;
    *request.body_mut() = peeked.body;
    if peeked.truncated && !wanted.allow_partial_message {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the authorizer's maxRequestBytes ({max})"),
        ));
    }
    Ok(peeked.prefix)
}
