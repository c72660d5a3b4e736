//! An HBONE connection's writes, one turn of the scheduler late, so that the
//! frames of its streams that become ready together leave in one TLS record and
//! one system call.
//!
//! Each stream of a tunnel is a task of its own, and the connection's `h2` task
//! writes whatever frames are queued whenever it is polled. Woken by the first
//! stream's frame, it ran right after that stream (tokio runs the task woken
//! last first), so sixteen responses ready at once left in sixteen records and
//! sixteen `writev`s (strace of the inbound daemon under `meshward-bench`'s
//! HTTP/1.1 load). Here the first write of a batch wakes the task again and
//! returns `Pending`: the task goes behind the others already runnable, which
//! queue their frames meanwhile, and the next poll writes them all. A
//! connection with one stream open writes at once: nothing else would join, and
//! the extra turn cost 5k instructions per exchange.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io` whose writes wait one turn after each flush while other streams are open.
pub(crate) struct Coalesce<T> {
    io: T,
    /// The connection's open streams, as its owner counts them.
    streams: Arc<AtomicU32>,
    /// The task has let the others run since the last flush: write now.
    waited: bool,
}

impl<T> Coalesce<T> {
    pub(crate) fn new(io: T, streams: Arc<AtomicU32>) -> Self {
        Self {
            io,
            streams,
            waited: false,
        }
    }

    /// `Pending` (the task woken again) on the first write of a batch.
    fn wait_once(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waited || self.streams.load(Ordering::Relaxed) <= 1 {
            Poll::Ready(())
        } else {
            self.waited = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.wait_once(cx));
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.wait_once(cx));
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = std::task::ready!(Pin::new(&mut self.io).poll_flush(cx));
        self.waited = false;
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the writes that reach the socket.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicU32);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn writes_wait_one_turn_per_flush_while_other_streams_are_open() {
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let streams = Arc::new(AtomicU32::new(2));
        let mut io = Coalesce::new(Socket::default(), streams.clone());
        let mut write = |io: &mut Coalesce<Socket>, bytes: &[u8]| {
            Pin::new(io).poll_write(&mut cx, bytes).map(Result::unwrap)
        };
        // the batch's first write: the task is woken to come back after the others
        assert_eq!(write(&mut io, b"a"), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert!(io.io.writes.is_empty());
        // back: this write and the rest of the batch go at once
        assert_eq!(write(&mut io, b"ab"), Poll::Ready(2));
        assert_eq!(write(&mut io, b"c"), Poll::Ready(1));
        let mut flush_cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut io).poll_flush(&mut flush_cx).is_ready());
        // the next batch waits again
        assert_eq!(write(&mut io, b"d"), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
        assert!(Pin::new(&mut io).poll_flush(&mut flush_cx).is_ready());
        // with one stream open, nothing would join: written at once
        streams.store(1, Ordering::Relaxed);
        assert_eq!(write(&mut io, b"e"), Poll::Ready(1));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
        assert_eq!(io.io.writes, [b"ab".to_vec(), b"c".to_vec(), b"e".to_vec()]);
    }
}
