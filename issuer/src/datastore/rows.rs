//! Between SQL rows and the datastore's types: binding an entry, reading rows back,
//! canonical forms, and sqlx errors as [`DatastoreError`]s.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::types::{AttestedNode, Entry};
use super::{DatastoreError, Result};
use meshward_spiffe::Selector;
use meshward_spiffe::{SpiffeId, TrustDomain};

pub(super) fn bind_entry<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    e: &'q Entry,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(e.id.as_str())
        .bind(e.spiffe_id.as_str())
        .bind(e.parent_id.as_str())
        .bind(json(&e.selectors))
        .bind(i64::from(e.x509_svid_ttl))
        .bind(i64::from(e.jwt_svid_ttl))
        .bind(json(&e.dns_names))
        .bind(json(&e.federates_with))
        .bind(i64::from(e.admin))
        .bind(i64::from(e.downstream))
        .bind(e.hint.as_str())
        .bind(e.created_at)
        .bind(e.revision)
}

/// Canonical form: sorted, deduplicated lists, so equal entries compare equal in SQL.
pub(super) fn normalize(entry: &mut Entry) {
    entry.selectors = sorted(&entry.selectors);
    entry.dns_names.dedup();
    entry.federates_with.sort();
    entry.federates_with.dedup();
}

pub(super) fn sorted(selectors: &[Selector]) -> Vec<Selector> {
    let mut s = selectors.to_vec();
    s.sort();
    s.dedup();
    s
}

/// Trust domains as stored: names, or (rows written before they were typed) the
/// `spiffe://` form an operator gave.
fn trust_domains(json: &str) -> Result<Vec<TrustDomain>> {
    let listed: Vec<String> = from_json(json)?;
    listed
        .iter()
        .map(|td| TrustDomain::parse_name_or_id(td).map_err(corrupt))
        .collect()
}

pub(super) fn entry_from_row(row: &AnyRow) -> Result<Entry> {
    let text = |i: usize| row.try_get::<String, _>(i).map_err(corrupt);
    let int = |i: usize| row.try_get::<i64, _>(i).map_err(corrupt);
    Ok(Entry {
        id: text(0)?,
        spiffe_id: spiffe_id(text(1)?)?,
        parent_id: spiffe_id(text(2)?)?,
        selectors: from_json(&text(3)?)?,
        x509_svid_ttl: u32::try_from(int(4)?).map_err(corrupt)?,
        jwt_svid_ttl: u32::try_from(int(5)?).map_err(corrupt)?,
        dns_names: from_json(&text(6)?)?,
        federates_with: trust_domains(&text(7)?)?,
        admin: int(8)? != 0,
        downstream: int(9)? != 0,
        hint: text(10)?,
        created_at: int(11)?,
        revision: int(12)?,
    })
}

pub(super) fn node_from_row(row: &AnyRow) -> Result<AttestedNode> {
    let text = |i: usize| row.try_get::<String, _>(i).map_err(corrupt);
    let int = |i: usize| row.try_get::<i64, _>(i).map_err(corrupt);
    Ok(AttestedNode {
        spiffe_id: spiffe_id(text(0)?)?,
        attestation_type: text(1)?,
        selectors: from_json(&text(2)?)?,
        serial: text(3)?,
        expires_at: int(4)?,
        banned: int(5)? != 0,
        can_reattest: int(6)? != 0,
        created_at: int(7)?,
    })
}

pub(super) fn spiffe_id(s: String) -> Result<SpiffeId> {
    SpiffeId::parse(&s).map_err(corrupt)
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(corrupt)
}

pub(super) fn new_id() -> Result<String> {
    crate::random::hex_token(16).map_err(|e| DatastoreError::Unavailable(Box::new(e)))
}

/// A value the database holds that is not what we wrote.
pub(super) fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> DatastoreError {
    DatastoreError::Corrupt(Box::new(e))
}

pub(super) fn unavailable(e: sqlx::Error) -> DatastoreError {
    DatastoreError::Unavailable(Box::new(e))
}

/// Connecting to the database failed; the URL is shown without its password.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {source}")]
pub(super) struct ConnectFailed {
    pub(super) url: String,
    pub(super) source: sqlx::Error,
}

pub(super) fn classify(e: sqlx::Error) -> DatastoreError {
    match &e {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            DatastoreError::AlreadyExists(db.message().to_owned())
        }
        sqlx::Error::RowNotFound => DatastoreError::NotFound("row".into()),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => DatastoreError::Corrupt(Box::new(e)),
        _ => DatastoreError::Unavailable(Box::new(e)),
    }
}

/// A URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Records how long one datastore operation took, when dropped (whatever path the
/// operation returned by).
pub(super) struct OperationTimer {
    operation: &'static str,
    started: std::time::Instant,
}

impl OperationTimer {
    pub(super) fn start(operation: &'static str) -> Self {
        Self {
            operation,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for OperationTimer {
    fn drop(&mut self) {
        metrics::histogram!(
            "meshward_issuer_datastore_duration_seconds",
            "operation" => self.operation,
        )
        .record(self.started.elapsed().as_secs_f64());
    }
}
