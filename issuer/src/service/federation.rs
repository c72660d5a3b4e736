//! Federation relationships as the admin API manages them (SPIRE's `federation
//! create|update|delete|list`), checked before they are stored.

use std::time::SystemTime;

use meshward_spiffe::{Bundle, TrustDomain};

use super::{Issuer, Result, ServiceError, unix};
use crate::datastore::{Datastore, DatastoreError, EndpointProfile, FederationRelationship};

impl<D: Datastore> Issuer<D> {
    /// Stores a relationship (`replace`: it must exist; else it must not), and its
    /// bootstrap bundle unless a bundle of that domain is already known.
    pub async fn put_federation_relationship(
        &self,
        relationship: &FederationRelationship,
        bootstrap: Option<&Bundle>,
        replace: bool,
    ) -> Result<()> {
        let invalid = |why: String| Err(ServiceError::InvalidArgument(why));
        let td = &relationship.trust_domain;
        if *td == self.settings.trust_domain {
            return invalid(format!("trust_domain: {td} is this issuer's own"));
        }
        if !relationship.bundle_endpoint_url.starts_with("https://")
            || relationship
                .bundle_endpoint_url
                .parse::<http::Uri>()
                .is_err()
        {
            return invalid(format!(
                "bundle_endpoint_url: {:?} is not an https:// URL",
                relationship.bundle_endpoint_url
            ));
        }
        let known = self.federation_relationship(td).await?;
        if let Some(existing) = &known
            && existing.managed_by != relationship.managed_by
        {
            return Err(ServiceError::AlreadyExists(format!(
                "the federation relationship with {td} is managed by {}",
                existing
                    .managed_by
                    .as_deref()
                    .unwrap_or("an operator (CLI or issuer.yaml)")
            )));
        }
        match (known.is_some(), replace) {
            (true, false) => {
                return Err(ServiceError::AlreadyExists(format!(
                    "a federation relationship with {td} already exists"
                )));
            }
            (false, true) => {
                return Err(ServiceError::NotFound(format!(
                    "no federation relationship with {td}"
                )));
            }
            _ => {}
        }
        if let Some(bundle) = bootstrap {
            if bundle.trust_domain != *td {
                return invalid(format!(
                    "trust_domain_bundle: a bundle of {}, not of {td}",
                    bundle.trust_domain
                ));
            }
            if self.federated_bundle(td).await?.is_none() {
                self.set_federated_bundle(bundle).await?;
            }
        } else if matches!(relationship.profile, EndpointProfile::HttpsSpiffe { .. })
            && self.federated_bundle(td).await?.is_none()
        {
            return invalid(format!(
                "trust_domain_bundle: https_spiffe authenticates the endpoint with a bundle of {td}: give its first one"
            ));
        }
        self.store
            .put_federation_relationship(relationship, unix(SystemTime::now()))
            .await?;
        Ok(())
    }

    pub async fn federation_relationships(&self) -> Result<Vec<FederationRelationship>> {
        Ok(self.store.list_federation_relationships().await?)
    }

    pub async fn federation_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRelationship>> {
        Ok(self
            .federation_relationships()
            .await?
            .into_iter()
            .find(|r| r.trust_domain == *trust_domain))
    }

    /// Ends the relationship and forgets the domain's bundle: its workloads are
    /// trusted nowhere any more (agents drop the bundle at their next sync).
    /// `managed_by`: who asks (`None`: an operator); only the manager may delete.
    pub async fn delete_federation_relationship(
        &self,
        trust_domain: &TrustDomain,
        managed_by: Option<&str>,
    ) -> Result<()> {
        if let Some(existing) = self.federation_relationship(trust_domain).await?
            && existing.managed_by.as_deref() != managed_by
        {
            return Err(ServiceError::InvalidArgument(format!(
                "the federation relationship with {trust_domain} is managed by {}: delete that instead",
                existing
                    .managed_by
                    .as_deref()
                    .unwrap_or("an operator (CLI or issuer.yaml)")
            )));
        }
        self.store
            .delete_federation_relationship(trust_domain)
            .await?;
        match self.store.delete_federated_bundle(trust_domain).await {
            Ok(()) | Err(DatastoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
