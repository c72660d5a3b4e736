//! Interop with gRPC C-core clients (py-spiffe and every grpcio-based one): over a
//! unix socket they send the socket path, percent-encoded, as `:authority`
//! (`tmp%2Fagent.sock`). The h2 server refuses a `%` there (PROTOCOL_ERROR, the
//! stream is reset) although Go's gRPC server, which SPIRE uses, accepts it. So
//! the client-to-server bytes go through this filter, which rewrites such a
//! literal `:authority` value in place, byte for byte (same length: frame sizes
//! and the HPACK dynamic table stay consistent), replacing characters an
//! authority may not hold by `-`. Nothing else is touched; the authority carries
//! no meaning on a unix socket.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Larger frames than this are not HTTP/2 from a sane client: stop filtering.
const MAX_FRAME: usize = 1 << 24;
/// Buffer between the socket and the gRPC server.
const PIPE: usize = 64 * 1024;

/// The socket, filtered: what the gRPC server reads and writes, and who is calling.
pub(crate) struct FilteredStream {
    inner: DuplexStream,
    pub(crate) pid: Option<i32>,
}

impl FilteredStream {
    pub(crate) fn new(socket: UnixStream) -> Self {
        let pid = socket.peer_cred().ok().and_then(|c| c.pid());
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let (mut socket_read, mut socket_write) = socket.into_split();
        let (mut pipe_read, mut pipe_write) = tokio::io::split(theirs);
        tokio::spawn(async move {
            let _ = filter_client_bytes(&mut socket_read, &mut pipe_write).await;
            let _ = pipe_write.shutdown().await;
        });
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut pipe_read, &mut socket_write).await;
            let _ = socket_write.shutdown().await;
        });
        Self { inner: ours, pid }
    }
}

/// Who is calling: the kernel's word (SO_PEERCRED) on the original socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallerPid(pub(crate) Option<i32>);

impl tonic::transport::server::Connected for FilteredStream {
    type ConnectInfo = CallerPid;

    fn connect_info(&self) -> Self::ConnectInfo {
        CallerPid(self.pid)
    }
}

impl AsyncRead for FilteredStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FilteredStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies the client's HTTP/2 bytes, fixing `:authority` in HEADERS/CONTINUATION.
async fn filter_client_bytes(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if preface != PREFACE {
        // not HTTP/2 with prior knowledge: pass through untouched
        tokio::io::copy(from, to).await?;
        return Ok(());
    }
    let mut header = [0u8; 9];
    loop {
        from.read_exact(&mut header).await?;
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        if length > MAX_FRAME {
            to.write_all(&header).await?;
            tokio::io::copy(from, to).await?;
            return Ok(());
        }
        let mut payload = vec![0u8; length];
        from.read_exact(&mut payload).await?;
        let (kind, flags) = (header[3], header[4]);
        if kind == HEADERS || kind == CONTINUATION {
            let block = header_block(&mut payload, kind, flags);
            fix_authority(block);
        }
        to.write_all(&header).await?;
        to.write_all(&payload).await?;
    }
}

/// The header block fragment of a HEADERS or CONTINUATION payload.
fn header_block(payload: &mut [u8], kind: u8, flags: u8) -> &mut [u8] {
    if kind != HEADERS {
        return payload;
    }
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = payload.first().map_or(0, |p| usize::from(*p));
        start += 1;
        end = end.saturating_sub(pad);
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    if start > end {
        return &mut [];
    }
    &mut payload[start..end]
}

