//! Moving bytes both ways between two streams until both sides are done, with
//! half-close kept (a FIN one way does not cut the other) and an idle timeout:
//! a connection that moves no byte either way for `idle` is closed.
//!
//! Bytes move as owned chunks ([`CopyIo`]): an HBONE stream hands over the DATA
//! frames it received and takes what was read from a socket as its next DATA
//! frame, so neither direction copies a byte in user space on its way through
//! (the kernel's copies and rustls' record are the only ones left). Any other
//! stream reads into and writes from the loop's buffer.
//!
//! Buffers grow with the traffic, as ztunnel's do: 1 KiB at first, 16 KiB after
//! 128 KiB (a full TLS record), 256 KiB after 10 MiB (bulk transfers make fewer,
//! larger syscalls). A 1 KiB buffer is given back whenever its side has nothing
//! to read and nothing left to write: an idle connection holds no buffer (most of
//! 10,000 held connections are idle; a jemalloc 1 KiB allocation per message is
//! cheap beside the TLS record it travels in).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// A stream the copy loop moves owned chunks through. The defaults go through
/// `AsyncRead`/`AsyncWrite`; a stream that holds its bytes as chunks already
/// (an HTTP/2 stream) lends and takes them whole.
pub(crate) trait CopyIo: AsyncRead + AsyncWrite + Unpin {
    /// The next chunk read (into `buf`'s spare capacity, or lent whole);
    /// empty at EOF. A chunk asked for again means the last one was written.
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<Bytes>> {
        ready!(tokio_util::io::poll_read_buf(Pin::new(self), cx, buf))?;
        Poll::Ready(Ok(buf.split().freeze()))
    }

    /// Writes the front of `chunk` and advances it past what was written; may
    /// take it whole.
    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(self).poll_write(cx, chunk))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        chunk.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl CopyIo for tokio::net::TcpStream {}
impl CopyIo for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}
#[cfg(test)]
impl CopyIo for tokio::io::DuplexStream {}

/// (bytes moved so far, buffer size from then on)
const GROWTH: [(u64, usize); 3] = [
    (0, 1024),
    (128 * 1024, 16 * 1024),
    (10 * 1024 * 1024, 256 * 1024),
];

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
    A: CopyIo + ?Sized,
    B: CopyIo + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (OneWay::default(), OneWay::default());
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let mut seen = 0;
    let result = poll_fn(|cx| {
        let forward = a_to_b.poll_copy(cx, &mut *a, &mut *b)?;
        let backward = b_to_a.poll_copy(cx, &mut *b, &mut *a)?;
        if forward.is_ready() && backward.is_ready() {
            return Poll::Ready(Ok(()));
        }
        while timer.as_mut().poll(cx).is_ready() {
            let moved = a_to_b.total + b_to_a.total;
            if moved == seen {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle for {idle:?}"),
                )));
            }
            seen = moved;
            timer.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        Poll::Pending
    })
    .await;
    let moved = Transferred {
        sent: a_to_b.total,
        received: b_to_a.total,
    };
    (moved, result)
}

/// One direction: read a chunk, write it all out, repeat; at EOF, flush and shut
/// the writer down (the half-close), then stay done.
#[derive(Default)]
struct OneWay {
    /// Where reads land when the reader does not lend its own chunks.
    buf: BytesMut,
    /// Read and not yet written.
    pending: Bytes,
    total: u64,
    read_done: bool,
    need_flush: bool,
    finished: bool,
}

impl OneWay {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: CopyIo + ?Sized,
        W: CopyIo + ?Sized,
    {
        if self.finished {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pending.is_empty() && !self.read_done {
                self.grow();
                match reader.poll_read_chunk(cx, &mut self.buf) {
                    Poll::Pending => {
                        if self.buffer_size() <= GROWTH[0].1 {
                            self.buf = BytesMut::new();
                        }
                        // nothing more to read now: push out what was written
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(chunk)) if chunk.is_empty() => self.read_done = true,
                    Poll::Ready(Ok(chunk)) => {
                        self.total += chunk.len() as u64;
                        self.pending = chunk;
                    }
                }
            }
            while !self.pending.is_empty() {
                ready!(writer.poll_write_chunk(cx, &mut self.pending))?;
                self.need_flush = true;
            }
            // written: an empty chunk still holds its buffer (an idle connection
            // would keep it)
            self.pending = Bytes::new();
            if self.read_done {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.finished = true;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// The buffer size for the bytes moved so far.
    fn buffer_size(&self) -> usize {
        GROWTH
            .iter()
            .rev()
            .find(|(after, _)| self.total >= *after)
            .map_or(GROWTH[0].1, |(_, size)| *size)
    }

    /// Room for a read of the current size: the space the last chunk took is
    /// reused once that chunk is written and dropped.
    fn grow(&mut self) {
        let want = self.buffer_size();
        if self.buf.capacity() < want {
            self.buf.reserve(want);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::super::testing::{pattern, write_then_shutdown};
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

    #[tokio::test]
    async fn buffers_grow_with_the_traffic_and_every_byte_arrives() {
        let (client, mut proxy_a) = duplex(1 << 16);
        let (mut proxy_b, mut server) = duplex(1 << 16);
        let copy = tokio::spawn(async move {
            bidirectional(&mut proxy_a, &mut proxy_b, Duration::from_secs(5)).await
        });
        let data = pattern(12 * 1024 * 1024);
        let writer = write_then_shutdown(client, data.clone());
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "bytes differ");
        drop(server);
        drop(writer.await.unwrap());
        let (moved, _) = copy.await.unwrap();
        assert_eq!(moved.sent, 12 * 1024 * 1024);
    }

    #[tokio::test]
    async fn an_idle_side_holds_no_buffer() {
        let (mut client, mut from) = duplex(64);
        let (mut to, mut server) = duplex(64);
        let mut side = OneWay::default();
        client.write_all(b"ping").await.unwrap();
        let copied = poll_fn(|cx| {
            let _ = side.poll_copy(cx, &mut from, &mut to);
            Poll::Ready(side.total)
        })
        .await;
        assert_eq!(copied, 4);
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // nothing more to read: the 1 KiB buffer was given back, and the written
        // chunk points into it no more (an empty `Bytes` can still hold it)
        assert_eq!(side.buf.capacity(), 0);
        assert_eq!(side.pending.as_ptr(), Bytes::new().as_ptr());
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
