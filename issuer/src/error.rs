//! The issuer's errors. Each says what to fix; the API layer maps them to gRPC codes.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("upstream CA: {0}")]
    Upstream(String),
    #[error("CA state on disk is corrupt: {0}")]
    Corrupt(String),
    #[error("cryptography failed: {0}")]
    Crypto(String),
    #[error("no CA is active (all generations expired)")]
    NoActiveCa,
}

impl CaError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// Why a signing request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// Bad input: maps to InvalidArgument.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// Maps to InvalidArgument.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Ca(#[from] CaError),
}
