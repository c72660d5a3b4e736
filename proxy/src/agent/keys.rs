//! Keys are generated on the node and never leave it: only CSRs do.

use rustls_pki_types::CertificateDer;

use super::AgentError;

pub(crate) struct NewKey {
    pub(crate) pkcs8: Vec<u8>,
    /// DER PKCS#10 with an empty subject and no extensions: the issuer decides the rest.
    pub(crate) csr: Vec<u8>,
}

impl NewKey {
    pub(crate) fn generate() -> Result<Self, AgentError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AgentError::Io(format!("key generation: {e}")))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AgentError::Io(format!("CSR: {e}")))?;
        Ok(Self {
            pkcs8: key.serialize_der(),
            csr: csr.der().to_vec(),
        })
    }
}

pub(crate) fn pem_encode(der: &CertificateDer<'_>) -> String {
    meshward_issuer::pem::certificate(der)
}

/// The certificates of a PEM text (none when it holds none).
pub(crate) fn pem_certificates(text: &str) -> Vec<CertificateDer<'static>> {
    meshward_issuer::pem::certificates(text).unwrap_or_default()
}
