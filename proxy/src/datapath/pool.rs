//! HBONE client connections: mTLS with the source pod's SVID to the destination's
//! node (port 15008), HTTP/2, one CONNECT stream per client connection. A tunnel to
//! another node leaves from the source pod's own address (a transparent socket, as
//! ztunnel's in-pod mode does), so the destination reads the pod as the TCP source
//! and the network's own source checks apply; nothing the source claims is needed.
//! Connections are pooled per (source pod address, identity and certificate, peer
//! address), so tunnels are never shared between pods or identities, and a renewed
//! SVID starts new connections while old ones finish their streams. One connect per key at a time (a burst of clients
//! opens one connection, not hundreds); past `max_streams` streams another opens;
//! idle connections close after `limits.pool_idle_timeout`.

use meshward_spiffe::SpiffeId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;
use ::h2::client::ResponseFuture;
use ::h2::{RecvStream, SendStream};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::coalesce::Coalesce;

use super::h2_stream::H2Stream;
use super::socket::connect_marked_from;
use super::state::PodTls;
use super::{diagnose, h2};
use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HboneError {
    #[error("connect to {peer}: {source}")]
    Connect {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("mTLS handshake with {peer}: {source}")]
    Handshake {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP/2 with {peer}: {source}")]
    Http2 {
        peer: SocketAddr,
        source: ::h2::Error,
    },
    #[error(
        "{peer} presented {}, whose SVID does not name that address: not the workload that runs there",
        presented.as_ref().map_or("no SVID".to_owned(), ToString::to_string)
    )]
    WrongDestination {
        peer: SocketAddr,
        presented: Option<SpiffeId>,
    },
    /// A CONNECT this node could not write (never the peer's doing).
    #[error("cannot write the CONNECT for {peer}: {source}")]
    ConnectRequest {
        peer: SocketAddr,
        source: http::Error,
    },
    #[error("{peer} answered the CONNECT with {status}")]
    Refused {
        peer: SocketAddr,
        status: StatusCode,
    },
}

impl HboneError {
    /// What to check, for the log line (empty when the error says it all).
    pub(crate) fn hint(&self) -> String {
        match self {
            Self::Connect { source, .. } => format!(" ({})", diagnose::connect(source)),
            Self::Handshake { source, .. } => format!(" ({})", diagnose::handshake(source).1),
            Self::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                " (the destination's policy refused this connection)".into()
            }
            Self::WrongDestination { .. } => {
                " (an address reused by another pod, or someone else answering for it)".into()
            }
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The source pod's address, when the tunnel leaves from it.
    source_ip: Option<IpAddr>,
    source_id: SpiffeId,
    source_serial: String,
    peer: SocketAddr,
}

struct Connection {
    sender: ::h2::client::SendRequest<Bytes>,
    /// Set when the connection ended or refused a stream (a GOAWAY): no stream
    /// is opened on it again.
    closed: Arc<AtomicBool>,
    /// The SPIFFE ID the peer node presented (the destination pod's).
    peer_id: Arc<SpiffeId>,
    /// Its open streams (shared with its writer, `coalesce.rs`).
    streams: Arc<AtomicU32>,
    idle_since: Mutex<Option<Instant>>,
}

/// A CONNECT answered: its stream counted on its connection, the answer's head,
/// and the sending half.
type Answered = (StreamGuard, http::Response<RecvStream>, SendStream<Bytes>);

/// How a CONNECT failed on one connection.
enum Failed {
    /// The connection turned it away unserved (it could not be sent, or a
    /// GOAWAY or REFUSED_STREAM came back): it may go again on another.
    Unserved(::h2::Error),
    Other(::h2::Error),
}

impl Failed {
    fn into_error(self, peer: SocketAddr) -> HboneError {
        let (Self::Unserved(source) | Self::Other(source)) = self;
        HboneError::Http2 { peer, source }
    }
}

/// Keeps a stream counted on its connection while the tunnel lives.
pub(crate) struct Tunnel {
    pub(crate) io: H2Stream,
    /// The destination's SPIFFE ID, as its certificate showed it.
    pub(crate) peer_id: Arc<SpiffeId>,
    _stream: StreamGuard,
}

struct StreamGuard(Arc<Connection>);

impl StreamGuard {
    fn new(connection: Arc<Connection>) -> Self {
        metrics::hbone_stream(1.0);
        Self(connection)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::hbone_stream(-1.0);
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock() = Some(Instant::now());
        }
    }
}

