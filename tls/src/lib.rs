//! meshward-tls: SPIFFE authentication on top of rustls.
//!
//! The verifiers do what go-spiffe's `tlsconfig` does: take the peer's SPIFFE ID
//! from its one URI SAN, validate the chain (RFC 5280, webpki) with **the bundle of
//! that ID's trust domain only**, skip hostname checks, then ask an
//! [`Authorizer`] whether this ID may talk. They wrap webpki; they never accept a
//! chain webpki rejects.
//!
//! [`https_get`] is the one HTTPS client for small documents (bundles, JWKS).

mod certs;
mod https_get;
mod key_exchange;
mod verify;
mod web_roots;

use std::collections::HashMap;
use std::sync::Arc;

use meshward_spiffe::{InvalidX509Svid, SpiffeId, TrustDomain};
use parking_lot::RwLock;
use rustls_pki_types::{CertificateDer, TrustAnchor};

pub use certs::CertStore;
pub use https_get::{HttpsGetError, https_get};
pub use key_exchange::{KeyExchangeGroup, crypto_provider};
pub use verify::{SpiffeClientVerifier, SpiffeServerVerifier};
pub use web_roots::{CaFileError, WebRoots, web_roots};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    #[error("not an X509-SVID: {0}")]
    NotAnSvid(#[from] InvalidX509Svid),
    #[error("invalid trust anchor for {trust_domain}: {source}")]
    BadAnchor {
        trust_domain: TrustDomain,
        source: webpki::Error,
    },
    #[error("invalid key or certificate: {0}")]
    BadCredentials(#[source] rustls::Error),
}

/// Which peer IDs may connect, once their chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorizer {
    /// Exactly this SPIFFE ID (e.g. the issuer's `spiffe://td/spire/server`).
    Exact(SpiffeId),
    /// Any ID of this trust domain.
    TrustDomain(TrustDomain),
    /// Any ID of one of these trust domains: a workload's own and those it
    /// federates with, though the bundles hold more.
    TrustDomains(Vec<TrustDomain>),
    /// Any ID whose trust domain has a bundle.
    AnyTrusted,
}

impl Authorizer {
    fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(want) => id == want,
            Self::TrustDomain(td) => id.is_member_of(td),
            Self::TrustDomains(tds) => tds.iter().any(|td| id.is_member_of(td)),
            Self::AnyTrusted => true,
        }
    }
}

/// Trust anchors by trust domain; updated when bundles rotate, read per handshake.
#[derive(Debug, Default)]
pub struct TrustBundles {
    anchors: RwLock<HashMap<TrustDomain, Arc<Vec<TrustAnchor<'static>>>>>,
}

impl TrustBundles {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the authorities of one trust domain.
    pub fn set(
        &self,
        trust_domain: &TrustDomain,
        authorities: &[CertificateDer<'_>],
    ) -> Result<(), TlsError> {
        let anchors = authorities
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::BadAnchor {
                trust_domain: trust_domain.clone(),
                source,
            })?;
        self.anchors
            .write()
            .insert(trust_domain.clone(), Arc::new(anchors));
        Ok(())
    }

    pub fn remove(&self, trust_domain: &TrustDomain) {
        self.anchors.write().remove(trust_domain);
    }

    pub(crate) fn get(&self, trust_domain: &TrustDomain) -> Option<Arc<Vec<TrustAnchor<'static>>>> {
        self.anchors.read().get(trust_domain).cloned()
    }
}

/// The SPIFFE ID of an X509-SVID leaf, once it passes every leaf rule
/// ([`meshward_spiffe::validate_x509_svid`]): the same rules the issuer signs by.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    Ok(meshward_spiffe::validate_x509_svid(cert)?)
}

/// The IP SANs of a certificate: for an SVID, where its workload answers.
pub fn ip_addresses_of(cert: &CertificateDer<'_>) -> Vec<std::net::IpAddr> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(std::net::IpAddr::from),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The certificate's serial number, lower-case hex without leading zero bytes.
pub fn serial_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let raw = parsed.raw_serial();
    let trimmed = raw.strip_prefix(&[0u8][..]).unwrap_or(raw);
    Some(trimmed.iter().map(|b| format!("{b:02x}")).collect())
}

/// When `cert` stops being valid (its `notAfter`).
pub fn not_after_of(cert: &CertificateDer<'_>) -> Option<std::time::SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let seconds = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// Installs aws-lc-rs as the process's rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
