//! What a check is about and what its answer means, whichever the protocol.

use std::net::SocketAddr;

use bytes::Bytes;

/// One request (or TCP connection) to ask about: what Envoy's ext_authz sends.
#[derive(Debug, Clone)]
pub struct CheckInput {
    pub source: PeerInput,
    pub destination: PeerInput,
    /// `None` for a TCP connection.
    pub http: Option<HttpInput>,
}

#[derive(Debug, Clone)]
pub struct PeerInput {
    pub address: SocketAddr,
    /// The verified SPIFFE ID, `spiffe://...`; `None` for plaintext.
    pub principal: Option<String>,
}

/// The request as policy judged it (normalized path and authority).
#[derive(Debug, Clone)]
pub struct HttpInput {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub host: String,
    pub scheme: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: String,
    /// Lower-case names, in order, repeated names kept.
    pub headers: Vec<(String, String)>,
    /// The body (or its first bytes) when the provider asks for it.
    pub body: Option<Bytes>,
    /// The body's size when known, else -1.
    pub size: i64,
}

/// How a header from the authorizer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMode {
    /// Replace any value, or add.
    Overwrite,
    /// Add another line.
    Append,
    /// Only if the request has no such header.
    AddIfAbsent,
    /// Only if the request has the header.
    OverwriteIfExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderChange {
    pub name: String,
    pub value: String,
    pub mode: HeaderMode,
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        /// Set on the request the pod receives.
        upstream: Vec<HeaderChange>,
        /// Removed from it.
        remove: Vec<String>,
        /// Added to the pod's response.
        downstream: Vec<HeaderChange>,
    },
    Deny {
        status: u16,
        headers: Vec<HeaderChange>,
        body: Bytes,
    },
}

impl Verdict {
    pub(crate) fn allow() -> Self {
        Self::Allow {
            upstream: Vec::new(),
            remove: Vec::new(),
            downstream: Vec::new(),
        }
    }
}

/// The authorizer could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("answer not understood: {0}")]
    Protocol(String),
}
