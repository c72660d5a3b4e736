//! Workload SVIDs: for every pod, every identity it is entitled to (entries whose
//! selectors it has, templates that select it), each with a key made here. Renewed
//! at half their life (with jitter), fetched in batches, forgotten when the pod or
//! the grant goes, and kept while the issuer is down.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::PodInfo;
use meshward_api::proto;
use meshward_api::proto::agent_api_client::AgentApiClient;
use meshward_api::template::IdentityTemplate;
use meshward_jwt::KeySet;
use meshward_spiffe::{Bundle, BundleSet, Selector, SpiffeId, TrustDomain};
use rustls_pki_types::CertificateDer;
use tonic::transport::Channel;

use super::keys::NewKey;
use super::selectors::{pod_attributes, pod_selectors};
use super::workloads::NodeWorkloads;
use super::{AgentError, status_error};

/// Requests per BatchNewX509Svid call.
const BATCH: usize = 50;

/// One workload identity: the SVID chain (leaf first) and its key.
pub struct WorkloadSvid {
    pub spiffe_id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pkcs8: Vec<u8>,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    /// Entry ID or template name it came from.
    pub source: String,
    /// Whether `source` names a template (rendered for this pod) rather than an entry.
    pub from_template: bool,
}

impl std::fmt::Debug for WorkloadSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A pod and its identities (the first is the default, as the Workload API says).
#[derive(Debug, Clone)]
pub struct PodIdentities {
    pub pod: PodInfo,
    pub svids: Vec<Arc<WorkloadSvid>>,
    /// The foreign trust domains its entries and templates federate with: the
    /// bundles it receives, and the peers its tunnels accept.
    pub federates_with: BTreeSet<TrustDomain>,
}

/// What the data path and the Workload API read: immutable, swapped whole.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The own trust domain's bundle (X.509 authorities and JWT keys); without
    /// authorities until the issuer has served one.
    pub own: Bundle,
    /// The bundles of federated trust domains.
    pub federated: BundleSet,
    /// By pod IP.
    pub pods: HashMap<IpAddr, PodIdentities>,
    /// The node's SPIFFE ID, once attested.
    pub node_id: Option<SpiffeId>,
    /// The Kubernetes node name the pods run on.
    pub node_name: String,
    /// Identities of local (non-pod) processes: entries with only `unix:`
    /// selectors, handed to callers that have all of them.
    pub local: Vec<LocalIdentity>,
}

impl Snapshot {
    /// Before the first sync with the issuer: the trust domain alone.
    pub fn empty(trust_domain: TrustDomain) -> Self {
        Self {
            own: Bundle::new(trust_domain),
            federated: BundleSet::default(),
            pods: HashMap::new(),
            node_id: None,
            node_name: String::new(),
            local: Vec::new(),
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.own.trust_domain
    }

    /// The JWT keys of every trust domain this node holds a bundle of (its own and
    /// the federated ones), for JWT-SVIDs: one key set per domain.
    pub fn jwt_keys(&self) -> HashMap<TrustDomain, Arc<KeySet>> {
        std::iter::once(&self.own)
            .chain(self.federated.iter())
            .filter(|bundle| !bundle.jwt_keys.is_empty())
            .filter_map(|bundle| match KeySet::from_jwks(&bundle.jwt_jwks()) {
                Ok(keys) => Some((bundle.trust_domain.clone(), Arc::new(keys))),
                Err(e) => {
                    tracing::error!(trust_domain = %bundle.trust_domain, "JWT keys unusable: {e}");
                    None
                }
            })
            .collect()
    }
}

/// An identity for local processes with all of `selectors`.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    pub selectors: Vec<Selector>,
    pub svid: Arc<WorkloadSvid>,
    pub federates_with: BTreeSet<TrustDomain>,
}

/// The key local identities are held under (no pod has this UID).
const LOCAL: &str = "(local processes)";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Grant {
    Entry(String),
    Template(String),
}

struct Held {
    svid: Arc<WorkloadSvid>,
    renew_at: SystemTime,
}

/// The SVIDs held for the node's pods.
#[derive(Default)]
pub(crate) struct SvidCache {
    held: HashMap<(String, Grant), Held>,
    jitter: RandomState,
}

/// What one sync learned from the issuer.
pub(crate) struct Authorizations {
    entries: Vec<proto::Entry>,
    templates: Vec<IdentityTemplate>,
    pub(crate) bundles: proto::GetBundlesResponse,
}

