//! Moving bytes both ways between two streams until both sides are done, with
//! half-close kept (a FIN one way does not cut the other) and an idle timeout:
//! a connection that moves no byte either way for `idle` is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffer per direction: TLS records are at most 16 KiB, so larger reads gain little.
const BUFFER: usize = 16 * 1024;

/// Bytes moved by a finished copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Transferred {
    /// From the first stream to the second.
    pub(crate) sent: u64,
    /// From the second stream to the first.
    pub(crate) received: u64,
}

/// Copies `a` <-> `b`. Ends when both directions reached EOF, either failed, or
/// nothing moved for `idle`; the bytes moved are known either way.
pub(crate) async fn bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
) -> (Transferred, io::Result<()>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (from_a, from_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut a = Counting {
        inner: a,
        progress: from_a.clone(),
    };
    let mut b = Counting {
        inner: b,
        progress: from_b.clone(),
    };
    let moved = || Transferred {
        sent: from_a.load(Ordering::Relaxed),
        received: from_b.load(Ordering::Relaxed),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER);
    tokio::pin!(copy);
    let mut seen = Transferred::default();
    let result = loop {
        tokio::select! {
            result = &mut copy => break result.map(|_| ()),
            () = tokio::time::sleep(idle) => {
                let now = moved();
                if now == seen {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("idle for {idle:?}"),
                    ));
                }
                seen = now;
            }
        }
    };
    (moved(), result)
}

/// Counts bytes read from one side.
struct Counting<'a, T: ?Sized> {
    inner: &'a mut T,
    progress: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Counting<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.progress.fetch_add(read as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counting<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_keeps_half_close() {
        let (mut client, mut proxy_a) = duplex(64);
        let (mut proxy_b, mut server) = duplex(64);
        let copy = tokio::spawn(async move {
            bidirectional(&mut proxy_a, &mut proxy_b, Duration::from_secs(5)).await
        });
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        // the client's FIN did not close the way back
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!");
        let (moved, result) = copy.await.unwrap();
        result.unwrap();
        assert_eq!(
            moved,
            Transferred {
                sent: 4,
                received: 5
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        let (_client, mut proxy_a) = duplex(64);
        let (mut proxy_b, _server) = duplex(64);
        let (moved, result) =
            bidirectional(&mut proxy_a, &mut proxy_b, Duration::from_secs(30)).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(moved, Transferred::default());
    }
}
