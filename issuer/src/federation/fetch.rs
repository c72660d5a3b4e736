//! One fetch of a foreign bundle from its endpoint (SPIFFE Federation §5): HTTPS
//! GET, no client certificate, the server authenticated by the relationship's
//! profile, the answer parsed as that trust domain's bundle. Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use meshward_spiffe::{Bundle, InvalidBundle, TrustDomain};
use meshward_tls::{Authorizer, SpiffeServerVerifier, TrustBundles};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;

use crate::datastore::{EndpointProfile, FederationRelationship};

/// The whole exchange: connect, handshake, request, body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A bundle is a few keys; anything this large is not one.
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bundle endpoint URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error(
        "no bundle of {0} to authenticate its https_spiffe endpoint with (give trust_domain_bundle_path)"
    )]
    NoBundle(TrustDomain),
    #[error("connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("TLS with {authority}: {source}")]
    Tls {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the endpoint answered {0}")]
    Status(StatusCode),
    #[error("the answer is not a bundle of at most 1 MiB: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
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
    let url = &relationship.bundle_endpoint_url;
    let bad_url = |reason| FetchError::Url {
        url: url.clone(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| bad_url("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad_url("not https"));
    }
    let host = uri.host().ok_or_else(|| bad_url("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let authority = format!("{host}:{port}");
    let server_name = ServerName::try_from(host.clone()).map_err(|_| bad_url("bad host"))?;
    let config = client_config(relationship, trust)?;

    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| FetchError::Connect {
            authority: authority.clone(),
            source,
        })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|source| FetchError::Tls {
            authority: authority.clone(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        // the response (or its absence) reports what went wrong
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(
            header::HOST,
            uri.authority().map_or(authority.as_str(), |a| a.as_str()),
        )
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|_| bad_url("not a request path"))?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(FetchError::Body)?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|e| FetchError::Body(Box::new(e)))?;
    let bundle = Bundle::from_spiffe_json(&relationship.trust_domain, text)?;
    if bundle.x509_authorities.is_empty() && bundle.jwt_keys.is_empty() {
        return Err(FetchError::Empty);
    }
    Ok(bundle)
}

fn client_config(
    relationship: &FederationRelationship,
    trust: Trust<'_>,
) -> Result<rustls::ClientConfig, FetchError> {
    let mut config = match (&relationship.profile, trust) {
        (EndpointProfile::HttpsSpiffe { endpoint_id }, Trust::Spiffe(bundle)) => {
            let td = endpoint_id.trust_domain();
            let bundle = bundle
                .filter(|b| !b.x509_authorities.is_empty())
                .ok_or_else(|| FetchError::NoBundle(td.clone()))?;
            let bundles = TrustBundles::new();
            bundles
                .set(&td, &bundle.x509_authorities)
                .map_err(|e| FetchError::Body(Box::new(e)))?;
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
        (EndpointProfile::HttpsWeb, Trust::Spiffe(_)) => {
            return Err(FetchError::Url {
                url: relationship.bundle_endpoint_url.clone(),
                reason: "https_web needs Web PKI roots",
            });
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
