//! OpenID discovery documents (proxy/src/datapath/jwks.rs): where a
//! RequestAuthentication issuer without `jwksUri` says its keys are.
//!
//! Asserts: the `jwks_uri` followed is the document's own, only ever an
//! `https://` one (no plaintext or other scheme a document could point keys at),
//! and only from a document whose `issuer` is the rule's (OpenID Discovery §4.3).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_proxy::datapath::fuzzing::discovered_jwks_uri;

const ISSUER: &str = "https://issuer.example";
const URL: &str = "https://issuer.example/.well-known/openid-configuration";

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = discovered_jwks_uri(ISSUER, URL, data) else {
        return;
    };
    assert!(uri.starts_with("https://"), "{uri:?}");
    let document: serde_json::Value =
        serde_json::from_slice(data).expect("an accepted document is JSON");
    assert_eq!(document["jwks_uri"].as_str(), Some(uri.as_str()));
    assert_eq!(document["issuer"].as_str(), Some(ISSUER));
});
