//! JWKS documents for test signing keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

/// A JWKS with one P-256 key, from its uncompressed public point
/// (`0x04 || x || y`, as `rcgen::KeyPair::public_key_raw` gives it).
pub fn p256(kid: &str, public_raw: &[u8]) -> String {
    let (x, y) = public_raw
        .get(1..65)
        .map(|point| point.split_at(32))
        .unwrap_or_default();
    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]})
    .to_string()
}
