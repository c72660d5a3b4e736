//! Inbound: HBONE (15008) and plaintext (15006) connections for the node's pods.
//!
//! HBONE: the original destination names the pod; its SVID is presented, the
//! client's is required and verified; every HTTP/2 CONNECT must name that same pod
//! (else 400). A port configured as TCP is authorized before the answer (401 on a
//! refusal, as ztunnel answers); other streams get 200 and are served by `serve.rs`,
//! in one task per stream (`h2` driven directly: `h2_stream.rs`).
//!
//! Plaintext: STRICT refuses it (reset, logged with the source); PERMISSIVE serves
//! it as a stream without principal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use crate::config::{AppProtocol, PlaintextMode};
use ::h2::RecvStream;
use ::h2::server::SendResponse;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::access_log;
use super::coalesce::{Coalesce, OpenStream};

use super::admit::{self, Admitted};
use super::diagnose;
use super::h2_stream::H2Stream;
use super::refusal::Refusal;
use super::socket::reset;
use super::state::LocalPod;
use super::stream::{InboundStream, Peer};
use super::{Shared, h2, responses, serve};
use crate::capture::original_destination;
use crate::metrics;

/// The local pod a REDIRECTed connection was for.
fn destination_pod(
    shared: &Shared,
    tcp: &TcpStream,
    client: SocketAddr,
) -> Option<(SocketAddr, Arc<LocalPod>)> {
    let target = match original_destination(tcp) {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(%client, "no original destination: {e}");
            return None;
        }
    };
    let state = shared.state.borrow().clone();
    match state.pod(target.ip()) {
        Some(pod) => Some((target, pod.clone())),
        None => {
            tracing::info!(%client, %target, "refused: {} is not a pod on this node", target.ip());
            None
        }
    }
}

/// One connection to 15008.
pub(crate) async fn hbone(shared: Arc<Shared>, tcp: TcpStream, client: SocketAddr) {
    let Some((target, pod)) = destination_pod(&shared, &tcp, client) else {
        return reset(tcp);
    };
    let Some(tls) = pod.tls.clone() else {
        tracing::info!(%client, pod = %pod.info.name, "refused HBONE: pod {}/{} has no identity (no entry or template grants it one)", pod.info.namespace, pod.info.name);
        return reset(tcp);
    };
    let _ = tcp.set_nodelay(true);
    // capture maps this node's own connections to loopback (REDIRECT in OUTPUT)
    let local = tcp.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let Some(stream) = accept_mtls(&shared, tcp, client, &pod, &tls.server).await else {
        return;
    };
    let Some(peer) = verified_peer(&stream) else {
        tracing::warn!(%client, "mTLS peer without a usable SPIFFE ID");
        return;
    };
    let tunnel = Arc::new(Tunnel {
        peer: Arc::new(peer),
        pod,
        target,
        client,
        local,
        streams: Arc::default(),
    });
    serve_tunnel(shared, tunnel, stream).await;
}

/// The pod's side of the mTLS handshake (its SVID shown, the client's required);
/// a failure is logged with what to check.
async fn accept_mtls(
    shared: &Shared,
    tcp: TcpStream,
    client: SocketAddr,
    pod: &LocalPod,
    server: &Arc<rustls::ServerConfig>,
) -> Option<TlsStream<TcpStream>> {
    let acceptor = TlsAcceptor::from(server.clone());
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(tcp))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "handshake timed out",
            ))
        });
    match handshake {
        Ok(stream) => {
            let group = stream.get_ref().1.negotiated_key_exchange_group();
            metrics::handshake("inbound", group.map(|g| g.name()));
            Some(stream)
        }
        Err(e) => {
            let (reason, hint) = diagnose::handshake(&e);
            metrics::handshake_failure("inbound", reason);
            tracing::info!(
                target: "access",
                src_addr = %client, dst_workload = %pod.info.name, dst_namespace = %pod.info.namespace,
                reason, "mTLS handshake failed: {e}: {hint}"
            );
            None
        }
    }
}

