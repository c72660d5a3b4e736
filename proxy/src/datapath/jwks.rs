//! The keys RequestAuthentication rules verify tokens with ([`RequestKeys`]):
//! - `jwks` (inline): parsed once;
//! - `jwksUri`, and OpenID discovery for an `https://` issuer: fetched over HTTPS
//!   (system roots plus `authorization.jwks.ca_file`), each wait bounded by the
//!   rule's `timeout`, fetched again every `refresh_interval`; a failed refresh
//!   keeps the last good keys, a source never fetched refuses its tokens;
//! - a `spiffe://` issuer: the node's SPIFFE bundle of that trust domain, for pods
//!   of that domain or federating with it.
//!
//! No key is ever made up: a source without keys refuses its tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::JwksConfig;
use meshward_jwt::{JwtFailure, KeyProvider, KeySet};
use meshward_policy::{JwtRule, KeySource, PolicySet};
use meshward_tls::WebRoots;
use parking_lot::Mutex;

use super::DataPathError;
use super::policies::Policies;
use super::state::{LocalPod, MeshState};
use crate::metrics;

/// A JWKS or an OpenID configuration is small; anything this large is not one.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// After a failed fetch, requests wait this long before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// Remote and inline keys, shared by every request.
pub(crate) struct JwksCache {
    tls: rustls::ClientConfig,
    refresh_interval: Duration,
    sources: Mutex<HashMap<KeySource, Arc<Source>>>,
}

#[derive(Default)]
struct Source {
    keys: Mutex<Option<Arc<KeySet>>>,
    /// When the last fetch ended, and how: `Err` holds why it failed.
    last_fetch: Mutex<Option<(Instant, Result<(), String>)>>,
    /// One fetch at a time per source.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub(crate) fn new(config: &JwksConfig) -> Result<Self, DataPathError> {
        let which = config
            .ca_file
            .as_deref()
            .map_or(WebRoots::System, WebRoots::SystemAnd);
        let roots = meshward_tls::web_roots(which).map_err(DataPathError::JwksCaFile)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(DataPathError::JwksTls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            tls,
            refresh_interval: config.refresh_interval,
            sources: Mutex::new(HashMap::new()),
        })
    }

    /// Fetches the remote keys of every rule in force as soon as a policy set
    /// names them, and again every `refresh_interval`; forgets sources no set
    /// names any more.
    pub(crate) fn keep_fresh(self: Arc<Self>, mut policies: Policies) {
        tokio::spawn(async move {
            loop {
                let set = policies.borrow_and_update().clone();
                let remote = remote_sources(&set);
                self.sources.lock().retain(|source, _| {
                    matches!(source, KeySource::Inline(_)) || remote.contains_key(source)
                });
                for (source, timeout) in remote {
                    let cache = self.clone();
                    tokio::spawn(async move {
                        let _ = cache.fetch(&source, timeout).await;
                    });
                }
                tokio::select! {
                    changed = policies.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(self.refresh_interval) => {}
                }
            }
        });
    }

    fn source(&self, key: &KeySource) -> Arc<Source> {
        self.sources.lock().entry(key.clone()).or_default().clone()
    }

    /// The keys of a non-SPIFFE rule: cached, or fetched now within its timeout.
    async fn keys(&self, rule: &JwtRule) -> Result<Arc<KeySet>, JwtFailure> {
        let source = self.source(&rule.keys);
        if let Some(keys) = source.keys.lock().clone() {
            return Ok(keys);
        }
        if let KeySource::Inline(jwks) = &rule.keys {
            let keys = Arc::new(
                KeySet::from_jwks(jwks).map_err(|e| JwtFailure::KeysUnavailable(e.to_string()))?,
            );
            *source.keys.lock() = Some(keys.clone());
            return Ok(keys);
        }
        if let Some((at, Err(reason))) = source.last_fetch.lock().clone() {
            if at.elapsed() < RETRY_AFTER_FAILURE {
                return Err(JwtFailure::KeysUnavailable(reason));
            }
        }
        self.fetch(&rule.keys, rule.timeout).await
    }

    /// One fetch of a remote source (single flight); keeps the last good keys
    /// when it fails.
    async fn fetch(&self, key: &KeySource, timeout: Duration) -> Result<Arc<KeySet>, JwtFailure> {
        let source = self.source(key);
        let started = Instant::now();
        let Ok(_guard) = tokio::time::timeout(timeout, source.fetching.lock()).await else {
            return Err(JwtFailure::KeysUnavailable("a fetch is under way".into()));
        };
        // a fetch that ended while this one waited answers for it too
        if let Some((at, outcome)) = source.last_fetch.lock().clone() {
            if at >= started {
                let keys = source.keys.lock().clone();
                return match (keys, outcome) {
                    (Some(keys), _) => Ok(keys),
                    (None, Err(reason)) => Err(JwtFailure::KeysUnavailable(reason)),
                    (None, Ok(())) => Err(JwtFailure::KeysUnavailable("no keys".into())),
                };
            }
        }
        let url = describe(key);
        let fetched = tokio::time::timeout(timeout, self.fetch_unbounded(key))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        match fetched {
            Ok(keys) => {
                metrics::jwks_fetch(&url, true);
                *source.keys.lock() = Some(keys.clone());
                *source.last_fetch.lock() = Some((Instant::now(), Ok(())));
                Ok(keys)
            }
            Err(reason) => {
                metrics::jwks_fetch(&url, false);
                tracing::warn!(source = %url, "JWKS fetch failed: {reason}; tokens of this issuer are refused until one succeeds (keys fetched earlier stay in use)");
                *source.last_fetch.lock() = Some((Instant::now(), Err(reason.clone())));
                source
                    .keys
                    .lock()
                    .clone()
                    .ok_or(JwtFailure::KeysUnavailable(reason))
            }
        }
    }

    async fn fetch_unbounded(&self, key: &KeySource) -> Result<Arc<KeySet>, String> {
        let jwks_uri = match key {
            KeySource::Uri(uri) => uri.clone(),
            KeySource::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let document = self.get(&url).await?;
                discovered_jwks_uri(issuer, &url, &document)?
            }
            KeySource::Inline(_) | KeySource::TrustBundle(_) => {
                return Err("not a remote source".into());
            }
        };
        let document = self.get(&jwks_uri).await?;
        let text = std::str::from_utf8(&document).map_err(|e| format!("{jwks_uri}: {e}"))?;
        KeySet::from_jwks(text)
            .map(Arc::new)
            .map_err(|e| format!("{jwks_uri}: {e}"))
    }

    async fn get(&self, url: &str) -> Result<bytes::Bytes, String> {
        meshward_tls::https_get(url, &self.tls, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| format!("{url}: {e}"))
    }
}

