//! `:15021/healthz/ready`: 200 once the agent attested and finished its first
//! sync, 503 before (what `meshward demo` waits for). The same answer on
//! `readiness_socket`, a unix socket in a directory of the daemon's own pod: during
//! an upgrade the TCP port is shared with the daemon being replaced, which may
//! answer for it, so the kubelet asks the socket (`meshward proxy ready`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

pub async fn serve(listener: TcpListener, ready: watch::Receiver<bool>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_connection(stream, ready.clone()));
    }
}

/// The same on a unix socket at `path` (a stale one is replaced).
pub async fn serve_unix(
    path: &std::path::Path,
    ready: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_connection(stream, ready.clone()));
    }
}

async fn serve_connection<S>(stream: S, ready: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let is_ready = *ready.borrow();
        async move { Ok::<_, std::convert::Infallible>(answer(req.uri().path(), is_ready)) }
    });
    // a prober that stops answering must not hold a task
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
}

fn answer(path: &str, ready: bool) -> Response<Full<Bytes>> {
    let (status, body) = match (path, ready) {
        ("/healthz/ready", true) => (StatusCode::OK, "ready\n"),
        ("/healthz/ready", false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: attesting or first sync pending\n",
        ),
        _ => (StatusCode::NOT_FOUND, "not found: try /healthz/ready\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
