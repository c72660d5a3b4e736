//! One HBONE CONNECT stream as a byte stream: the two halves of an `h2` stream
//! behind `AsyncRead`/`AsyncWrite`, so the copy loop, protocol detection and the
//! HTTP server read a tunnel as they read a socket.
//!
//! Driven directly, as ztunnel does, rather than through hyper's CONNECT upgrade:
//! hyper hands every write of an upgraded HTTP/2 stream through a channel to one
//! more task of its own (a wake-up per write, a task and a channel per stream).
//! Here a write goes straight into the stream's send queue, which the
//! connection's task encodes and encrypts.
//!
//! Flow control: a write waits for window (never buffers past it), and bytes read
//! give their window back as they are consumed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ::h2::{Reason, RecvStream, SendStream};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::copy::CopyIo;

pub(crate) struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not yet read.
    pending: Bytes,
    /// The length of the chunk lent to the copy loop, whose window is given
    /// back when the loop asks for the next (it has written this one).
    lent: usize,
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            lent: 0,
        }
    }

    /// Why the stream takes no more bytes, from the peer's reset. `Ok`: the peer
    /// answered in full and asked for no more of the request (RST_STREAM with
    /// NO_ERROR, RFC 9113 section 8.1); the rest is dropped, so the answer still
    /// reaches the client. Any other reason is an error.
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match ready!(self.send.poll_reset(cx)) {
            Ok(Reason::NO_ERROR) => Ok(()),
            Ok(Reason::CANCEL | Reason::STREAM_CLOSED) => Err(io::ErrorKind::BrokenPipe.into()),
            Ok(reason) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                ::h2::Error::from(reason),
            )),
            Err(e) => Err(to_io(e)),
        })
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_received(cx))?;
        let n = self.pending.len().min(out.remaining());
        out.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        // the window opens again as the bytes leave, not as they arrive
        let _ = self.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl H2Stream {
    /// Waits until `pending` holds received bytes; it stays empty at EOF.
    fn poll_received(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                // the peer's END_STREAM: EOF, the half-close
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => self.pending = data,
                Some(Err(e)) => {
                    return Poll::Ready(match e.reason() {
                        // a peer that is done (or cancelled) ends the stream
                        Some(Reason::NO_ERROR | Reason::CANCEL) => Ok(()),
                        Some(Reason::STREAM_CLOSED) => {
                            Err(io::Error::new(io::ErrorKind::BrokenPipe, e))
                        }
                        _ => Err(to_io(e)),
                    });
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Waits for send window for up to `wanted` bytes: how many may be sent, or
    /// `None` when the peer stopped the stream cleanly (what is left is dropped,
    /// see [`H2Stream::poll_stopped`]).
    fn poll_window(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
    ) -> Poll<io::Result<Option<usize>>> {
        self.send.reserve_capacity(wanted);
        // poll_capacity answers only when the window grew since it was last
        // asked: the window already granted is read first
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                return Poll::Ready(Ok(Some(capacity.min(wanted))));
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return self.poll_stopped(cx).map_ok(|()| None),
            }
        }
    }
}

/// DATA frames move whole: a received one is lent to the copy loop, and a chunk
/// read from a socket is queued as the next one, without a copy either way.
impl CopyIo for H2Stream {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        _: &mut BytesMut,
    ) -> Poll<io::Result<Bytes>> {
        // the chunk lent last time is written: its window opens again
        let _ = self
            .recv
            .flow_control()
            .release_capacity(std::mem::take(&mut self.lent));
        ready!(self.poll_received(cx))?;
        let chunk = std::mem::take(&mut self.pending);
        self.lent = chunk.len();
        Poll::Ready(Ok(chunk))
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        let Some(granted) = ready!(self.poll_window(cx, chunk.len()))? else {
            chunk.clear();
            return Poll::Ready(Ok(()));
        };
        let data = chunk.split_to(granted);
        match self.send.send_data(data, false) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => self.poll_stopped(cx).map_ok(|()| chunk.clear()),
        }
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let Some(granted) = ready!(self.poll_window(cx, buf.len()))? else {
            return Poll::Ready(Ok(buf.len()));
        };
        let data = Bytes::copy_from_slice(&buf[..granted]);
        match self.send.send_data(data, false) {
            Ok(()) => Poll::Ready(Ok(granted)),
            Err(_) => self.poll_stopped(cx).map_ok(|()| buf.len()),
        }
    }

    /// The connection's task writes what was queued; nothing waits here.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// END_STREAM: the half-close; the way back stays open.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.send.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => self.poll_stopped(cx),
        }
    }
}

