//! The local certificate and key, swappable while connections keep being made
//! (SVID rotation): one store serves both rustls resolver traits.

use std::sync::Arc;

use parking_lot::RwLock;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::TlsError;

#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Installs a chain (leaf first) and its PKCS#8 key.
    pub fn set(
        &self,
        chain: Vec<CertificateDer<'static>>,
        pkcs8_key: &[u8],
    ) -> Result<(), TlsError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key.to_vec()));
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(TlsError::BadCredentials)?;
        *self.current.write() = Some(Arc::new(certified));
        Ok(())
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}
