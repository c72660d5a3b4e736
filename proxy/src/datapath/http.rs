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
use meshward_extauthz::Verdict;
use meshward_jwt::JwtFailure;
use meshward_policy::{HttpRequest, JwtClaims, PolicySet};
use meshward_spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::authz::{CustomApproval, DecisionRecord, InboundStream};
use super::body::{self, ProxyBody};
use super::jwks::RequestKeys;
use super::upstream::Version;
use super::{Shared, copy, custom, h2, responses};
use crate::{metrics, xfcc};
use headers::{keep_upgrade, request_authority, strip_hop_by_hop, upgrade_protocol};

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
    let service = service_fn(move |request| {
        let (shared, stream) = (shared.clone(), stream.clone());
        async move { Ok::<_, Infallible>(handle(&shared, &stream, request, version).await) }
    });
    let io = TokioIo::new(io);
    // on drain: HTTP/1.1 closes after the response in flight, HTTP/2 sends GOAWAY
    macro_rules! until_drained {
        ($connection:expr) => {{
            let connection = $connection;
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => result,
                () = drain.started() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }};
    }
    let result = match version {
        Version::Http1 => until_drained!(
            http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(io, service)
                .with_upgrades()
        ),
        Version::Http2 => until_drained!(h2::app_server(&limits).serve_connection(io, service)),
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

/// Serves one request and leaves its access log line and metrics.
async fn handle(
    shared: &Shared,
    stream: &InboundStream,
    request: Request<Incoming>,
    version: Version,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = request.method().clone();
    let grpc = responses::is_grpc(request.headers());
    let mut path = request.uri().path().to_owned();
    let (response, record) = respond(shared, stream, request, version, grpc, &mut path).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::request(
        stream.source_principal(),
        stream.destination_principal(),
        status,
        grpc,
        elapsed,
    );
    stream.log_request(method.as_str(), &path, status, &record, elapsed);
    response
}

/// Parse and normalize, authorize, then refuse or forward. `path` becomes the
/// normalized path once known.
///
/// The order is the security argument: hop-by-hop headers go first, then
/// meshward's XFCC is set (so no `Connection` option can name it away), then
/// policy judges the request exactly as the pod will receive it (target, authority,
/// headers); what goes out is rebuilt from that judged request, never from the raw one.
async fn respond(
    shared: &Shared,
    stream: &InboundStream,
    request: Request<Incoming>,
    version: Version,
    grpc: bool,
    path: &mut String,
) -> (Response<ProxyBody>, DecisionRecord) {
    // the body as it will be forwarded (an XFCC trailer removed); an external
    // authorizer may read its first bytes before
    let mut request = request.map(body::request);
    let bad_request = |reason: String| {
        let response = responses::bad_request(&reason);
        let record = DecisionRecord::refused("-", format!("bad request: {reason}"));
        (response, record)
    };
    let by = stream.pod.tls.as_ref().map(|t| &t.spiffe_id);
    let peer = stream.peer.as_ref().map(|p| xfcc::PeerCertificate {
        spiffe_id: &p.spiffe_id,
        leaf_der: &p.leaf_der,
    });
    let Head {
        authority,
        target,
        upgrade,
    } = match prepare_head(&mut request, version, by, peer.as_ref()) {
        Ok(head) => head,
        Err(reason) => return bad_request(reason),
    };

    let policies = shared.policies.borrow().clone();
    // RequestAuthentication: a token that does not verify is refused here; one
    // that does gives the request principal policy judges, and the headers are
    // shaped (token removed, claims written) before policy sees them
    let jwt = match authenticate(shared, stream, &policies, &mut request).await {
        Ok(jwt) => jwt,
        Err(failure) => {
            metrics::jwt_refused(failure.reason());
            let realm = format!("http://{authority}{}", request.uri().path());
            let record =
                DecisionRecord::refused("-", format!("JWT refused: {failure} ({failure:?})"));
            return (
                responses::unauthorized(&failure.to_string(), &realm, grpc),
                record,
            );
        }
    };
    let http = match HttpRequest::new(
        request.method().as_str(),
        &target,
        &authority,
        request.headers().clone(),
        policies.options().path_normalization,
    ) {
        Ok(http) => match jwt {
            Some(claims) => http.with_jwt(claims),
            None => http,
        },
        Err(e) => return bad_request(e.to_string()),
    };
    http.target().path().clone_into(path);
    let normalized = http.target().to_request_target();
    let host = http.host().to_owned();
    let mut judged = stream.request(Some(http));
    if !stream.peer_trusted(&shared.state.borrow()) {
        // an HBONE stream opened before the pod stopped trusting the peer's domain
        let record = DecisionRecord::refused(
            "-",
            "the peer's trust domain is no longer trusted by this pod",
        );
        return (responses::forbidden(grpc), record);
    }
    // CUSTOM first: the provider's refusal is the client's answer; what it allows
    // goes on, with its header changes, to DENY and ALLOW
    let mut on_allow = Vec::new();
    let mut record = match policies.custom_check(&stream.pod.workload, &judged) {
        None => stream.authorize(&policies, &judged),
        Some(check) => {
            let protocol = match version {
                Version::Http1 => "HTTP/1.1",
                Version::Http2 => "HTTP/2",
            };
            let Some(http) = judged.http.as_ref() else {
                return bad_request("no HTTP request".into());
            };
            let mut input = custom::http_input(stream.check_peers(), http, protocol);
            let wanted = shared
                .providers
                .get(check.provider)
                .and_then(|a| a.body().cloned());
            if let Some(wanted) = wanted {
                match read_for_check(&mut request, &wanted).await {
                    Ok(prefix) => {
                        if let Some(http) = input.http.as_mut() {
                            http.body = Some(prefix);
                        }
                    }
                    Err((status, reason)) => {
                        let record = DecisionRecord::refused(check.policy.to_string(), reason);
                        return (responses::status_only(status), record);
                    }
                }
            }
            let asked = custom::ask(&shared.providers, &check, &input).await;
            match asked.verdict {
                Verdict::Deny {
                    status,
                    headers,
                    body,
                } => {
                    let policy = check.policy.to_string();
                    metrics::decision("l7", false, &policy, "CUSTOM");
                    let record = DecisionRecord::refused(policy, asked.reason);
                    if asked.not_configured {
                        return (responses::forbidden(grpc), record);
                    }
                    return (responses::custom_denied(status, &headers, body), record);
                }
                Verdict::Allow {
                    upstream,
                    remove,
                    downstream,
                } => {
                    meshward_extauthz::apply_headers(request.headers_mut(), &upstream, &remove);
                    on_allow = downstream;
                    let headers = request.headers().clone();
                    judged.http = judged.http.map(|h| h.with_headers(headers));
                    let mut record = stream.authorize_after_custom(&policies, &judged);
                    record.reason = format!("{}; {}", asked.reason, record.reason);
                    record.approved_by = Some(CustomApproval::of(&check));
                    record
                }
            }
        }
    };
    if !record.allowed {
        return (responses::forbidden(grpc), record);
    }

    // the pod gets the target and authority policy judged, never the raw ones
    // (Envoy rewrites the path too)
    match forwarded_uri(version, &host, &normalized) {
        Ok(uri) => *request.uri_mut() = uri,
        Err(e) => return bad_request(e.to_string()),
    }
    if version == Version::Http1 && !host.is_empty() {
        match HeaderValue::from_str(&host) {
            Ok(value) => {
                request.headers_mut().insert(header::HOST, value);
            }
            Err(e) => return bad_request(e.to_string()),
        }
    }
    if let Some(protocol) = &upgrade {
        keep_upgrade(request.headers_mut(), protocol.clone());
    }
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let sent = match upgrade {
        Some(_) => {
            shared
                .upstream
                .send_upgrade(stream.destination, request)
                .await
        }
        None => {
            shared
                .upstream
                .send(stream.destination, version, request)
                .await
        }
    };
    match sent {
        Ok(mut response) => {
            let switched = match client_side {
                Some(client_side) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let pod_side = hyper::upgrade::on(&mut response);
                    let revoked =
                        shared
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
        Err(e) => {
            record.reason = format!("{}; upstream failed: {e}", record.reason);
            (responses::unavailable(grpc), record)
        }
    }
}

/// What the proxy reads of a request's head before anything else.
pub(super) struct Head {
    pub(super) authority: String,
    /// Path and query, as the client sent them.
    pub(super) target: String,
    /// The one upgrade forwarded (WebSocket), once it is allowed.
    pub(super) upgrade: Option<HeaderValue>,
}

/// Reads a request's head and makes it what the pod may receive: its authority
/// (`Err`: why it is a `400`), target and upgrade read, hop-by-hop headers and
/// `Host` removed, meshward's XFCC set (`by`: the pod's ID; `peer`: the verified
/// client's).
pub(super) fn prepare_head<B>(
    request: &mut Request<B>,
    version: Version,
    by: Option<&SpiffeId>,
    peer: Option<&xfcc::PeerCertificate<'_>>,
) -> Result<Head, String> {
    let authority = request_authority(request, version)?;
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let upgrade = upgrade_protocol(request);
    strip_hop_by_hop(request.headers_mut());
    request.headers_mut().remove(header::HOST);
    xfcc::set(request.headers_mut(), by, peer);
    Ok(Head {
        authority,
        target,
        upgrade,
    })
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

/// How long a client may take to send the body an authorizer wants to read.
const BODY_FOR_CHECK: Duration = Duration::from_secs(30);

/// The first `maxRequestBytes` of the body, for an authorizer; the request keeps
/// the whole body. A larger body is `413` unless `allowPartialMessage`; a client
/// too slow to send it, `408`.
async fn read_for_check(
    request: &mut Request<ProxyBody>,
    wanted: &meshward_config::RequestBody,
) -> Result<bytes::Bytes, (StatusCode, String)> {
    let max = wanted.max_request_bytes as usize;
    let taken = std::mem::replace(request.body_mut(), body::empty());
    let peeked = tokio::time::timeout(BODY_FOR_CHECK, body::peek(taken, max))
        .await
        .map_err(|_| {
            (
                StatusCode::REQUEST_TIMEOUT,
                "the body the authorizer reads was not sent in time".to_owned(),
            )
        })?
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad request body: {e}")))?;
    *request.body_mut() = peeked.body;
    if peeked.truncated && !wanted.allow_partial_message {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the authorizer's maxRequestBytes ({max})"),
        ));
    }
    Ok(peeked.prefix)
}

/// Authenticates `request` under the RequestAuthentication rules of its pod:
/// `Ok(None)` when there are none or it carries no token.
async fn authenticate(
    shared: &Shared,
    stream: &InboundStream,
    policies: &PolicySet,
    request: &mut Request<ProxyBody>,
) -> Result<Option<JwtClaims>, JwtFailure> {
    let rules = policies.jwt_rules(&stream.pod.workload);
    if rules.is_empty() {
        return Ok(None);
    }
    let state = shared.state.borrow().clone();
    let keys = RequestKeys {
        cache: &shared.jwks,
        state: &state,
        pod: &stream.pod,
    };
    let query = request.uri().query().map(str::to_owned);
    meshward_jwt::authenticate(&rules, request.headers_mut(), query.as_deref(), &keys).await
}

/// Once the client has the `101` and the pod's connection is handed over, copies
/// bytes both ways until both sides are done or idle, or until `revoked` says a
/// policy change no longer allows the request that opened it.
fn join_upgraded(
    client: OnUpgrade,
    pod: OnUpgrade,
    idle: Duration,
    revoked: impl std::future::Future<Output = String> + Send + 'static,
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
            reason = revoked => {
                tracing::info!(target: "access", "upgraded connection closed: a policy change no longer allows it: {reason}");
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
