//! Test token issuers: signing keys, their JWKS, their tokens.

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

/// A P-256 signing key of a test token issuer: its JWKS and its ES256 tokens.
pub struct P256Signer {
    key: jsonwebtoken::EncodingKey,
    public_raw: Vec<u8>,
    kid: String,
}

impl P256Signer {
    pub fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        Self {
            key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            public_raw: pair.public_key_raw().to_vec(),
            kid: kid.into(),
        }
    }

    /// The public key as a JWKS.
    pub fn jwks(&self) -> String {
        p256(&self.kid, &self.public_raw)
    }

    /// The public key, uncompressed (what a classic attack reuses as an HMAC secret).
    pub fn public_raw(&self) -> &[u8] {
        &self.public_raw
    }

    /// `claims` signed with ES256, the header naming this key.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("ES256 signing")
    }
}

/// Seconds since the Unix epoch, for `exp`, `nbf` and `iat`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
