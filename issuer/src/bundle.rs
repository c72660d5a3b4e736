//! Trust bundles: the SPIFFE format (an RFC 7517 JWK Set with `x509-svid` keys
//! carrying `x5c` and no `kid`, `jwt-svid` keys with `kid`, `spiffe_sequence`,
//! `spiffe_refresh_hint`) and PEM.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::ca::pem_encode;
use crate::jwt::JwtPublicKey;
use meshward_spiffe::validate_trust_domain;

/// The authorities that verify SVIDs of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub trust_domain: String,
    pub x509_authorities: Vec<CertificateDer<'static>>,
    pub jwt_keys: Vec<JwtPublicKey>,
    /// Increases on every change of content.
    pub sequence: u64,
    pub refresh_hint: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid bundle for {trust_domain}: {reason}")]
pub struct InvalidBundle {
    pub trust_domain: String,
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
    x5c: Option<Vec<String>>,
}

impl Bundle {
    /// The SPIFFE bundle format (JSON).
    pub fn to_spiffe_json(&self) -> String {
        let mut keys = Vec::new();
        for cert in &self.x509_authorities {
            let (x, y) = ec_coordinates(cert).unwrap_or_default();
            keys.push(Jwk {
                kty: "EC".into(),
                use_: "x509-svid".into(),
                kid: None,
                crv: Some("P-256".into()),
                x: Some(x),
                y: Some(y),
                x5c: Some(vec![STANDARD.encode(cert.as_ref())]),
            });
        }
        for key in &self.jwt_keys {
            keys.push(Jwk {
                kty: "EC".into(),
                use_: "jwt-svid".into(),
                kid: Some(key.kid.clone()),
                crv: Some("P-256".into()),
                x: Some(key.x.clone()),
                y: Some(key.y.clone()),
                x5c: None,
            });
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
        self.x509_authorities.iter().map(pem_encode).collect()
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
    pub fn from_spiffe_json(trust_domain: &str, json: &str) -> Result<Self, InvalidBundle> {
        let invalid = |reason: String| InvalidBundle {
            trust_domain: trust_domain.to_owned(),
            reason,
        };
        validate_trust_domain(trust_domain).map_err(|r| invalid(r.into()))?;
        let set: JwkSet = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        let mut bundle = Self {
            trust_domain: trust_domain.to_owned(),
            x509_authorities: Vec::new(),
            jwt_keys: Vec::new(),
            sequence: set.spiffe_sequence.unwrap_or(0),
            refresh_hint: Duration::from_secs(set.spiffe_refresh_hint.unwrap_or(300)),
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
                    bundle.x509_authorities.push(CertificateDer::from(der));
                }
                "jwt-svid" if key.kty == "EC" => {
                    let kid = key
                        .kid
                        .ok_or_else(|| invalid(format!("keys[{i}]: a jwt-svid key needs a kid")))?;
                    let (Some(x), Some(y)) = (key.x, key.y) else {
                        return Err(invalid(format!("keys[{i}]: an EC key needs x and y")));
                    };
                    bundle.jwt_keys.push(JwtPublicKey { kid, x, y });
                }
                _ => {}
            }
        }
        Ok(bundle)
    }

    /// Parses concatenated PEM certificates (e.g. `bundle set -format pem`).
    pub fn from_pem(trust_domain: &str, pem: &str) -> Result<Self, InvalidBundle> {
        let invalid = |reason: String| InvalidBundle {
            trust_domain: trust_domain.to_owned(),
            reason,
        };
        validate_trust_domain(trust_domain).map_err(|r| invalid(r.into()))?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            x509_authorities: crate::ca::pem_certificates(pem).map_err(invalid)?,
            jwt_keys: Vec::new(),
            sequence: 0,
            refresh_hint: Duration::from_secs(300),
        })
    }
}

/// The P-256 point of a certificate's key, base64url.
fn ec_coordinates(cert: &CertificateDer<'_>) -> Option<(String, String)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let point = parsed.public_key().subject_public_key.data.as_ref();
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some((
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..]),
    ))
}