/// HPACK integer with an N-bit prefix at `pos`; returns (value, next position).
fn integer(block: &[u8], pos: usize, prefix_bits: u32) -> Option<(usize, usize)> {
    let mask = (1usize << prefix_bits) - 1;
    let mut value = usize::from(*block.get(pos)?) & mask;
    let mut pos = pos + 1;
    if value < mask {
        return Some((value, pos));
    }
    let mut shift = 0;
    loop {
        let b = *block.get(pos)?;
        pos += 1;
        value = value.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some((value, pos));
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

/// An HPACK string at `pos`: (Huffman-coded?, byte range, next position).
fn string(block: &[u8], pos: usize) -> Option<(bool, std::ops::Range<usize>, usize)> {
    let huffman = block.get(pos)? & 0x80 != 0;
    let (length, start) = integer(block, pos, 7)?;
    let end = start.checked_add(length)?;
    (end <= block.len()).then_some((huffman, start..end, end))
}

/// Walks the representations of a header block; rewrites every literal
/// `:authority` value that is not Huffman-coded. Stops at anything cut short.
pub(crate) fn fix_authority(block: &mut [u8]) {
    let mut pos = 0;
    while pos < block.len() {
        let b = block[pos];
        let (name_index, after_name_index) = if b & 0x80 != 0 {
            // indexed header field
            match integer(block, pos, 7) {
                Some((_, next)) => {
                    pos = next;
                    continue;
                }
                None => return,
            }
        } else if b & 0xc0 == 0x40 {
            match integer(block, pos, 6) {
                Some(v) => v,
                None => return,
            }
        } else if b & 0xe0 == 0x20 {
            // dynamic table size update
            match integer(block, pos, 5) {
                Some((_, next)) => {
                    pos = next;
                    continue;
                }
                None => return,
            }
        } else {
            match integer(block, pos, 4) {
                Some(v) => v,
                None => return,
            }
        };
        let mut next = after_name_index;
        // static table entry 1 is :authority
        let mut is_authority = name_index == 1;
        if name_index == 0 {
            let Some((huffman, name, after)) = string(block, next) else {
                return;
            };
            is_authority = !huffman && &block[name] == b":authority";
            next = after;
        }
        let Some((huffman, value, after)) = string(block, next) else {
            return;
        };
        if is_authority && !huffman {
            for byte in &mut block[value] {
                if !is_authority_char(*byte) {
                    *byte = b'-';
                }
            }
        }
        pos = after;
    }
}

/// RFC 3986 authority characters, without `%` (which h2 refuses).
fn is_authority_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HEADERS block grpc-python 1.85 sent on a unix socket (captured).
    const GRPC_PYTHON: &[u8] = b"\x83\x86@\x05:path\x04/X/Y@\n:authority\x10tmp%2Fprobe.sock@\x0ccontent-type\x10application/grpc@\x02te\x08trailers";

    #[test]
    fn rewrites_a_literal_authority_in_place() {
        let mut block = GRPC_PYTHON.to_vec();
        fix_authority(&mut block);
        let expected = GRPC_PYTHON
            .iter()
            .map(|b| if *b == b'%' { b'-' } else { *b })
            .collect::<Vec<u8>>();
        assert_eq!(block, expected);
        assert_eq!(block.len(), GRPC_PYTHON.len());
        assert!("tmp-2Fprobe.sock".parse::<http::uri::Authority>().is_ok());
    }

    #[test]
    fn leaves_everything_else_alone() {
        // indexed :authority by static name (index 1), value "a%b", and a %-holding path
        let mut block = b"\x41\x03a%b\x04\x05/a%2F".to_vec();
        fix_authority(&mut block);
        assert_eq!(block, b"\x41\x03a-b\x04\x05/a%2F");
        // Huffman values and truncated blocks are left as they are
        let mut huffman = b"\x41\x83\xaa\xbb\xcc".to_vec();
        fix_authority(&mut huffman);
        assert_eq!(huffman, b"\x41\x83\xaa\xbb\xcc");
        let mut cut = b"@\n:authority\x10tmp%".to_vec();
        fix_authority(&mut cut);
        assert_eq!(cut, b"@\n:authority\x10tmp%");
    }

    #[test]
    fn padded_and_prioritized_headers() {
        let mut payload = vec![2u8, 0, 0, 0, 0, 16];
        payload.extend_from_slice(b"\x41\x03a%b");
        payload.extend_from_slice(&[0, 0]);
        let block = header_block(&mut payload, HEADERS, PADDED | PRIORITY);
        assert_eq!(block, b"\x41\x03a%b");
        fix_authority(block);
        assert_eq!(&payload[6..11], b"\x41\x03a-b");
    }
}