pub(crate) async fn fetch_authorizations(
    client: &mut AgentApiClient<Channel>,
) -> Result<Authorizations, AgentError> {
    let entries = crate::metrics::observe_issuer(
        "ListAuthorizedEntries",
        client.list_authorized_entries(proto::ListAuthorizedEntriesRequest {}),
    )
    .await
    .map_err(status_error)?
    .into_inner()
    .entries;
    let templates = crate::metrics::observe_issuer(
        "ListIdentityTemplates",
        client.list_identity_templates(proto::ListIdentityTemplatesRequest {}),
    )
    .await
    .map_err(status_error)?
    .into_inner()
    .templates
    .into_iter()
    // a template the issuer would refuse to render is no grant
    .filter_map(|t| IdentityTemplate::try_from(t).ok())
    .collect();
    let bundles = crate::metrics::observe_issuer(
        "GetBundles",
        client.get_bundles(proto::GetBundlesRequest {}),
    )
    .await
    .map_err(status_error)?
    .into_inner();
    Ok(Authorizations {
        entries,
        templates,
        bundles,
    })
}

/// The grants of one pod, entries first (in the issuer's order), then templates.
fn grants_for(pod: &PodInfo, node: &str, auth: &Authorizations) -> Vec<Grant> {
    let selectors = pod_selectors(pod, node);
    let attributes = pod_attributes(pod, node);
    let entries = auth.entries.iter().filter(|e| {
        e.selectors
            .iter()
            .all(|s| s.parse::<Selector>().is_ok_and(|s| selectors.contains(&s)))
    });
    let templates = auth.templates.iter().filter(|t| t.selects(&attributes));
    entries
        .map(|e| Grant::Entry(e.id.clone()))
        .chain(templates.map(|t| Grant::Template(t.name.clone())))
        .collect()
}

impl SvidCache {
    /// Brings the held SVIDs in line with the pods and the grants: fetches missing
    /// and due ones in batches, drops what is no longer granted. An issuer error
    /// for one item leaves that item as it was.
    pub(crate) async fn sync(
        &mut self,
        client: &mut AgentApiClient<Channel>,
        workloads: &NodeWorkloads,
        auth: &Authorizations,
        now: SystemTime,
    ) -> Result<(), AgentError> {
        let wanted = wanted(workloads, auth);
        self.held
            .retain(|(uid, grant), _| wanted.iter().any(|(u, g, _)| u == uid && g == grant));
        let due: Vec<&Wanted<'_>> = wanted
            .iter()
            .filter(|(uid, grant, _)| {
                self.held
                    .get(&(uid.clone(), grant.clone()))
                    .is_none_or(|h| h.renew_at <= now || h.svid.expires_at <= now)
            })
            .collect();
        for chunk in due.chunks(BATCH) {
            let (keys, params) = new_svid_params(chunk, workloads)?;
            let results = crate::metrics::observe_issuer(
                "BatchNewX509Svid",
                client.batch_new_x509_svid(proto::BatchNewX509SvidRequest { params }),
            )
            .await
            .map_err(status_error)?
            .into_inner()
            .results;
            for (((uid, grant, pod), key), result) in chunk.iter().zip(keys).zip(results) {
                let Some(svid) = accept(result, *pod, grant, key, now) else {
                    continue;
                };
                let renew_at = self.renew_at(&svid, uid);
                self.held.insert(
                    (uid.clone(), grant.clone()),
                    Held {
                        svid: Arc::new(svid),
                        renew_at,
                    },
                );
            }
        }
        Ok(())
    }

    /// Half the lifetime, moved by up to ±10% so renewals of many pods spread out.
    fn renew_at(&self, svid: &WorkloadSvid, uid: &str) -> SystemTime {
        let life = svid
            .expires_at
            .duration_since(svid.issued_at)
            .unwrap_or_default();
        let tenth = life / 10;
        let spread = self.jitter.hash_one((uid, &svid.spiffe_id)) % 2001; // 0..=2000
        let half = svid.issued_at + life / 2;
        let offset = tenth.mul_f64(spread as f64 / 1000.0); // 0..=2 tenths
        (half + offset).checked_sub(tenth).unwrap_or(half)
    }

    /// The identities held for local processes, with their selectors.
    pub(crate) fn local(&self, auth: &Authorizations) -> Vec<LocalIdentity> {
        local_entries(auth)
            .filter_map(|e| {
                let held = self
                    .held
                    .get(&(LOCAL.to_owned(), Grant::Entry(e.id.clone())))?;
                Some(LocalIdentity {
                    selectors: e.selectors.iter().filter_map(|s| s.parse().ok()).collect(),
                    svid: held.svid.clone(),
                    federates_with: trust_domains(&e.federates_with),
                })
            })
            .collect()
    }

    /// The pods with the identities held for them, in grant order.
    pub(crate) fn pods(
        &self,
        workloads: &NodeWorkloads,
        auth: &Authorizations,
    ) -> HashMap<IpAddr, PodIdentities> {
        let mut out = HashMap::new();
        for pod in &workloads.pods {
            let mut svids = Vec::new();
            let mut federates_with = BTreeSet::new();
            for grant in grants_for(pod, &workloads.node, auth) {
                let Some(held) = self.held.get(&(pod.uid.clone(), grant.clone())) else {
                    continue;
                };
                svids.push(held.svid.clone());
                federates_with.extend(auth.federates_with(&grant));
            }
            out.insert(
                pod.ip,
                PodIdentities {
                    pod: pod.clone(),
                    svids,
                    federates_with,
                },
            );
        }
        out
    }
}

