//! JWKS documents (`KeySet::from_jwks`, jwt/src/keys.rs), as `jwks` in a
//! RequestAuthentication or fetched from a `jwksUri`.
//!
//! Asserts: a key set is accepted only with at least one RSA, EC or OKP key: a set
//! of symmetric (`oct`) keys alone, which would let a public document hand out
//! HMAC secrets, is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_jwt::KeySet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(keys) = KeySet::from_jwks(text) else {
        return;
    };
    let _ = format!("{keys:?}");
    // serde_json skips ignored fields without checking their escapes: an
    // accepted JWKS need not be a valid `Value`
    let Ok(document) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let asymmetric = document["keys"]
        .as_array()
        .expect("an accepted JWKS has a key list")
        .iter()
        .any(|key| matches!(key["kty"].as_str(), Some("RSA" | "EC" | "OKP")));
    assert!(asymmetric, "accepted without an asymmetric key: {text}");
});
