//! An HBONE connection's writes, gathered while its streams are ready together,
//! so that they leave in one TLS record and one system call.
//!
//! Each stream of a tunnel is a task of its own, and the connection's `h2` task
//! writes the frames queued whenever it is polled. Woken by one stream's frame,
//! it ran right after that stream (tokio runs the task woken last first), and
//! `h2` flushes before each DATA frame over 256 bytes: sixteen responses ready
//! at once left in sixteen TLS records and sixteen `writev`s (strace of the
//! inbound daemon under `meshward-bench`'s HTTP/1.1 load).
//!
//! Here, while other streams are open, writes are kept, and the first flush of
//! a batch reports done but wakes the task again: it then runs after the tasks
//! already runnable, whose frames join the batch, and its next turn writes them
//! all. A turn is told by the read it starts with (`h2` reads before it writes,
//! every poll); a batch is also written by a flush with nothing new before it,
//! and once it holds `BATCH_BYTES`. Large
//! writes (bulk DATA) go straight through, after what was kept. A connection
//! with one stream open writes at once: nothing would join, and the extra turn
//! cost 5k instructions per held-connection exchange.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A batch is written once it holds this much (a few TLS records' worth).
const BATCH_BYTES: usize = 32 * 1024;
/// A write this large is not copied: it goes out as given.
const DIRECT_BYTES: usize = 8 * 1024;
/// A batch buffer larger than this is let go once written (idle connections
/// should not hold one).
const KEEP_BYTES: usize = 4 * 1024;

/// A stream counted among its connection's open streams while it lives.
#[derive(Debug)]
pub(crate) struct OpenStream(Arc<AtomicU32>);

