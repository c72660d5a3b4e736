//! One fetch of a foreign bundle from its endpoint (SPIFFE Federation §5): HTTPS
//! GET (`meshward_tls::https_get`), no client certificate, the server
//! authenticated by the relationship's profile, the answer parsed as that trust
//! domain's bundle. Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use meshward_spiffe::{Bundle, InvalidBundle, TrustDomain};
use meshward_tls::{Authorizer, HttpsGetError, SpiffeServerVerifier, TrustBundles, https_get};
use rustls::RootCertStore;

use crate::datastore::{EndpointProfile, FederationRelationship};

/// The whole exchange: connect, handshake, request, body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A bundle is a few keys; anything this large is not one.
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "no bundle of {0} to authenticate its https_spiffe endpoint with (give trust_domain_bundle_path)"
    )]
    NoBundle(TrustDomain),
    #[error("{0}")]
    Get(#[from] HttpsGetError),
    #[error("https_web needs Web PKI roots")]
    NoWebRoots,
    #[error("the answer is not UTF-8: {0}")]
    NotText(#[from] std::str::Utf8Error),
    #[error("{0}")]
    Trust(#[from] meshward_tls::TlsError),
    #[error(transparent)]
    Bundle(#[from] InvalidBundle),
    #[error("the bundle holds no authority")]
    Empty,
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
}

/// How the endpoint is authenticated: its profile's rules, with the bundle
/// `endpoint_bundle` (https_spiffe: of the endpoint ID's trust domain).
pub(crate) enum Trust<'a> {
    Web(&'a Arc<RootCertStore>),
    Spiffe(Option<&'a Bundle>),
}

/// Fetches `relationship`'s bundle.
pub(crate) async fn fetch(
    relationship: &FederationRelationship,
    trust: Trust<'_>,
) -> Result<Bundle, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_unbounded(relationship, trust))
        .await
        .unwrap_or(Err(FetchError::Timeout))
}

async fn fetch_unbounded(
    relationship: &FederationRelationship,
    trust: Trust<'_>,
) -> Result<Bundle, FetchError> {
    let config = client_config(relationship, trust)?;
    let body = https_get(&relationship.bundle_endpoint_url, &config, MAX_BUNDLE_BYTES).await?;
    let bundle = Bundle::from_spiffe_json(&relationship.trust_domain, std::str::from_utf8(&body)?)?;
    if bundle.x509_authorities.is_empty() && bundle.jwt_keys.is_empty() {
        return Err(FetchError::Empty);
    }
    Ok(bundle)
}

fn client_config(
    relationship: &FederationRelationship,
    trust: Trust<'_>,
) -> Result<rustls::ClientConfig, FetchError> {
    let config = match (&relationship.profile, trust) {
        (EndpointProfile::HttpsSpiffe { endpoint_id }, Trust::Spiffe(bundle)) => {
            let td = endpoint_id.trust_domain();
            let bundle = bundle
                .filter(|b| !b.x509_authorities.is_empty())
                .ok_or_else(|| FetchError::NoBundle(td.clone()))?;
            let bundles = TrustBundles::new();
            bundles.set(&td, &bundle.x509_authorities)?;
            let verifier =
                SpiffeServerVerifier::new(bundles, Authorizer::Exact(endpoint_id.clone()));
            rustls::ClientConfig::builder()
                .dangerous() // a SPIFFE verifier that wraps webpki, not a bypass
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
        (EndpointProfile::HttpsWeb, Trust::Web(roots)) => rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        // the caller picks the trust by the profile; a mismatch authenticates nothing
        (EndpointProfile::HttpsSpiffe { endpoint_id }, Trust::Web(_)) => {
            return Err(FetchError::NoBundle(endpoint_id.trust_domain()));
        }
        (EndpointProfile::HttpsWeb, Trust::Spiffe(_)) => return Err(FetchError::NoWebRoots),
    };
    Ok(config)
}