impl Authorizations {
    /// The trust domains a grant's entry or template federates with.
    fn federates_with(&self, grant: &Grant) -> BTreeSet<TrustDomain> {
        match grant {
            Grant::Entry(id) => self
                .entries
                .iter()
                .find(|e| e.id == *id)
                .map(|e| trust_domains(&e.federates_with))
                .unwrap_or_default(),
            Grant::Template(name) => self
                .templates
                .iter()
                .find(|t| t.name == *name)
                .map(|t| t.federates_with.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// An entry's `federates_with` as the issuer sends it (trust domain names, which
/// it has parsed); anything else is skipped.
fn trust_domains(listed: &[String]) -> BTreeSet<TrustDomain> {
    listed
        .iter()
        .filter_map(|td| TrustDomain::parse_name_or_id(td).ok())
        .collect()
}

/// Entries for local processes: every selector is a `unix:` one.
fn local_entries(auth: &Authorizations) -> impl Iterator<Item = &proto::Entry> {
    auth.entries
        .iter()
        .filter(|e| !e.selectors.is_empty() && e.selectors.iter().all(|s| s.starts_with("unix:")))
}

fn pod_message(pod: &PodInfo, node: &str) -> proto::PodAttributes {
    proto::PodAttributes {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        service_account: pod.service_account.clone(),
        node_name: node.to_owned(),
        labels: pod.labels.clone().into_iter().collect(),
        namespace_labels: Default::default(),
    }
}

/// One SVID the node should hold: the pod's UID (or `LOCAL`), the grant, the pod.
type Wanted<'a> = (String, Grant, Option<&'a PodInfo>);

/// Every SVID the node's pods and local processes are granted.
fn wanted<'a>(workloads: &'a NodeWorkloads, auth: &Authorizations) -> Vec<Wanted<'a>> {
    let mut wanted = Vec::new();
    for pod in &workloads.pods {
        for grant in grants_for(pod, &workloads.node, auth) {
            wanted.push((pod.uid.clone(), grant, Some(pod)));
        }
    }
    for entry in local_entries(auth) {
        wanted.push((LOCAL.to_owned(), Grant::Entry(entry.id.clone()), None));
    }
    wanted
}

/// A new key and the signing request for each of `chunk`, in order.
fn new_svid_params(
    chunk: &[&Wanted<'_>],
    workloads: &NodeWorkloads,
) -> Result<(Vec<Vec<u8>>, Vec<proto::NewX509SvidParams>), AgentError> {
    let mut keys = Vec::with_capacity(chunk.len());
    let mut params = Vec::with_capacity(chunk.len());
    for (_, grant, pod) in chunk {
        let key = NewKey::generate()?;
        // where the pod answers: signed into its SVID, so callers can check
        // they reached it (the data path's outbound verification)
        let ip_addresses = pod.map(|p| vec![p.ip.to_string()]).unwrap_or_default();
        params.push(match grant {
            Grant::Entry(id) => proto::NewX509SvidParams {
                entry_id: id.clone(),
                csr: key.csr.clone(),
                ip_addresses,
                ..Default::default()
            },
            Grant::Template(name) => proto::NewX509SvidParams {
                template: name.clone(),
                csr: key.csr.clone(),
                pod: pod.map(|p| pod_message(p, &workloads.node)),
                ip_addresses,
                ..Default::default()
            },
        });
        keys.push(key.pkcs8);
    }
    Ok((keys, params))
}

/// The issuer's answer for one grant as a held SVID, if it is one: the leaf obeys
/// the X509-SVID rules and names the ID it is sent for. Anything else is logged.
fn accept(
    result: proto::BatchNewX509SvidResult,
    pod: Option<&PodInfo>,
    grant: &Grant,
    key_pkcs8: Vec<u8>,
    now: SystemTime,
) -> Option<WorkloadSvid> {
    let Some(svid) = result.svid else {
        let whom = pod.map_or_else(
            || "local processes".to_owned(),
            |p| format!("pod {}/{}", p.namespace, p.name),
        );
        tracing::warn!("agent: no SVID for {whom} ({grant:?}): {}", result.message);
        return None;
    };
    let leaf = svid
        .cert_chain
        .first()
        .map(|der| CertificateDer::from(der.as_slice()));
    let spiffe_id = match leaf.map(|der| meshward_spiffe::validate_x509_svid(&der)) {
        Some(Ok(id)) if id.as_str() == svid.spiffe_id => id,
        other => {
            tracing::warn!(
                "agent: the issuer sent an unusable SVID for {}: {other:?}",
                svid.spiffe_id
            );
            return None;
        }
    };
    Some(WorkloadSvid {
        spiffe_id,
        chain: svid
            .cert_chain
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        key_pkcs8,
        issued_at: now,
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(svid.expires_at.max(0) as u64),
        source: result.entry_id,
        from_template: matches!(grant, Grant::Template(_)),
    })
}
