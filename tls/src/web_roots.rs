//! The roots an HTTPS fetch from the web trusts (an `https_web` bundle endpoint, a
//! JWKS, an OpenID discovery document): the system's, a CA file's, or both. One
//! builder for every such fetch, so a CA file means the same everywhere.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;

/// Which roots.
#[derive(Debug, Clone, Copy)]
pub enum WebRoots<'a> {
    /// The system's (its CA store, as `rustls-native-certs` finds it).
    System,
    /// Only the certificates of this PEM file: a private CA, nothing else.
    Only(&'a Path),
    /// The system's and this PEM file's.
    SystemAnd(&'a Path),
}

/// A CA file that cannot serve as roots.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct CaFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// The roots `which` names. A CA file that cannot be read, is not PEM, or holds
/// no certificate is an error: it would otherwise trust nothing, or the system
/// alone, without a word.
pub fn web_roots(which: WebRoots<'_>) -> Result<RootCertStore, CaFileError> {
    let mut roots = RootCertStore::empty();
    if matches!(which, WebRoots::System | WebRoots::SystemAnd(_)) {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("system roots: {e}");
        }
        roots.add_parsable_certificates(found.certs);
    }
    if let WebRoots::Only(path) | WebRoots::SystemAnd(path) = which {
        let failed = |reason: String| CaFileError {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        let certs = meshward_spiffe::pem::certificates(&text).map_err(|e| failed(e.to_string()))?;
        if certs.is_empty() {
            return Err(failed("no certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| failed(e.to_string()))?;
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_alone_or_beside_the_system_and_bad_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".into()]).unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        assert_eq!(web_roots(WebRoots::Only(&file)).unwrap().len(), 1);
        let system = web_roots(WebRoots::System).unwrap().len();
        assert_eq!(
            web_roots(WebRoots::SystemAnd(&file)).unwrap().len(),
            system + 1
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = web_roots(WebRoots::Only(&empty)).unwrap_err();
        assert!(e.to_string().contains("empty.pem: "), "{e}");
        let missing = dir.path().join("missing.pem");
        assert!(web_roots(WebRoots::SystemAnd(&missing)).is_err());
    }
}
