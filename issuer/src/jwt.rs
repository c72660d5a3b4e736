//! JWT-SVIDs (JWT-SVID.md): ES256, `kid` always set (every client requires it),
//! `typ: JWT`, claims `sub`, `aud`, `exp`, `iat`; nothing else in the header.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::error::{CaError, SigningError};
use crate::keys::CaKey;
use meshward_spiffe::{JwtPublicKey, SpiffeId};

/// One JWT signing key (P-256) with its key ID; the key signs wherever its key
/// manager keeps it.
#[derive(Clone)]
pub struct JwtKey {
    kid: String,
    key: Arc<dyn CaKey>,
}

impl JwtKey {
    pub(crate) fn new(key: Arc<dyn CaKey>, kid: &str) -> Result<Self, CaError> {
        if kid.is_empty() {
            return Err(CaError::crypto("JWT key")("empty key ID".into()));
        }
        if key.public_key().len() != 65 {
            return Err(CaError::crypto("JWT key")("not a P-256 key".into()));
        }
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public point's coordinates, base64url (as a JWK and the datastore
    /// carry them).
    pub fn coordinates(&self) -> (String, String) {
        let (x, y) = self.key.public_key()[1..].split_at(32);
        (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
    }

    pub fn public(&self) -> JwtPublicKey {
        let (x, y) = self.coordinates();
        JwtPublicKey::p256(self.kid.clone(), x, y)
    }
}

/// The JOSE header: exactly these fields.
#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
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
    let header = JwsHeader {
        alg: "ES256",
        kid: &key.kid,
        typ: "JWT",
    };
    let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(&claims)?);
    let signature = key
        .key
        .sign(signing_input.as_bytes())
        .map_err(|e| SigningError::Ca(CaError::crypto("signing a JWT-SVID")(Box::new(e))))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// One part of a compact JWS: base64url(JSON).
fn b64_json<T: Serialize>(value: &T) -> Result<String, SigningError> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| SigningError::Ca(CaError::crypto("encoding a JWT-SVID")(e.into())))
}
