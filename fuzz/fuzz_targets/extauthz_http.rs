//! HTTP ext_authz answers (extauthz/src/http.rs): an arbitrary HTTP response
//! (head parsed by httparse as hyper parses it, then the body), read under a
//! provider that sends `x-user` and `x-auth-*` to the pod on allow and
//! `*-trace` to the client.
//!
//! Asserts: only a `200` allows; a refusal keeps the authorizer's status and
//! body; headers of one hop (`host`, `content-length`, `transfer-encoding`,
//! `connection`, `keep-alive`) and XFCC are never copied; on allow only the
//! configured headers are; applying the answer never touches XFCC or `Host`.
#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use meshward_extauthz::config::ExtAuthzHttp;
use meshward_extauthz::Verdict;
use meshward_extauthz::fuzzing::http_verdict;

const NEVER_COPIED: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "x-forwarded-client-cert",
];

static CONFIG: LazyLock<ExtAuthzHttp> = LazyLock::new(|| {
    serde_json::from_value(serde_json::json!({
        "service": "authz.example", "port": 8000,
        "headersToUpstreamOnAllow": ["x-user", "X-Auth-*"],
        "headersToDownstreamOnAllow": ["*-trace"],
    }))
    .expect("a valid provider")
});

fuzz_target!(|data: &[u8]| {
    let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut parsed_headers);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(data) else {
        return;
    };
    let Some(status) = response.code.and_then(|c| StatusCode::from_u16(c).ok()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for h in response.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    let body = Bytes::copy_from_slice(&data[head_len..]);

    let verdict = http_verdict(&CONFIG, status, &headers, body.clone());
    let mut request = HeaderMap::new();
    request.insert(
        "x-forwarded-client-cert",
        HeaderValue::from_static("By=spiffe://td/pod"),
    );
    request.insert(http::header::HOST, HeaderValue::from_static("pod.default"));
    let identity = request.clone();
    match &verdict {
        Verdict::Allow {
            upstream,
            remove,
            downstream,
        } => {
            assert_eq!(status, StatusCode::OK);
            for change in upstream {
                assert!(
                    change.name == "x-user" || change.name.starts_with("x-auth-"),
                    "{}",
                    change.name
                );
            }
            for change in downstream {
                assert!(change.name.ends_with("-trace"), "{}", change.name);
            }
            for change in upstream.iter().chain(downstream) {
                assert!(
                    !NEVER_COPIED.contains(&change.name.as_str()),
                    "{} copied",
                    change.name
                );
            }
            meshward_extauthz::apply_headers(&mut request, upstream, remove);
        }
        Verdict::Deny {
            status: denied,
            headers: changes,
            body: denied_body,
        } => {
            assert_ne!(status, StatusCode::OK);
            assert_eq!(*denied, status.as_u16());
            assert_eq!(*denied_body, body);
            for change in changes {
                assert!(
                    !NEVER_COPIED.contains(&change.name.as_str()),
                    "{} copied",
                    change.name
                );
            }
            meshward_extauthz::apply_headers(&mut request, changes, &[]);
        }
    }
    for name in ["x-forwarded-client-cert", "host"] {
        assert_eq!(
            request.get_all(name).iter().collect::<Vec<_>>(),
            identity.get_all(name).iter().collect::<Vec<_>>(),
            "{name} changed"
        );
    }
});