/// HTTP/2 on a verified tunnel: a task per CONNECT, until the peer or a drain
/// ends it, its keepalive fails, or the pod stops trusting the peer.
async fn serve_tunnel(shared: Arc<Shared>, tunnel: Arc<Tunnel>, stream: TlsStream<TcpStream>) {
    let (client, target) = (tunnel.client, tunnel.target);
    let handshake = tokio::time::timeout(
        shared.limits.handshake_timeout,
        h2::hbone_server(&shared.limits)
            .handshake::<_, Bytes>(Coalesce::new(stream, tunnel.streams.clone())),
    )
    .await;
    let mut connection = match handshake {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return tracing::debug!(%client, "no HTTP/2 on the HBONE connection: {e}"),
        Err(_) => return tracing::debug!(%client, "no HTTP/2 preface within the handshake timeout"),
    };
    let keepalive = h2::hbone_keepalive(connection.ping_pong());
    tokio::pin!(keepalive);
    // Once the pod no longer trusts the peer's trust domain (a federation deleted,
    // `federatesWith` changed), the connection is shut down: its streams are
    // refused or closed already, and the peer's next connection meets a handshake
    // that refuses it.
    let mut state = shared.state.clone();
    let mut watching = true;
    // draining: GOAWAY, the streams under way finish, then `accept` ends
    let mut draining = false;
    // the peer's certificate expires: GOAWAY too (a stream opened later is refused
    // anyway, admit::trusted), so its next connection shows its renewed SVID
    let left = tunnel
        .peer
        .expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    let mut expired = false;
    loop {
        tokio::select! {
            () = shared.drain.started(), if !draining => {
                connection.graceful_shutdown();
                draining = true;
            }
            () = &mut expiry, if !expired => {
                tracing::info!(%client, peer = %tunnel.peer.spiffe_id, "closing the HBONE connection: the peer's certificate expired");
                connection.graceful_shutdown();
                expired = true;
            }
            accepted = connection.accept() => match accepted {
                // one task per stream: the CONNECT's checks, then its bytes
                Some(Ok((request, respond))) => {
                    if let Some(served) = connect(&shared, &tunnel, request, respond) {
                        tokio::spawn(served);
                    }
                }
                Some(Err(e)) => break tracing::debug!(%client, "HBONE connection ended: {e}"),
                None => break,
            },
            why = &mut keepalive => break tracing::debug!(%client, "HBONE connection dropped: {why}"),
            changed = state.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                } else if let Err(refusal) = admit::trusted(&state.borrow_and_update(), target.ip(), Some(&tunnel.peer)) {
                    tracing::info!(%client, "closing the HBONE connection: {refusal}");
                    connection.graceful_shutdown();
                    watching = false;
                }
            }
        }
    }
}

fn verified_peer(stream: &TlsStream<TcpStream>) -> Option<Peer> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    let spiffe_id = meshward_tls::spiffe_id_of(leaf).ok()?;
    Some(Peer {
        spiffe_id,
        leaf_hash: crate::xfcc::leaf_hash(leaf),
        expires_at: meshward_tls::not_after_of(leaf)?,
    })
}

/// One mTLS connection to 15008, verified.
struct Tunnel {
    peer: Arc<Peer>,
    /// The pod whose certificate the client was shown, at `target`.
    pod: Arc<LocalPod>,
    target: SocketAddr,
    /// The TCP source.
    client: SocketAddr,
    /// Opened by this node itself (to one of its own pods).
    local: bool,
    /// Its streams being served, for its writer (`coalesce.rs`).
    streams: Arc<AtomicU32>,
}

/// One CONNECT: the checks that need no waiting (a `400` answered here), then
/// the task that admits, answers and serves the stream's bytes.
///
/// That task lives as long as the stream, and an async fn keeps each argument it
/// was given for its whole life (twice: as given and as moved), however early it
/// is consumed: it is given only what it keeps. The CONNECT request itself, 240
/// bytes, stays here; the stream (232 bytes) goes on behind one `Arc`, so the
/// task and each stage below it hold a pointer, not a copy.
fn connect(
    shared: &Arc<Shared>,
    tunnel: &Tunnel,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let stream = match tunnel_stream(shared, tunnel, &request) {
        Ok(stream) => stream,
        Err(refusal) => {
            let _ = respond.send_response(responses::tunnel(refusal.connect_status()), true);
            return None;
        }
    };
    let stream = Arc::new(stream);
    let (shared, client, body) = (shared.clone(), tunnel.client, request.into_body());
    Some(async move {
        let started = Instant::now();
        // boxed, as each stage: the checks may ask an ext_authz server
        let admitted = match Box::pin(admit_connect(&shared, &stream)).await {
            Ok(admitted) => admitted.map(Box::new),
            Err(refusal) => {
                access_log::connection(&stream, &refusal.record(), (0, 0), started.elapsed(), None);
                let _ = respond.send_response(responses::tunnel(refusal.connect_status()), true);
                return;
            }
        };
        let send = match respond.send_response(responses::tunnel(StatusCode::OK), false) {
            Ok(send) => send,
            Err(e) => return tracing::debug!(%client, "CONNECT stream never opened: {e}"),
        };
        let io = H2Stream::new(send, body);
        Box::pin(serve::serve(shared, stream, io, admitted)).await;
    })
}

/// The stream a CONNECT asks for, or why it is a `400`: a tunnel terminates for
/// the one pod whose certificate it was shown.
fn tunnel_stream<B>(
    shared: &Shared,
    tunnel: &Tunnel,
    request: &Request<B>,
) -> Result<InboundStream, Refusal> {
    let (peer, pod, client) = (&tunnel.peer, &tunnel.pod, tunnel.client);
    let Some(destination) = connect_destination(request) else {
        return Err(Refusal::Malformed("not a CONNECT to ip:port".into()));
    };
    if destination.ip() != tunnel.target.ip() || shared.is_own_port(destination.port()) {
        tracing::info!(%client, %destination, "refused CONNECT: not for pod {}", pod.info.name);
        return Err(Refusal::Malformed(format!("not for pod {}", pod.info.name)));
    }
    // the identity is the certificate's: past its expiry no new stream opens
    // (streams already open go on, as through a drain; the connection has had
    // its GOAWAY)
    if std::time::SystemTime::now() >= peer.expires_at {
        tracing::info!(%client, %destination, peer = %peer.spiffe_id, "refused CONNECT: the peer's certificate expired");
        return Err(Refusal::Expired(peer.spiffe_id.clone()));
    }
    let stream = InboundStream::new(
        Some(peer.clone()),
        stream_source(shared, peer, request, client, tunnel.local),
        destination,
        pod.clone(),
    );
    Ok(stream.counted(OpenStream::new(&tunnel.streams)))
}

