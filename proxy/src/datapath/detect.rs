//! Which protocol a stream speaks, from its first bytes. The rule (docs/security.md,
//! "protocol detection") never lets detection widen what a client can do: bytes are
//! TCP only when no HTTP server the pod may run would read them as a request.
//!
//! - bytes that are, or begin, the HTTP/2 connection preface: HTTP/2;
//! - bytes that can begin an HTTP/1 request for some server, however long or slowly
//!   they come: HTTP/1; the HTTP server then parses them strictly and refuses what
//!   it does not take for a request (400, 431, 408). "Can begin" is wider than
//!   RFC 9112: any run of bytes some server skips or splits on ([`is_lenient_space`]),
//!   then a method token, then one of those bytes (a bare CR included, which Python
//!   splits on), as the differential test against real servers requires
//!   (`integration/tests/detection.rs`);
//! - first bytes that can never begin an HTTP request (a TLS ClientHello, binary, a
//!   line whose first word ends it): TCP. Text protocols whose lines look like
//!   requests (`get key`, `SET k v`) are HTTP on an undeclared port: their port is
//!   declared `tcp` in `inbound.ports` or on its Service;
//! - no byte at all within the detection timeout: [`Detected::Silent`]. Only a port
//!   declared `tcp` serves it (server-first protocols); every other port refuses it,
//!   as Envoy waits for the client instead of guessing.
//!
//! The clock only ever decides between "HTTP" and "refused", never "TCP". The bytes
//! read are replayed to whoever serves the stream ([`Prefixed`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::copy::CopyIo;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Detection reads no more than this: past it, the bytes began an HTTP request
/// (or were classified long before).
const MAX_DETECTION_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    Http1,
    Http2,
    /// Cannot be HTTP.
    Tcp,
    /// The client sent nothing within the timeout.
    Silent,
}

enum Classified {
    Is(Detected),
    NeedMore,
}

/// RFC 9110 §5.6.2 `tchar`: what a method is made of (Go, hyper and Node accept
/// no other byte in one; nginx fewer).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte some HTTP/1 server skips before a request line or splits it on: SP and
/// HTAB (RFC 9112), VT, FF and CR (httparse's and nginx's lenient forms), and
/// everything else Python's `str.split()` splits a Latin-1 line on (`http.server`).
fn is_lenient_space(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f | 0x85 | 0xa0
    )
}

/// Where the first word of `bytes` starts and ends, after what servers skip.
fn first_word(bytes: &[u8]) -> (usize, usize) {
    let start = bytes
        .iter()
        .position(|b| !is_lenient_space(*b))
        .unwrap_or(bytes.len());
    let len = bytes[start..]
        .iter()
        .position(|b| !is_tchar(*b))
        .unwrap_or(bytes.len() - start);
    (start, start + len)
}

fn classify(bytes: &[u8]) -> Classified {
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Classified::Is(Detected::Http2)
        } else {
            Classified::NeedMore
        };
    }
    let (start, end) = first_word(bytes);
    // carriage returns after the word: only what follows them says whether the
    // line ends there (one word: no request anywhere) or goes on (Python splits
    // a line on a bare CR)
    let crs = bytes[end..].iter().take_while(|b| **b == b'\r').count();
    match bytes.get(end + crs) {
        // still inside leading space or the first word: it may yet be a request
        None if bytes.len() < MAX_DETECTION_BYTES => Classified::NeedMore,
        None => Classified::Is(Detected::Http1),
        Some(b'\n') => Classified::Is(Detected::Tcp),
        // the first byte after what servers skip cannot begin a method
        Some(_) if end == start => Classified::Is(Detected::Tcp),
        Some(b) if crs > 0 || is_lenient_space(*b) => Classified::Is(Detected::Http1),
        Some(_) => Classified::Is(Detected::Tcp),
    }
}

/// What bytes that stopped coming (timeout, or the end of the stream) were.
fn undecided(bytes: &[u8], ended: bool) -> Detected {
    let (start, _) = first_word(bytes);
    if bytes.is_empty() {
        Detected::Silent
    } else if H2_PREFACE.starts_with(bytes) {
        Detected::Http2
    } else if ended && start < bytes.len() {
        // a first word cut off by the end of the stream can no longer be a request
        Detected::Tcp
    } else {
        // the client slowed down in what may be a request: HTTP decides, not the clock
        Detected::Http1
    }
}

/// Reads until the protocol is known, the client stops sending, or `timeout`
/// passes. Returns the stream with the bytes read put back in front.
pub(crate) async fn detect<S: AsyncRead + Unpin>(
    mut stream: S,
    timeout: Duration,
) -> io::Result<(Detected, Prefixed<S>)> {
    let mut buf = BytesMut::with_capacity(MAX_DETECTION_BYTES);
    let deadline = tokio::time::Instant::now() + timeout;
    let detected = loop {
        let room = MAX_DETECTION_BYTES - buf.len();
        let mut limited = (&mut buf).limit(room);
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut limited)).await;
        match read {
            Err(_) => break undecided(&buf, false),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => break undecided(&buf, true),
            Ok(Ok(_)) => match classify(&buf) {
                Classified::Is(d) => break d,
                Classified::NeedMore => {}
            },
        }
    };
    Ok((
        detected,
        Prefixed {
            prefix: buf,
            inner: stream,
        },
    ))
}

/// A stream whose first bytes were already read: they come out first.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            prefix: BytesMut::new(),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// The prefix is lent as it is, then the inner stream's chunks.
impl<S: CopyIo> CopyIo for Prefixed<S> {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<Bytes>> {
        if !self.prefix.is_empty() {
            // taken whole: the stream keeps no part of the detection buffer
            return Poll::Ready(Ok(std::mem::take(&mut self.prefix).freeze()));
        }
        self.inner.poll_read_chunk(cx, buf)
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        self.inner.poll_write_chunk(cx, chunk)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
