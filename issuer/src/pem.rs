//! PEM, the one implementation the workspace uses: encode a DER block, read the
//! certificates of a PEM text.

use rustls_pki_types::CertificateDer;

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
pub fn certificates(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| format!("invalid PEM: {e}"))?;
        if pem.label == "CERTIFICATE" {
            out.push(CertificateDer::from(pem.contents));
        }
    }
    if out.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(out)
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
    }
}
