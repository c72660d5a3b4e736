//! Connections from the node proxy to local pods for authorized HTTP requests,
//! pooled per (pod address, HTTP version): HTTP/2 multiplexes on one connection;
//! HTTP/1.1 keeps idle keep-alive connections and opens one more when all are busy.
//! The pool never holds a request back: a busy or broken connection is skipped.
//! A connection no request has used for `limits.pool_idle_timeout` is let go (the
//! pod sees it close), so the memory a burst of load grew comes back.
//! An HTTP/1.1 upgrade (WebSocket) gets a connection of its own, never pooled: after
//! `101` it belongs to the upgraded protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

use super::body::ProxyBody;
use super::h2;
use super::socket::connect_marked;
use crate::config::LimitsConfig;

/// Idle HTTP/1.1 connections kept per pod address.
const MAX_IDLE_HTTP1: usize = 32;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP to {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Version {
    Http1,
    Http2,
}

enum Sender {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

/// A pooled connection and when a request last had it.
struct Pooled<T> {
    sender: T,
    used: Instant,
}

impl<T> Pooled<T> {
    fn now(sender: T) -> Self {
        Self {
            sender,
            used: Instant::now(),
        }
    }
}

pub(crate) struct UpstreamPool {
    mark: u32,
    connect_timeout: Duration,
    idle_timeout: Duration,
    http1: Mutex<HashMap<SocketAddr, Vec<Pooled<http1::SendRequest<ProxyBody>>>>>,
    http2: Mutex<HashMap<SocketAddr, Pooled<http2::SendRequest<ProxyBody>>>>,
}

impl UpstreamPool {
    /// The pool, and a task that lets idle connections go while it lives.
    pub(crate) fn new(mark: u32, limits: &LimitsConfig) -> Arc<Self> {
        let idle_timeout = limits.pool_idle_timeout;
        let pool = Arc::new(Self {
            mark,
            connect_timeout: limits.connect_timeout,
            idle_timeout,
            http1: Mutex::default(),
            http2: Mutex::default(),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(idle_timeout / 10).await;
                match weak.upgrade() {
                    Some(pool) => pool.release_idle(Instant::now()),
                    None => return,
                }
            }
        });
        pool
    }

    /// Drops the connections no request used for the idle timeout, and the closed
    /// ones. An HTTP/2 connection with streams still open lives on in their
    /// senders until they end.
    fn release_idle(&self, now: Instant) {
        let fresh = |used: Instant| now.duration_since(used) < self.idle_timeout;
        self.http1.lock().retain(|_, idle| {
            idle.retain(|c| fresh(c.used) && !c.sender.is_closed());
            !idle.is_empty()
        });
        self.http2
            .lock()
            .retain(|_, c| fresh(c.used) && !c.sender.is_closed());
    }

    /// Sends one request to the pod at `addr` and returns its response head (the
    /// body streams on).
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let sender = match self.pooled(addr, version) {
            Some(sender) => sender,
            // boxed: a new connection is the rare case, and its state would
            // otherwise be part of every request's future (see `http.rs`)
            None => Box::pin(self.connect(addr, version)).await?,
        };
        let http = |source| UpstreamError::Http { addr, source };
        match sender {
            Sender::Http1(mut sender) => {
                let response = sender.send_request(request).await.map_err(http)?;
                // back to the pool now: it is not ready for another request until
                // this response's body is read, and `pooled` skips it until then
                self.put_http1(addr, sender);
                Ok(response)
            }
            Sender::Http2(mut sender) => sender.send_request(request).await.map_err(http),
        }
    }

    /// Sends an HTTP/1.1 upgrade request on a new connection that hyper hands over
    /// (`hyper::upgrade::on` of the response) if the pod answers `101`.
    pub(crate) async fn send_upgrade(
        &self,
        addr: SocketAddr,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let tcp = connect_marked(addr, self.mark, self.connect_timeout)
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        let http = |source| UpstreamError::Http { addr, source };
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, "upstream HTTP/1.1 upgrade connection: {e}");
            }
        });
        sender.send_request(request).await.map_err(http)
    }

    fn pooled(&self, addr: SocketAddr, version: Version) -> Option<Sender> {
        match version {
            Version::Http2 => {
                let mut pool = self.http2.lock();
                match pool.get_mut(&addr) {
                    Some(pooled) if !pooled.sender.is_closed() => {
                        pooled.used = Instant::now();
                        Some(Sender::Http2(pooled.sender.clone()))
                    }
                    Some(_) => {
                        pool.remove(&addr);
                        None
                    }
                    None => None,
                }
            }
            Version::Http1 => {
                let mut pool = self.http1.lock();
                let idle = pool.get_mut(&addr)?;
                idle.retain(|c| !c.sender.is_closed());
                let ready = idle.iter().position(|c| c.sender.is_ready())?;
                Some(Sender::Http1(idle.swap_remove(ready).sender))
            }
        }
    }

    fn put_http1(&self, addr: SocketAddr, sender: http1::SendRequest<ProxyBody>) {
        let mut pool = self.http1.lock();
        let idle = pool.entry(addr).or_default();
        if idle.len() < MAX_IDLE_HTTP1 {
            idle.push(Pooled::now(sender));
        }
    }

    async fn connect(&self, addr: SocketAddr, version: Version) -> Result<Sender, UpstreamError> {
        let tcp = connect_marked(addr, self.mark, self.connect_timeout)
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        let io = TokioIo::new(tcp);
        let http = |source| UpstreamError::Http { addr, source };
        match version {
            Version::Http1 => {
                let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(http)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%addr, "upstream HTTP/1.1 connection: {e}");
                    }
                });
                Ok(Sender::Http1(sender))
            }
            Version::Http2 => {
                let (sender, conn) = h2::app_client().handshake(io).await.map_err(http)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%addr, "upstream HTTP/2 connection: {e}");
                    }
                });
                self.http2.lock().insert(addr, Pooled::now(sender.clone()));
                Ok(Sender::Http2(sender))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A pod's server speaking `version`, answering at once or with [`slow_body`];
    /// the count of its open connections.
    async fn pod(version: Version, slow: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let open = Arc::new(AtomicUsize::new(0));
        let count = open.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let count = count.clone();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let io = TokioIo::new(tcp);
                    let ok = service_fn(move |_| async move {
                        let body = if slow {
                            slow_body()
                        } else {
                            super::super::body::empty()
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    });
                    let _ = match version {
                        Version::Http1 => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, ok)
                                .await
                        }
                        Version::Http2 => {
                            hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(io, ok)
                            .await
                        }
                    };
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, open)
    }

    /// Four chunks of 8 bytes, 150 ms apart: 600 ms, longer than the tests' pool
    /// idle timeout.
    fn slow_body() -> ProxyBody {
        let chunks = futures_util::stream::unfold(0u8, |n| async move {
            if n == 4 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            let frame = hyper::body::Frame::data(bytes::Bytes::from(vec![n; 8]));
            Some((Ok::<_, hyper::Error>(frame), n + 1))
        });
        http_body_util::StreamBody::new(chunks).boxed()
    }

    async fn open_becomes(open: &AtomicUsize, want: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while open.load(Ordering::SeqCst) != want {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// `GET /` through the pool; the length of the whole answer.
    async fn get(pool: &UpstreamPool, addr: SocketAddr, version: Version) -> usize {
        let request = Request::get("/").body(super::super::body::empty());
        let response = pool.send(addr, version, request.expect("a request")).await;
        let body = response.expect("an answer").into_body().collect().await;
        body.expect("the whole body").to_bytes().len()
    }

    /// A pool whose idle timeout is 400 ms; `None` (skipped) unless root, as the
    /// pool marks its sockets (SO_MARK) as capture needs.
    fn quick_pool() -> Option<Arc<UpstreamPool>> {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var("CI").is_err(), "CI runs the tests as root");
            eprintln!("SKIPPED: SO_MARK needs root");
            return None;
        }
        let limits = LimitsConfig {
            pool_idle_timeout: Duration::from_millis(400),
            ..LimitsConfig::default()
        };
        Some(UpstreamPool::new(0, &limits))
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_idle_timeout_is_not_cut() {
        let Some(pool) = quick_pool() else { return };
        for version in [Version::Http1, Version::Http2] {
            let (addr, _) = pod(version, true).await;
            // two at once: on HTTP/2 both streams share the pooled connection
            let (a, b) = tokio::join!(get(&pool, addr, version), get(&pool, addr, version));
            assert_eq!((a, b), (32, 32), "{version:?}: every chunk of both");
        }
    }

    #[tokio::test]
    async fn a_connection_no_request_used_for_the_idle_timeout_is_let_go() {
        let Some(pool) = quick_pool() else { return };
        for version in [Version::Http1, Version::Http2] {
            let (addr, open) = pod(version, false).await;
            let send = || get(&pool, addr, version);
            send().await;
            // in use within the timeout: kept, and reused
            tokio::time::sleep(Duration::from_millis(250)).await;
            send().await;
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(
                open.load(Ordering::SeqCst),
                1,
                "{version:?}: one connection, kept"
            );
            // then idle: the pod sees it close
            assert!(
                open_becomes(&open, 0, Duration::from_secs(3)).await,
                "{version:?}: still open long after the idle timeout"
            );
        }
    }
}
