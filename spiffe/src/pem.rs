//! PEM, the one implementation the workspace uses: encode a DER block, read the
//! certificates of a PEM text.

use rustls_pki_types::CertificateDer;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPem {
    #[error("invalid PEM: {0}")]
    Malformed(String),
    #[error("no CERTIFICATE block")]
    NoCertificate,
}

/// `-----BEGIN <label>-----`, base64 in 64-column lines, `-----END <label>-----`.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn certificate(der: &CertificateDer<'_>) -> String {
    encode("CERTIFICATE", der.as_ref())
}

/// Every `CERTIFICATE` block of a PEM text, in order; an error if there is none.
pub fn certificates(text: &str) -> Result<Vec<CertificateDer<'static>>, InvalidPem> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| InvalidPem::Malformed(e.to_string()))?;
        if pem.label == "CERTIFICATE" {
            out.push(CertificateDer::from(pem.contents));
        }
    }
    if out.is_empty() {
        return Err(InvalidPem::NoCertificate);
    }
    Ok(out)
}

/// The first block labelled `label` (a key, say), as DER.
pub fn block(text: &str, label: &str) -> Result<Vec<u8>, InvalidPem> {
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| InvalidPem::Malformed(e.to_string()))?;
        if pem.label == label {
            return Ok(pem.contents);
        }
    }
    Err(InvalidPem::Malformed(format!("no {label} block")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = super::certificate(cert.der());
        assert_eq!(pem, cert.pem().replace("\r\n", "\n"));
        assert_eq!(super::certificates(&(pem.clone() + &pem)).unwrap().len(), 2);
        assert!(super::certificates("nothing").is_err());
        let key_pem = key.serialize_pem();
        assert_eq!(
            super::block(&key_pem, "PRIVATE KEY").unwrap(),
            key.serialize_der()
        );
        assert!(super::block(&pem, "PRIVATE KEY").is_err());
    }
}
