//! L7: HTTP/1.1 or HTTP/2 (gRPC included) served on an inbound stream, each request
//! authenticated (RequestAuthentication: a bad JWT gets 401) and authorized on its
//! own. Refused: 403 `RBAC: access denied` (gRPC: status 7).
//! Allowed: XFCC set (anything the client sent removed), the path normalized as
//! policy saw it, sent to the pod over a pooled connection in the client's HTTP
//! version; trailers pass through. The pod unreachable: 503 (gRPC: status 14).
//! An allowed HTTP/1.1 upgrade (WebSocket) goes to the pod on its own connection;
//! when the pod answers `101`, the client's and the pod's connections are joined
//! byte for byte, as Envoy does for Istio's WebSocket routes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use meshward_policy::HttpRequest;
use tokio::io::{AsyncRead, AsyncWrite};

use super::access_log;
use super::admit::{self, Admitted};
use super::body::{self, ProxyBody};
use super::refusal::Refusal;
use super::stream::{DecisionRecord, InboundStream};
use super::upstream::Version;
use super::{Shared, copy, h2, responses};
use head::{LastAuthority, prepare_head};
use headers::{keep_upgrade, strip_hop_by_hop};

pub(super) mod head;
mod headers;

/// How long the two sides of an upgrade may take to be handed over after the 101.
const UPGRADE_HANDOVER: Duration = Duration::from_secs(30);

