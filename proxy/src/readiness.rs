//! `:15021/healthz/ready`: 200 once the agent attested and finished its first
//! sync, 503 before (what Kubernetes' readiness probe and `meshward demo` wait for).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub async fn serve(listener: TcpListener, ready: watch::Receiver<bool>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let is_ready = *ready.borrow();
                async move { Ok::<_, std::convert::Infallible>(answer(req.uri().path(), is_ready)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
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
