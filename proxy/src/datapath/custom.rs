//! CUSTOM policies: the external authorizer a matching CUSTOM policy names decides
//! first, as Envoy's ext_authz filter runs before RBAC in Istio; only a request
//! it allows goes on to DENY and ALLOW policies. A provider that is not configured
//! denies (fail closed); one that cannot be asked gives its `statusOnError`
//! unless `failOpen`.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use meshward_config::ExtensionProvider;
use meshward_extauthz::{
    Authorizer, CheckInput, HeaderChange, HeaderMode, HttpInput, PeerInput, Verdict,
};
use meshward_policy::{CustomCheck, HttpRequest};

use super::DataPathError;
use super::authz::InboundStream;

/// The configured providers, by name.
#[derive(Debug, Default)]
pub(crate) struct Providers(HashMap<String, Arc<Authorizer>>);

impl Providers {
    pub(crate) fn new(configs: &[ExtensionProvider]) -> Result<Self, DataPathError> {
        let mut providers = HashMap::new();
        for config in configs {
            let authorizer =
                Authorizer::new(config).map_err(|e| DataPathError::ExtensionProvider {
                    name: config.name.clone(),
                    reason: e.to_string(),
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
        return Asked {
            verdict: Verdict::Deny {
                status: 403,
                headers: Vec::new(),
                body: bytes::Bytes::from_static(super::responses::RBAC_DENIED.as_bytes()),
            },
            reason: format!("denied: {which} is not configured (fail closed)"),
        };
    };
    if input.http.is_none() && !authorizer.judges_tcp() {
        crate::metrics::ext_authz_check(check.provider, "not_for_tcp");
        return Asked {
            verdict: authorizer.on_error(),
            reason: format!("{which}: an HTTP authorizer cannot judge a TCP connection"),
        };
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
            Asked { verdict, reason }
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
            }
        }
    }
}

/// A check about one HTTP request, as policy judged it.
pub(crate) fn http_input(stream: &InboundStream, http: &HttpRequest, protocol: &str) -> CheckInput {
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
    let (source, destination) = peers(stream);
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

/// The peers of a check: the verified client and the pod.
pub(crate) fn peers(stream: &InboundStream) -> (PeerInput, PeerInput) {
    (
        PeerInput {
            address: stream.source,
            principal: stream.peer.as_ref().map(|p| p.spiffe_id.to_string()),
        },
        PeerInput {
            address: stream.destination,
            principal: stream.pod.tls.as_ref().map(|t| t.spiffe_id.to_string()),
        },
    )
}

/// Headers a provider may never write: identity and routing are the proxy's.
const PROTECTED: [&str; 2] = ["x-forwarded-client-cert", "host"];

/// Applies an authorizer's header changes to `headers`.
pub(crate) fn apply(headers: &mut HeaderMap, changes: &[HeaderChange], remove: &[String]) {
    for name in remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            if !PROTECTED.contains(&name.as_str()) {
                headers.remove(&name);
            }
        }
    }
    for change in changes {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(change.name.as_bytes()),
            HeaderValue::from_str(&change.value),
        ) else {
            continue;
        };
        if PROTECTED.contains(&name.as_str()) {
            continue;
        }
        match change.mode {
            HeaderMode::Overwrite => {
                headers.insert(name, value);
            }
            HeaderMode::Append => {
                headers.append(name, value);
            }
            HeaderMode::AddIfAbsent => {
                if !headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
            HeaderMode::OverwriteIfExists => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, value: &str, mode: HeaderMode) -> HeaderChange {
        HeaderChange {
            name: name.into(),
            value: value.into(),
            mode,
        }
    }

    #[test]
    fn header_changes_follow_envoy_and_never_touch_identity() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-b", HeaderValue::from_static("1"));
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("By=me"));
        headers.insert("authorization", HeaderValue::from_static("secret"));
        apply(
            &mut headers,
            &[
                change("x-a", "2", HeaderMode::Overwrite),
                change("x-b", "2", HeaderMode::Append),
                change("x-b", "3", HeaderMode::AddIfAbsent),
                change("x-c", "1", HeaderMode::OverwriteIfExists),
                change("x-d", "1", HeaderMode::AddIfAbsent),
                change(
                    "x-forwarded-client-cert",
                    "URI=spiffe://evil",
                    HeaderMode::Overwrite,
                ),
            ],
            &["authorization".into(), "x-forwarded-client-cert".into()],
        );
        assert_eq!(headers["x-a"], "2");
        let b: Vec<_> = headers.get_all("x-b").iter().collect();
        assert_eq!(b, ["1", "2"]);
        assert!(headers.get("x-c").is_none());
        assert_eq!(headers["x-d"], "1");
        assert_eq!(headers["x-forwarded-client-cert"], "By=me");
        assert!(headers.get("authorization").is_none());
    }
}
