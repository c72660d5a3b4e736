//! meshward-issuer: the built-in SPIFFE issuance server (SPIRE server's role).
//!
//! - [`Authority`]: the CA and its rotation; [`sign_x509_svid`], [`mint_jwt_svid`]:
//!   what it signs (bundles are `meshward_spiffe::Bundle`).
//! - [`datastore`]: state on SQLite or PostgreSQL.
//! - [`attestor`]: node attestation methods (join token, `k8s_psat`), one trait.
//! - [`service`]: attestation, entries, signing, admin: the behaviour.
//! - [`server`]: `meshward issuer run` (agent API over TLS, admin API on a unix
//!   socket, health). Its gRPC contract and clients are `meshward_api`'s.

pub mod attestor;
mod ca;
pub mod config;
pub mod datastore;
mod error;
pub mod federation;
mod jwt;
pub mod keys;
mod random;
pub mod server;
pub mod service;
mod x509;

pub use ca::{Authority, GenerationMaker, Rotation, SigningCa, UpstreamCa};
pub use error::{CaError, SigningError};
pub use jwt::{JwtKey, mint_jwt_svid};
pub use x509::{SvidTemplate, X509Svid, sign_x509_svid};

/// Re-exported so callers need not depend on rustls-pki-types themselves.
pub use rustls_pki_types::CertificateDer;

/// The issuer's parsers of what attesting agents bring, opened to the fuzz targets
/// in `fuzz/` (the `fuzzing` feature, which the product never enables).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// The agent a `k8s_psat` TokenReview answer vouches for, read as the issuer
    /// reads it: `None` when `answer` is not a TokenReview (JSON, as the API server
    /// sends it, which kube would refuse), else the pod's `[namespace, service
    /// account, pod name, pod UID]` or why it is refused.
    pub fn psat_review(
        answer: &[u8],
        audience: &[String],
        allowed: &[(String, String)],
    ) -> Option<Result<[String; 4], String>> {
        let review = serde_json::from_slice(answer).ok()?;
        Some(
            crate::attestor::k8s_psat::reviewed_agent(review, audience, allowed, "fuzz")
                .map(|a| [a.namespace, a.service_account, a.pod_name, a.pod_uid])
                .map_err(|e| e.to_string()),
        )
    }
}
