//! [`Datastore`] on SQLite or PostgreSQL through sqlx's `Any` driver: one set of
//! portable statements (written with `$n` placeholders, turned into SQLite's `?n`),
//! one set of migrations.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use super::rows::{
    ConnectFailed, OperationTimer, bind_entry, classify, corrupt, entry_from_row, from_json, json,
    new_id, node_from_row, normalize, redact, sorted, spiffe_id, unavailable,
};
use super::types::{AttestedNode, CaRecord, Entry, EntryFilter, FederationRelationship, JoinToken};
use super::{Datastore, DatastoreError, Result};
use meshward_spiffe::{SpiffeId, TrustDomain};

/// Bounded: the issuer never opens more than this many connections.
const MAX_CONNECTIONS: u32 = 8;
/// How long a request waits for a connection before the datastore counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The SQL datastore; cheap to clone (a pool inside).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

const ENTRY_COLUMNS: &str = "id, spiffe_id, parent_id, selectors, x509_svid_ttl, jwt_svid_ttl, dns_names, \
                             federates_with, admin, downstream, hint, created_at, revision";
const NODE_COLUMNS: &str =
    "spiffe_id, attestation_type, selectors, serial, expires_at, banned, can_reattest, created_at";

impl SqlStore {
    /// INSERT of a node record, with `on_conflict` as the statement's tail.
    async fn insert_node(&self, node: &AttestedNode, on_conflict: &str) -> Result<AttestedNode> {
        let statement = format!(
            "INSERT INTO attested_nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) {on_conflict}"
        );
        sqlx::query(&self.sql(&statement))
            .bind(node.spiffe_id.as_str())
            .bind(&node.attestation_type)
            .bind(json(&sorted(&node.selectors)))
            .bind(&node.serial)
            .bind(node.expires_at)
            .bind(i64::from(node.banned))
            .bind(i64::from(node.can_reattest))
            .bind(node.created_at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        self.get_node(&node.spiffe_id).await
    }
    /// Connects (`sqlite:///path/to/file.db` or `postgres://user:pw@host/db`), and
    /// brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DatastoreError::Unavailable(
                format!(
                    "unsupported datastore URL {:?}: use sqlite:///path or postgres://...",
                    redact(url)
                )
                .into(),
            ));
        };
        let url = match backend {
            // create the file on first use
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&url)
            .await
            .map_err(|source| {
                DatastoreError::Unavailable(Box::new(ConnectFailed {
                    url: redact(&url),
                    source,
                }))
            })?;
        if backend == Backend::Sqlite {
            // concurrent readers with one writer; persistent in the file
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(unavailable)?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| DatastoreError::Unavailable(Box::new(e)))?;
        Ok(Self { pool, backend })
    }

    pub(super) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A statement in this backend's placeholder style.
    pub(super) fn sql(&self, statement: &str) -> String {
        match self.backend {
            Backend::Postgres => statement.to_owned(),
            Backend::Sqlite => statement.replace('$', "?"),
        }
    }

    async fn bump_sequence(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        trust_domain: &TrustDomain,
    ) -> Result<u64> {
        sqlx::query(&self.sql(
            "INSERT INTO bundle_sequence (trust_domain, sequence) VALUES ($1, 1) \
             ON CONFLICT (trust_domain) DO UPDATE SET sequence = bundle_sequence.sequence + 1",
        ))
        .bind(trust_domain.as_str())
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        let row =
            sqlx::query(&self.sql("SELECT sequence FROM bundle_sequence WHERE trust_domain = $1"))
                .bind(trust_domain.as_str())
                .fetch_one(&mut **tx)
                .await
                .map_err(classify)?;
        Ok(row.try_get::<i64, _>(0).map_err(corrupt)? as u64)
    }

    async fn sequence_of(&self, trust_domain: &TrustDomain) -> Result<u64> {
        let row =
            sqlx::query(&self.sql("SELECT sequence FROM bundle_sequence WHERE trust_domain = $1"))
                .bind(trust_domain.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>(0).map_err(corrupt)? as u64,
            None => 0,
        })
    }
}

