//! What one hop may change in a request's and a response's headers: the one
//! authority a request names, hop-by-hop headers, and the WebSocket upgrade that is
//! the one upgrade forwarded.

use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::datapath::upstream::Version;

/// The authority a request names, or why it names none or two (a `400`):
/// - HTTP/1 absolute-form (`GET http://a/x`): the target's authority, and `Host` is
///   replaced by it (RFC 9112 §3.2.2);
/// - HTTP/2: `:authority`, and a `host` header naming anything else is refused
///   (RFC 9113 §8.3.1);
/// - otherwise the one `Host` header; HTTP/1.1 without one is refused (RFC 9112 §3.2).
///
/// A scheme other than `http`/`https` is refused.
pub(super) fn request_authority<B>(
    request: &Request<B>,
    version: Version,
) -> Result<String, String> {
    if let Some(scheme) = request.uri().scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(format!(
                "scheme {scheme:?} (only http and https are served)"
            ));
        }
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err("more than one Host header".into()),
        (Some(host), None) => Some(
            host.to_str()
                .map_err(|_| "a Host header that is not ASCII".to_owned())?,
        ),
        (None, None) => None,
    };
    let same = |a: &str, b: &str| {
        let normalized = |h: &str| meshward_policy::Authority::parse(h).ok();
        normalized(a).is_some() && normalized(a) == normalized(b)
    };
    match (request.uri().authority().map(|a| a.as_str()), host) {
        (Some(authority), _) if version == Version::Http1 => Ok(authority.to_owned()),
        (Some(authority), Some(host)) if !same(authority, host) => Err(format!(
            "host header {host:?} differs from :authority {authority:?}"
        )),
        (Some(authority), _) => Ok(authority.to_owned()),
        (None, Some(host)) => Ok(host.to_owned()),
        (None, None) if request.version() == http::Version::HTTP_11 => {
            Err("HTTP/1.1 request without Host".into())
        }
        (None, None) => Ok(String::new()),
    }
}

/// `websocket` when an HTTP/1.1 request asks to switch to it (`Connection: upgrade`,
/// `Upgrade: websocket`). Other upgrades are dropped like any hop-by-hop header, as
/// Istio configures Envoy: after an `h2c` upgrade, say, further requests on the
/// connection would reach the pod without being authorized one by one.
pub(super) fn upgrade_protocol<B>(request: &Request<B>) -> Option<HeaderValue> {
    let tokens = |name| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    let asks = request.version() == http::Version::HTTP_11
        && tokens(header::CONNECTION)
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
        && tokens(header::UPGRADE)
            .iter()
            .any(|t| t.eq_ignore_ascii_case("websocket"));
    asks.then(|| HeaderValue::from_static("websocket"))
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub(super) fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The headers that belong to one hop (RFC 9110 7.6.1), but `te`: it goes but
/// for `te: trailers`.
const ONE_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::TE || ONE_HOP.contains(name)
}

/// Headers that belong to one hop (RFC 9110 7.6.1), plus those `Connection` names.
/// `te: trailers` stays: gRPC needs it end to end.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // most heads have none: one pass over the names instead of a lookup per name
    // (each removal hashes; ~2k instructions per request and response)
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ONE_HOP {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(request: Request<()>, version: Version) -> Result<String, String> {
        request_authority(&request, version)
    }

    #[test]
    fn one_authority_per_request() {
        use http::Version as V;
        let h1 = |target: &str, hosts: &[&str]| {
            let mut r = Request::get(target);
            for h in hosts {
                r = r.header(header::HOST, *h);
            }
            r.body(()).unwrap()
        };
        // absolute-form: the target's authority, whatever Host says
        assert_eq!(
            authority(
                h1("http://public.example/x", &["admin.example"]),
                Version::Http1
            ),
            Ok("public.example".into())
        );
        assert_eq!(
            authority(h1("/x", &["a.example"]), Version::Http1),
            Ok("a.example".into())
        );
        for bad in [
            h1("/x", &["a.example", "b.example"]),
            h1("ftp://a.example/x", &[]),
            h1("/x", &[]),
        ] {
            assert!(authority(bad, Version::Http1).is_err());
        }
        // HTTP/1.0 may omit Host
        let old = Request::get("/x").version(V::HTTP_10).body(()).unwrap();
        assert_eq!(authority(old, Version::Http1), Ok(String::new()));
        // HTTP/2: host must name what :authority names
        let h2 = |host: &str| {
            Request::get("http://a.example/x")
                .version(V::HTTP_2)
                .header(header::HOST, host)
                .body(())
                .unwrap()
        };
        assert_eq!(
            authority(h2("A.example."), Version::Http2),
            Ok("a.example".into())
        );
        assert!(authority(h2("b.example"), Version::Http2).is_err());
    }

    #[test]
    fn only_websocket_upgrades_are_forwarded() {
        let request = |connection: &str, upgrade: &str| {
            Request::get("/ws")
                .header(header::CONNECTION, connection)
                .header(header::UPGRADE, upgrade)
                .body(())
                .unwrap()
        };
        assert_eq!(
            upgrade_protocol(&request("keep-alive, Upgrade", "WebSocket")).unwrap(),
            "websocket"
        );
        assert_eq!(
            upgrade_protocol(&request("Upgrade, HTTP2-Settings", "h2c")),
            None
        );
        assert_eq!(upgrade_protocol(&request("keep-alive", "websocket")), None);
    }

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "te"]);
        assert_eq!(headers[header::TE], "trailers");
    }

    /// Each hop-by-hop header goes when it is the only one (the pass that skips
    /// heads without any must see each of them).
    #[test]
    fn each_hop_by_hop_header_goes_on_its_own() {
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
            "keep-alive",
            "proxy-connection",
            "te",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("deflate"));
            headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            strip_hop_by_hop(&mut headers);
            let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
            assert_eq!(left, ["accept"], "{name}");
        }
    }
}
