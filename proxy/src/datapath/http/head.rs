//! The head of a request as the proxy first reads it, and made what the pod may
//! receive, before anything judges it.

use http::Request;
use http::header::{self, HeaderValue};

use super::headers::{request_authority, strip_hop_by_hop, upgrade_protocol};
use crate::datapath::upstream::Version;
use crate::xfcc;

/// What the proxy reads of a request's head before anything else.
pub(crate) struct Head {
    pub(crate) version: Version,
    pub(crate) authority: String,
    /// Path and query, as the client sent them.
    pub(crate) target: String,
    /// The one upgrade forwarded (WebSocket), once it is allowed.
    pub(crate) upgrade: Option<HeaderValue>,
}

/// Reads a request's head and makes it what the pod may receive: its authority
/// (`Err`: why it is a `400`), target and upgrade read, hop-by-hop headers and
/// `Host` removed, meshward's XFCC set (`xfcc`: [`xfcc::value`], `None` without a
/// verified client).
pub(crate) fn prepare_head<B>(
    request: &mut Request<B>,
    version: Version,
    xfcc: Option<HeaderValue>,
) -> Result<Head, String> {
    let authority = request_authority(request, version)?;
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let upgrade = upgrade_protocol(request);
    strip_hop_by_hop(request.headers_mut());
    request.headers_mut().remove(header::HOST);
    xfcc::set(request.headers_mut(), xfcc);
    Ok(Head {
        version,
        authority,
        target,
        upgrade,
    })
}
