//! The agent API's behaviour: attestation, node SVID renewal, the entries a node
//! may serve, and signing for them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::{Issuer, Result, ServiceError, unix};
use crate::bundle::Bundle;
use crate::datastore::{AttestedNode, Datastore, Entry, EntryFilter};
use crate::jwt::mint_jwt_svid;
use crate::spiffe_id::SpiffeId;
use crate::x509::{SvidTemplate, X509Svid};

/// A node as the transport authenticated it: the SPIFFE ID and serial of the
/// client certificate it presented (already verified against the bundle).
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: SpiffeId,
    pub serial: String,
}

/// One result of a batch: an SVID or why not.
pub type BatchResult = (String, Result<X509Svid>);

impl<D: Datastore> Issuer<D> {
    /// Join token attestation: the token is used up whatever happens next, and the
    /// node receives its SVID (`spiffe://<td>/spire/agent/join_token/<token>`).
    pub async fn attest_join_token(&self, token: &str, csr: &[u8]) -> Result<X509Svid> {
        if token.is_empty() {
            return Err(ServiceError::InvalidArgument("join token is empty".into()));
        }
        let now = SystemTime::now();
        let token = self.store.consume_join_token(token, unix(now)).await?;
        self.admit_node(token.spiffe_id, "join_token", Vec::new(), false, csr)
            .await
    }

    /// Kubernetes PSAT attestation; the node may attest again later (new token).
    pub async fn attest_k8s_psat(
        &self,
        cluster: &str,
        token: &str,
        csr: &[u8],
    ) -> Result<X509Svid> {
        let attestor = self.psat.as_ref().ok_or_else(|| {
            ServiceError::PermissionDenied(
                "k8s_psat attestation is not configured on this issuer".into(),
            )
        })?;
        let node = attestor
            .attest(&self.settings.trust_domain, cluster, token)
            .await?;
        self.admit_node(node.spiffe_id, "k8s_psat", node.selectors, true, csr)
            .await
    }

