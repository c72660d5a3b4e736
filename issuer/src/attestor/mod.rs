//! Node attestation: one [`NodeAttestor`] per method (SPIRE's server-side
//! NodeAttestor plugins), chosen by the type an agent names in `AttestAgent` and
//! handed its payload (`meshward_api::attestation` defines each payload). An
//! attestor says who the node is and what selectors it proved; the issuer then
//! admits the node (ban check, node SVID, node record) the same way for all.
//!
//! A new method is one module here (plus its agent side and config): implement
//! the trait, and register it in [`Attestors`] where the issuer is assembled.

pub mod aws_iid;
pub mod join_token;
pub mod k8s_psat;

use std::future::Future;
use std::pin::Pin;

use meshward_spiffe::{Selector, SpiffeId, TrustDomain};

use crate::datastore::{Datastore, DatastoreError};

/// What an attestor proved about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// `spiffe://<td>/spire/agent/<method>/...`
    pub spiffe_id: SpiffeId,
    /// Selectors node entries and templates can select the node by.
    pub selectors: Vec<Selector>,
    /// Whether the node may attest again with fresh evidence (a new token of the
    /// same node) rather than only once.
    pub can_reattest: bool,
    /// Whether the node's record must not exist yet: of two attestations of one
    /// node at once, only the first to record it is admitted (trust on first use).
    pub first_only: bool,
}

/// Why an attestation failed (the issuer maps each to its gRPC status).
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The payload is not this type's.
    #[error("{0}")]
    InvalidArgument(String),
    /// The evidence does not hold.
    #[error("{0}")]
    Denied(String),
    /// What vouches for the evidence could not be asked: retry later.
    #[error("{0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The datastore's answer (a join token used or unknown is `NotFound`).
    #[error(transparent)]
    Store(#[from] DatastoreError),
}

pub type AttestFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Attestation, AttestError>> + Send + 'a>>;

/// One node attestation method, as the issuer verifies it.
pub trait NodeAttestor<D: Datastore>: Send + Sync {
    /// The type agents name (`join_token`, `k8s_psat`, `aws_iid`); also the metrics label and
    /// the node record's attestation type.
    fn kind(&self) -> &'static str;

    /// Verifies `payload` for a node of `trust_domain`. Errors:
    /// `InvalidArgument` for a payload that is not this type's, `PermissionDenied`
    /// for evidence that does not hold, `Unavailable` when what vouches for it
    /// could not be asked (retry later).
    fn attest<'a>(
        &'a self,
        store: &'a D,
        trust_domain: &'a TrustDomain,
        payload: &'a [u8],
    ) -> AttestFuture<'a>;

    /// Who `payload` claims to be, unverified and without secrets, for the log
    /// line of a refused attestation.
    fn claimed(&self, payload: &[u8]) -> String;
}

/// The attestors an issuer accepts, by type.
pub struct Attestors<D>(Vec<Box<dyn NodeAttestor<D>>>);

impl<D: Datastore> Attestors<D> {
    /// Join tokens only: every issuer can generate them.
    pub fn join_token() -> Self {
        Self(vec![Box::new(join_token::JoinTokenAttestor)])
    }

    /// Adds (or replaces) the attestor of its type.
    pub fn with(mut self, attestor: impl NodeAttestor<D> + 'static) -> Self {
        self.0.retain(|a| a.kind() != attestor.kind());
        self.0.push(Box::new(attestor));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&dyn NodeAttestor<D>> {
        self.0.iter().find(|a| a.kind() == kind).map(|a| &**a)
    }

    /// The types accepted, for errors that name them.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.0.iter().map(|a| a.kind()).collect()
    }
}
