//! The federation bundle endpoint (SPIFFE Federation §5): HTTPS, `GET` answers the
//! own bundle in the SPIFFE format, no client authentication. Profiles:
//! `https_spiffe` (the issuer's own SVID) or `https_web` (a Web PKI certificate
//! from files).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use meshward_tls::CertStore;
use tokio::net::TcpListener;

use crate::datastore::Datastore;
use crate::service::Issuer;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request head not complete by then closes the connection: the endpoint is
/// public, and a client trickling bytes must not hold a connection forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// TLS for the endpoint: the rotating issuer SVID, or a fixed Web PKI certificate.
pub(crate) fn tls_config(cert: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Loads an `https_web` certificate chain and key (PEM files).
pub(crate) fn web_certificate(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<Arc<CertStore>, String> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let chain = meshward_spiffe::pem::certificates(&read(cert_file)?)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    let key = rcgen::KeyPair::from_pem(&read(key_file)?)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    let store = CertStore::new();
    store
        .set(chain, &key.serialize_der())
        .map_err(|e| e.to_string())?;
    Ok(store)
}

pub(crate) async fn serve<D: Datastore + 'static>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    issuer: Arc<Issuer<D>>,
) -> Result<(), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (acceptor, issuer) = (acceptor.clone(), issuer.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let issuer = issuer.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req.method(), &issuer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer<D: Datastore>(method: &Method, issuer: &Issuer<D>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if method != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_owned(),
        )
    } else {
        match issuer.bundle().await {
            Ok(bundle) => (StatusCode::OK, "application/json", bundle.to_spiffe_json()),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("bundle unavailable: {e}\n"),
            ),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