impl Datastore for SqlStore {
    async fn ping(&self) -> Result<()> {
        let _timer = OperationTimer::start("ping");
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_entry(&self, mut entry: Entry) -> Result<Entry> {
        let _timer = OperationTimer::start("create_entry");
        normalize(&mut entry);
        if entry.id.is_empty() {
            entry.id = new_id()?;
        }
        entry.revision = 0;
        let statement = format!(
            "INSERT INTO registration_entries ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        bind_entry(sqlx::query(&self.sql(&statement)), &entry)
            .execute(&self.pool)
            .await
            .map_err(|e| match classify(e) {
                DatastoreError::AlreadyExists(_) => DatastoreError::AlreadyExists(format!(
                    "an entry for {} under {} with the same selectors",
                    entry.spiffe_id, entry.parent_id
                )),
                other => other,
            })?;
        Ok(entry)
    }

    async fn update_entry(&self, mut entry: Entry) -> Result<Entry> {
        let _timer = OperationTimer::start("update_entry");
        normalize(&mut entry);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let current = sqlx::query(&self.sql(&format!(
            "SELECT {ENTRY_COLUMNS} FROM registration_entries WHERE id = $1"
        )))
        .bind(&entry.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?
        .ok_or_else(|| DatastoreError::NotFound(format!("entry {}", entry.id)))?;
        let current = entry_from_row(&current)?;
        entry.created_at = current.created_at;
        entry.revision = current.revision + 1;
        let statement = "UPDATE registration_entries SET spiffe_id = $2, parent_id = $3, selectors = $4, \
                         x509_svid_ttl = $5, jwt_svid_ttl = $6, dns_names = $7, federates_with = $8, admin = $9, \
                         downstream = $10, hint = $11, created_at = $12, revision = $13 WHERE id = $1";
        bind_entry(sqlx::query(&self.sql(statement)), &entry)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(entry)
    }

    async fn delete_entry(&self, id: &str) -> Result<Entry> {
        let _timer = OperationTimer::start("delete_entry");
        let row = sqlx::query(&self.sql(&format!(
            "DELETE FROM registration_entries WHERE id = $1 RETURNING {ENTRY_COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .ok_or_else(|| DatastoreError::NotFound(format!("entry {id}")))?;
        entry_from_row(&row)
    }

    async fn get_entry(&self, id: &str) -> Result<Entry> {
        let _timer = OperationTimer::start("get_entry");
        let row = sqlx::query(&self.sql(&format!(
            "SELECT {ENTRY_COLUMNS} FROM registration_entries WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .ok_or_else(|| DatastoreError::NotFound(format!("entry {id}")))?;
        entry_from_row(&row)
    }

    async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<Entry>> {
        let _timer = OperationTimer::start("list_entries");
        let statement = format!(
            "SELECT {ENTRY_COLUMNS} FROM registration_entries \
             WHERE ($1 = '' OR spiffe_id = $1) AND ($2 = '' OR parent_id = $2) ORDER BY created_at, id"
        );
        let rows = sqlx::query(&self.sql(&statement))
            .bind(filter.spiffe_id.as_ref().map_or("", |s| s.as_str()))
            .bind(filter.parent_id.as_ref().map_or("", |s| s.as_str()))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let entry = entry_from_row(row)?;
            if filter.selectors.iter().all(|s| entry.selectors.contains(s)) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    async fn create_join_token(&self, token: &JoinToken) -> Result<()> {
        let _timer = OperationTimer::start("create_join_token");
        sqlx::query(
            &self.sql("INSERT INTO join_tokens (token, spiffe_id, expires_at) VALUES ($1, $2, $3)"),
        )
        .bind(&token.token)
        .bind(token.spiffe_id.as_str())
        .bind(token.expires_at)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn consume_join_token(&self, token: &str, now: i64) -> Result<JoinToken> {
        let _timer = OperationTimer::start("consume_join_token");
        let row = sqlx::query(
            &self.sql("DELETE FROM join_tokens WHERE token = $1 RETURNING spiffe_id, expires_at"),
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .ok_or_else(|| DatastoreError::Refused("join token is unknown or already used".into()))?;
        let expires_at: i64 = row.try_get(1).map_err(corrupt)?;
        if expires_at <= now {
            return Err(DatastoreError::Refused("join token has expired".into()));
        }
        Ok(JoinToken {
            token: token.to_owned(),
            spiffe_id: spiffe_id(row.try_get(0).map_err(corrupt)?)?,
            expires_at,
        })
    }

    async fn upsert_node(&self, node: &AttestedNode) -> Result<AttestedNode> {
        let _timer = OperationTimer::start("upsert_node");
        self.insert_node(
            node,
            "ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type, \
             selectors = excluded.selectors, serial = excluded.serial, expires_at = excluded.expires_at, \
             can_reattest = excluded.can_reattest",
        )
        .await
    }

    async fn create_node(&self, node: &AttestedNode) -> Result<AttestedNode> {
        let _timer = OperationTimer::start("create_node");
        // the primary key refuses a second record: AlreadyExists
        self.insert_node(node, "").await
    }

    async fn get_node(&self, id: &SpiffeId) -> Result<AttestedNode> {
        let _timer = OperationTimer::start("get_node");
        let row = sqlx::query(&self.sql(&format!(
            "SELECT {NODE_COLUMNS} FROM attested_nodes WHERE spiffe_id = $1"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?
        .ok_or_else(|| DatastoreError::NotFound(format!("node {id}")))?;
        node_from_row(&row)
    }

    async fn list_nodes(&self) -> Result<Vec<AttestedNode>> {
        let _timer = OperationTimer::start("list_nodes");
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM attested_nodes ORDER BY spiffe_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter().map(node_from_row).collect()
    }

    async fn set_node_banned(&self, id: &SpiffeId, banned: bool) -> Result<AttestedNode> {
        let _timer = OperationTimer::start("set_node_banned");
        let done =
            sqlx::query(&self.sql("UPDATE attested_nodes SET banned = $2 WHERE spiffe_id = $1"))
                .bind(id.as_str())
                .bind(i64::from(banned))
                .execute(&self.pool)
                .await
                .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(DatastoreError::NotFound(format!("node {id}")));
        }
        self.get_node(id).await
    }

    async fn delete_node(&self, id: &SpiffeId) -> Result<()> {
        let _timer = OperationTimer::start("delete_node");
        let done = sqlx::query(&self.sql("DELETE FROM attested_nodes WHERE spiffe_id = $1"))
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(DatastoreError::NotFound(format!("node {id}")));
        }
        Ok(())
    }

    async fn set_federated_bundle(
        &self,
        trust_domain: &TrustDomain,
        bundle_json: &str,
        now: i64,
    ) -> Result<()> {
        let _timer = OperationTimer::start("set_federated_bundle");
        sqlx::query(&self.sql(
            "INSERT INTO federated_bundles (trust_domain, bundle, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (trust_domain) DO UPDATE SET bundle = excluded.bundle, updated_at = excluded.updated_at",
        ))
        .bind(trust_domain.as_str())
        .bind(bundle_json)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn get_federated_bundle(&self, trust_domain: &TrustDomain) -> Result<String> {
        let _timer = OperationTimer::start("get_federated_bundle");
        let row =
            sqlx::query(&self.sql("SELECT bundle FROM federated_bundles WHERE trust_domain = $1"))
                .bind(trust_domain.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?
                .ok_or_else(|| DatastoreError::NotFound(format!("bundle of {trust_domain}")))?;
        row.try_get(0).map_err(corrupt)
    }

    async fn list_federated_bundles(&self) -> Result<Vec<(String, String)>> {
        let _timer = OperationTimer::start("list_federated_bundles");
        let rows =
            sqlx::query("SELECT trust_domain, bundle FROM federated_bundles ORDER BY trust_domain")
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(corrupt)?,
                    r.try_get(1).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    async fn delete_federated_bundle(&self, trust_domain: &TrustDomain) -> Result<()> {
        let _timer = OperationTimer::start("delete_federated_bundle");
        let done = sqlx::query(&self.sql("DELETE FROM federated_bundles WHERE trust_domain = $1"))
            .bind(trust_domain.as_str())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(DatastoreError::NotFound(format!(
                "bundle of {trust_domain}"
            )));
        }
        Ok(())
    }

    async fn record_ca(&self, trust_domain: &TrustDomain, ca: &CaRecord) -> Result<u64> {
        let _timer = OperationTimer::start("record_ca");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let inserted = sqlx::query(&self.sql(
            "INSERT INTO ca_journal (id, instance, certificate, jwt_kid, jwt_x, jwt_y, not_before, not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        ))
        .bind(&ca.id)
        .bind(&ca.instance)
        .bind(&ca.certificate_pem)
        .bind(&ca.jwt_kid)
        .bind(&ca.jwt_x)
        .bind(&ca.jwt_y)
        .bind(ca.not_before)
        .bind(ca.not_after)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let sequence = if inserted.rows_affected() > 0 {
            self.bump_sequence(&mut tx, trust_domain).await?
        } else {
            0
        };
        tx.commit().await.map_err(unavailable)?;
        if sequence == 0 {
            return self.sequence_of(trust_domain).await;
        }
        Ok(sequence)
    }

    async fn list_cas(&self, now: i64) -> Result<Vec<CaRecord>> {
        let _timer = OperationTimer::start("list_cas");
        let rows = sqlx::query(&self.sql(
            "SELECT id, instance, certificate, jwt_kid, jwt_x, jwt_y, not_before, not_after FROM ca_journal \
             WHERE not_after > $1 ORDER BY not_before, id",
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(CaRecord {
                    id: r.try_get(0).map_err(corrupt)?,
                    instance: r.try_get(1).map_err(corrupt)?,
                    certificate_pem: r.try_get(2).map_err(corrupt)?,
                    jwt_kid: r.try_get(3).map_err(corrupt)?,
                    jwt_x: r.try_get(4).map_err(corrupt)?,
                    jwt_y: r.try_get(5).map_err(corrupt)?,
                    not_before: r.try_get(6).map_err(corrupt)?,
                    not_after: r.try_get(7).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn bundle_sequence(&self, trust_domain: &TrustDomain) -> Result<u64> {
        let _timer = OperationTimer::start("bundle_sequence");
        self.sequence_of(trust_domain).await
    }

    async fn prune_cas(&self, trust_domain: &TrustDomain, now: i64) -> Result<u64> {
        let _timer = OperationTimer::start("prune_cas");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let removed = sqlx::query(&self.sql("DELETE FROM ca_journal WHERE not_after <= $1"))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let bumped = if removed.rows_affected() > 0 {
            Some(self.bump_sequence(&mut tx, trust_domain).await?)
        } else {
            None
        };
        tx.commit().await.map_err(unavailable)?;
        match bumped {
            Some(sequence) => Ok(sequence),
            None => self.sequence_of(trust_domain).await,
        }
    }

    async fn put_template(
        &self,
        template: &meshward_api::template::IdentityTemplate,
        now: i64,
    ) -> Result<()> {
        let _timer = OperationTimer::start("put_template");
        sqlx::query(&self.sql(
            "INSERT INTO identity_templates (name, spec, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
        ))
        .bind(&template.name)
        .bind(json(template))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn list_templates(&self) -> Result<Vec<meshward_api::template::IdentityTemplate>> {
        let _timer = OperationTimer::start("list_templates");
        let rows = sqlx::query("SELECT spec FROM identity_templates ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| from_json(&r.try_get::<String, _>(0).map_err(corrupt)?))
            .collect()
    }

    async fn delete_template(&self, name: &str) -> Result<()> {
        let _timer = OperationTimer::start("delete_template");
        let done = sqlx::query(&self.sql("DELETE FROM identity_templates WHERE name = $1"))
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(DatastoreError::NotFound(format!("template {name}")));
        }
        Ok(())
    }

    async fn put_federation_relationship(
        &self,
        relationship: &FederationRelationship,
        now: i64,
    ) -> Result<()> {
        self.put_relationship(relationship, now).await
    }

    async fn list_federation_relationships(&self) -> Result<Vec<FederationRelationship>> {
        self.relationships().await
    }

    async fn delete_federation_relationship(&self, trust_domain: &TrustDomain) -> Result<()> {
        self.delete_relationship(trust_domain).await
    }

    async fn try_lease(&self, name: &str, holder: &str, expires_at: i64, now: i64) -> Result<bool> {
        let _timer = OperationTimer::start("try_lease");
        let done = sqlx::query(&self.sql(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        ))
        .bind(name)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }
}
