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

use meshward_config::{
    BundleFormat, EndpointProfileName, FederationConfig, FederationRelationshipConfig,
};
use meshward_spiffe::{Bundle, SpiffeId, TrustDomain};
use rustls::RootCertStore;

use crate::datastore::Datastore;
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

/// One federation relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    pub trust_domain: TrustDomain,
    pub bundle_endpoint_url: String,
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// A Web PKI certificate for the URL's host.
    HttpsWeb,
    /// An X509-SVID for `endpoint_id`.
    HttpsSpiffe { endpoint_id: SpiffeId },
}

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("federation.federates_with[{index}]: endpoint_spiffe_id is required by https_spiffe")]
    NoEndpointId { index: usize },
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the bootstrap bundle of {trust_domain}: {source}")]
    Store {
        trust_domain: TrustDomain,
        source: crate::service::ServiceError,
    },
}

impl Relationship {
    fn from_config(
        index: usize,
        c: &FederationRelationshipConfig,
    ) -> Result<Self, FederationError> {
        let profile = match (c.bundle_endpoint_profile, &c.endpoint_spiffe_id) {
            (EndpointProfileName::HttpsWeb, _) => Profile::HttpsWeb,
            (EndpointProfileName::HttpsSpiffe, Some(id)) => Profile::HttpsSpiffe {
                endpoint_id: id.clone(),
            },
            (EndpointProfileName::HttpsSpiffe, None) => {
                return Err(FederationError::NoEndpointId { index });
            }
        };
        Ok(Self {
            trust_domain: c.trust_domain.clone(),
            bundle_endpoint_url: c.bundle_endpoint_url.clone(),
            profile,
        })
    }
}

/// The configured relationships, their bootstrap bundles stored (unless a bundle
/// of that domain is already known: it is newer), and a refresh task each.
pub(crate) async fn start<D: Datastore + 'static>(
    config: &FederationConfig,
    issuer: &Arc<Issuer<D>>,
) -> Result<(), FederationError> {
    let roots = Arc::new(web_roots(config.https_web_ca_file.as_deref())?);
    for (index, c) in config.federates_with.iter().enumerate() {
        let relationship = Relationship::from_config(index, c)?;
        if let Some(path) = &c.trust_domain_bundle_path {
            bootstrap(issuer, &c.trust_domain, path, c.trust_domain_bundle_format).await?;
        }
        tokio::spawn(refresh_forever(issuer.clone(), relationship, roots.clone()));
    }
    Ok(())
}

async fn bootstrap<D: Datastore>(
    issuer: &Issuer<D>,
    trust_domain: &TrustDomain,
    path: &Path,
    format: BundleFormat,
) -> Result<(), FederationError> {
    let store = |source| FederationError::Store {
        trust_domain: trust_domain.clone(),
        source,
    };
    if issuer
        .federated_bundle(trust_domain)
        .await
        .map_err(store)?
        .is_some()
    {
        return Ok(());
    }
    let file = |source: Box<dyn std::error::Error + Send + Sync>| FederationError::File {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(Box::new(e)))?;
    let bundle = match format {
        BundleFormat::Spiffe => Bundle::from_spiffe_json(trust_domain, &text),
        BundleFormat::Pem => Bundle::from_pem(trust_domain, &text),
    }
    .map_err(|e| file(Box::new(e)))?;
    issuer.set_federated_bundle(&bundle).await.map_err(store)
}

/// The system's roots, or only those of `ca_file`.
fn web_roots(ca_file: Option<&Path>) -> Result<RootCertStore, FederationError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let failed = |source: Box<dyn std::error::Error + Send + Sync>| FederationError::File {
                path: path.to_owned(),
                source,
            };
            let text = std::fs::read_to_string(path).map_err(|e| failed(Box::new(e)))?;
            let certs =
                meshward_spiffe::pem::certificates(&text).map_err(|e| failed(Box::new(e)))?;
            for cert in certs {
                roots.add(cert).map_err(|e| failed(Box::new(e)))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                eprintln!("meshward issuer: system roots: {e}");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

async fn refresh_forever<D: Datastore>(
    issuer: Arc<Issuer<D>>,
    relationship: Relationship,
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
                eprintln!(
                    "meshward issuer: the bundle of {td} was not refreshed from {} (keeping the last good one; retry in {:?}): {e}",
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
    relationship: &Relationship,
    current: Option<&Bundle>,
    roots: &Arc<RootCertStore>,
) -> Result<Bundle, RefreshError> {
    let fetched = match &relationship.profile {
        Profile::HttpsWeb => fetch::fetch(relationship, Trust::Web(roots)).await?,
        Profile::HttpsSpiffe { endpoint_id } => {
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
    if changed {
        issuer.set_federated_bundle(&fetched).await?;
        eprintln!(
            "meshward issuer: the bundle of {} was updated from its endpoint (sequence {})",
            relationship.trust_domain, fetched.sequence
        );
    }
    Ok(fetched)
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("storing it: {0}")]
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
            eprintln!(
                "meshward issuer: every X.509 authority in the bundle of {td} has expired: its workloads cannot be verified until a fetch succeeds"
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
