//! Federation: the trust domains this issuer federates with, and their bundles
//! kept fresh (SPIFFE Federation §5-6, SPIRE's `federates_with`).
//!
//! Each relationship gets a task: fetch the bundle from its endpoint, store it when
//! it changed (agents then hand it to the workloads that federate), wait the
//! bundle's `spiffe_refresh_hint` (bounded), again. A failed fetch keeps the last
//! good bundle and retries with backoff, never sooner than [`MIN_RETRY`]. An
//! `https_spiffe` endpoint is authenticated with the latest bundle of its trust
//! domain, so the foreign CA can rotate across refreshes (§5.2.2).

mod fetch;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::collections::HashMap;

use crate::config::{
    BundleFormat, EndpointProfileName, FederationConfig, FederationRelationshipConfig,
};
use meshward_spiffe::{Bundle, TrustDomain};
use meshward_tls::WebRoots;
use rustls::RootCertStore;

use crate::datastore::{Datastore, EndpointProfile, FederationRelationship};
use crate::service::Issuer;
pub use fetch::FetchError;
use fetch::Trust;

/// Bounds on the wait between two fetches, whatever the endpoint hints.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// The first retry after a failure; doubling up to the refresh hint.
const MIN_RETRY: Duration = Duration::from_secs(1);
/// The refresh hint while no bundle of the domain is known.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// How often the stored relationships are read for changes (admin API, replicas).
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("federation.federates_with[{index}]: {reason}")]
    Config { index: usize, reason: String },
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("federation with {trust_domain}: {source}")]
    Store {
        trust_domain: TrustDomain,
        source: crate::service::ServiceError,
    },
}

/// The relationships of `issuer.yaml`, stored (replacing what the admin API set
/// for the same domains: the file wins at start) with their bootstrap bundles;
/// then one task keeps a refresh task per stored relationship, following
/// changes made through the admin API.
pub(crate) async fn start<D: Datastore + 'static>(
    config: &FederationConfig,
    issuer: &Arc<Issuer<D>>,
) -> Result<(), FederationError> {
    let roots = Arc::new(web_roots(config.https_web_ca_file.as_deref())?);
    for (index, c) in config.federates_with.iter().enumerate() {
        let relationship = from_config(index, c)?;
        let bootstrap = match &c.trust_domain_bundle_path {
            Some(path) => Some(read_bundle(
                &c.trust_domain,
                path,
                c.trust_domain_bundle_format,
            )?),
            None => None,
        };
        let replace = issuer
            .federation_relationship(&c.trust_domain)
            .await
            .ok()
            .flatten()
            .is_some();
        issuer
            .put_federation_relationship(&relationship, bootstrap.as_ref(), replace)
            .await
            .map_err(|source| FederationError::Store {
                trust_domain: c.trust_domain.clone(),
                source,
            })?;
    }
    tokio::spawn(supervise(issuer.clone(), roots));
    Ok(())
}

fn from_config(
    index: usize,
    c: &FederationRelationshipConfig,
) -> Result<FederationRelationship, FederationError> {
    let name = match c.bundle_endpoint_profile {
        EndpointProfileName::HttpsWeb => "https_web",
        EndpointProfileName::HttpsSpiffe => "https_spiffe",
    };
    let profile = EndpointProfile::parse(name, c.endpoint_spiffe_id.clone())
        .map_err(|reason| FederationError::Config { index, reason })?;
    Ok(FederationRelationship {
        trust_domain: c.trust_domain.clone(),
        bundle_endpoint_url: c.bundle_endpoint_url.clone(),
        profile,
        managed_by: None,
    })
}

fn read_bundle(
    trust_domain: &TrustDomain,
    path: &Path,
    format: BundleFormat,
) -> Result<Bundle, FederationError> {
    let file = |source: Box<dyn std::error::Error + Send + Sync>| FederationError::File {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(Box::new(e)))?;
    match format {
        BundleFormat::Spiffe => Bundle::from_spiffe_json(trust_domain, &text),
        BundleFormat::Pem => Bundle::from_pem(trust_domain, &text),
    }
    .map_err(|e| file(Box::new(e)))
}

