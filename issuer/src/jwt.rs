//! JWT-SVIDs (JWT-SVID.md): ES256, `kid` always set (every client requires it),
//! `typ: JWT`, claims `sub`, `aud`, `exp`, `iat`; nothing else in the header.

use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::error::{CaError, SigningError};
use meshward_spiffe::{JwtPublicKey, SpiffeId, pem};

/// One JWT signing key (P-256) with its key ID.
pub struct JwtKey {
    kid: String,
    pkcs8: Vec<u8>,
    encoding: EncodingKey,
    /// Uncompressed point: 0x04 || x || y.
    public: Vec<u8>,
}

impl JwtKey {
    pub(crate) fn generate() -> Result<Self, CaError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| CaError::crypto("JWT key generation")(e.into()))?;
        Self::from_pkcs8(doc.as_ref(), crate::random::hex_token(16)?)
    }

    fn from_pkcs8(pkcs8: &[u8], kid: String) -> Result<Self, CaError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| CaError::crypto("JWT key: not a P-256 PKCS#8 key")(e.into()))?;
        Ok(Self {
            kid,
            public: pair.public_key().as_ref().to_vec(),
            encoding: EncodingKey::from_ec_der(pkcs8),
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// The key as standard PKCS#8 PEM (the key ID is stored beside it).
    pub(crate) fn to_pkcs8_pem(&self) -> String {
        pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    pub(crate) fn from_pkcs8_pem(text: &str, kid: &str) -> Result<Self, CaError> {
        let der =
            pem::block(text, "PRIVATE KEY").map_err(|e| CaError::crypto("JWT key")(e.into()))?;
        if kid.is_empty() {
            return Err(CaError::crypto("JWT key")("empty key ID".into()));
        }
        Self::from_pkcs8(&der, kid.to_owned())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public point's coordinates, base64url (as a JWK and the datastore
    /// carry them).
    pub fn coordinates(&self) -> (String, String) {
        let (x, y) = self.public[1..].split_at(32);
        (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
    }

    pub fn public(&self) -> JwtPublicKey {
        let (x, y) = self.coordinates();
        JwtPublicKey::p256(self.kid.clone(), x, y)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    /// Only with `jwt_issuer` (SPIRE's): JWT-SVIDs carry no `iss` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    sub: &'a str,
    aud: Audience<'a>,
    exp: u64,
    iat: u64,
}

/// One audience is a string, several a list (as go-jose and SPIRE write it).
#[derive(Serialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

/// Mints a JWT-SVID; `ttl` is already capped by the caller (entry, default, CA life).
/// `issuer`: the `iss` claim (`jwt_issuer`), none by default.
pub fn mint_jwt_svid(
    key: &JwtKey,
    spiffe_id: &SpiffeId,
    issuer: Option<&str>,
    audience: &[String],
    ttl: Duration,
    now: SystemTime,
) -> Result<String, SigningError> {
    if audience.is_empty() || audience.iter().any(String::is_empty) {
        return Err(SigningError::InvalidRequest(
            "audience must be specified".into(),
        ));
    }
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        iss: issuer,
        sub: spiffe_id.as_str(),
        aud: match audience {
            [one] => Audience::One(one),
            many => Audience::Many(many),
        },
        exp: iat + ttl.as_secs().max(1),
        iat,
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, &claims, &key.encoding)
        .map_err(|e| SigningError::Ca(CaError::crypto("signing a JWT-SVID")(e.into())))
}
