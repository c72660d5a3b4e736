//! rustls verifiers for SPIFFE peers: chain to the bundle of the peer's trust
//! domain (webpki), no hostname check, then the [`Authorizer`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{Authorizer, TrustBundles, spiffe_id_of};

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

/// Chain and ID checks shared by both directions.
#[derive(Debug)]
struct SpiffeVerifier {
    bundles: Arc<TrustBundles>,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), Error> {
        let id = spiffe_id_of(end_entity).map_err(|e| Error::InvalidCertificate(other(e)))?;
        let td = id.trust_domain();
        let anchors = self.bundles.get(&td).ok_or_else(|| {
            Error::InvalidCertificate(other(format!(
                "peer trust domain {td} is not in any bundle"
            )))
        })?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| Error::InvalidCertificate(map_webpki(e)))?;
        cert.verify_for_usage(
            self.algorithms.all,
            &anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| Error::InvalidCertificate(map_webpki(e)))?;
        if !self.authorizer.allows(&id) {
            if let Authorizer::TrustDomains(_) = &self.authorizer {
                return Err(Error::InvalidCertificate(other(format!(
                    "peer {id}: trust domain {td} is not federated with here"
                ))));
            }
            return Err(Error::InvalidCertificate(other(format!(
                "peer {id} is not authorized here ({:?})",
                self.authorizer
            ))));
        }
        Ok(())
    }
}

fn other(message: impl std::fmt::Display) -> CertificateError {
    CertificateError::Other(rustls::OtherError(Arc::new(Message(message.to_string()))))
}

#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

fn map_webpki(e: webpki::Error) -> CertificateError {
    match e {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        webpki::Error::CertRevoked => CertificateError::Revoked,
        other_error => other(format!("chain validation failed: {other_error}")),
    }
}

/// What a client uses to verify a SPIFFE server.
#[derive(Debug)]
pub struct SpiffeServerVerifier(SpiffeVerifier);

impl SpiffeServerVerifier {
    pub fn new(bundles: Arc<TrustBundles>, authorizer: Authorizer) -> Arc<Self> {
        Arc::new(Self(SpiffeVerifier {
            bundles,
            authorizer,
            algorithms: algorithms(),
        }))
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // No hostname check: SPIFFE authenticates by ID (go-spiffe does the same).
        self.0.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.0.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// What a server uses to verify SPIFFE clients. `mandatory: false` lets clients
/// without a certificate in (the issuer's attestation calls); the application then
/// sees no peer identity.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: SpiffeVerifier,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    pub fn new(bundles: Arc<TrustBundles>, authorizer: Authorizer, mandatory: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: SpiffeVerifier {
                bundles,
                authorizer,
                algorithms: algorithms(),
            },
            mandatory,
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.inner.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.inner.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.algorithms.supported_schemes()
    }
}