pub(crate) struct HbonePool {
    mark: u32,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    max_streams: u32,
    idle_release: Duration,
    connections: Mutex<HashMap<Key, Vec<Arc<Connection>>>>,
    connecting: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl HbonePool {
    pub(crate) fn new(mark: u32, limits: &LimitsConfig) -> Arc<Self> {
        let idle_release = limits.pool_idle_timeout;
        let pool = Arc::new(Self {
            mark,
            connect_timeout: limits.connect_timeout,
            handshake_timeout: limits.handshake_timeout,
            max_streams: limits.max_streams_per_connection,
            idle_release,
            connections: Mutex::default(),
            connecting: Mutex::default(),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(idle_release / 10).await;
                match weak.upgrade() {
                    Some(pool) => pool.release_idle(),
                    None => return,
                }
            }
        });
        pool
    }

    /// Opens a tunnel for `client` (the source pod's address) to `target` (the
    /// original destination) through the node at `peer`. `from_client`: leave from
    /// the client's address (another node's pod); a pod of this node is reached
    /// from the node itself, and its inbound side checks the `forwarded` claim.
    pub(crate) async fn open(
        &self,
        tls: &PodTls,
        client: SocketAddr,
        target: SocketAddr,
        peer: SocketAddr,
        from_client: bool,
    ) -> Result<Tunnel, HboneError> {
        let key = Key {
            source_ip: from_client.then_some(client.ip()),
            source_id: tls.spiffe_id.clone(),
            source_serial: tls.serial.clone(),
            peer,
        };
        let request = || {
            Request::builder()
                .method(Method::CONNECT)
                .uri(target.to_string())
                // RFC 7239: who the client is. A destination trusts it only where it
                // can tie it to this tunnel (inbound.rs); elsewhere the TCP source
                // decides.
                .header("forwarded", format!("for=\"{client}\""))
                .body(())
                .map_err(|source| HboneError::ConnectRequest { peer, source })
        };
        // A pooled connection may have been told to go away (a draining or
        // upgraded node): a CONNECT it turns away unserved goes to a new
        // connection, once. Nothing of the client's is sent before the 200.
        let pooled = match self.checkout(&key) {
            Some(stream) => Some(Self::ask(stream, request()?).await),
            None => None,
        };
        let (guard, response, send) = match pooled {
            Some(Ok(answered)) => answered,
            Some(Err(other @ Failed::Other(_))) => return Err(other.into_error(peer)),
            Some(Err(Failed::Unserved(e))) => {
                tracing::debug!(%peer, "a pooled HBONE connection turned a CONNECT away: {e}");
                self.ask_new(&key, tls, request()?).await?
            }
            None => self.ask_new(&key, tls, request()?).await?,
        };
        if response.status() != StatusCode::OK {
            return Err(HboneError::Refused {
                peer,
                status: response.status(),
            });
        }
        Ok(Tunnel {
            io: H2Stream::new(send, response.into_body()),
            peer_id: guard.0.peer_id.clone(),
            _stream: guard,
        })
    }

    /// Asks `request` on a connection of `key` made or found under the key's
    /// connect lock (a burst of clients opens one connection, not hundreds).
    async fn ask_new(
        &self,
        key: &Key,
        tls: &PodTls,
        request: Request<()>,
    ) -> Result<Answered, HboneError> {
        let stream = {
            let lock = self.connect_lock(key);
            let _single_flight = lock.lock().await;
            match self.checkout(key) {
                Some(c) => c,
                None => self.connect(key.clone(), tls).await?,
            }
        };
        Self::ask(stream, request)
            .await
            .map_err(|failed| failed.into_error(key.peer))
    }

    /// Sends `request` on `stream`'s connection and waits for the answer's
    /// head. A connection that turns it away unserved takes no stream again.
    async fn ask(stream: StreamGuard, request: Request<()>) -> Result<Answered, Failed> {
        let unserved = |e| {
            stream.0.closed.store(true, Ordering::Release);
            Failed::Unserved(e)
        };
        let (response, send) = Self::send(&stream.0, request).await.map_err(unserved)?;
        match response.await {
            Ok(response) => Ok((stream, response, send)),
            Err(e) if refused_unprocessed(&e) => Err(unserved(e)),
            Err(e) => Err(Failed::Other(e)),
        }
    }

