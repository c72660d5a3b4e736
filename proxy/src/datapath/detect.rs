//! Which protocol a stream speaks, from its first bytes (as Envoy's http_inspector
//! does): the HTTP/2 connection preface, or an HTTP/1.x request line; anything
//! else, or nothing within the detection timeout (a server-first protocol), is TCP.
//! The bytes read are replayed to whoever serves the stream ([`Prefixed`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request line longer than this is not worth waiting for: TCP.
const MAX_REQUEST_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    Http1,
    Http2,
    Tcp,
}

enum Verdict {
    Is(Detected),
    NeedMore,
}

fn classify(bytes: &[u8]) -> Verdict {
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Is(Detected::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    // `METHOD SP target SP HTTP/1.x CRLF`
    let method_len = bytes
        .iter()
        .position(|b| !(b.is_ascii_uppercase() || *b == b'-' || *b == b'_'))
        .unwrap_or(bytes.len());
    if method_len == 0 || method_len > 32 {
        return Verdict::Is(Detected::Tcp);
    }
    if method_len == bytes.len() {
        return Verdict::NeedMore;
    }
    if bytes[method_len] != b' ' {
        return Verdict::Is(Detected::Tcp);
    }
    match bytes.iter().position(|b| *b == b'\n') {
        Some(end) => {
            let line = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
            let http1 = line.len() > 9
                && line[line.len() - 9..line.len() - 1] == *b" HTTP/1."
                && line[line.len() - 1].is_ascii_digit();
            Verdict::Is(if http1 {
                Detected::Http1
            } else {
                Detected::Tcp
            })
        }
        None if bytes.len() >= MAX_REQUEST_LINE => Verdict::Is(Detected::Tcp),
        None => Verdict::NeedMore,
    }
}

/// Reads until the protocol is known or `timeout` passes. Returns the stream with
/// the bytes read put back in front.
pub(crate) async fn detect<S: AsyncRead + Unpin>(
    mut stream: S,
    timeout: Duration,
) -> io::Result<(Detected, Prefixed<S>)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let detected = loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => break Detected::Tcp,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => break Detected::Tcp,
            Ok(Ok(_)) => match classify(&buf) {
                Verdict::Is(d) => break d,
                Verdict::NeedMore => {}
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
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn run(chunks: &[&[u8]]) -> (Detected, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        for chunk in chunks {
            client.write_all(chunk).await.unwrap();
        }
        drop(client);
        let (detected, mut stream) = detect(server, Duration::from_secs(5)).await.unwrap();
        let mut replay = Vec::new();
        stream.read_to_end(&mut replay).await.unwrap();
        (detected, replay)
    }

    #[tokio::test]
    async fn http1_http2_and_tcp_with_every_byte_replayed() {
        let get = b"GET /list?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(run(&[get]).await, (Detected::Http1, get.to_vec()));
        let h2 = [H2_PREFACE, b"\0\0\0\x04\0\0\0\0\0"].concat();
        assert_eq!(run(&[&h2]).await, (Detected::Http2, h2.clone()));
        for tcp in [
            &b"\x16\x03\x01\x02\0"[..],
            b"SSH-2.0-OpenSSH\r\n",
            b"GET / FTP/1\r\n",
            b"hello world\n",
        ] {
            assert_eq!(run(&[tcp]).await, (Detected::Tcp, tcp.to_vec()), "{tcp:?}");
        }
    }

    #[tokio::test]
    async fn a_request_line_split_over_reads() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(detect(server, Duration::from_secs(5)));
        for part in [&b"PO"[..], b"ST /api/pay", b"ment HTTP/1.1\r\n"] {
            client.write_all(part).await.unwrap();
            tokio::task::yield_now().await;
        }
        let (detected, _) = task.await.unwrap().unwrap();
        assert_eq!(detected, Detected::Http1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_tcp_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let (detected, _) = detect(server, Duration::from_millis(500)).await.unwrap();
        assert_eq!(detected, Detected::Tcp);
    }
}
