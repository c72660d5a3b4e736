//! Federation relationships in SQL (table `federation_relationships`).

use sqlx::Row;

use super::rows::{OperationTimer, classify, corrupt};
use super::sql::SqlStore;
use super::types::{EndpointProfile, FederationRelationship};
use super::{DatastoreError, Result};
use meshward_spiffe::{SpiffeId, TrustDomain};

impl SqlStore {
    pub(super) async fn put_relationship(
        &self,
        relationship: &FederationRelationship,
        now: i64,
    ) -> Result<()> {
        let _timer = OperationTimer::start("put_federation_relationship");
        let endpoint_id = match &relationship.profile {
            EndpointProfile::HttpsSpiffe { endpoint_id } => endpoint_id.as_str(),
            EndpointProfile::HttpsWeb => "",
        };
        sqlx::query(&self.sql(
            "INSERT INTO federation_relationships \
             (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, managed_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (trust_domain) DO UPDATE SET \
             bundle_endpoint_url = excluded.bundle_endpoint_url, profile = excluded.profile, \
             endpoint_spiffe_id = excluded.endpoint_spiffe_id, managed_by = excluded.managed_by, \
             updated_at = excluded.updated_at",
        ))
        .bind(relationship.trust_domain.as_str())
        .bind(&relationship.bundle_endpoint_url)
        .bind(relationship.profile.name())
        .bind(endpoint_id)
        .bind(relationship.managed_by.as_deref().unwrap_or_default())
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn relationships(&self) -> Result<Vec<FederationRelationship>> {
        let _timer = OperationTimer::start("list_federation_relationships");
        let rows = sqlx::query(
            "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, managed_by \
             FROM federation_relationships ORDER BY trust_domain",
        )
        .fetch_all(self.pool())
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let text = |i: usize| r.try_get::<String, _>(i).map_err(corrupt);
                let endpoint_id = match text(3)?.as_str() {
                    "" => None,
                    id => Some(SpiffeId::parse(id).map_err(corrupt)?),
                };
                Ok(FederationRelationship {
                    trust_domain: TrustDomain::parse(&text(0)?).map_err(corrupt)?,
                    bundle_endpoint_url: text(1)?,
                    profile: EndpointProfile::parse(&text(2)?, endpoint_id)
                        .map_err(|e| DatastoreError::Corrupt(e.into()))?,
                    managed_by: Some(text(4)?).filter(|m| !m.is_empty()),
                })
            })
            .collect()
    }

    pub(super) async fn delete_relationship(&self, trust_domain: &TrustDomain) -> Result<()> {
        let _timer = OperationTimer::start("delete_federation_relationship");
        let done =
            sqlx::query(&self.sql("DELETE FROM federation_relationships WHERE trust_domain = $1"))
                .bind(trust_domain.as_str())
                .execute(self.pool())
                .await
                .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(DatastoreError::NotFound(format!(
                "federation relationship with {trust_domain}"
            )));
        }
        Ok(())
    }
}