/// Serves HTTP on `io` until the client is done with it.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    stream: Arc<InboundStream>,
    io: S,
    version: Version,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits.clone();
    let drain = shared.drain.clone();
    let connection = Arc::new(HttpConnection {
        stream,
        version,
        authority: LastAuthority::default(),
    });
    let handler = move |request| {
        let (shared, connection) = (shared.clone(), connection.clone());
        async move { Ok::<_, Infallible>(handle(&shared, &connection, request).await) }
    };
    let io = TokioIo::new(io);
    // on drain: HTTP/1.1 closes after the response in flight, HTTP/2 sends GOAWAY
    let result = match version {
        Version::Http1 => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(io, service_fn(handler))
                .with_upgrades();
            tokio::pin!(connection);
            drain.serve(connection, |c| c.graceful_shutdown()).await
        }
        // boxed: hyper spawns a task per HTTP/2 request, and moving the handler's
        // future (4.3 KB) into it, through the spawn and each stage of the task,
        // was 40% of the inbound daemon's instructions per request
        Version::Http2 => {
            let connection = h2::app_server(&limits)
                .serve_connection(io, service_fn(move |r| Box::pin(handler(r))));
            tokio::pin!(connection);
            drain.serve(connection, |c| c.graceful_shutdown()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

/// What the requests of one HTTP connection share.
struct HttpConnection {
    stream: Arc<InboundStream>,
    version: Version,
    /// The last authority its requests named, normalized.
    authority: LastAuthority,
}

/// Serves one request and leaves its access log line and metrics.
async fn handle(
    shared: &Shared,
    connection: &HttpConnection,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let stream = &*connection.stream;
    let started = Instant::now();
    let method = request.method().clone();
    let grpc = responses::is_grpc(request.headers());
    let mut path = request.uri().path().to_owned();
    let (response, record) = respond(shared, connection, request, grpc, &mut path).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    stream.request_metrics.record(
        stream.source_principal(),
        stream.destination_principal(),
        status,
        grpc,
        elapsed,
    );
    access_log::request(stream, method.as_str(), &path, status, &record, elapsed);
    response
}

/// Serves one request: its refusal, rendered here (the HTTP boundary of
/// `refusal.rs`), or the pod's answer. `path` becomes the normalized path once known.
async fn respond(
    shared: &Shared,
    connection: &HttpConnection,
    request: Request<Incoming>,
    grpc: bool,
    path: &mut String,
) -> (Response<ProxyBody>, DecisionRecord) {
    match admit_then_forward(shared, connection, request, grpc, path).await {
        Ok(answered) => answered,
        Err(refusal) => {
            let record = refusal.record();
            (refusal.response(grpc), record)
        }
    }
}

/// Prepares the head, admits the request (`admit.rs`), then forwards it.
///
/// The order is the security argument: hop-by-hop headers go first, then
/// meshward's XFCC is set (so no `Connection` option can name it away), then
/// policy judges the request exactly as the pod will receive it (target, authority,
/// headers); what goes out is rebuilt from that judged request, never from the raw one.
async fn admit_then_forward(
    shared: &Shared,
    connection: &HttpConnection,
    request: Request<Incoming>,
    grpc: bool,
    path: &mut String,
) -> Result<(Response<ProxyBody>, DecisionRecord), Refusal> {
    let (stream, version) = (&*connection.stream, connection.version);
    // the body as it will be forwarded (an XFCC trailer removed); an external
    // authorizer may read its first bytes before
    let mut request = request.map(body::request);
    let head = prepare_head(&mut request, version, stream.xfcc()).map_err(Refusal::Malformed)?;
    let authority = &connection.authority;
    let admitted = admit::request(shared, stream, &mut request, &head, authority, path);
    let mut admitted = admitted.await?;
    let Some(judged) = admitted.judged.http.as_mut() else {
        return Err(Refusal::Malformed("no HTTP request".into()));
    };
    as_judged(&mut request, version, judged, head.upgrade.as_ref())?;
    let upgrade = head.upgrade.is_some();
    Ok(forward(shared, stream, request, version, upgrade, admitted, grpc).await)
}

/// Makes `request` the one policy judged: its target and authority set as judged,
/// never the raw ones (Envoy rewrites the path too), the headers policy saw, and
/// the upgrade it asked for. The headers move back from `judged`; an upgrade's
/// are copied, as its judged request lives on to be judged again (`revocation.rs`).
fn as_judged(
    request: &mut Request<ProxyBody>,
    version: Version,
    judged: &mut HttpRequest,
    upgrade: Option<&HeaderValue>,
) -> Result<(), Refusal> {
    let malformed = |e: &dyn std::fmt::Display| Refusal::Malformed(e.to_string());
    let host = judged.host();
    let target = judged.target().to_request_target();
    *request.uri_mut() = forwarded_uri(version, host, &target).map_err(|e| malformed(&e))?;
    let host = match version {
        Version::Http1 if !host.is_empty() => {
            Some(HeaderValue::from_str(host).map_err(|e| malformed(&e))?)
        }
        _ => None,
    };
    *request.headers_mut() = match upgrade {
        Some(_) => judged.headers().clone(),
        None => judged.take_headers(),
    };
    if let Some(host) = host {
        request.headers_mut().insert(header::HOST, host);
    }
    if let Some(protocol) = upgrade {
        keep_upgrade(request.headers_mut(), protocol.clone());
    }
    Ok(())
}

/// Sends an admitted request to the pod and returns its answer (the pod
/// unreachable: `503`). An upgrade the pod accepts is joined to the client's
/// connection and watched for revocation.
async fn forward(
    shared: &Shared,
    stream: &InboundStream,
    mut request: Request<ProxyBody>,
    version: Version,
    upgrade: bool,
    admitted: Admitted,
    grpc: bool,
) -> (Response<ProxyBody>, DecisionRecord) {
    let Admitted {
        mut record,
        judged,
        on_allow,
    } = admitted;
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut request));
    let sent = if upgrade {
        // boxed, as every rare stage: see `serve`
        let sent = Box::pin(shared.upstream.send_upgrade(stream.destination, request));
        sent.await
    } else {
        let sent = shared.upstream.send(stream.destination, version, request);
        sent.await
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => {
            record.reason = format!("{}; upstream failed: {e}", record.reason).into();
            return (responses::unavailable(grpc), record);
        }
    };
    let switched = match client_side {
        Some(client_side) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let pod_side = hyper::upgrade::on(&mut response);
            let revoked = shared
                .revocations
                .watch(stream, judged, record.approved_by.clone());
            join_upgraded(client_side, pod_side, shared.limits.idle_timeout, revoked);
            response.headers().get(header::UPGRADE).cloned()
        }
        _ => None,
    };
    let mut response = response.map(body::stream);
    strip_hop_by_hop(response.headers_mut());
    meshward_extauthz::apply_headers(response.headers_mut(), &on_allow, &[]);
    if let Some(protocol) = switched {
        keep_upgrade(response.headers_mut(), protocol);
    }
    (response, record)
}

