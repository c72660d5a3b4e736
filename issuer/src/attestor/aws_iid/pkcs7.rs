//! The `rsa2048` signature: a PKCS#7 SignedData that carries the identity
//! document as its content. Verified here, and the content it covers returned:
//! that content, and nothing else, is what the attestor then parses.
//!
//! Certificates inside the envelope are ignored: the one key that counts is AWS's
//! for the document's region, from the issuer's own certificate set.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use cms::cert::x509::der::asn1::{ObjectIdentifier, OctetString};
use cms::cert::x509::der::oid::db::rfc5911::{
    ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA,
};
use cms::cert::x509::der::oid::db::rfc5912::{
    ID_SHA_256, RSA_ENCRYPTION, SHA_256_WITH_RSA_ENCRYPTION,
};
use cms::cert::x509::der::{Decode, Encode};
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerInfo};

use super::{IidError, ber};

/// A SignedData envelope, read but not yet verified.
pub(super) struct Envelope {
    /// The encapsulated content: the bytes the signature covers.
    pub(super) content: Vec<u8>,
    signer: SignerInfo,
}

/// Reads the base64 `rsa2048` value as IMDS gives it (no PEM armour, lines
/// broken) into its envelope.
pub(super) fn open(rsa2048: &str) -> Result<Envelope, IidError> {
    use base64::Engine as _;
    let compact: String = rsa2048
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let ber = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| IidError::Malformed(format!("rsa2048 signature: not base64: {e}")))?;
    let der = ber::to_der(&ber)?;
    let malformed = |e: cms::cert::x509::der::Error| {
        IidError::Malformed(format!("rsa2048 signature: not PKCS#7 SignedData: {e}"))
    };
    let info = ContentInfo::from_der(&der).map_err(malformed)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(IidError::Malformed(
            "rsa2048 signature: not PKCS#7 SignedData".into(),
        ));
    }
    let signed: SignedData = info.content.decode_as().map_err(malformed)?;
    if signed.encap_content_info.econtent_type != ID_DATA {
        return Err(IidError::Malformed(
            "rsa2048 signature: its content is not data".into(),
        ));
    }
    let content = signed
        .encap_content_info
        .econtent
        .ok_or_else(|| {
            IidError::Malformed("rsa2048 signature: detached (it carries no document)".into())
        })?
        .decode_as::<OctetString>()
        .map_err(malformed)?
        .into_bytes();
    let mut signers = signed.signer_infos.0.into_vec();
    let (Some(signer), true) = (signers.pop(), signers.is_empty()) else {
        return Err(IidError::Malformed(
            "rsa2048 signature: expected exactly one signer".into(),
        ));
    };
    Ok(Envelope { content, signer })
}

impl Envelope {
    /// Verifies the signature over the content with `key` (an RSA public key,
    /// PKCS#1 DER): SHA-256 and RSA PKCS#1 v1.5, as AWS signs. With signed
    /// attributes (AWS's case), those are what is signed, and their message
    /// digest must be the content's.
    pub(super) fn verify(&self, key: &[u8]) -> Result<(), IidError> {
        let signer = &self.signer;
        if signer.digest_alg.oid != ID_SHA_256 {
            return Err(IidError::BadSignature(format!(
                "digest algorithm {} is not SHA-256",
                signer.digest_alg.oid
            )));
        }
        let algorithm = signer.signature_algorithm.oid;
        if algorithm != RSA_ENCRYPTION && algorithm != SHA_256_WITH_RSA_ENCRYPTION {
            return Err(IidError::BadSignature(format!(
                "signature algorithm {algorithm} is not RSA"
            )));
        }
        let signed_bytes = match &signer.signed_attrs {
            None => self.content.clone(),
            Some(attrs) => {
                self.check_attributes(attrs)?;
                // DER of the SET OF (tag 0x31), not the [0] IMPLICIT form (RFC 5652 5.4)
                attrs.to_der().map_err(|e| {
                    IidError::Malformed(format!("rsa2048 signature: signed attributes: {e}"))
                })?
            }
        };
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
            .verify(&signed_bytes, signer.signature.as_bytes())
            .map_err(|_| {
                IidError::BadSignature(
                    "the signature does not verify with AWS's certificate for the region".into(),
                )
            })
    }

    /// The content type must be data and the message digest the content's:
    /// otherwise the signature covers some other document.
    fn check_attributes(&self, attrs: &cms::signed_data::SignedAttributes) -> Result<(), IidError> {
        let single = |oid: ObjectIdentifier| {
            let mut found = attrs.iter().filter(|a| a.oid == oid);
            match (found.next(), found.next()) {
                (Some(a), None) if a.values.len() == 1 => Ok(a.values.get(0).cloned()),
                _ => Err(IidError::BadSignature(format!(
                    "signed attribute {oid}: expected exactly one"
                ))),
            }
        };
        let bad = |what: &str| IidError::BadSignature(format!("signed attribute {what}"));
        let content_type = single(ID_CONTENT_TYPE)?
            .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
            .ok_or_else(|| bad("contentType is unreadable"))?;
        if content_type != ID_DATA {
            return Err(bad("contentType is not data"));
        }
        let signed_digest = single(ID_MESSAGE_DIGEST)?
            .and_then(|v| v.decode_as::<OctetString>().ok())
            .ok_or_else(|| bad("messageDigest is unreadable"))?;
        let digest = digest::digest(&digest::SHA256, &self.content);
        if signed_digest.as_bytes() != digest.as_ref() {
            return Err(IidError::BadSignature(
                "the signature covers another document (message digest differs)".into(),
            ));
        }
        Ok(())
    }
}
