//! The one body type the L7 path passes around: a client's request body or a pod's
//! response body streamed through, or a body the proxy wrote itself (403, 503).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A streamed body, unchanged.
pub(crate) fn stream(body: hyper::body::Incoming) -> ProxyBody {
    body.boxed()
}

/// A body the proxy wrote.
pub(crate) fn full(body: Full<Bytes>) -> ProxyBody {
    body.map_err(|never| match never {}).boxed()
}