/// The URI the pod receives: the judged target and, over HTTP/2, the judged
/// authority, each set as itself. Joined as text and parsed again, an HTTP/2
/// `OPTIONS *` for `a.example` would reach the pod as `:authority a.example*`,
/// `:path /` (found by the `http_head` fuzz target).
pub(super) fn forwarded_uri(
    version: Version,
    host: &str,
    target: &str,
) -> Result<Uri, http::Error> {
    match version {
        Version::Http1 => Ok(target.parse::<Uri>()?),
        Version::Http2 => Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(target)
            .build(),
    }
}

/// Once the client has the `101` and the pod's connection is handed over, copies
/// bytes both ways until both sides are done or idle, or until `revoked` says a
/// policy change no longer allows the request that opened it.
fn join_upgraded(
    client: OnUpgrade,
    pod: OnUpgrade,
    idle: Duration,
    revoked: impl std::future::Future<Output = Refusal> + Send + 'static,
) {
    tokio::spawn(async move {
        // both resolve as soon as the 101 is written (or fail when a side closes);
        // the bound is for a peer that stops reading mid-handshake
        let handed_over =
            tokio::time::timeout(UPGRADE_HANDOVER, async { (client.await, pod.await) }).await;
        let (client, pod) = match handed_over {
            Ok((Ok(client), Ok(pod))) => (client, pod),
            Ok((Err(e), _) | (_, Err(e))) => {
                tracing::debug!("upgrade not completed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("upgrade not completed within {UPGRADE_HANDOVER:?}");
                return;
            }
        };
        let (mut client, mut pod) = (TokioIo::new(client), TokioIo::new(pod));
        let copy = copy::bidirectional(&mut client, &mut pod, idle);
        let (moved, result) = tokio::select! {
            done = copy => done,
            refusal = revoked => {
                tracing::info!(target: "access", "upgraded connection closed: a policy change no longer allows it: {refusal}");
                return;
            }
        };
        tracing::debug!(
            bytes_sent = moved.sent,
            bytes_received = moved.received,
            "upgraded connection ended: {}",
            result
                .err()
                .map_or_else(|| "done".to_owned(), |e| e.to_string())
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_gets_the_judged_target_and_authority() {
        let parts = |version, host, target| {
            forwarded_uri(version, host, target).map(|uri| {
                (
                    uri.authority().map(|a| a.as_str().to_owned()),
                    uri.path_and_query().map(|p| p.as_str().to_owned()),
                )
            })
        };
        let some = |text: &str| Some(text.to_owned());
        // fuzz/ http_head: an HTTP/2 OPTIONS * (RFC 9113 §8.3.1), judged as path
        // `*` of a.example, went out as `:authority a.example*`, `:path /`
        assert_eq!(
            parts(Version::Http2, "a.example", "*").unwrap(),
            (some("a.example"), some("*"))
        );
        // and without an authority, as a request for the authority `*`: now a 400
        assert!(parts(Version::Http2, "", "*").is_err());
        assert_eq!(
            parts(Version::Http2, "a.example:8080", "/x?y=1").unwrap(),
            (some("a.example:8080"), some("/x?y=1"))
        );
        assert_eq!(
            parts(Version::Http1, "a.example", "*").unwrap(),
            (None, some("*"))
        );
        assert_eq!(
            parts(Version::Http1, "a.example", "/x?y=1").unwrap(),
            (None, some("/x?y=1"))
        );
    }
}