impl OpenStream {
    pub(crate) fn new(streams: &Arc<AtomicU32>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        Self(streams.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `io`, whose writes are gathered while other streams are open.
pub(crate) struct Coalesce<T> {
    io: T,
    /// The connection's open streams, as its owner counts them.
    streams: Arc<AtomicU32>,
    /// Writes reported done, not yet given to `io`.
    kept: Vec<u8>,
    /// Reads so far: a new one means a new turn of the task.
    reads: u64,
    /// The batch is held for the turn that began with read number `n`.
    held_in: Option<u64>,
    /// Something was kept since the last flush.
    kept_since_flush: bool,
    /// `kept` is being written: no more waiting until it is out.
    writing: bool,
}

impl<T> Coalesce<T> {
    pub(crate) fn new(io: T, streams: Arc<AtomicU32>) -> Self {
        Self {
            io,
            streams,
            kept: Vec::new(),
            reads: 0,
            held_in: None,
            kept_since_flush: false,
            writing: false,
        }
    }

    fn others_open(&self) -> bool {
        self.streams.load(Ordering::Relaxed) > 1
    }

    /// Whether a flush now keeps the batch for the task's next turn (waking it).
    /// A flush with nothing new since the last one writes it: whatever turn this
    /// is, holding on would only spin.
    fn hold(&mut self, cx: &Context<'_>) -> bool {
        let kept_since_flush = std::mem::take(&mut self.kept_since_flush);
        let hold = !self.writing
            && kept_since_flush
            && self.kept.len() < BATCH_BYTES
            && match self.held_in {
                None => self.others_open(),
                Some(turn) => turn == self.reads,
            };
        if hold {
            self.held_in = Some(self.reads);
            cx.waker().wake_by_ref();
        }
        hold
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Gives `io` everything kept.
    fn poll_write_kept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writing = true;
        let mut written = 0;
        while written < self.kept.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.kept[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.kept.drain(..written);
                    return Poll::Pending;
                }
            }
        }
        if self.kept.capacity() > KEEP_BYTES {
            self.kept = Vec::new();
        } else {
            self.kept.clear();
        }
        self.writing = false;
        self.held_in = None;
        Poll::Ready(Ok(()))
    }

    /// Keeps `len` bytes (`append` copies them), or writes what was kept and
    /// says to write them directly (`false`).
    fn poll_keep(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        append: impl FnOnce(&mut Vec<u8>),
    ) -> Poll<io::Result<bool>> {
        if self.kept.is_empty() && !self.others_open() {
            return Poll::Ready(Ok(false));
        }
        if len >= DIRECT_BYTES || self.kept.len() + len > BATCH_BYTES {
            ready!(self.poll_write_kept(cx))?;
            if len >= DIRECT_BYTES {
                return Poll::Ready(Ok(false));
            }
        }
        append(&mut self.kept);
        self.kept_since_flush = true;
        Poll::Ready(Ok(true))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reads = self.reads.wrapping_add(1);
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if ready!(self.poll_keep(cx, buf.len(), |kept| kept.extend_from_slice(buf)))? {
            Poll::Ready(Ok(buf.len()))
        } else {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let append = |kept: &mut Vec<u8>| bufs.iter().for_each(|b| kept.extend_from_slice(b));
        if ready!(self.poll_keep(cx, len, append))? {
            Poll::Ready(Ok(len))
        } else {
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.kept.is_empty() {
            if self.hold(cx) {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_kept(cx))?;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.kept.is_empty() {
            ready!(self.poll_write_kept(cx))?;
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket under TLS: what reaches it, write by write. With `room`, it
    /// takes only that many more bytes, then is full (`Pending`).
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        shut: bool,
        room: Option<usize>,
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.room.map_or(buf.len(), |room| room.min(buf.len()));
            if n == 0 {
                return Poll::Pending;
            }
            self.room = self.room.map(|room| room - n);
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
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

    /// A connection's writer as its h2 task drives it.
    struct Driver {
        io: Coalesce<Socket>,
        streams: Arc<AtomicU32>,
        wakes: Arc<Wakes>,
    }

    impl Driver {
        fn new(streams: u32) -> Self {
            let streams = Arc::new(AtomicU32::new(streams));
            let io = Coalesce::new(Socket::default(), streams.clone());
            Self {
                io,
                streams,
                wakes: Arc::default(),
            }
        }

        fn cx<T>(
            &mut self,
            f: impl FnOnce(Pin<&mut Coalesce<Socket>>, &mut Context<'_>) -> T,
        ) -> T {
            let waker = std::task::Waker::from(self.wakes.clone());
            f(Pin::new(&mut self.io), &mut Context::from_waker(&waker))
        }

        /// A new turn: h2 reads first.
        fn turn(&mut self) {
            let mut bytes = [0; 16];
            let _ = self.cx(|io, cx| io.poll_read(cx, &mut ReadBuf::new(&mut bytes)));
        }

        /// A frame written, then flushed, as h2 does before each large DATA frame.
        fn frame(&mut self, bytes: &[u8]) {
            let written = self.cx(|io, cx| io.poll_write(cx, bytes));
            assert!(matches!(written, Poll::Ready(Ok(n)) if n == bytes.len()));
            assert!(self.cx(|io, cx| io.poll_flush(cx)).is_ready());
        }

        fn flush(&mut self) {
            assert!(self.cx(|io, cx| io.poll_flush(cx)).is_ready());
        }

        fn socket(&self) -> &[Vec<u8>] {
            &self.io.io.writes
        }

        fn wakes(&self) -> u32 {
            self.wakes.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn frames_of_one_turn_leave_together_in_the_next() {
        let mut h2 = Driver::new(3);
        h2.turn();
        h2.frame(b"a");
        h2.frame(b"b");
        h2.frame(b"c");
        // reported flushed, kept, and the task woken to come back
        assert!(h2.socket().is_empty());
        assert!(h2.wakes() >= 1);
        // its next turn: a flush with nothing new writes them, in one write
        h2.turn();
        h2.flush();
        assert_eq!(h2.socket(), [b"abc".to_vec()]);
        // a turn that brings a frame of its own sends the held ones with it
        h2.turn();
        h2.frame(b"d");
        h2.turn();
        h2.frame(b"e");
        assert_eq!(h2.socket(), [b"abc".to_vec(), b"de".to_vec()]);
    }

    #[test]
    fn a_flush_with_nothing_new_writes_even_without_a_read() {
        let mut h2 = Driver::new(2);
        h2.frame(b"a");
        assert!(h2.socket().is_empty());
        h2.flush();
        assert_eq!(h2.socket(), [b"a".to_vec()]);
    }

    #[test]
    fn one_stream_writes_at_once() {
        let mut h2 = Driver::new(1);
        h2.frame(b"a");
        h2.frame(b"b");
        assert_eq!(h2.socket(), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(h2.wakes(), 0);
        // a stream opens mid-batch, another ends: what was kept still goes first
        h2.streams.store(2, Ordering::Relaxed);
        h2.frame(b"c");
        h2.streams.store(1, Ordering::Relaxed);
        h2.frame(b"d");
        h2.flush();
        assert_eq!(h2.socket().concat(), b"abcd");
    }

    #[test]
    fn large_writes_and_full_batches_go_out_in_order() {
        let mut h2 = Driver::new(2);
        h2.frame(b"small");
        let large = vec![7; DIRECT_BYTES];
        h2.frame(&large);
        assert_eq!(h2.socket(), [b"small".to_vec(), large.clone()]);
        // a batch at its size is written by the write that would pass it
        let chunk = vec![1; DIRECT_BYTES - 1];
        let mut sent = 0;
        while h2.socket().len() == 2 {
            h2.frame(&chunk);
            sent += chunk.len();
        }
        assert!(
            h2.socket()[2].len() <= BATCH_BYTES,
            "{}",
            h2.socket()[2].len()
        );
        assert!(sent > BATCH_BYTES - chunk.len());
    }

    #[test]
    fn a_batch_the_socket_takes_in_parts_goes_out_whole_and_in_order() {
        let mut h2 = Driver::new(2);
        h2.io.io.room = Some(4);
        h2.turn();
        h2.frame(b"abcdef");
        // held for the next turn; a flush with nothing new writes it, and the
        // socket takes four bytes, then is full: the flush waits
        assert!(h2.cx(|io, cx| io.poll_flush(cx)).is_pending());
        assert_eq!(h2.socket().concat(), b"abcd");
        // a frame written meanwhile goes after what is left, and a flush in the
        // same turn is not held again while the batch is still going out
        let written = h2.cx(|io, cx| io.poll_write(cx, b"gh"));
        assert!(matches!(written, Poll::Ready(Ok(2))));
        let wakes = h2.wakes();
        assert!(h2.cx(|io, cx| io.poll_flush(cx)).is_pending());
        assert_eq!(h2.wakes(), wakes);
        h2.io.io.room = None;
        h2.flush();
        assert_eq!(h2.socket().concat(), b"abcdefgh");
        // written out, the next batch is held again
        h2.frame(b"i");
        assert_eq!(h2.socket().concat(), b"abcdefgh");
    }

    #[test]
    fn a_peer_that_reads_nothing_holds_at_most_one_batch() {
        let mut h2 = Driver::new(16);
        h2.io.io.room = Some(0);
        let frame = [5; 1000];
        let mut taken = 0;
        for _ in 0..100 {
            match h2.cx(|io, cx| io.poll_write(cx, &frame)) {
                Poll::Ready(Ok(n)) => taken += n,
                Poll::Pending => break,
                Poll::Ready(Err(e)) => panic!("{e}"),
            }
        }
        // h2 is told to wait once a batch is full: what waits stays bounded
        assert!(taken <= BATCH_BYTES, "{taken}");
        assert!(h2.io.kept.len() <= BATCH_BYTES);
        assert!(h2.cx(|io, cx| io.poll_flush(cx)).is_pending());
        assert!(h2.socket().is_empty());
    }

    #[test]
    fn shutdown_writes_what_was_kept_first() {
        let mut h2 = Driver::new(2);
        h2.frame(b"goaway");
        assert!(h2.cx(|io, cx| io.poll_shutdown(cx)).is_ready());
        assert_eq!(h2.socket(), [b"goaway".to_vec()]);
        assert!(h2.io.io.shut);
    }
}
