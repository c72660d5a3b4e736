//! Keys are generated on the node and never leave it: only CSRs do.

use super::AgentError;

pub(crate) struct NewKey {
    pub(crate) pkcs8: Vec<u8>,
    /// DER PKCS#10 with an empty subject and no extensions: the issuer decides the rest.
    pub(crate) csr: Vec<u8>,
}

impl NewKey {
    pub(crate) fn generate() -> Result<Self, AgentError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        Ok(Self {
            pkcs8: key.serialize_der(),
            csr: csr.der().to_vec(),
        })
    }
}
