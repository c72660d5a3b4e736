//! Where the CA keys live and where their signatures are made: one interface
//! ([`KeyManager`], [`CaKey`]), two implementations.
//!
//! - [`files`]: PKCS#8 PEM files in the generation's directory
//!   (`<data_dir>/ca/<generation>/{ca.key, jwt.key}`, mode 0600): the layout every
//!   data directory already has.
//! - [`pkcs11`]: keys generated inside a PKCS#11 token (an HSM, a cloud HSM such as
//!   AWS CloudHSM, a KMS's PKCS#11 provider, SoftHSM2 in tests), never extractable;
//!   every signature is made by the token.
//!
//! Every CA key is ECDSA P-256 and every signature ECDSA with SHA-256 over the
//! message, returned as the fixed-size `r || s` (what JWS ES256 carries and what
//! `CKM_ECDSA` returns); [`CaSigner`] DER-encodes it for X.509.

pub mod files;
pub mod pkcs11;

use std::path::PathBuf;
use std::sync::Arc;

/// What a key operation failed on (a parser's or the token's error).
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// The two keys of a CA generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs the CA certificate (self-signed) and every X509-SVID.
    Ca,
    /// Signs JWT-SVIDs.
    Jwt,
}

impl KeyRole {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ca => "ca",
            Self::Jwt => "jwt",
        }
    }
}

/// Makes, finds and destroys the CA keys of generations, by generation ID and role.
pub trait KeyManager: Send + Sync {
    /// What the logs and errors call it: `files` or `pkcs11 token "<label>"`.
    fn describe(&self) -> String;

    /// A new P-256 key for `generation`'s `role`.
    fn generate(&self, generation: &str, role: KeyRole) -> Result<Arc<dyn CaKey>, KeyError>;

    /// The key made earlier (by this process or a previous one).
    fn find(&self, generation: &str, role: KeyRole) -> Result<Arc<dyn CaKey>, KeyError>;

    /// Destroys both keys of `generation`; keys already gone are not an error.
    fn destroy(&self, generation: &str) -> Result<(), KeyError>;
}

/// One P-256 signing key, wherever it lives.
pub trait CaKey: Send + Sync {
    /// The public key as an uncompressed SEC1 point: `0x04 || x || y`.
    fn public_key(&self) -> &[u8];

    /// ECDSA P-256 with SHA-256 over `message`: `r || s`, 32 bytes each.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError>;
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a P-256 PKCS#8 key: {source}", path.display())]
    BadKeyFile { path: PathBuf, source: Cause },
    #[error(
        "{manager}: no {role} key of CA generation {generation} (made with another key manager?)"
    )]
    NotFound {
        manager: String,
        generation: String,
        role: &'static str,
    },
    #[error("{manager}: a key labelled {label:?} exists already")]
    Exists { manager: String, label: String },
    #[error("PKCS#11 library {}: {source}", path.display())]
    Library {
        path: PathBuf,
        source: cryptoki::error::Error,
    },
    #[error("PKCS#11: no token labelled {label:?} (tokens: {present})")]
    NoToken { label: String, present: String },
    #[error("PKCS#11 pin: {what}")]
    Pin { what: String },
    #[error("PKCS#11 token {token:?}: {what}: {source}")]
    Token {
        token: String,
        what: &'static str,
        source: cryptoki::error::Error,
    },
    #[error("{what}: {source}")]
    Crypto { what: &'static str, source: Cause },
}

/// A [`CaKey`] as rcgen's signing key: certificates are signed through it.
#[derive(Clone)]
pub struct CaSigner(pub Arc<dyn CaKey>);

impl rcgen::PublicKeyData for CaSigner {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let raw = self.0.sign(msg).map_err(|e| {
            tracing::warn!("CA signature failed: {e}");
            rcgen::Error::RemoteKeyError
        })?;
        Ok(der_signature(&raw))
    }
}

/// `r || s` as the DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`
/// X.509 carries.
pub fn der_signature(raw: &[u8; 64]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, bytes: &[u8]) {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let bytes = &bytes[start..];
        let pad = bytes[0] & 0x80 != 0;
        out.push(0x02);
        out.push((bytes.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
    }
    let mut body = Vec::with_capacity(72);
    integer(&mut body, &raw[..32]);
    integer(&mut body, &raw[32..]);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0x30);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}

/// Verifies a raw `r || s` signature against `key`'s public key (tests, and the
/// self-check after a key is made).
pub fn verify(key: &dyn CaKey, message: &[u8], raw: &[u8; 64]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        key.public_key(),
    )
    .verify(message, raw)
    .is_ok()
}

#[cfg(test)]
mod tests;
