//! The issuer's state behind one trait, with two real backends in [`SqlStore`]:
//! SQLite (the embedded default, a file under data_dir) and PostgreSQL (several
//! issuers share one database). Every write is one statement or one transaction,
//! so nothing is ever half-written; uniqueness is the database's job, so concurrent
//! writers lose nothing.

mod federation;
mod rows;
mod sql;
mod types;

use std::future::Future;

pub use sql::SqlStore;
pub use types::{
    AttestedNode, CaRecord, EndpointProfile, Entry, EntryFilter, FederationRelationship, JoinToken,
};

use meshward_spiffe::{SpiffeId, TrustDomain};

#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    /// The database cannot be reached or failed: retry later (gRPC Unavailable).
    #[error("datastore unavailable: {0}")]
    Unavailable(#[source] crate::error::Cause),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Refused by a rule (expired or used token, ...): gRPC PermissionDenied.
    #[error("{0}")]
    Refused(String),
    #[error("datastore holds invalid data: {0}")]
    Corrupt(#[source] crate::error::Cause),
}

pub type Result<T> = std::result::Result<T, DatastoreError>;

/// What the issuer stores. Times are Unix seconds.
pub trait Datastore: Send + Sync {
    /// Whether the database answers (readiness).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    fn create_entry(&self, entry: Entry) -> impl Future<Output = Result<Entry>> + Send;
    /// Replaces an entry by ID; bumps its revision.
    fn update_entry(&self, entry: Entry) -> impl Future<Output = Result<Entry>> + Send;
    fn delete_entry(&self, id: &str) -> impl Future<Output = Result<Entry>> + Send;
    fn get_entry(&self, id: &str) -> impl Future<Output = Result<Entry>> + Send;
    fn list_entries(&self, filter: &EntryFilter)
    -> impl Future<Output = Result<Vec<Entry>>> + Send;

    fn create_join_token(&self, token: &JoinToken) -> impl Future<Output = Result<()>> + Send;
    /// Uses a token up: it exists, has not expired, and is deleted in the same step.
    fn consume_join_token(
        &self,
        token: &str,
        now: i64,
    ) -> impl Future<Output = Result<JoinToken>> + Send;

    /// Creates or replaces a node's record; a banned node stays banned.
    fn upsert_node(&self, node: &AttestedNode)
    -> impl Future<Output = Result<AttestedNode>> + Send;
    /// Records a node that has no record yet; `AlreadyExists` if it has one
    /// (atomic: of two creations at once, one fails).
    fn create_node(&self, node: &AttestedNode)
    -> impl Future<Output = Result<AttestedNode>> + Send;
    fn get_node(&self, id: &SpiffeId) -> impl Future<Output = Result<AttestedNode>> + Send;
    fn list_nodes(&self) -> impl Future<Output = Result<Vec<AttestedNode>>> + Send;
    fn set_node_banned(
        &self,
        id: &SpiffeId,
        banned: bool,
    ) -> impl Future<Output = Result<AttestedNode>> + Send;
    /// Evicts: the node must attest again.
    fn delete_node(&self, id: &SpiffeId) -> impl Future<Output = Result<()>> + Send;

    fn set_federated_bundle(
        &self,
        trust_domain: &TrustDomain,
        bundle_json: &str,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    fn get_federated_bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> impl Future<Output = Result<String>> + Send;
    fn list_federated_bundles(&self) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;
    fn delete_federated_bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records a CA generation's public half (idempotent) and returns the bundle
    /// sequence after the change.
    fn record_ca(
        &self,
        trust_domain: &TrustDomain,
        ca: &CaRecord,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Every recorded CA generation that has not expired at `now`.
    fn list_cas(&self, now: i64) -> impl Future<Output = Result<Vec<CaRecord>>> + Send;
    /// The current `spiffe_sequence` of the own bundle (0 before the first CA).
    fn bundle_sequence(
        &self,
        trust_domain: &TrustDomain,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Drops expired generations; returns the bundle sequence.
    fn prune_cas(
        &self,
        trust_domain: &TrustDomain,
        now: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Creates or replaces an identity template (by name).
    fn put_template(
        &self,
        template: &meshward_api::template::IdentityTemplate,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    fn list_templates(
        &self,
    ) -> impl Future<Output = Result<Vec<meshward_api::template::IdentityTemplate>>> + Send;
    fn delete_template(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Creates or replaces the relationship with its trust domain.
    fn put_federation_relationship(
        &self,
        relationship: &FederationRelationship,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    fn list_federation_relationships(
        &self,
    ) -> impl Future<Output = Result<Vec<FederationRelationship>>> + Send;
    fn delete_federation_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Takes or renews lease `name` for `holder` until `expires_at`; false if another
    /// holder has it.
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        expires_at: i64,
        now: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
}
