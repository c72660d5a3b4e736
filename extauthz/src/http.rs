//! The HTTP form, as Envoy's ext_authz `http_service`: the client's method and
//! path (after `pathPrefix`) with Host, Content-Length and the headers the
//! provider lists go to the authorizer; a `200` allows (its listed headers go to
//! the pod, and `x-envoy-auth-headers-to-remove` names headers to drop), any
//! other status is the client's answer, with the authorizer's body and headers.

use std::time::Duration;

use crate::config::ExtAuthzHttp;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::check::{CheckError, CheckInput, HeaderChange, HeaderMode, Verdict};

/// The most of an authorizer's refusal body passed on to the client.
const MAX_DENIED_BODY: usize = 64 * 1024;
/// Headers that belong to one connection or are the proxy's to write.
const NEVER_COPIED: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "x-forwarded-client-cert",
];

pub(crate) struct HttpClient {
    config: ExtAuthzHttp,
    authority: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub(crate) fn new(config: &ExtAuthzHttp) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            authority: format!(
                "{}:{}",
                crate::grpc::bracketed(&config.service),
                config.port
            ),
            config: config.clone(),
            client,
        }
    }

    pub(crate) async fn check(&self, input: &CheckInput) -> Result<Verdict, CheckError> {
        let http = input.http.as_ref().ok_or_else(|| {
            CheckError::Protocol("an HTTP authorizer judges HTTP requests only".into())
        })?;
        let uri = format!(
            "http://{}{}{}",
            self.authority, self.config.path_prefix, http.path
        );
        let body = http.body.clone().unwrap_or_default();
        let mut request = Request::builder()
            .method(http.method.as_str())
            .uri(uri)
            .header(header::HOST, http.host.as_str())
            .header(header::CONTENT_LENGTH, body.len());
        for (name, value) in &http.headers {
            if !NEVER_COPIED.contains(&name.as_str())
                && matches_any(&self.config.include_request_headers_in_check, name)
            {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        for (name, value) in &self.config.include_additional_headers_in_check {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| CheckError::Protocol(format!("the check request: {e}")))?;
        let timeout = self.config.timeout;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CheckError::Unreachable(format!("{}: {e}", self.authority)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_DENIED_BODY)
                .collect()
                .await
                .map_err(|e| CheckError::Protocol(format!("the answer's body: {e}")))?
                .to_bytes();
            Ok::<_, CheckError>((parts.status, parts.headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CheckError::Timeout(timeout))??;
        Ok(self.verdict(status, &headers, body))
    }

    pub(crate) fn verdict(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> Verdict {
        let pick = |patterns: &[String], everything: bool, mode| -> Vec<HeaderChange> {
            headers
                .iter()
                .filter(|(name, _)| !NEVER_COPIED.contains(&name.as_str()))
                .filter(|(name, _)| {
                    (everything && patterns.is_empty()) || matches_any(patterns, name.as_str())
                })
                .filter_map(|(name, value)| {
                    Some(HeaderChange {
                        name: name.as_str().to_owned(),
                        value: value.to_str().ok()?.to_owned(),
                        mode,
                    })
                })
                .collect()
        };
        if status == StatusCode::OK {
            let remove = headers
                .get_all("x-envoy-auth-headers-to-remove")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
            return Verdict::Allow {
                upstream: pick(
                    &self.config.headers_to_upstream_on_allow,
                    false,
                    HeaderMode::Overwrite,
                ),
                remove,
                downstream: pick(
                    &self.config.headers_to_downstream_on_allow,
                    false,
                    HeaderMode::Append,
                ),
            };
        }
        // Istio: with no list, every header of the refusal reaches the client
        Verdict::Deny {
            status: status.as_u16(),
            headers: pick(
                &self.config.headers_to_downstream_on_deny,
                true,
                HeaderMode::Append,
            ),
            body,
        }
    }
}

/// Istio's header patterns: exact, `prefix*` or `*suffix`, case-insensitive.
fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match (pattern.strip_suffix('*'), pattern.strip_prefix('*')) {
            (Some(prefix), _) => name.starts_with(prefix),
            (_, Some(suffix)) => name.ends_with(suffix),
            _ => name == pattern,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::matches_any;

    #[test]
    fn header_patterns_are_istios() {
        let patterns = ["X-User".to_owned(), "x-auth-*".into(), "*-id".into()];
        for name in ["x-user", "x-auth-token", "request-id"] {
            assert!(matches_any(&patterns, name), "{name}");
        }
        for name in ["x-users", "authorization", "x-id-other"] {
            assert!(!matches_any(&patterns, name), "{name}");
        }
    }
}
