//! meshward-issuer: the built-in SPIFFE issuance server (SPIRE server's role).
//!
//! - [`Authority`]: the CA and its rotation; [`sign_x509_svid`], [`mint_jwt_svid`]:
//!   what it signs (bundles are `meshward_spiffe::Bundle`).
//! - [`datastore`]: state on SQLite or PostgreSQL.
//! - [`service`]: attestation, entries, signing, admin: the behaviour.
//! - [`server`]: `meshward issuer run` (agent API over TLS, admin API on a unix
//!   socket, health). Its gRPC contract and clients are `meshward_api`'s.

mod ca;
pub mod datastore;
mod error;
pub mod federation;
mod jwt;
pub mod k8s_psat;
mod random;
pub mod server;
pub mod service;
mod x509;

pub use ca::{Authority, Rotation, SigningCa, UpstreamCa};
pub use error::{CaError, SigningError};
pub use jwt::{JwtKey, mint_jwt_svid};
pub use x509::{SvidTemplate, X509Svid, sign_x509_svid};

/// Re-exported so callers need not depend on rustls-pki-types themselves.
pub use rustls_pki_types::CertificateDer;
