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
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

pub(crate) fn pem_certificates(text: &str) -> Vec<CertificateDer<'static>> {
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.contents))
        .collect()
}
