//! A rule's verification keys, parsed once from a JWKS. Symmetric (`oct`) keys are
//! dropped: a public JWKS never holds a secret, and HMAC is never accepted.

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::failure::InvalidJwks;

/// The keys a token may be verified with.
pub struct KeySet {
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when it names one.
    alg: Option<Algorithm>,
    family: Family,
    decoding: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .finish()
    }
}

/// A JWKS read loosely: each key is judged on its own, so one key of an unknown
/// kind does not make the others unreadable.
#[derive(serde::Deserialize)]
struct JwksDocument {
    keys: Vec<Value>,
}

impl Key {
    /// One JWK, or why it cannot verify a token here.
    fn from_value(value: Value) -> Result<Self, String> {
        let jwk: Jwk =
            serde_json::from_value(value).map_err(|e| format!("not a JWK we know: {e}"))?;
        let (family, curve_alg) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                check_rsa(&rsa.n, &rsa.e)?;
                (Family::Rsa, None)
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => (Family::Ec, Some(Algorithm::ES256)),
                EllipticCurve::P384 => (Family::Ec, Some(Algorithm::ES384)),
                ref other => return Err(format!("EC curve {other:?} is not verified here")),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => (Family::Ed, None),
                ref other => return Err(format!("OKP curve {other:?} is not a signature key")),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err("a symmetric (oct) key: HMAC is never accepted".into());
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => curve_alg,
            Some(named) => {
                let alg = key_algorithm(named)
                    .filter(|a| family_of(*a) == Some(family))
                    .ok_or_else(|| {
                        format!("alg {named:?} is not a signature algorithm of this key")
                    })?;
                if curve_alg.is_some_and(|c| c != alg) {
                    return Err(format!("alg {named:?} does not fit the key's curve"));
                }
                Some(alg)
            }
        };
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        Ok(Self {
            kid: jwk.common.key_id,
            alg,
            family,
            decoding,
        })
    }
}

fn key_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    Some(match named {
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// An RSA public key verification can use: a 2048 to 8192 bit modulus (what
/// aws-lc accepts), an odd exponent above 1.
fn check_rsa(n: &str, e: &str) -> Result<(), String> {
    let decode = |what: &str, text: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|err| format!("RSA {what} is not base64url: {err}"))
    };
    let n = decode("n", n)?;
    let e = decode("e", e)?;
    let significant = |bytes: &[u8]| {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        bytes[start..].to_vec()
    };
    let n = significant(&n);
    let e = significant(&e);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "RSA modulus of {bits} bits (2048 to 8192 are verified)"
        ));
    }
    let odd = |bytes: &[u8]| bytes.last().is_some_and(|b| b & 1 == 1);
    if !odd(&n) || !odd(&e) || e.as_slice() == [1] || e.len() > 4 {
        return Err("RSA numbers that make no public key".into());
    }
    Ok(())
}

impl KeySet {
    /// Parses a JWKS. A key this proxy cannot verify with (an unknown `kty`, a
    /// curve outside P-256, P-384 and Ed25519, an `alg` outside the allow-list,
    /// an RSA key with numbers that do not make a 2048 to 8192 bit key, a
    /// symmetric key) is skipped and logged, as Envoy and JOSE libraries do: the
    /// rest of the set applies, so a refresh that adds such a key still removes
    /// the keys the provider dropped. A set with no usable key is an error.
    pub fn from_jwks(json: &str) -> Result<Self, InvalidJwks> {
        let set: JwksDocument =
            serde_json::from_str(json).map_err(|e| InvalidJwks(format!("not a JWKS: {e}")))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, value) in set.keys.into_iter().enumerate() {
            let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
            match Key::from_value(value) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    tracing::warn!(key = i, kid = ?kid, "JWKS key skipped: {reason}");
                    skipped.push(format!("key {i} ({kid:?}): {reason}"));
                }
            }
        }
        if keys.is_empty() {
            let mut reason = "no usable RSA, EC (P-256, P-384) or Ed25519 public key".to_owned();
            if !skipped.is_empty() {
                reason = format!("{reason}; skipped: {}", skipped.join("; "));
            }
            return Err(InvalidJwks(reason));
        }
        Ok(Self { keys })
    }

    /// The `kid`s of the usable keys, in order (`None` for a key without one).
    pub fn kids(&self) -> Vec<Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref()).collect()
    }

    /// The keys that may have signed a token with header `kid` and `alg`.
    pub(crate) fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &DecodingKey> {
        let family = family_of(alg);
        self.keys
            .iter()
            .filter(move |k| Some(k.family) == family)
            .filter(move |k| k.alg.is_none_or(|a| a == alg))
            .filter(move |k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .map(|k| &k.decoding)
    }
}

/// The allow-list: RS/PS 256/384/512, ES256/384, EdDSA. Never `none`, never HMAC.
pub(crate) fn allowed(alg: Algorithm) -> bool {
    family_of(alg).is_some()
}

fn family_of(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Ed),
        HS256 | HS384 | HS512 => None,
    }
}
