//! The X509-SVID leaf rules (X509-SVID.md §2-§5.2, as go-spiffe's
//! `validateLeafCertificate` applies them): exactly one URI SAN, a valid SPIFFE ID
//! with a non-root path, cA=false, and a key usage with `digitalSignature` and
//! neither `keyCertSign` nor `cRLSign`. The chain is webpki's job; these are the
//! checks a chain that verifies must still pass, whichever CA signed it.

use x509_parser::extensions::GeneralName;

use crate::id::{InvalidSpiffeId, SpiffeId};

/// Why a certificate is not an X509-SVID leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidX509Svid {
    #[error("unparsable certificate: {0}")]
    Unparsable(String),
    #[error("no URI SAN")]
    NoUriSan,
    #[error("{0} URI SANs; an SVID has exactly one")]
    ManyUriSans(usize),
    #[error(transparent)]
    SpiffeId(#[from] InvalidSpiffeId),
    #[error("{0} has no path; a leaf SVID's ID has one")]
    RootPath(SpiffeId),
    #[error("a leaf SVID must not be a CA (basicConstraints cA=true)")]
    CertificateAuthority,
    #[error("a leaf SVID must have a key usage extension with digitalSignature")]
    NoDigitalSignature,
    #[error("a leaf SVID must not have the keyCertSign or cRLSign key usage")]
    SigningKeyUsage,
}

/// Checks a leaf certificate (DER) against the X509-SVID rules and returns its
/// SPIFFE ID.
pub fn validate_x509_svid(leaf_der: &[u8]) -> Result<SpiffeId, InvalidX509Svid> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf_der)
        .map_err(|e| InvalidX509Svid::Unparsable(e.to_string()))?;
    let unparsable = |e: x509_parser::error::X509Error| InvalidX509Svid::Unparsable(e.to_string());
    let uris: Vec<&str> = cert
        .subject_alternative_name()
        .map_err(unparsable)?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let id = match uris.as_slice() {
        [] => return Err(InvalidX509Svid::NoUriSan),
        [one] => SpiffeId::parse(one)?,
        many => return Err(InvalidX509Svid::ManyUriSans(many.len())),
    };
    if id.path().is_empty() {
        return Err(InvalidX509Svid::RootPath(id));
    }
    if cert
        .basic_constraints()
        .map_err(unparsable)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(InvalidX509Svid::CertificateAuthority);
    }
    let usage = cert.key_usage().map_err(unparsable)?;
    let usage = usage.map(|u| *u.value);
    match usage {
        Some(u) if u.key_cert_sign() || u.crl_sign() => Err(InvalidX509Svid::SigningKeyUsage),
        Some(u) if u.digital_signature() => Ok(id),
        _ => Err(InvalidX509Svid::NoDigitalSignature),
    }
}

#[cfg(test)]
mod tests;
