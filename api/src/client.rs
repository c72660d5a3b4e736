//! Connecting to the issuer: the agent API over SPIFFE-authenticated TLS, and the
//! admin API over its unix socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use meshward_spiffe::{SpiffeId, TrustDomain};
use meshward_tls::{Authorizer, CertStore, SpiffeServerVerifier, TrustBundles};
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

pub use tonic::{Code, Status};

use crate::proto::admin_api_client::AdminApiClient;
use crate::proto::agent_api_client::AgentApiClient;

/// Every network wait is bounded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The chain of causes is in the message too: tonic's own says only
    /// "transport error".
    #[error("cannot connect to {target}: {source}: {}", source_chain(source))]
    Connect {
        target: String,
        source: tonic::transport::Error,
    },
}

/// The issuer's own SVID ID: `spiffe://<td>/spire/server`, as SPIRE's.
pub fn server_id(trust_domain: &TrustDomain) -> SpiffeId {
    // two valid segments after a valid trust domain (at most 255 bytes) always
    // parse; were it ever not so, the trust domain's own ID pins a server no
    // issuer presents, and the connection fails closed
    SpiffeId::from_segments(trust_domain, &["spire", "server"])
        .unwrap_or_else(|_| trust_domain.id())
}

/// A client for the agent API at `address` (`host:port`). The server must present
/// an SVID for `spiffe://<trust_domain>/spire/server` that chains to `bundles`;
/// `identity` holds the node SVID once attested (empty before).
pub async fn agent_client(
    address: &str,
    trust_domain: &TrustDomain,
    bundles: Arc<TrustBundles>,
    identity: Arc<CertStore>,
) -> Result<AgentApiClient<Channel>, ClientError> {
    meshward_tls::install_crypto_provider();
    let verifier = SpiffeServerVerifier::new(bundles, Authorizer::Exact(server_id(trust_domain)));
    let mut config = rustls::ClientConfig::builder()
        .dangerous() // a SPIFFE verifier that wraps webpki, not a bypass
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = address.to_owned();
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|source| ClientError::Connect {
            target: target.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    let dial = target.clone();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_uri| {
            let (connector, dial) = (connector.clone(), dial.clone());
            async move {
                let tcp =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&dial))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "TCP connect timed out",
                            )
                        })??;
                // The name is not checked: the verifier authenticates the SPIFFE ID.
                let name =
                    ServerName::try_from("meshward-issuer").map_err(std::io::Error::other)?;
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| ClientError::Connect { target, source })?;
    Ok(AgentApiClient::new(channel))
}

/// A client for the admin API on the unix socket at `path`.
pub async fn admin_client(path: PathBuf) -> Result<AdminApiClient<Channel>, ClientError> {
    let target = path.display().to_string();
    let channel = Endpoint::from_static("http://issuer.admin")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|source| ClientError::Connect { target, source })?;
    Ok(AdminApiClient::new(channel))
}

fn source_chain(e: &tonic::transport::Error) -> String {
    let e: &dyn std::error::Error = e;
    let mut out = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push(cause.to_string());
        next = cause.source();
    }
    out.join(": ")
}
