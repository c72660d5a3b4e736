//! The echoserver: answers every request with every detail of it, so tests and the
//! demo can see what reached the pod (XFCC included).
//!
//! Two body formats users know: JSON shaped like `ealen/echo-server` (the default)
//! and the plain text of Kubernetes' e2e `echoserver`; plus a TCP echo mode. A gRPC
//! request (`content-type: application/grpc`) gets its message echoed back with
//! trailers `grpc-status: 0` and `echo-xfcc` (the XFCC it arrived with), so trailer
//! handling can be seen end to end. An HTTP/1.1 `Upgrade` request (a WebSocket
//! handshake, say) is answered `101` and the connection then echoes bytes, after
//! one line `xfcc: <the XFCC the request carried>`, so upgrades can be seen
//! through the mesh without a WebSocket library.

pub mod cli;
mod json;
mod text;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Requests bodies above this are answered `413`.
const MAX_BODY: usize = 1 << 20;
/// A TCP echo connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// The downward-API variables a Kubernetes echoserver pod has.
#[derive(Debug, Clone, Default)]
pub struct PodEnv {
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_ip: Option<String>,
}

impl PodEnv {
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            hostname: var("HOSTNAME"),
            node_name: var("NODE_NAME"),
            pod_name: var("POD_NAME"),
            pod_namespace: var("POD_NAMESPACE"),
            pod_ip: var("POD_IP"),
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    client: SocketAddr,
    method: String,
    /// Path and query, as sent.
    uri: String,
    path: String,
    query: String,
    version: &'static str,
    host: String,
    /// Lower-case names, arrival order, repeated headers repeated.
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) until the task is dropped.
pub async fn serve_http(listener: TcpListener, format: Format, env: PodEnv) -> std::io::Result<()> {
    let env = Arc::new(env);
    loop {
        let (stream, client) = listener.accept().await?;
        let env = Arc::clone(&env);
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, client, format, Arc::clone(&env)));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that goes away mid-request is not the server's problem.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Echoes bytes back on every connection until EOF or idleness.
pub async fn serve_tcp_echo(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::time::timeout(TCP_IDLE, tokio::io::copy(&mut r, &mut w)).await;
        });
    }
}

type EchoBody = UnsyncBoxBody<Bytes, Infallible>;

async fn answer(
    mut req: Request<Incoming>,
    client: SocketAddr,
    format: Format,
    env: Arc<PodEnv>,
) -> Result<Response<EchoBody>, Infallible> {
    if let Some(protocol) = upgrade_protocol(&req) {
        return Ok(upgrade_echo(&mut req, protocol));
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(plain(413, "request body too large or broken\n")),
    };
    let grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return Ok(grpc_echo(&parts.headers, body));
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let seen = Seen {
        client,
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or("/".into(), |pq| pq.to_string()),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        version: match parts.version {
            http::Version::HTTP_2 => "2.0",
            http::Version::HTTP_10 => "1.0",
            _ => "1.1",
        },
        host,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let (content_type, body) = match format {
        Format::Json => ("application/json; charset=utf-8", json::render(&seen, &env)),
        Format::Text => ("text/plain", text::render(&seen, &env)),
    };
    let response = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::SERVER, "echoserver")
        .body(Full::new(Bytes::from(body)).boxed_unsync());
    Ok(response.unwrap_or_else(|_| plain(500, "cannot build the response\n")))
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<http::HeaderValue> {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    (req.version() == http::Version::HTTP_11 && connection_upgrade)
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// `101 Switching Protocols`, then `xfcc: ...` and an echo of every byte.
fn upgrade_echo(req: &mut Request<Incoming>, protocol: http::HeaderValue) -> Response<EchoBody> {
    let xfcc = req
        .headers()
        .get("x-forwarded-client-cert")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        if io
            .write_all(format!("xfcc: {xfcc}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let (mut r, mut w) = tokio::io::split(io);
        let _ = tokio::time::timeout(TCP_IDLE, tokio::io::copy(&mut r, &mut w)).await;
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(header::UPGRADE, protocol);
    response.headers_mut().insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    response
}

/// The request message back, then trailers.
fn grpc_echo(headers: &http::HeaderMap, message: Bytes) -> Response<EchoBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    if let Some(xfcc) = headers.get("x-forwarded-client-cert") {
        trailers.insert("echo-xfcc", xfcc.clone());
    }
    let body = Full::new(message)
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

fn plain(status: u16, text: &'static str) -> Response<EchoBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen {
            client: ([10, 0, 0, 5], 40000).into(),
            method: "POST".into(),
            uri: "/api/payment?a=1&b".into(),
            path: "/api/payment".into(),
            query: "a=1&b".into(),
            version: "1.1",
            host: "echoserver.demo:8080".into(),
            headers: vec![
                ("x-role".into(), "user".into()),
                (
                    "x-forwarded-client-cert".into(),
                    "By=spiffe://a;Subject=\"\";URI=spiffe://b".into(),
                ),
                ("x-role".into(), "admin".into()),
            ],
            body: Bytes::new(),
        }
    }

    #[test]
    fn json_like_ealen_echo_server() {
        let v: serde_json::Value =
            serde_json::from_str(&json::render(&seen(), &PodEnv::default())).unwrap();
        assert_eq!(v["host"]["hostname"], "echoserver.demo");
        assert_eq!(v["host"]["ip"], "10.0.0.5");
        assert_eq!(v["http"]["originalUrl"], "/api/payment?a=1&b");
        assert_eq!(v["request"]["params"]["0"], "/api/payment");
        assert_eq!(
            v["request"]["query"],
            serde_json::json!({"a": "1", "b": ""})
        );
        assert_eq!(v["request"]["headers"]["x-role"], "user, admin");
        assert_eq!(
            v["request"]["headers"]["x-forwarded-client-cert"],
            "By=spiffe://a;Subject=\"\";URI=spiffe://b"
        );
        assert_eq!(v["environment"], serde_json::json!({}));
    }

    #[test]
    fn text_like_kubernetes_echoserver() {
        let body = text::render(&seen(), &PodEnv::default());
        assert!(body.starts_with(
            "\n\nHostname: N/A\n\nPod Information:\n\t-no pod information available-\n"
        ));
        assert!(
            body.contains("\treal path=/api/payment?a=1&amp;b\n\tquery=a=1&amp;b\n"),
            "{body}"
        );
        assert!(
            body.contains("\trequest_uri=http://echoserver.demo:8080/api/payment?a=1&amp;b\n"),
            "{body}"
        );
        // one line per value, sorted by name, two trailing spaces, HTML-escaped
        assert!(
            body.contains(
                "\tx-forwarded-client-cert=By=spiffe://a;Subject=&quot;&quot;;URI=spiffe://b  \n\tx-role=user  \n\tx-role=admin  \n"
            ),
            "{body}"
        );
    }
}