/// Dropped as a socket is closed: what was written is still delivered, then
/// END_STREAM (h2 alone would reset the stream with CANCEL and discard the
/// queued bytes: a response written in full, then lost). The destination's
/// receiving side, dropped too, answers a client still sending with RST_STREAM
/// NO_ERROR.
impl Drop for H2Stream {
    fn drop(&mut self) {
        let _ = self.send.send_data(Bytes::new(), true);
    }
}

fn to_io(e: ::h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::ErrorKind::ConnectionReset.into())
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::LimitsConfig;
    use http::Response;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::super::h2;
    use super::super::testing::{connect_request, pattern, write_then_shutdown};
    use super::*;

    /// A client and a server stream of one CONNECT, over an in-memory connection
    /// with the HBONE settings.
    async fn connect_pair() -> (H2Stream, H2Stream) {
        let (client_io, server_io) = duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut connection = h2::hbone_server(&LimitsConfig::default())
                .handshake::<_, Bytes>(server_io)
                .await
                .unwrap();
            let (request, mut respond) = connection.accept().await.unwrap().unwrap();
            let send = respond.send_response(Response::new(()), false).unwrap();
            tokio::spawn(async move { while connection.accept().await.is_some() {} });
            H2Stream::new(send, request.into_body())
        });
        let (sender, connection) = h2::hbone_client()
            .handshake::<_, Bytes>(client_io)
            .await
            .unwrap();
        tokio::spawn(connection);
        let (response, send) = sender
            .ready()
            .await
            .unwrap()
            .send_request(connect_request(), false)
            .unwrap();
        let server = server.await.unwrap();
        let response = response.await.unwrap();
        (H2Stream::new(send, response.into_body()), server)
    }

    async fn read_all(stream: &mut H2Stream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .expect("EOF in time")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn end_stream_is_a_half_close_and_more_than_a_window_arrives() {
        let (client, mut server) = connect_pair().await;
        // 10 MiB: more than the 4 MiB stream window, so the reader must give it back
        let data = pattern(10 * 1024 * 1024);
        let writer = write_then_shutdown(client, data.clone());
        assert!(read_all(&mut server).await == data, "bytes differ");
        let mut client = writer.await.unwrap();
        // the client's END_STREAM did not close the way back
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(read_all(&mut client).await, b"pong!");
    }

    /// The copy loop's chunk path (frames lent and taken whole): 10 MiB each way
    /// is more than the stream's 4 MiB window, so it stalls unless each lent
    /// frame's window is given back once written.
    #[tokio::test]
    async fn the_copy_loop_moves_frames_whole_both_ways_past_the_window() {
        let (client, mut tunnel) = connect_pair().await;
        let (mut app, mut socket) = duplex(1 << 16);
        let copy = tokio::spawn(async move {
            let idle = Duration::from_secs(10);
            super::super::copy::bidirectional(&mut tunnel, &mut socket, idle).await
        });
        let data = pattern(10 * 1024 * 1024);
        let writer = write_then_shutdown(client, data.clone());
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), app.read_to_end(&mut got));
        read.await.expect("EOF in time").unwrap();
        assert!(got == data, "bytes differ on the way in");
        let mut client = writer.await.unwrap();
        let answer = write_then_shutdown(app, data.clone());
        assert!(
            read_all(&mut client).await == data,
            "bytes differ on the way back"
        );
        drop(answer.await.unwrap());
        let (moved, result) = copy.await.unwrap();
        result.unwrap();
        assert_eq!((moved.sent, moved.received), (10 << 20, 10 << 20));
    }

    #[tokio::test]
    async fn a_dropped_stream_still_delivers_what_was_written() {
        let (mut client, mut server) = connect_pair().await;
        let answer = vec![7u8; 200 * 1024];
        server.write_all(&answer).await.unwrap();
        drop(server);
        assert!(read_all(&mut client).await == answer);
    }

    #[tokio::test]
    async fn a_complete_answer_stops_the_request_without_losing_the_answer() {
        let (mut client, mut server) = connect_pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut head = [0u8; 16];
        server.read_exact(&mut head).await.unwrap();
        // the server answers in full and reads no more: RST_STREAM NO_ERROR
        server
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        drop(server);
        let answer = read_all(&mut client).await;
        assert_eq!(answer, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        // the rest of the request is dropped, not an error that would reset the client
        for _ in 0..10 {
            client.write_all(&[0u8; 4096]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client.shutdown().await.unwrap();
    }
}
