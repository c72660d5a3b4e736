//! One HTTPS GET of a small document (a SPIFFE bundle, a JWKS, an OpenID
//! configuration): HTTP/1.1, no client certificate, the server authenticated by
//! the caller's rustls config, the body bounded. Callers bound the whole exchange
//! in time.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

#[derive(Debug, thiserror::Error)]
pub enum HttpsGetError {
    #[error("URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
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
    #[error("the server answered {0}")]
    Status(StatusCode),
    #[error("the answer is not a document of at most {limit} bytes: {source}")]
    Body {
        limit: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// GETs `url` (https only) with `config` (its ALPN is set to http/1.1) and
/// returns a `200`'s body of at most `max_bytes`.
pub async fn https_get(
    url: &str,
    config: &rustls::ClientConfig,
    max_bytes: usize,
) -> Result<Bytes, HttpsGetError> {
    let bad_url = |reason| HttpsGetError::Url {
        url: url.to_owned(),
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
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| HttpsGetError::Connect {
            authority: authority.clone(),
            source,
        })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|source| HttpsGetError::Tls {
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
        return Err(HttpsGetError::Status(response.status()));
    }
    Ok(Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|source| HttpsGetError::Body {
            limit: max_bytes,
            source,
        })?
        .to_bytes())
}
