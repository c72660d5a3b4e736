//! Trust bundles: the SPIFFE format (an RFC 7517 JWK Set with `x509-svid` keys
//! carrying `x5c` and no `kid`, `jwt-svid` keys with `kid`, `spiffe_sequence`,
//! `spiffe_refresh_hint`) and PEM; and the bundles of every trust domain a party
//! trusts, keyed by trust domain ([`BundleSet`]).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

/// `spiffe_refresh_hint` when a bundle gives none: SPIRE's default, 5 minutes.
const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

use crate::TrustDomain;
use crate::pem;

/// The authorities that verify SVIDs of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub trust_domain: TrustDomain,
    pub x509_authorities: Vec<CertificateDer<'static>>,
    pub jwt_keys: Vec<JwtPublicKey>,
    /// Increases on every change of content.
    pub sequence: u64,
    pub refresh_hint: Duration,
}

/// A JWT-SVID signing key's public half, as a bundle publishes it: meshward's
/// own are P-256; a foreign domain's may be P-384 or RSA (SPIRE's
/// `jwt_key_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPublicKey {
    pub kid: String,
    pub key: PublicJwk,
}

impl JwtPublicKey {
    /// A P-256 key from its coordinates (base64url, no padding).
    pub fn p256(kid: impl Into<String>, x: impl Into<String>, y: impl Into<String>) -> Self {
        Self {
            kid: kid.into(),
            key: PublicJwk::Ec {
                crv: "P-256".into(),
                x: x.into(),
                y: y.into(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid bundle for {trust_domain}: {reason}")]
pub struct InvalidBundle {
    pub trust_domain: TrustDomain,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(rename = "use", default)]
    use_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
}

impl Bundle {
    /// An empty bundle of `trust_domain` (sequence 0, the default refresh hint).
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_keys: Vec::new(),
            sequence: 0,
            refresh_hint: DEFAULT_REFRESH_HINT,
        }
    }

    /// The SPIFFE bundle format (JSON).
    pub fn to_spiffe_json(&self) -> String {
        let mut keys = Vec::new();
        for cert in &self.x509_authorities {
            // the certificate's own key: RFC 7517 §4.7 has the two match, and
            // go-jose (so SPIRE) refuses a bundle where they do not. A key no JWK
            // names (DSA, GOST) verifies nothing here either: left out.
            let Some(key) = PublicJwk::of_certificate(cert) else {
                continue;
            };
            let mut jwk = key.to_jwk("x509-svid", None);
            jwk.x5c = Some(vec![STANDARD.encode(cert.as_ref())]);
            keys.push(jwk);
        }
        for key in &self.jwt_keys {
            keys.push(key.key.to_jwk("jwt-svid", Some(key.kid.clone())));
        }
        let set = JwkSet {
            keys,
            spiffe_sequence: Some(self.sequence),
            spiffe_refresh_hint: Some(self.refresh_hint.as_secs()),
        };
        serde_json::to_string_pretty(&set).unwrap_or_default()
    }

    /// The X.509 authorities as concatenated PEM certificates.
    pub fn to_pem(&self) -> String {
        self.x509_authorities.iter().map(pem::certificate).collect()
    }

    /// Concatenated DER authorities, as the Workload API carries them.
    pub fn x509_der(&self) -> Vec<u8> {
        self.x509_authorities
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect()
    }

    /// A JWKS with only the `jwt-svid` keys, as the Workload API carries them.
    pub fn jwt_jwks(&self) -> String {
        let only_jwt = Self {
            x509_authorities: Vec::new(),
            ..self.clone()
        };
        only_jwt.to_spiffe_json()
    }

    /// Parses a SPIFFE bundle of `trust_domain`. Keys of unknown `kty`/`use` are
    /// ignored, as the spec asks; an `x509-svid` key takes its first `x5c` value.
    pub fn from_spiffe_json(trust_domain: &TrustDomain, json: &str) -> Result<Self, InvalidBundle> {
        let invalid = |reason: String| InvalidBundle {
            trust_domain: trust_domain.clone(),
            reason,
        };
        let set: JwkSet = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        let mut bundle = Self {
            sequence: set.spiffe_sequence.unwrap_or(0),
            refresh_hint: set
                .spiffe_refresh_hint
                .map_or(DEFAULT_REFRESH_HINT, Duration::from_secs),
            ..Self::new(trust_domain.clone())
        };
        for (i, key) in set.keys.into_iter().enumerate() {
            match key.use_.as_str() {
                "x509-svid" => {
                    let Some(first) = key.x5c.as_ref().and_then(|c| c.first()) else {
                        continue;
                    };
                    let der = STANDARD
                        .decode(first)
                        .map_err(|e| invalid(format!("keys[{i}].x5c[0]: {e}")))?;
                    x509_parser::parse_x509_certificate(&der).map_err(|e| {
                        invalid(format!("keys[{i}].x5c[0]: not a certificate: {e}"))
                    })?;
                    let der = CertificateDer::from(der);
                    // a key no JWK names (DSA, GOST, an unknown curve) is a key of
                    // unknown type, ignored (and verifies nothing here anyway):
                    // what is read is what `to_spiffe_json` can write back
                    if PublicJwk::of_certificate(&der).is_none() {
                        continue;
                    }
                    bundle.x509_authorities.push(der);
                }
                "jwt-svid" => {
                    let Some(public) = PublicJwk::of_jwt_svid_key(&key)
                        .map_err(|reason| invalid(format!("keys[{i}]: {reason}")))?
                    else {
                        continue;
                    };
                    let kid = key
                        .kid
                        .ok_or_else(|| invalid(format!("keys[{i}]: a jwt-svid key needs a kid")))?;
                    bundle.jwt_keys.push(JwtPublicKey { kid, key: public });
                }
                _ => {}
            }
        }
        Ok(bundle)
    }

    /// Parses concatenated PEM certificates (e.g. `bundle set -format pem`).
    pub fn from_pem(trust_domain: &TrustDomain, text: &str) -> Result<Self, InvalidBundle> {
        let x509_authorities = pem::certificates(text).map_err(|e| InvalidBundle {
            trust_domain: trust_domain.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            x509_authorities,
            ..Self::new(trust_domain.clone())
        })
    }
}

/// A public key as a JWK gives it (RFC 7518 §6), values base64url without
/// padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicJwk {
    /// `kty: EC`: `crv` (`P-256`, `P-384` or `P-521`), `x`, `y`.
    Ec { crv: String, x: String, y: String },
    /// `kty: RSA`: the modulus `n` and the exponent `e`, big-endian, no leading zero.
    Rsa { n: String, e: String },
    /// `kty: OKP`: `crv` (`Ed25519`), `x`.
    Okp { crv: String, x: String },
}

impl PublicJwk {
    /// The key of a certificate; `None` for a kind no JWK names (DSA, GOST) or a
    /// certificate that does not parse.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Option<Self> {
        use x509_parser::public_key::PublicKey;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
        let spki = parsed.public_key();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match spki.algorithm.algorithm.to_id_string().as_str() {
            // id-ecPublicKey, its curve named in the parameters
            "1.2.840.10045.2.1" => {
                let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
                let (crv, len) = match curve.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => ("P-256", 32),
                    "1.3.132.0.34" => ("P-384", 48),
                    "1.3.132.0.35" => ("P-521", 66),
                    _ => return None,
                };
                let point = spki.subject_public_key.data.as_ref();
                (point.len() == 1 + 2 * len && point[0] == 4).then(|| Self::Ec {
                    crv: crv.into(),
                    x: b64(&point[1..=len]),
                    y: b64(&point[1 + len..]),
                })
            }
            "1.2.840.113549.1.1.1" => match spki.parsed().ok()? {
                PublicKey::RSA(rsa) => Some(Self::Rsa {
                    n: b64(unsigned(rsa.modulus)),
                    e: b64(unsigned(rsa.exponent)),
                }),
                _ => None,
            },
            "1.3.101.112" => Some(Self::Okp {
                crv: "Ed25519".into(),
                x: b64(spki.subject_public_key.data.as_ref()),
            }),
            _ => None,
        }
    }

    /// A `jwt-svid` entry's key: EC (P-256, P-384, P-521) or RSA; `Ok(None)` for
    /// another kind (ignored, as the SPIFFE bundle format asks); `Err` for a key
    /// that lacks a parameter or whose numbers do not fit its curve.
    fn of_jwt_svid_key(jwk: &Jwk) -> Result<Option<Self>, String> {
        let decoded = |name: &str, value: &Option<String>| {
            let value = value
                .as_deref()
                .ok_or_else(|| format!("an {} key needs {name}", jwk.kty))?;
            URL_SAFE_NO_PAD
                .decode(value)
                .map(|bytes| (value.to_owned(), bytes.len()))
                .map_err(|e| format!("{name} is not base64url: {e}"))
        };
        match jwk.kty.as_str() {
            "EC" => {
                let (x, x_len) = decoded("x", &jwk.x)?;
                let (y, y_len) = decoded("y", &jwk.y)?;
                let len = match jwk.crv.as_deref() {
                    Some("P-256") => 32,
                    Some("P-384") => 48,
                    Some("P-521") => 66,
                    None => return Err("an EC key needs crv".into()),
                    Some(_) => return Ok(None),
                };
                let crv = jwk.crv.clone().unwrap_or_default();
                if x_len != len || y_len != len {
                    return Err(format!("x and y of a {crv} key are {len} bytes each"));
                }
                Ok(Some(Self::Ec { crv, x, y }))
            }
            "RSA" => {
                let (n, _) = decoded("n", &jwk.n)?;
                let (e, _) = decoded("e", &jwk.e)?;
                Ok(Some(Self::Rsa { n, e }))
            }
            _ => Ok(None),
        }
    }

    fn to_jwk(&self, use_: &str, kid: Option<String>) -> Jwk {
        let mut jwk = Jwk {
            kty: String::new(),
            use_: use_.into(),
            kid,
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            x5c: None,
        };
        match self.clone() {
            Self::Ec { crv, x, y } => {
                jwk.kty = "EC".into();
                (jwk.crv, jwk.x, jwk.y) = (Some(crv), Some(x), Some(y));
            }
            Self::Rsa { n, e } => {
                jwk.kty = "RSA".into();
                (jwk.n, jwk.e) = (Some(n), Some(e));
            }
            Self::Okp { crv, x } => {
                jwk.kty = "OKP".into();
                (jwk.crv, jwk.x) = (Some(crv), Some(x));
            }
        }
        jwk
    }
}

/// A DER INTEGER's magnitude without its sign byte.
fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The bundles a party trusts, one per trust domain: its own and those it
/// federates with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleSet(BTreeMap<TrustDomain, Bundle>);

impl BundleSet {
    /// Adds or replaces the bundle of its trust domain.
    pub fn insert(&mut self, bundle: Bundle) {
        self.0.insert(bundle.trust_domain.clone(), bundle);
    }

    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.0.get(trust_domain)
    }

    /// The bundle that verifies SVIDs of `id`'s trust domain.
    pub fn for_id(&self, id: &crate::SpiffeId) -> Option<&Bundle> {
        self.0.get(&id.trust_domain())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bundle> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Bundle> for BundleSet {
    fn from_iter<I: IntoIterator<Item = Bundle>>(bundles: I) -> Self {
        let mut set = Self::default();
        for bundle in bundles {
            set.insert(bundle);
        }
        set
    }
}

#[cfg(test)]
mod tests;
