//! Connections from the node proxy to local pods for authorized HTTP requests,
//! pooled per (pod address, HTTP version): HTTP/2 multiplexes on one connection;
//! HTTP/1.1 keeps idle keep-alive connections and opens one more when all are busy.
//! The pool never holds a request back: a busy or broken connection is skipped.
//! An HTTP/1.1 upgrade (WebSocket) gets a connection of its own, never pooled: after
//! `101` it belongs to the upgraded protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

use super::body::ProxyBody;
use super::h2;
use super::socket::connect_marked;

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

pub(crate) struct UpstreamPool {
    mark: u32,
    connect_timeout: Duration,
    http1: Mutex<HashMap<SocketAddr, Vec<http1::SendRequest<ProxyBody>>>>,
    http2: Mutex<HashMap<SocketAddr, http2::SendRequest<ProxyBody>>>,
}

impl UpstreamPool {
    pub(crate) fn new(mark: u32, connect_timeout: Duration) -> Self {
        Self {
            mark,
            connect_timeout,
            http1: Mutex::default(),
            http2: Mutex::default(),
        }
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
            None => self.connect(addr, version).await?,
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
                match pool.get(&addr) {
                    Some(sender) if !sender.is_closed() => Some(Sender::Http2(sender.clone())),
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
                idle.retain(|s| !s.is_closed());
                let ready = idle.iter().position(http1::SendRequest::is_ready)?;
                Some(Sender::Http1(idle.swap_remove(ready)))
            }
        }
    }

    fn put_http1(&self, addr: SocketAddr, sender: http1::SendRequest<ProxyBody>) {
        let mut pool = self.http1.lock();
        let idle = pool.entry(addr).or_default();
        if idle.len() < MAX_IDLE_HTTP1 {
            idle.push(sender);
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
                self.http2.lock().insert(addr, sender.clone());
                Ok(Sender::Http2(sender))
            }
        }
    }
}
