//! gRPC ext_authz answers (extauthz/src/grpc.rs): an arbitrary protobuf
//! `CheckResponse`, read as the proxy reads it, then applied to a request.
//!
//! Asserts: the request is allowed exactly when the answer's status is absent or
//! OK; a refusal's status is an HTTP status (200-599, else 403); header names are
//! lower case; applying the answer never touches the request's XFCC or `Host`.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use meshward_extauthz::Verdict;
use meshward_extauthz::fuzzing::grpc_verdict;
use meshward_extauthz::proto::envoy::service::auth::v3::CheckResponse;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(verdict) = grpc_verdict(data) else {
        return;
    };
    let response = CheckResponse::decode(data).expect("decoded once already");
    let ok = response.status.as_ref().is_none_or(|s| s.code == 0);

    let mut request = HeaderMap::new();
    request.insert(
        "x-forwarded-client-cert",
        HeaderValue::from_static("By=spiffe://td/pod"),
    );
    request.insert(http::header::HOST, HeaderValue::from_static("pod.default"));
    request.insert("x-user", HeaderValue::from_static("client"));
    let identity = request.clone();
    match &verdict {
        Verdict::Allow {
            upstream,
            remove,
            downstream,
        } => {
            assert!(ok, "allowed with status {:?}", response.status);
            for change in upstream.iter().chain(downstream) {
                assert_eq!(change.name, change.name.to_ascii_lowercase());
            }
            for name in remove {
                assert_eq!(*name, name.to_ascii_lowercase());
            }
            meshward_extauthz::apply_headers(&mut request, upstream, remove);
            let mut response_headers = identity.clone();
            meshward_extauthz::apply_headers(&mut response_headers, downstream, &[]);
        }
        Verdict::Deny {
            status, headers, ..
        } => {
            assert!(!ok, "refused with status OK");
            assert!((200..=599).contains(status), "{status}");
            meshward_extauthz::apply_headers(&mut request, headers, &[]);
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
