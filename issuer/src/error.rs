//! The issuer's errors. Each says what to fix and keeps the error that caused it
//! (`source`); the API layer maps them to gRPC codes.

use std::path::{Path, PathBuf};

/// An error with its cause kept, whatever its type (a library's error, or a rule
/// of ours given as text).
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The upstream CA files cannot sign for us.
    #[error("upstream CA {}: {source}", path.display())]
    Upstream { path: PathBuf, source: Cause },
    #[error("CA state on disk is corrupt: {}: {source}", path.display())]
    Corrupt { path: PathBuf, source: Cause },
    #[error("{what}: {source}")]
    Crypto { what: &'static str, source: Cause },
    /// The key manager failed for a generation's key.
    #[error("CA generation {generation}: {source}")]
    Keys {
        generation: String,
        source: crate::keys::KeyError,
    },
    #[error(transparent)]
    Random(#[from] crate::random::RandomFailed),
    #[error("no CA is active (all generations expired)")]
    NoActiveCa,
}

impl CaError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn upstream(path: &Path) -> impl FnOnce(Cause) -> Self {
        let path = path.to_owned();
        move |source| Self::Upstream { path, source }
    }

    pub(crate) fn corrupt(path: &Path) -> impl FnOnce(Cause) -> Self {
        let path = path.to_owned();
        move |source| Self::Corrupt { path, source }
    }

    pub(crate) fn keys(generation: &str) -> impl FnOnce(crate::keys::KeyError) -> Self {
        let generation = generation.to_owned();
        move |source| Self::Keys { generation, source }
    }

    pub(crate) fn crypto(what: &'static str) -> impl FnOnce(Cause) -> Self {
        move |source| Self::Crypto { what, source }
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

impl From<crate::random::RandomFailed> for SigningError {
    fn from(e: crate::random::RandomFailed) -> Self {
        Self::Ca(e.into())
    }
}