/// Keeps one refresh task per stored relationship: started for a new one,
/// restarted for a changed one, stopped for a deleted one.
async fn supervise<D: Datastore + 'static>(issuer: Arc<Issuer<D>>, roots: Arc<RootCertStore>) {
    let mut running: HashMap<TrustDomain, (FederationRelationship, AbortOnDrop)> = HashMap::new();
    loop {
        match issuer.federation_relationships().await {
            Ok(stored) => {
                running.retain(|td, (relationship, _)| {
                    stored
                        .iter()
                        .any(|r| r.trust_domain == *td && r == relationship)
                });
                for relationship in stored {
                    if running.contains_key(&relationship.trust_domain) {
                        continue;
                    }
                    let task = tokio::spawn(refresh_forever(
                        issuer.clone(),
                        relationship.clone(),
                        roots.clone(),
                    ));
                    running.insert(
                        relationship.trust_domain.clone(),
                        (relationship, AbortOnDrop(task)),
                    );
                }
            }
            Err(e) => {
                tracing::warn!("federation relationships unreadable (will retry): {e}")
            }
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `federation refresh`: fetches the relationship's bundle now.
pub async fn refresh_now<D: Datastore>(
    issuer: &Issuer<D>,
    trust_domain: &TrustDomain,
    web_ca_file: Option<&Path>,
) -> Result<Bundle, RefreshError> {
    let relationship = issuer
        .federation_relationship(trust_domain)
        .await?
        .ok_or_else(|| RefreshError::Unknown(trust_domain.clone()))?;
    let roots = Arc::new(web_roots(web_ca_file).map_err(|e| RefreshError::Roots(Box::new(e)))?);
    let current = issuer.federated_bundle(trust_domain).await?;
    refresh(issuer, &relationship, current.as_ref(), &roots).await
}

/// The system's roots, or only those of `ca_file`.
fn web_roots(ca_file: Option<&Path>) -> Result<RootCertStore, FederationError> {
    let which = ca_file.map_or(WebRoots::System, WebRoots::Only);
    meshward_tls::web_roots(which).map_err(|e| FederationError::File {
        path: e.path.clone(),
        source: Box::new(e),
    })
}

async fn refresh_forever<D: Datastore>(
    issuer: Arc<Issuer<D>>,
    relationship: FederationRelationship,
    roots: Arc<RootCertStore>,
) {
    let td = relationship.trust_domain.clone();
    let mut failures: u32 = 0;
    let mut last_success: Option<Instant> = None;
    loop {
        let current = issuer.federated_bundle(&td).await.ok().flatten();
        let hint = current.as_ref().map_or(DEFAULT_REFRESH, |b| b.refresh_hint);
        let wait = match refresh(&issuer, &relationship, current.as_ref(), &roots).await {
            Ok(bundle) => {
                failures = 0;
                last_success = Some(Instant::now());
                metrics::counter!("meshward_issuer_federation_refreshes_total", "trust_domain" => td.to_string(), "result" => "ok").increment(1);
                metrics::gauge!("meshward_issuer_federation_last_success_timestamp_seconds", "trust_domain" => td.to_string())
                    .set(unix_now());
                bundle.refresh_hint.clamp(MIN_REFRESH, MAX_REFRESH)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics::counter!("meshward_issuer_federation_refreshes_total", "trust_domain" => td.to_string(), "result" => "error").increment(1);
                tracing::warn!(
                    "the bundle of {td} was not refreshed from {} (keeping the last good one; retry in {:?}): {e}",
                    relationship.bundle_endpoint_url,
                    retry_after(failures, hint)
                );
                retry_after(failures, hint)
            }
        };
        if let Some(success) = last_success {
            metrics::gauge!("meshward_issuer_federated_bundle_age_seconds", "trust_domain" => td.to_string())
                .set(success.elapsed().as_secs_f64());
        }
        report_expiry(&td, current.as_ref());
        tokio::time::sleep(wait).await;
    }
}

/// One fetch, stored when the content changed.
async fn refresh<D: Datastore>(
    issuer: &Issuer<D>,
    relationship: &FederationRelationship,
    current: Option<&Bundle>,
    roots: &Arc<RootCertStore>,
) -> Result<Bundle, RefreshError> {
    let fetched = match &relationship.profile {
        EndpointProfile::HttpsWeb => fetch::fetch(relationship, Trust::Web(roots)).await?,
        EndpointProfile::HttpsSpiffe { endpoint_id } => {
            let endpoint_td = endpoint_id.trust_domain();
            let own;
            let other;
            let bundle = if endpoint_td == relationship.trust_domain {
                current
            } else if endpoint_td == issuer.settings().trust_domain {
                own = issuer.bundle().await.ok();
                own.as_ref()
            } else {
                other = issuer.federated_bundle(&endpoint_td).await.ok().flatten();
                other.as_ref()
            };
            fetch::fetch(relationship, Trust::Spiffe(bundle)).await?
        }
    };
    let changed = current.is_none_or(|c| {
        c.x509_authorities != fetched.x509_authorities
            || c.jwt_keys != fetched.jwt_keys
            || c.refresh_hint != fetched.refresh_hint
    });
    // a relationship deleted (or changed) while this fetch ran stores nothing
    let still = issuer
        .federation_relationship(&relationship.trust_domain)
        .await?;
    if changed && still.as_ref() == Some(relationship) {
        issuer.set_federated_bundle(&fetched).await?;
        tracing::info!(
            "the bundle of {} was updated from its endpoint (sequence {})",
            relationship.trust_domain,
            fetched.sequence
        );
    }
    Ok(fetched)
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("no federation relationship with {0}")]
    Unknown(TrustDomain),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the web roots: {0}")]
    Roots(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Store(#[from] crate::service::ServiceError),
}

/// After `failures` failures in a row: 1 s, 2 s, 4 s ... up to the refresh hint.
fn retry_after(failures: u32, hint: Duration) -> Duration {
    let backoff = MIN_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(16));
    backoff.min(hint.clamp(MIN_REFRESH, MAX_REFRESH))
}

/// Says so, loudly, when every X.509 authority of the held bundle has expired.
fn report_expiry(td: &TrustDomain, bundle: Option<&Bundle>) {
    let Some(bundle) = bundle else { return };
    let latest = bundle
        .x509_authorities
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .max();
    if let Some(not_after) = latest {
        #[allow(clippy::cast_precision_loss)]
        let left = not_after as f64 - unix_now();
        metrics::gauge!("meshward_issuer_federated_bundle_seconds_to_expiry", "trust_domain" => td.to_string())
            .set(left);
        if left <= 0.0 {
            tracing::warn!(
                "every X.509 authority in the bundle of {td} has expired: its workloads cannot be verified until a fetch succeeds"
            );
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_the_hint() {
        let hint = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=6).map(|n| retry_after(n, hint).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(retry_after(60, Duration::from_secs(7200)), MAX_REFRESH);
    }
}
