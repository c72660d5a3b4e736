//! The one body type the L7 path passes around: a client's request body or a pod's
//! response body streamed through, or a body the proxy wrote itself (403, 503).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
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

/// A body the proxy wrote.
pub(crate) fn full(body: Full<Bytes>) -> ProxyBody {
    body.map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use http_body_util::StreamBody;

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
}