    /// Signs a node SVID and records the node; a banned node is refused. A fresh
    /// attestation (a new join token, a new PSAT) replaces the node's record.
    pub(crate) async fn admit_node(
        &self,
        id: SpiffeId,
        attestation_type: &str,
        selectors: Vec<crate::datastore::Selector>,
        can_reattest: bool,
        csr: &[u8],
    ) -> Result<X509Svid> {
        match self.store.get_node(&id).await {
            Ok(existing) if existing.banned => {
                return Err(ServiceError::PermissionDenied(format!(
                    "node {id} is banned"
                )));
            }
            Ok(_) | Err(crate::datastore::DatastoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let svid = self.sign(
            csr,
            &SvidTemplate {
                spiffe_id: &id,
                dns_names: &[],
                ttl: self.settings.agent_svid_ttl,
            },
        )?;
        self.store
            .upsert_node(&AttestedNode {
                spiffe_id: id,
                attestation_type: attestation_type.to_owned(),
                selectors,
                serial: svid.serial.clone(),
                expires_at: unix(svid.expires_at),
                banned: false,
                can_reattest,
                created_at: unix(SystemTime::now()),
            })
            .await?;
        Ok(svid)
    }

    /// The caller's node record, if it may use the API: attested, not banned, and
    /// presenting its current SVID.
    pub async fn authenticate_node(&self, caller: &Caller) -> Result<AttestedNode> {
        let node = match self.store.get_node(&caller.id).await {
            Ok(node) => node,
            Err(crate::datastore::DatastoreError::NotFound(_)) => {
                return Err(ServiceError::PermissionDenied(format!(
                    "node {} is not attested (evicted?): attest again",
                    caller.id
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if node.banned {
            return Err(ServiceError::PermissionDenied(format!(
                "node {} is banned",
                caller.id
            )));
        }
        if node.serial != caller.serial {
            return Err(ServiceError::PermissionDenied(format!(
                "node {} presented SVID serial {}, not its current one",
                caller.id, caller.serial
            )));
        }
        Ok(node)
    }

    /// A fresh node SVID for an authenticated node.
    pub async fn renew_agent(&self, caller: &Caller, csr: &[u8]) -> Result<X509Svid> {
        let mut node = self.authenticate_node(caller).await?;
        let svid = self.sign(
            csr,
            &SvidTemplate {
                spiffe_id: &caller.id,
                dns_names: &[],
                ttl: self.settings.agent_svid_ttl,
            },
        )?;
        node.serial.clone_from(&svid.serial);
        node.expires_at = unix(svid.expires_at);
        self.store.upsert_node(&node).await?;
        Ok(svid)
    }

    /// Entries parented by the node itself or by a node alias whose selectors the
    /// node has (SPIRE's node alias entries, parent `spiffe://<td>/spire/server`).
    pub async fn authorized_entries(&self, caller: &Caller) -> Result<Vec<Entry>> {
        let node = self.authenticate_node(caller).await?;
        self.entries_for_node(&node).await
    }

    async fn entries_for_node(&self, node: &AttestedNode) -> Result<Vec<Entry>> {
        let mut parents = vec![node.spiffe_id.clone()];
        let aliases = self
            .store
            .list_entries(&EntryFilter {
                parent_id: Some(self.server_id()?),
                ..EntryFilter::default()
            })
            .await?;
        for alias in aliases {
            if alias.selectors.iter().all(|s| node.selectors.contains(s)) {
                parents.push(alias.spiffe_id);
            }
        }
        let mut entries = Vec::new();
        for parent in parents {
            let filter = EntryFilter {
                parent_id: Some(parent),
                ..EntryFilter::default()
            };
            entries.extend(self.store.list_entries(&filter).await?);
        }
        let mut seen = HashSet::new();
        entries.retain(|e| seen.insert(e.id.clone()));
        Ok(entries)
    }

    /// X509-SVIDs for a batch of (entry ID, CSR); each must be an entry the node may serve.
    pub async fn batch_new_x509_svid(
        &self,
        caller: &Caller,
        requests: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<BatchResult>> {
        let node = self.authenticate_node(caller).await?;
        let entries = self.entries_for_node(&node).await?;
        let results = requests
            .into_iter()
            .map(|(entry_id, csr)| {
                let result = match entries.iter().find(|e| e.id == entry_id) {
                    None => Err(ServiceError::PermissionDenied(format!(
                        "entry {entry_id:?} does not exist or is not authorized for node {}",
                        caller.id
                    ))),
                    Some(entry) => self.sign(
                        &csr,
                        &SvidTemplate {
                            spiffe_id: &entry.spiffe_id,
                            dns_names: &entry.dns_names,
                            ttl: ttl_or(entry.x509_svid_ttl, self.settings.default_x509_svid_ttl),
                        },
                    ),
                };
                (entry_id, result)
            })
            .collect();
        Ok(results)
    }

    /// A JWT-SVID for an entry the node may serve.
    pub async fn new_jwt_svid(
        &self,
        caller: &Caller,
        entry_id: &str,
        audience: &[String],
    ) -> Result<(String, SystemTime)> {
        let node = self.authenticate_node(caller).await?;
        let entries = self.entries_for_node(&node).await?;
        let entry = entries.iter().find(|e| e.id == entry_id).ok_or_else(|| {
            ServiceError::PermissionDenied(format!(
                "entry {entry_id:?} does not exist or is not authorized for node {}",
                caller.id
            ))
        })?;
        let now = SystemTime::now();
        let authority = self.read_authority()?;
        let active = authority.active(now)?;
        let ttl = ttl_or(entry.jwt_svid_ttl, self.settings.default_jwt_svid_ttl)
            .min(active.not_after().duration_since(now).unwrap_or_default());
        let token = mint_jwt_svid(active.jwt_key(), &entry.spiffe_id, audience, ttl, now)?;
        Ok((token, now + ttl))
    }

    /// The own bundle and every federated one.
    pub async fn bundles(&self, caller: &Caller) -> Result<(Bundle, Vec<Bundle>)> {
        self.authenticate_node(caller).await?;
        let own = self.bundle().await?;
        Ok((own, self.federated_bundles().await?))
    }
}

fn ttl_or(seconds: u32, default: Duration) -> Duration {
    if seconds == 0 {
        default
    } else {
        Duration::from_secs(u64::from(seconds))
    }
}
