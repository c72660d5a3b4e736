//! meshward-issuer: the built-in SPIFFE issuance server (SPIRE server's role).
//!
//! Today: the CA and its rotation ([`Authority`]), X509-SVIDs from CSRs
//! ([`sign_x509_svid`]), JWT-SVIDs ([`mint_jwt_svid`]) and bundles ([`Bundle`]).
//! State lives in a [`datastore::Datastore`] (SQLite or PostgreSQL). Node
//! attestation, entries and the gRPC APIs follow.

/// Generated gRPC types and services (proto/agent.proto, proto/admin.proto).
#[allow(unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("meshward.issuer.v1");
}

mod bundle;
mod ca;
pub mod datastore;
mod error;
mod jwt;
mod random;
pub mod service;
mod spiffe_id;
mod x509;

pub use bundle::{Bundle, InvalidBundle};
pub use ca::{Authority, Rotation, SigningCa, UpstreamCa};
pub use error::{CaError, SigningError};
pub use jwt::{JwtKey, JwtPublicKey, mint_jwt_svid};
pub use spiffe_id::{InvalidSpiffeId, SpiffeId, validate_trust_domain};
pub use x509::{SvidTemplate, X509Svid, sign_x509_svid};

/// Re-exported so callers need not depend on rustls-pki-types themselves.
pub use rustls_pki_types::CertificateDer;
