//! `/live` (the process answers), `/ready` (datastore reachable and a CA active),
//! plain HTTP as Kubernetes probes want it, and `/metrics` (Prometheus text).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::datastore::Datastore;
use crate::service::Issuer;

pub(crate) async fn serve<D: Datastore + 'static>(
    listener: TcpListener,
    issuer: Arc<Issuer<D>>,
    metrics: super::MetricsRender,
) -> Result<(), String> {
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (issuer, metrics) = (issuer.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (issuer, metrics) = (issuer.clone(), metrics.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        answer(req.uri().path(), &issuer, &metrics).await,
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer<D: Datastore>(
    path: &str,
    issuer: &Issuer<D>,
    metrics: &super::MetricsRender,
) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/live" => (StatusCode::OK, "live\n".to_owned()),
        "/metrics" => (StatusCode::OK, metrics()),
        "/ready" => match issuer.health().await {
            (true, true) => (StatusCode::OK, "ready\n".to_owned()),
            (false, _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: datastore unreachable\n".to_owned(),
            ),
            (_, false) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no active CA\n".to_owned(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready or /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
