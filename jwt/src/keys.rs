//! A rule's verification keys, parsed once from a JWKS. Symmetric (`oct`) keys are
//! dropped: a public JWKS never holds a secret, and HMAC is never accepted.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

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
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref()).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS; a key that cannot be used (unknown type, bad numbers) is an
    /// error rather than silently missing, and a set with no usable key is too.
    pub fn from_jwks(json: &str) -> Result<Self, InvalidJwks> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| InvalidJwks(format!("not a JWKS: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let kid = jwk.common.key_id.clone();
            let decoding =
                DecodingKey::from_jwk(jwk).map_err(|e| InvalidJwks(format!("key {kid:?}: {e}")))?;
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.push(Key {
                kid,
                alg,
                family,
                decoding,
            });
        }
        if keys.is_empty() {
            return Err(InvalidJwks("no RSA, EC or OKP public key".into()));
        }
        Ok(Self { keys })
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