/// What a CONNECT is judged on before its `200`: a port declared `tcp` is admitted
/// as a connection now (so a refusal is a `401` before a byte flows, as ztunnel
/// answers); any other port only on the pod's trust in the peer, its requests or
/// its detected TCP stream being judged later.
async fn admit_connect(
    shared: &Shared,
    stream: &InboundStream,
) -> Result<Option<Admitted>, Refusal> {
    if shared.declared_protocol(stream.destination) == Some(AppProtocol::Tcp) {
        return admit::connection(shared, stream).await.map(Some);
    }
    let state = shared.state.borrow();
    admit::trusted(&state, stream.destination.ip(), stream.peer.as_deref()).map(|()| None)
}

/// The `ip:port` a CONNECT names (its authority), or `None` for any other method
/// or authority: a `400`.
pub(super) fn connect_destination<B>(request: &Request<B>) -> Option<SocketAddr> {
    if request.method() != Method::CONNECT {
        return None;
    }
    request.uri().authority()?.as_str().parse().ok()
}

/// Where a tunnelled stream comes from, which `ipBlocks` and `source.ip` judge.
/// The TCP source, which the network vouches for: another node opens its tunnels
/// from the source pod's own address (pool.rs). The one exception is a tunnel this
/// node opened to its own pod (`local_tunnel`: capture redirected it to loopback),
/// which leaves from the node: its `forwarded` claim is taken when it names a pod
/// of this node that holds the peer's identity, and never otherwise.
fn stream_source<B>(
    shared: &Shared,
    peer: &Peer,
    request: &Request<B>,
    client: SocketAddr,
    local_tunnel: bool,
) -> SocketAddr {
    let Some(claimed) = forwarded_for(request).filter(|_| local_tunnel) else {
        return client;
    };
    let state = shared.state.borrow();
    let runs_as_peer = state
        .pod(claimed.ip())
        .and_then(|pod| pod.tls.as_ref())
        .is_some_and(|tls| tls.spiffe_id == peer.spiffe_id);
    if runs_as_peer {
        claimed
    } else {
        tracing::info!(%client, %claimed, peer = %peer.spiffe_id, "ignored a forwarded claim: no pod of this node runs as the peer at that address");
        client
    }
}

/// `forwarded: for="ip:port"` (RFC 7239), as the source node wrote it.
pub(super) fn forwarded_for<B>(request: &Request<B>) -> Option<SocketAddr> {
    let value = request.headers().get("forwarded")?.to_str().ok()?;
    value.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        if !name.eq_ignore_ascii_case("for") {
            return None;
        }
        value.trim_matches('"').parse().ok()
    })
}

/// One connection to 15006.
pub(crate) async fn plaintext(shared: Arc<Shared>, tcp: TcpStream, client: SocketAddr) {
    let Some((target, pod)) = destination_pod(&shared, &tcp, client) else {
        return reset(tcp);
    };
    plaintext_to(shared, tcp, client, target, pod).await;
}

/// A plaintext connection for a local pod, whichever way it came: redirected to
/// 15006, or made by a pod of this node without identity (outbound.rs). STRICT
/// refuses it; PERMISSIVE serves it as a stream without principal.
pub(crate) async fn plaintext_to(
    shared: Arc<Shared>,
    tcp: TcpStream,
    client: SocketAddr,
    target: SocketAddr,
    pod: Arc<LocalPod>,
) {
    if shared.inbound.plaintext == PlaintextMode::Strict {
        metrics::plaintext_refused();
        tracing::info!(
            target: "access",
            src_addr = %client, dst_addr = %target, dst_pod = %pod.info.name,
            dst_namespace = %pod.info.namespace,
            "refused: plaintext to a meshed pod (inbound.plaintext STRICT: the client has no identity, or bypassed its node proxy)"
        );
        return reset(tcp);
    }
    let _ = tcp.set_nodelay(true);
    let stream = Arc::new(InboundStream::new(None, client, target, pod));
    serve::serve(shared, stream, tcp, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_reads_the_source_address() {
        let request = |value: &str| {
            Request::builder()
                .header("forwarded", value)
                .body(())
                .unwrap()
        };
        assert_eq!(
            forwarded_for(&request("for=\"10.1.0.5:40000\"")),
            Some("10.1.0.5:40000".parse().unwrap())
        );
        assert_eq!(
            forwarded_for(&request("proto=http;for=\"[fd00::5]:443\"")),
            Some("[fd00::5]:443".parse().unwrap())
        );
        assert_eq!(forwarded_for(&request("for=unknown")), None);
    }
}
