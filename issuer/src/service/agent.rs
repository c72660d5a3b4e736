//! The agent API's behaviour: attestation, node SVID renewal, the entries a node
//! may serve, and signing for them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::{Issuer, Result, ServiceError, unix};
use crate::datastore::{AttestedNode, Datastore, Entry, EntryFilter};
use crate::jwt::mint_jwt_svid;
use crate::x509::{SvidTemplate, X509Svid};
use meshward_api::template::PodAttributes;
use meshward_spiffe::Bundle;
use meshward_spiffe::SpiffeId;

/// A node as the transport authenticated it: the SPIFFE ID and serial of the
/// client certificate it presented (already verified against the bundle).
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: SpiffeId,
    pub serial: String,
}

/// One result of a batch: an SVID or why not.
pub type BatchResult = (String, Result<X509Svid>);

/// What an SVID is requested for.
#[derive(Debug, Clone)]
pub enum SvidTarget {
    Entry(String),
    /// An identity template rendered for one pod.
    Template {
        name: String,
        pod: PodAttributes,
    },
}

/// One X509-SVID asked for: what for, the CSR, and where the workload answers.
#[derive(Debug, Clone)]
pub struct SvidRequest {
    pub target: SvidTarget,
    pub csr: Vec<u8>,
    /// The pod's addresses as its node reports them (IP SANs).
    pub addresses: Vec<std::net::IpAddr>,
}

/// The most addresses one SVID names (a pod has one per IP family).
pub const MAX_SVID_ADDRESSES: usize = 4;

impl SvidTarget {
    fn key(&self) -> String {
        match self {
            Self::Entry(id) => id.clone(),
            Self::Template { name, .. } => name.clone(),
        }
    }
}

/// The identity one target gives: ID, DNS names, TTLs.
struct Grant {
    spiffe_id: SpiffeId,
    dns_names: Vec<String>,
    x509_svid_ttl: u32,
    jwt_svid_ttl: u32,
}

impl<D: Datastore> Issuer<D> {
    /// `AttestAgent`: the attestor of type `kind` verifies `payload`, then the node
    /// is admitted with what it proved. A type this issuer does not accept is
    /// refused with the ones it does.
    pub async fn attest_agent(&self, kind: &str, payload: &[u8], csr: &[u8]) -> Result<X509Svid> {
        let Some(attestor) = self.attestors.get(kind) else {
            let refused = Err(ServiceError::PermissionDenied(format!(
                "{kind:?} attestation is not configured on this issuer (it accepts: {})",
                self.attestors.kinds().join(", ")
            )));
            count_attestation("unknown", &refused);
            return refused;
        };
        let admitted = match attestor
            .attest(&self.store, &self.settings.trust_domain, payload)
            .await
        {
            Ok(node) => self.admit_node(node, attestor.kind(), csr).await,
            Err(e) => Err(e.into()),
        };
        count_attestation(attestor.kind(), &admitted);
        if let Err(e) = &admitted {
            // what the evidence claimed, unverified: who tried
            tracing::warn!(
                method = attestor.kind(),
                claimed = %attestor.claimed(payload),
                "node attestation refused: {e}"
            );
        }
        admitted
    }