/// The `jwks_uri` of an OpenID provider configuration fetched from `url` for
/// `issuer`. Its `issuer` must be the rule's, exactly (OpenID Connect Discovery
/// §4.3): a document naming another issuer is another provider's (a shared host,
/// a misconfigured path), and its keys must not verify this issuer's tokens.
pub(super) fn discovered_jwks_uri(
    issuer: &str,
    url: &str,
    document: &[u8],
) -> Result<String, String> {
    let config: serde_json::Value =
        serde_json::from_slice(document).map_err(|e| format!("{url}: not JSON: {e}"))?;
    match config["issuer"].as_str() {
        Some(named) if named == issuer => {}
        named => {
            return Err(format!(
                "{url}: the configuration's issuer {named:?} is not the rule's {issuer:?}"
            ));
        }
    }
    let uri = config["jwks_uri"]
        .as_str()
        .ok_or_else(|| format!("{url}: no jwks_uri"))?;
    if !uri.starts_with("https://") {
        return Err(format!("{url}: jwks_uri {uri:?} is not https://"));
    }
    Ok(uri.to_owned())
}

/// The remote sources of a policy set, each with the shortest timeout a rule
/// gives it.
fn remote_sources(set: &PolicySet) -> HashMap<KeySource, Duration> {
    let mut remote: HashMap<KeySource, Duration> = HashMap::new();
    for rule in set.authentications().iter().flat_map(|a| &a.rules) {
        if matches!(rule.keys, KeySource::Uri(_) | KeySource::Discovery(_)) {
            remote
                .entry(rule.keys.clone())
                .and_modify(|t| *t = (*t).min(rule.timeout))
                .or_insert(rule.timeout);
        }
    }
    remote
}

fn describe(key: &KeySource) -> String {
    match key {
        KeySource::Uri(uri) => uri.clone(),
        KeySource::Discovery(issuer) => format!("{issuer} (OpenID discovery)"),
        KeySource::Inline(_) => "inline".into(),
        KeySource::TrustBundle(td) => format!("spiffe://{td}"),
    }
}

/// The keys for one request to `pod`.
pub(crate) struct RequestKeys<'a> {
    pub(crate) cache: &'a JwksCache,
    pub(crate) state: &'a MeshState,
    pub(crate) pod: &'a LocalPod,
}

impl KeyProvider for RequestKeys<'_> {
    async fn keys(&self, rule: &JwtRule) -> Result<Arc<KeySet>, JwtFailure> {
        match &rule.keys {
            // a JWT-SVID of a domain the pod does not federate with is refused,
            // as its X509-SVIDs are
            KeySource::TrustBundle(td) => self.state.jwt_keys(self.pod, td).ok_or_else(|| {
                JwtFailure::KeysUnavailable(format!(
                    "no JWT keys of {td} for this pod (not its trust domain, not federated, or no bundle)"
                ))
            }),
            _ => self.cache.keys(rule).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::discovered_jwks_uri;

    #[test]
    fn a_discovery_document_of_another_issuer_is_refused() {
        let url = "https://idp.example/.well-known/openid-configuration";
        let doc = |issuer: &str| {
            serde_json::json!({"issuer": issuer, "jwks_uri": "https://idp.example/keys"})
                .to_string()
        };
        let issuer = "https://idp.example";
        assert_eq!(
            discovered_jwks_uri(issuer, url, doc(issuer).as_bytes()),
            Ok("https://idp.example/keys".to_owned())
        );
        for other in [
            "https://evil.example",
            "https://idp.example/",
            "https://IDP.example",
        ] {
            let got = discovered_jwks_uri(issuer, url, doc(other).as_bytes());
            assert!(
                got.as_ref().is_err_and(|e| e.contains("issuer")),
                "{other}: {got:?}"
            );
        }
        let missing = serde_json::json!({"jwks_uri": "https://idp.example/keys"}).to_string();
        assert!(discovered_jwks_uri(issuer, url, missing.as_bytes()).is_err());
    }
}