    async fn send(
        connection: &Connection,
        request: Request<()>,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), ::h2::Error> {
        let mut sender = connection.sender.clone().ready().await?;
        sender.send_request(request, false)
    }

    /// A live connection of `key` with room for one more stream, counted.
    fn checkout(&self, key: &Key) -> Option<StreamGuard> {
        let mut all = self.connections.lock();
        let list = all.get_mut(key)?;
        list.retain(|c| !c.closed.load(Ordering::Acquire));
        let found = list
            .iter()
            .find(|c| c.streams.load(Ordering::Acquire) < self.max_streams)?
            .clone();
        found.streams.fetch_add(1, Ordering::AcqRel);
        Some(StreamGuard::new(found))
    }

    fn connect_lock(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        self.connecting
            .lock()
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// A new connection for `key`, pooled, with its first stream counted.
    /// TCP from the source pod's address, then mTLS as `tls`; the peer must be the
    /// workload that runs at the address (`reached_the_address`).
    async fn mtls(
        &self,
        key: &Key,
        tls: &PodTls,
    ) -> Result<(TlsStream<TcpStream>, Arc<SpiffeId>), HboneError> {
        let peer = key.peer;
        let tcp = connect_marked_from(key.source_ip, peer, self.mark, self.connect_timeout)
            .await
            .map_err(|source| HboneError::Connect { peer, source })?;
        let connector = TlsConnector::from(tls.client.clone());
        // the name is not sent (SNI off) and not checked: the SPIFFE verifier decides
        let name = ServerName::IpAddress(peer.ip().into());
        let handshake = tokio::time::timeout(self.handshake_timeout, connector.connect(name, tcp))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer",
                ))
            });
        let stream = match handshake {
            Ok(stream) => stream,
            Err(source) => {
                metrics::handshake_failure("outbound", diagnose::handshake(&source).0);
                return Err(HboneError::Handshake { peer, source });
            }
        };
        let group = stream.get_ref().1.negotiated_key_exchange_group();
        metrics::handshake("outbound", group.map(|g| g.name()));
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        let peer_svid = leaf.and_then(|leaf| meshward_tls::spiffe_id_of(leaf).ok());
        let peer_id = match (leaf, peer_svid) {
            (Some(leaf), Some(id)) if reached_the_address(leaf, &id, &tls.spiffe_id, peer) => {
                Arc::new(id)
            }
            (_, presented) => {
                metrics::handshake_failure("outbound", "destination_mismatch");
                return Err(HboneError::WrongDestination { peer, presented });
            }
        };
        Ok((stream, peer_id))
    }

    async fn connect(&self, key: Key, tls: &PodTls) -> Result<StreamGuard, HboneError> {
        let peer = key.peer;
        let (stream, peer_id) = self.mtls(&key, tls).await?;
        // the stream this connection is made for
        let streams = Arc::new(AtomicU32::new(1));
        let (sender, mut driver) = h2::hbone_client()
            .handshake::<_, Bytes>(Coalesce::new(stream, streams.clone()))
            .await
            .map_err(|source| HboneError::Http2 { peer, source })?;
        metrics::hbone_connection_opened();
        let closed = Arc::new(AtomicBool::new(false));
        let pings = driver.ping_pong();
        let ended = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = &mut driver => if let Err(e) = result {
                    tracing::debug!(%peer, "HBONE connection ended: {e}");
                },
                why = h2::hbone_keepalive(pings) => tracing::debug!(%peer, "HBONE connection dropped: {why}"),
            }
            ended.store(true, Ordering::Release);
            metrics::hbone_connection_closed();
        });
        let connection = Arc::new(Connection {
            sender,
            closed,
            peer_id,
            streams,
            idle_since: Mutex::new(None),
        });
        self.connections
            .lock()
            .entry(key)
            .or_default()
            .push(connection.clone());
        Ok(StreamGuard::new(connection))
    }

    /// Drops connections idle past `limits.pool_idle_timeout` (h2 then closes them
    /// gracefully: GOAWAY once no stream and no sender is left) and those closed.
    fn release_idle(&self) {
        let now = Instant::now();
        let idle_too_long = |c: &Arc<Connection>| {
            c.streams.load(Ordering::Acquire) == 0
                && c.idle_since
                    .lock()
                    .is_some_and(|since| now.duration_since(since) >= self.idle_release)
        };
        let mut all = self.connections.lock();
        for list in all.values_mut() {
            list.retain(|c| !c.closed.load(Ordering::Acquire) && !idle_too_long(c));
        }
        all.retain(|_, list| !list.is_empty());
        self.connecting
            .lock()
            .retain(|key, lock| all.contains_key(key) || Arc::strong_count(lock) > 1);
    }
}

