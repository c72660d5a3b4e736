//! The one body type the L7 path passes around: a client's request body or a pod's
//! response body streamed through, or a body the proxy wrote itself (403, 503).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame};

use crate::xfcc::XFCC;

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A streamed body, unchanged.
pub(crate) fn stream(body: hyper::body::Incoming) -> ProxyBody {
    body.boxed()
}

/// A client's request body on its way to the pod: streamed, but an XFCC in its
/// trailers is removed, as in its headers. Identity reaches the pod only from
/// meshward, wherever the pod would look.
pub(crate) fn request<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            trailers.remove(&XFCC);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    })
    .boxed()
}

/// The first bytes of a body, read before it is forwarded (an external
/// authorizer asked for them).
pub(crate) struct Peeked {
    /// At most `max` bytes.
    pub(crate) prefix: Bytes,
    /// The body was longer than `max`.
    pub(crate) truncated: bool,
    /// The whole body, as it will be forwarded: what was read, then the rest.
    pub(crate) body: ProxyBody,
}

/// Reads `body` until `max` bytes or its end.
pub(crate) async fn peek(mut body: ProxyBody, max: usize) -> Result<Peeked, hyper::Error> {
    let mut frames: Vec<Frame<Bytes>> = Vec::new();
    let mut read = 0;
    let mut ended = false;
    while read <= max {
        match body.frame().await {
            Some(frame) => {
                let frame = frame?;
                read += frame.data_ref().map_or(0, Bytes::len);
                frames.push(frame);
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let mut prefix = Vec::with_capacity(read.min(max));
    for data in frames.iter().filter_map(Frame::data_ref) {
        let room = max - prefix.len();
        prefix.extend_from_slice(&data[..data.len().min(room)]);
    }
    let read_frames = futures_util::stream::iter(frames.into_iter().map(Ok));
    let body = if ended {
        StreamBody::new(read_frames).boxed()
    } else {
        let rest = http_body_util::BodyStream::new(body);
        StreamBody::new(futures_util::StreamExt::chain(read_frames, rest)).boxed()
    };
    Ok(Peeked {
        prefix: Bytes::from(prefix),
        truncated: read > max,
        body,
    })
}

/// No body.
pub(crate) fn empty() -> ProxyBody {
    full(Full::new(Bytes::new()))
}

/// A body the proxy wrote.
pub(crate) fn full(body: Full<Bytes>) -> ProxyBody {
    body.map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    #[tokio::test]
    async fn an_xfcc_trailer_never_reaches_the_pod() {
        let mut trailers = HeaderMap::new();
        trailers.insert(XFCC, HeaderValue::from_static("URI=spiffe://evil/x"));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"payload"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let collected = request(body).collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert!(trailers.get(&XFCC).is_none());
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "payload");
    }

    fn frames(parts: &[&'static [u8]]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn a_peeked_body_is_forwarded_whole() {
        let peeked = peek(frames(&[b"abc", b"defg", b"hij"]), 5).await.unwrap();
        assert_eq!(&peeked.prefix[..], b"abcde");
        assert!(peeked.truncated);
        let whole = peeked.body.collect().await.unwrap().to_bytes();
        assert_eq!(&whole[..], b"abcdefghij");
        let peeked = peek(frames(&[b"abc", b"de"]), 5).await.unwrap();
        assert_eq!(&peeked.prefix[..], b"abcde");
        assert!(!peeked.truncated);
        assert_eq!(
            &peeked.body.collect().await.unwrap().to_bytes()[..],
            b"abcde"
        );
    }
}
