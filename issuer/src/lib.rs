//! meshward-issuer: the built-in SPIFFE issuance server (SPIRE server's role).
//!
//! - [`Authority`]: the CA and its rotation; [`sign_x509_svid`], [`mint_jwt_svid`],
//!   [`Bundle`]: what it signs and publishes.
//! - [`datastore`]: state on SQLite or PostgreSQL.
//! - [`service`]: attestation, entries, signing, admin: the behaviour.
//! - [`server`]: `meshward issuer run` (agent API over TLS, admin API on a unix
//!   socket, health); [`client`]: connecting to both.

/// Generated gRPC types and services (proto/agent.proto, proto/admin.proto).
#[allow(unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("meshward.issuer.v1");
}

mod bundle;
mod ca;
pub mod client;
pub mod datastore;
mod error;
mod jwt;
pub mod k8s_psat;
pub mod kube_client;
pub mod pem;
mod random;
pub mod server;
pub mod service;
pub mod template;
mod x509;

pub use bundle::{Bundle, InvalidBundle};
pub use ca::{Authority, Rotation, SigningCa, UpstreamCa};
pub use error::{CaError, SigningError};
pub use jwt::{JwtKey, JwtPublicKey, mint_jwt_svid};
pub use meshward_spiffe::{InvalidSpiffeId, SpiffeId, validate_trust_domain};
pub use x509::{SvidTemplate, X509Svid, sign_x509_svid};

/// Re-exported so callers need not depend on rustls-pki-types themselves.
pub use rustls_pki_types::CertificateDer;
