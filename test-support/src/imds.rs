//! A test EC2 instance metadata service (IMDSv2): a session token by `PUT
//! /latest/api/token`, then the identity document and its `rsa2048` signature
//! for requests that carry it. It can also misbehave as the advisory tests need:
//! hang, or answer without end.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const TOKEN: &str = "AQAEAtest-imds-session-token==";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// What the test IMDS does.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Serves `document` and `rsa2048` as AWS does.
    Serve { document: String, rsa2048: String },
    /// Accepts connections and never answers.
    Hang,
    /// Answers every request with an endless body.
    Endless,
}

/// The server on `listener`, until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, behaviour: Behaviour) {
    let behaviour = Arc::new(behaviour);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let behaviour = Arc::clone(&behaviour);
        tokio::spawn(async move {
            if matches!(*behaviour, Behaviour::Hang) {
                // hold the connection open, say nothing
                let _held = stream;
                return std::future::pending::<()>().await;
            }
            let service = service_fn(move |req| answer(Arc::clone(&behaviour), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Starts one on a loopback port; returns its address and the task.
pub async fn start(behaviour: Behaviour) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (address, tokio::spawn(serve(listener, behaviour)))
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    behaviour: Arc<Behaviour>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let full = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
        *response.status_mut() = status;
        Ok(response)
    };
    let (document, rsa2048) = match &*behaviour {
        Behaviour::Serve { document, rsa2048 } => (document, rsa2048),
        Behaviour::Hang => return full(StatusCode::SERVICE_UNAVAILABLE, String::new()),
        Behaviour::Endless => {
            let chunks = futures_util::stream::repeat_with(|| {
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))
            });
            return Ok(Response::new(BodyExt::boxed(StreamBody::new(chunks))));
        }
    };
    let path = req.uri().path();
    if req.method() == Method::PUT && path == "/latest/api/token" {
        // IMDSv2 refuses a token request without a TTL
        return match req.headers().get(TTL_HEADER) {
            Some(_) => full(StatusCode::OK, TOKEN.into()),
            None => full(StatusCode::BAD_REQUEST, String::new()),
        };
    }
    if req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        return full(StatusCode::UNAUTHORIZED, String::new());
    }
    match (req.method(), path) {
        (&Method::GET, "/latest/dynamic/instance-identity/document") => {
            full(StatusCode::OK, document.clone())
        }
        (&Method::GET, "/latest/dynamic/instance-identity/rsa2048") => {
            full(StatusCode::OK, rsa2048.clone())
        }
        (&Method::GET, "/latest/dynamic/instance-identity/signature") => {
            full(StatusCode::OK, "c2lnbmF0dXJl".into())
        }
        _ => full(StatusCode::NOT_FOUND, String::new()),
    }
}
