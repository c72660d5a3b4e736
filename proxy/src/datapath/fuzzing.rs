//! The data path's parsers of untrusted input, opened to the fuzz targets in
//! `fuzz/` (the `fuzzing` feature, which the product never enables). Each function
//! is a door onto the code the proxy runs, never a copy of it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use http::header::HeaderValue;
use meshward_spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::detect::{Detected, detect};
use super::upstream::Version;
use crate::xfcc::PeerCertificate;

/// What protocol detection decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    Http1,
    Http2,
    Tcp,
    Silent,
}

/// Protocol detection on a client that sends `chunks` one read at a time, then
/// closes (`then_silent` false) or sends nothing more (true, so detection meets
/// its timeout). Returns the decision and every byte the stream handed over
/// afterwards (the replayed prefix, then the rest). Time is simulated: a timeout
/// costs nothing.
pub fn detect_chunks(chunks: &[&[u8]], then_silent: bool) -> (Detection, Vec<u8>) {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let client = Chunks {
        chunks: chunks.iter().copied().filter(|c| !c.is_empty()).collect(),
        then_silent,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let (detected, mut stream) = detect(client, TIMEOUT).await.expect("reads never fail");
        let mut replayed = Vec::new();
        let mut buf = [0u8; 512];
        // a silent client never ends its stream: what came before the silence is all
        while let Ok(Ok(n)) = tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            replayed.extend_from_slice(&buf[..n]);
        }
        let detection = match detected {
            Detected::Http1 => Detection::Http1,
            Detected::Http2 => Detection::Http2,
            Detected::Tcp => Detection::Tcp,
            Detected::Silent => Detection::Silent,
        };
        (detection, replayed)
    })
}

/// A client's bytes, one chunk per read (or less, as the reader's room allows).
struct Chunks<'a> {
    chunks: VecDeque<&'a [u8]>,
    then_silent: bool,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.chunks.push_front(&chunk[n..]);
                }
                Poll::Ready(Ok(()))
            }
            // silence: nothing will wake the reader; its timeout decides
            None if self.then_silent => Poll::Pending,
            None => Poll::Ready(Ok(())),
        }
    }
}

/// What the proxy reads of a request's head (`http.rs`).
#[derive(Debug, Clone)]
pub struct Head {
    pub authority: String,
    pub target: String,
    pub upgrade: Option<HeaderValue>,
}

/// The head of an HTTP request as the proxy prepares it before authentication and
/// policy: `Err` is a `400`. `http2`: the request came over HTTP/2.
pub fn prepare_head<B>(
    request: &mut Request<B>,
    http2: bool,
    by: Option<&SpiffeId>,
    peer: Option<&PeerCertificate<'_>>,
) -> Result<Head, String> {
    let version = if http2 {
        Version::Http2
    } else {
        Version::Http1
    };
    let xfcc = crate::xfcc::value(by, peer);
    let head = super::http::head::prepare_head(request, version, xfcc)?;
    Ok(Head {
        authority: head.authority,
        target: head.target,
        upgrade: head.upgrade,
    })
}

/// The URI the pod receives for a judged request: its target and, over HTTP/2,
/// its authority (`host`).
pub fn forwarded_uri(http2: bool, host: &str, target: &str) -> Result<http::Uri, String> {
    let version = if http2 {
        Version::Http2
    } else {
        Version::Http1
    };
    super::http::forwarded_uri(version, host, target).map_err(|e| e.to_string())
}

/// The destination an HBONE CONNECT names (`None`: a `400`).
pub fn connect_destination<B>(request: &Request<B>) -> Option<SocketAddr> {
    super::inbound::connect_destination(request)
}

/// The source an HBONE CONNECT's `forwarded` header claims.
pub fn forwarded_for<B>(request: &Request<B>) -> Option<SocketAddr> {
    super::inbound::forwarded_for(request)
}

/// The `jwks_uri` of an OpenID configuration document fetched from `url` for
/// `issuer` (refused when the document names another issuer).
pub fn discovered_jwks_uri(issuer: &str, url: &str, document: &[u8]) -> Result<String, String> {
    super::jwks::discovered_jwks_uri(issuer, url, document)
}
