//! The head of a request as the proxy first reads it, and made what the pod may
//! receive, before anything judges it.

use http::Request;
use http::header::{self, HeaderValue};
use meshward_policy::{Authority, BadRequest};
use parking_lot::Mutex;

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

/// The last authority a connection's requests named, normalized. A client names
/// the same one on every request, and validating it was 2 k instructions of
/// each (`http::uri::Authority`'s parser, with its allocation).
#[derive(Default)]
pub(crate) struct LastAuthority(Mutex<Option<(String, Authority)>>);

impl LastAuthority {
    /// `raw` normalized ([`Authority::parse`]): the last one again when `raw` is
    /// the same text.
    pub(crate) fn parse(&self, raw: &str) -> Result<Authority, BadRequest> {
        let mut last = self.0.lock();
        if let Some((text, authority)) = last.as_ref()
            && text == raw
        {
            return Ok(authority.clone());
        }
        let authority = Authority::parse(raw)?;
        *last = Some((raw.to_owned(), authority.clone()));
        Ok(authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_authority_is_reused_only_for_the_same_text() {
        let last = LastAuthority::default();
        let first = last.parse("Echo.Example.:8080").expect("valid");
        assert_eq!(first.as_str(), "echo.example:8080");
        assert_eq!(first.name(), "echo.example");
        assert_eq!(last.parse("Echo.Example.:8080"), Ok(first));
        // another text is parsed on its own, valid or not, and becomes the last
        assert_eq!(last.parse("other:80").expect("valid").as_str(), "other:80");
        assert!(last.parse("user@other:80").is_err());
        assert!(last.parse("other:80x").is_err());
        assert_eq!(last.parse("other:80").expect("valid").name(), "other");
    }
}
