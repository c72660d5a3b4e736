//! The HTTP request head the proxy acts on (proxy/src/datapath/http.rs and
//! http/headers.rs), then policy's reading of it (`HttpRequest::new`, every path
//! normalization).
//!
//! Input: one byte of options (bit 0: the request came over HTTP/2; bit 1: the
//! stream has a verified mTLS peer), then an HTTP/1 request head as a client
//! writes it, parsed by httparse as hyper parses it.
//!
//! Asserts, when the head is accepted: no hop-by-hop header survives (nor any
//! header `Connection` names, but meshward's own XFCC, set afterwards); `te` only
//! as `trailers`; no `Host` (the pod gets the judged authority); exactly meshward's
//! XFCC element with a peer and none without; only a WebSocket upgrade is kept, on
//! HTTP/1.1; an absolute-form HTTP/1 target's authority wins over `Host`.
#![no_main]

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use meshward_proxy::datapath::fuzzing::forwarded_uri;
use meshward_proxy::xfcc::{self, PeerCertificate, XFCC};
use meshward_policy::{HttpRequest, PathNormalization, SpiffeId};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "keep-alive",
    "proxy-connection",
    "host",
];

fuzz_target!(|data: &[u8]| {
    let Some((&options, head)) = data.split_first() else {
        return;
    };
    let (http2, verified) = (options & 1 == 1, options & 2 == 2);
    let Some(mut request) = parse(head, http2) else {
        return;
    };
    let connection_names: Vec<String> = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let absolute_authority = request.uri().authority().map(|a| a.as_str().to_owned());

    let by = SpiffeId::parse("spiffe://cluster.local/ns/server/sa/default").expect("valid");
    let client = SpiffeId::parse("spiffe://cluster.local/ns/client/sa/default").expect("valid");
    let hash = xfcc::leaf_hash(b"leaf");
    let peer = PeerCertificate {
        spiffe_id: &client,
        leaf_hash: &hash,
    };
    let peer = verified.then_some(&peer);
    let Ok(prepared) =
        meshward_proxy::datapath::fuzzing::prepare_head(&mut request, http2, Some(&by), peer)
    else {
        return;
    };

    let headers = request.headers();
    for name in HOP_BY_HOP {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    for name in &connection_names {
        if name != XFCC.as_str() && HeaderName::from_bytes(name.as_bytes()).is_ok() {
            assert!(
                !headers.contains_key(name.as_str()),
                "{name}, named by Connection, survived"
            );
        }
    }
    let te: Vec<_> = headers.get_all(header::TE).iter().collect();
    assert!(
        te.is_empty() || te == [HeaderValue::from_static("trailers")],
        "te: {te:?}"
    );
    let xfccs: Vec<_> = headers.get_all(XFCC).iter().collect();
    match peer {
        Some(peer) => assert_eq!(xfccs, [xfcc::element(&by, peer).as_str()]),
        None => assert!(xfccs.is_empty()),
    }
    if let Some(upgrade) = &prepared.upgrade {
        assert_eq!(upgrade, "websocket");
        assert_eq!(request.version(), Version::HTTP_11);
    }
    if let (Some(authority), false) = (absolute_authority, http2) {
        assert_eq!(prepared.authority, authority);
    }

    // policy's reading of the judged head: never a panic, and what it normalizes
    // stays normalized
    for option in PathNormalization::ALL {
        let Ok(judged) = HttpRequest::new(
            request.method().as_str(),
            &prepared.target,
            &prepared.authority,
            request.headers().clone(),
            option,
        ) else {
            continue;
        };
        let again = judged.target().to_request_target();
        let twice = HttpRequest::new(
            request.method().as_str(),
            &again,
            &prepared.authority,
            Default::default(),
            option,
        )
        .expect("a normalized target is accepted again");
        assert_eq!(twice.target().path(), judged.target().path(), "{option}");
        let host = meshward_policy::Authority::parse(judged.host());
        assert_eq!(
            host.as_ref().map(|h| h.as_str()),
            Ok(judged.host()),
            "host normalization is not idempotent"
        );
        // the pod gets what policy judged: the target (and authority) the proxy
        // forwards read back as the judged path
        if let Ok(uri) = forwarded_uri(http2, judged.host(), &again) {
            assert_eq!(
                uri.path(),
                judged.target().path(),
                "{option}: forwarded as {uri}"
            );
            if http2 {
                assert_eq!(uri.authority().map(|a| a.as_str()), Some(judged.host()));
            }
        }
    }
});

/// One HTTP/1 request head, as hyper reads it (a complete head only).
fn parse(bytes: &[u8], http2: bool) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = parsed.parse(bytes).ok()? else {
        return None;
    };
    let mut request = Request::builder()
        .method(Method::from_bytes(parsed.method?.as_bytes()).ok()?)
        .uri(parsed.path?.parse::<Uri>().ok()?)
        .version(match (http2, parsed.version?) {
            (true, _) => Version::HTTP_2,
            (false, 0) => Version::HTTP_10,
            (false, _) => Version::HTTP_11,
        });
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        request = request.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    request.body(()).ok()
}