/// Whether the peer turned a stream away without serving it: a GOAWAY (it
/// drains or restarts; RFC 9113 section 6.8) or RST_STREAM with REFUSED_STREAM
/// (section 8.7). Either way the request may go again on another connection.
fn refused_unprocessed(e: &::h2::Error) -> bool {
    (e.is_go_away() && e.is_remote())
        || (e.is_remote() && e.reason() == Some(::h2::Reason::REFUSED_STREAM))
}

/// Whether the peer is the workload at the address dialled: an SVID of our own
/// trust domain must name `peer`'s address as an IP SAN, which the issuer signs
/// from what the destination's node reports. An SVID of another trust domain is
/// accepted on its chain alone (federated issuers name no addresses of ours).
/// Checked before a byte of HTTP/2 is sent.
fn reached_the_address(
    leaf: &rustls_pki_types::CertificateDer<'_>,
    peer_svid: &SpiffeId,
    own_id: &SpiffeId,
    peer: SocketAddr,
) -> bool {
    if own_id.trust_domain_name() != peer_svid.trust_domain_name() {
        return true;
    }
    meshward_tls::ip_addresses_of(leaf).contains(&peer.ip())
}

#[cfg(test)]
mod tests {
    use super::super::testing::connect_request;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

    fn go_away(last_stream: u8, reason: u8) -> Vec<u8> {
        let mut frame = vec![0, 0, 8, 0x7, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&[0, 0, 0, last_stream, 0, 0, 0, reason]);
        frame
    }

    fn reset(stream: u8, reason: u8) -> Vec<u8> {
        vec![0, 0, 4, 0x3, 0, 0, 0, 0, stream, 0, 0, 0, reason]
    }

    /// The error of a CONNECT (stream 1) whose peer, hand-written, answers with
    /// SETTINGS then `frames`, then closes.
    async fn connect_error(frames: &[u8]) -> ::h2::Error {
        let (client_io, mut server_io) = duplex(1 << 16);
        let (mut sender, connection) = ::h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(connection);
        let (response, _send) = sender.send_request(connect_request(), false).unwrap();
        // the preface, then frames until the CONNECT's HEADERS (stream 1 is open)
        let (mut seen, mut at) = (Vec::new(), 24);
        loop {
            let mut chunk = [0u8; 1024];
            let n = server_io.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed before its CONNECT");
            seen.extend_from_slice(&chunk[..n]);
            while let Some(header) = seen.get(at..at + 9) {
                if header[3] == 0x1 {
                    break;
                }
                at += 9 + usize::from(header[2]) + (usize::from(header[1]) << 8);
            }
            if seen.get(at + 3) == Some(&0x1) {
                break;
            }
        }
        server_io.write_all(&SETTINGS).await.unwrap();
        server_io.write_all(frames).await.unwrap();
        drop(server_io);
        tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("an answer in time")
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_stream_the_peer_never_served_may_go_again() {
        // a draining node's GOAWAY below the stream, with or without an error code
        assert!(refused_unprocessed(&connect_error(&go_away(0, 0x0)).await));
        assert!(refused_unprocessed(&connect_error(&go_away(0, 0x2)).await));
        let error = connect_error(&reset(1, 0x7)).await;
        assert!(refused_unprocessed(&error), "{error:?}");
    }

    #[tokio::test]
    async fn a_stream_the_peer_took_does_not() {
        // served (the GOAWAY names it), then the connection ended under it
        let error = connect_error(&go_away(1, 0x0)).await;
        assert!(!refused_unprocessed(&error), "{error:?}");
        let error = connect_error(&reset(1, 0x8)).await;
        assert!(!refused_unprocessed(&error), "{error:?}");
        let error = connect_error(&[]).await;
        assert!(!refused_unprocessed(&error), "{error:?}");
    }
}