    /// Signs a node SVID and records the node; a banned node is refused. A fresh
    /// attestation (a new join token, a new PSAT) replaces the node's record,
    /// unless the attestor says the node attests only once (`first_only`): then
    /// the record is created, and a second attestation racing the first fails.
    async fn admit_node(
        &self,
        node: crate::attestor::Attestation,
        attestation_type: &str,
        csr: &[u8],
    ) -> Result<X509Svid> {
        let id = node.spiffe_id;
        match self.store.get_node(&id).await {
            Ok(existing) if existing.banned => {
                return Err(ServiceError::PermissionDenied(format!(
                    "node {id} is banned"
                )));
            }
            Ok(_) | Err(crate::datastore::DatastoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let svid = self
            .sign(
                csr,
                &SvidTemplate {
                    spiffe_id: &id,
                    dns_names: &[],
                    ip_addresses: &[],
                    ttl: self.settings.agent_svid_ttl,
                },
            )
            .await?;
        let record = AttestedNode {
            spiffe_id: id,
            attestation_type: attestation_type.to_owned(),
            selectors: node.selectors,
            serial: svid.serial.clone(),
            expires_at: unix(svid.expires_at),
            banned: false,
            can_reattest: node.can_reattest,
            created_at: unix(SystemTime::now()),
        };
        if !node.first_only {
            self.store.upsert_node(&record).await?;
        } else if let Err(e) = self.store.create_node(&record).await {
            return Err(match e {
                crate::datastore::DatastoreError::AlreadyExists(_) => {
                    ServiceError::PermissionDenied(format!(
                        "node {} has already attested (it attests once)",
                        record.spiffe_id
                    ))
                }
                e => e.into(),
            });
        }
        Ok(svid)
    }

    /// The caller's node record, if it may use the API: attested, not banned, and
    /// presenting its current SVID, unexpired.
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
        // TLS checked the certificate when the connection opened; the agent keeps
        // its connection between syncs, so its expiry is checked on each call
        if node.expires_at <= unix(SystemTime::now()) {
            return Err(ServiceError::PermissionDenied(format!(
                "node {}'s SVID has expired: attest again",
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
        let svid = self
            .sign(
                csr,
                &SvidTemplate {
                    spiffe_id: &caller.id,
                    dns_names: &[],
                    ip_addresses: &[],
                    ttl: self.settings.agent_svid_ttl,
                },
            )
            .await?;
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

    /// What `target` grants this node: an entry it may serve, or a template that
    /// selects the pod (rendered here again). A node attested by k8s_psat may only
    /// ask for pods on its own Kubernetes node.
    async fn grant(
        &self,
        node: &AttestedNode,
        entries: &[Entry],
        target: &SvidTarget,
    ) -> Result<Grant> {
        match target {
            SvidTarget::Entry(entry_id) => {
                let entry = entries.iter().find(|e| &e.id == entry_id).ok_or_else(|| {
                    ServiceError::PermissionDenied(format!(
                        "entry {entry_id:?} does not exist or is not authorized for node {}",
                        node.spiffe_id
                    ))
                })?;
                Ok(Grant {
                    spiffe_id: entry.spiffe_id.clone(),
                    dns_names: entry.dns_names.clone(),
                    x509_svid_ttl: entry.x509_svid_ttl,
                    jwt_svid_ttl: entry.jwt_svid_ttl,
                })
            }
            SvidTarget::Template { name, pod } => {
                let templates = self.store.list_templates().await?;
                let template = templates.iter().find(|t| &t.name == name).ok_or_else(|| {
                    ServiceError::NotFound(format!("identity template {name:?} not found"))
                })?;
                let node_selector = |key: &str| {
                    node.selectors
                        .iter()
                        .find(|s| s.kind == "k8s_psat" && s.value.starts_with(key))
                        .map(|s| s.value[key.len()..].to_owned())
                };
                if let Some(node_name) = node_selector("agent_node_name:") {
                    if pod.node_name != node_name {
                        return Err(ServiceError::PermissionDenied(format!(
                            "pod {}/{} runs on {:?}, not on this node ({node_name})",
                            pod.namespace, pod.name, pod.node_name
                        )));
                    }
                }
                if !template.selects_node(&node.selectors) {
                    return Err(ServiceError::PermissionDenied(format!(
                        "identity template {name:?} does not select node {}",
                        node.spiffe_id
                    )));
                }
                if !template.selects(pod) {
                    return Err(ServiceError::PermissionDenied(format!(
                        "identity template {name:?} does not select pod {}/{}",
                        pod.namespace, pod.name
                    )));
                }
                let cluster = node_selector("cluster:").unwrap_or_default();
                let rendered = template
                    .render(&self.settings.trust_domain, &cluster, pod)
                    .map_err(ServiceError::InvalidArgument)?;
                Ok(Grant {
                    spiffe_id: rendered.spiffe_id,
                    dns_names: rendered.dns_names,
                    x509_svid_ttl: template.x509_svid_ttl,
                    jwt_svid_ttl: template.jwt_svid_ttl,
                })
            }
        }
    }

    /// X509-SVIDs for a batch of requests; each must be granted to this node.
    pub async fn batch_new_x509_svid(
        &self,
        caller: &Caller,
        requests: Vec<SvidRequest>,
    ) -> Result<Vec<BatchResult>> {
        let node = self.authenticate_node(caller).await?;
        let entries = self.entries_for_node(&node).await?;
        let mut results = Vec::with_capacity(requests.len());
        for SvidRequest {
            target,
            csr,
            addresses,
        } in requests
        {
            let result = match self.grant(&node, &entries, &target).await {
                Ok(_) if addresses.len() > MAX_SVID_ADDRESSES => {
                    Err(ServiceError::InvalidArgument(format!(
                        "{} addresses; an SVID names at most {MAX_SVID_ADDRESSES}",
                        addresses.len()
                    )))
                }
                Ok(grant) => {
                    self.sign(
                        &csr,
                        &SvidTemplate {
                            spiffe_id: &grant.spiffe_id,
                            dns_names: &grant.dns_names,
                            ip_addresses: &addresses,
                            ttl: ttl_or(grant.x509_svid_ttl, self.settings.default_x509_svid_ttl),
                        },
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            results.push((target.key(), result));
        }
        Ok(results)
    }

    /// A JWT-SVID for a target granted to this node.
    pub async fn new_jwt_svid(
        &self,
        caller: &Caller,
        target: &SvidTarget,
        audience: &[String],
    ) -> Result<(String, SystemTime)> {
        let node = self.authenticate_node(caller).await?;
        let entries = self.entries_for_node(&node).await?;
        let grant = self.grant(&node, &entries, target).await?;
        let now = SystemTime::now();
        let active = std::sync::Arc::clone(self.signing_ca(&*self.read_authority()?, now)?);
        let ttl = ttl_or(grant.jwt_svid_ttl, self.settings.default_jwt_svid_ttl)
            .min(active.not_after().duration_since(now).unwrap_or_default());
        let (issuer, audience) = (self.settings.jwt_issuer.clone(), audience.to_vec());
        // on the blocking pool: a token's signature may wait for a network HSM
        let token = tokio::task::spawn_blocking(move || {
            mint_jwt_svid(
                active.jwt_key(),
                &grant.spiffe_id,
                issuer.as_deref(),
                &audience,
                ttl,
                now,
            )
        })
        .await
        .map_err(|e| ServiceError::Internal(Box::new(e)))??;
        metrics::counter!("meshward_issuer_svids_signed_total", "type" => "jwt").increment(1);
        Ok((token, now + ttl))
    }

    /// The identity templates that apply on the caller's node (its selectors,
    /// whichever attestor proved them); nodes render them for their pods.
    pub async fn identity_templates(
        &self,
        caller: &Caller,
    ) -> Result<Vec<meshward_api::template::IdentityTemplate>> {
        let node = self.authenticate_node(caller).await?;
        let mut templates = self.store.list_templates().await?;
        templates.retain(|t| t.selects_node(&node.selectors));
        Ok(templates)
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

/// `meshward_issuer_attestations_total{method, result}`: `ok`, or why it failed.
fn count_attestation(method: &'static str, result: &Result<X509Svid>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(ServiceError::InvalidArgument(_)) => "invalid_argument",
        Err(ServiceError::PermissionDenied(_)) => "permission_denied",
        Err(ServiceError::NotFound(_)) => "not_found",
        Err(ServiceError::AlreadyExists(_)) => "already_exists",
        Err(ServiceError::Unavailable(_)) => "unavailable",
        Err(ServiceError::Internal(_)) => "internal",
    };
    metrics::counter!(
        "meshward_issuer_attestations_total",
        "method" => method,
        "result" => outcome,
    )
    .increment(1);
}
