//! The admin API's behaviour: entries, join tokens, agents, federated bundles.

use std::time::SystemTime;

use super::{Issuer, Result, ServiceError, unix};
use crate::datastore::{AttestedNode, Datastore, DatastoreError, Entry, EntryFilter, JoinToken};
use meshward_spiffe::Bundle;
use meshward_spiffe::{SpiffeId, TrustDomain};

impl<D: Datastore> Issuer<D> {
    pub async fn create_entry(&self, mut entry: Entry) -> Result<Entry> {
        self.validate_entry(&entry)?;
        entry.created_at = unix(SystemTime::now());
        Ok(self.store.create_entry(entry).await?)
    }

    pub async fn update_entry(&self, entry: Entry) -> Result<Entry> {
        if entry.id.is_empty() {
            return Err(ServiceError::InvalidArgument("entry ID is required".into()));
        }
        self.validate_entry(&entry)?;
        Ok(self.store.update_entry(entry).await?)
    }

    pub async fn delete_entry(&self, id: &str) -> Result<Entry> {
        Ok(self.store.delete_entry(id).await?)
    }

    pub async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<Entry>> {
        Ok(self.store.list_entries(filter).await?)
    }

    /// SPIRE's rules, with the field named: the ID in this trust domain with a path,
    /// a parent, at least one selector, sane DNS names, valid federated domains.
    fn validate_entry(&self, entry: &Entry) -> Result<()> {
        let td = &self.settings.trust_domain;
        let invalid = |field: &str, reason: String| {
            Err(ServiceError::InvalidArgument(format!("{field}: {reason}")))
        };
        if !entry.spiffe_id.is_member_of(td) {
            return invalid(
                "spiffe_id",
                format!("{} is not in trust domain {td}", entry.spiffe_id),
            );
        }
        if entry.spiffe_id.path().is_empty() {
            return invalid("spiffe_id", format!("{} has no path", entry.spiffe_id));
        }
        if !entry.parent_id.is_member_of(td) {
            return invalid(
                "parent_id",
                format!("{} is not in trust domain {td}", entry.parent_id),
            );
        }
        if entry.selectors.is_empty() {
            return invalid("selectors", "at least one selector is required".into());
        }
        for (i, dns) in entry.dns_names.iter().enumerate() {
            let ok = !dns.is_empty()
                && dns.len() <= 253
                && dns.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                });
            if !ok {
                return invalid(
                    &format!("dns_names[{i}]"),
                    format!("{dns:?} is not a DNS name"),
                );
            }
        }
        if let Some(i) = entry.federates_with.iter().position(|other| other == td) {
            return invalid(
                &format!("federates_with[{i}]"),
                "an entry cannot federate with its own trust domain".into(),
            );
        }
        Ok(())
    }

    /// A one-use join token, valid for `ttl_seconds` (0: the configured default);
    /// `alias` names the node ID it attests to.
    pub async fn generate_join_token(
        &self,
        alias: Option<SpiffeId>,
        ttl_seconds: i64,
    ) -> Result<JoinToken> {
        if ttl_seconds < 0 {
            return Err(ServiceError::InvalidArgument(
                "ttl: must not be negative".into(),
            ));
        }
        let token = crate::random::hex_token(16)?;
        let spiffe_id = match alias {
            Some(id) if !id.is_member_of(&self.settings.trust_domain) => {
                return Err(ServiceError::InvalidArgument(format!(
                    "spiffeID: {id} is not in trust domain {}",
                    self.settings.trust_domain
                )));
            }
            Some(id) => id,
            None => SpiffeId::from_segments(
                &self.settings.trust_domain,
                &["spire", "agent", "join_token", &token],
            )
            .map_err(|e| ServiceError::Internal(Box::new(e)))?,
        };
        let ttl = if ttl_seconds == 0 {
            self.settings.join_token_ttl.as_secs() as i64
        } else {
            ttl_seconds
        };
        let token = JoinToken {
            token,
            spiffe_id,
            expires_at: unix(SystemTime::now()) + ttl,
        };
        self.store.create_join_token(&token).await?;
        Ok(token)
    }

    pub async fn list_agents(&self) -> Result<Vec<AttestedNode>> {
        Ok(self.store.list_nodes().await?)
    }

    pub async fn show_agent(&self, id: &SpiffeId) -> Result<AttestedNode> {
        Ok(self.store.get_node(id).await?)
    }

    /// A banned node cannot attest or renew until the record is evicted.
    pub async fn ban_agent(&self, id: &SpiffeId) -> Result<AttestedNode> {
        Ok(self.store.set_node_banned(id, true).await?)
    }

    /// Forgets the node: it must attest again.
    pub async fn evict_agent(&self, id: &SpiffeId) -> Result<()> {
        Ok(self.store.delete_node(id).await?)
    }

    /// Stores the bundle of another trust domain (never the own one).
    pub async fn set_federated_bundle(&self, bundle: &Bundle) -> Result<()> {
        if bundle.trust_domain == self.settings.trust_domain {
            return Err(ServiceError::InvalidArgument(
                "the own trust domain's bundle is managed by the CA, not set by hand".into(),
            ));
        }
        if bundle.x509_authorities.is_empty() && bundle.jwt_keys.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "the bundle holds no authority".into(),
            ));
        }
        self.store
            .set_federated_bundle(
                &bundle.trust_domain,
                &bundle.to_spiffe_json(),
                unix(SystemTime::now()),
            )
            .await?;
        Ok(())
    }

    /// The stored bundle of `trust_domain`, if any.
    pub async fn federated_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Bundle>> {
        match self.store.get_federated_bundle(trust_domain).await {
            Ok(json) => Bundle::from_spiffe_json(trust_domain, &json)
                .map(Some)
                .map_err(|e| ServiceError::Internal(Box::new(e))),
            Err(DatastoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn federated_bundles(&self) -> Result<Vec<Bundle>> {
        let mut bundles = Vec::new();
        for (td, json) in self.store.list_federated_bundles().await? {
            let td = TrustDomain::parse(&td).map_err(|e| ServiceError::Internal(Box::new(e)))?;
            bundles.push(
                Bundle::from_spiffe_json(&td, &json)
                    .map_err(|e| ServiceError::Internal(Box::new(e)))?,
            );
        }
        Ok(bundles)
    }

    /// Creates or replaces identity templates; all are validated before any is stored.
    pub async fn put_templates(
        &self,
        templates: &[meshward_api::template::IdentityTemplate],
    ) -> Result<()> {
        for t in templates {
            t.validate(&self.settings.trust_domain).map_err(|e| {
                ServiceError::InvalidArgument(format!("template {:?}: {e}", t.name))
            })?;
        }
        let now = unix(SystemTime::now());
        for t in templates {
            self.store.put_template(t, now).await?;
        }
        Ok(())
    }

    pub async fn list_templates(&self) -> Result<Vec<meshward_api::template::IdentityTemplate>> {
        Ok(self.store.list_templates().await?)
    }

    pub async fn delete_template(&self, name: &str) -> Result<()> {
        Ok(self.store.delete_template(name).await?)
    }

    pub async fn delete_federated_bundle(&self, trust_domain: &TrustDomain) -> Result<()> {
        Ok(self.store.delete_federated_bundle(trust_domain).await?)
    }
}
