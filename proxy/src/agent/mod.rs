//! The agent: the identity half of the node daemon (SPIRE agent's role).
//!
//! One task owns the conversation with the issuer: it attests the node (or reuses
//! the node SVID kept in data_dir), renews it at half life, and every
//! `sync_interval` (or when the workloads change) syncs entries, templates and
//! bundles and the SVIDs of every local pod. Each result is published as an
//! immutable [`Snapshot`] on a watch channel: readers never take a lock, and while
//! the issuer is unreachable they keep the last snapshot (SVIDs stay valid until
//! they expire) while the task retries with backoff.

mod attestor;
mod imds;
mod issuers;
mod keys;
mod kube_source;
mod node;
mod selectors;
mod svids;
mod workloads;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::ProxyConfig;
use meshward_spiffe::TrustDomain;
use meshward_tls::{CertStore, TrustBundles};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

pub use svids::{LocalIdentity, PodIdentities, Snapshot, WorkloadSvid};
pub use workloads::NodeWorkloads;

use issuers::Issuers;
use node::{NodeIdentity, NodeStore};
use svids::SvidCache;
use workloads::{FileSource, WorkloadSource};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent configuration: {0}")]
    Config(String),
    #[error("node attestation failed: {0}")]
    Attestation(String),
    /// The issuer refused this node (banned, evicted, stale SVID): attest again.
    #[error("the issuer no longer accepts this node: {0}")]
    NodeRejected(String),
    #[error("issuer unavailable: {0}")]
    IssuerUnavailable(String),
    #[error("issuer unavailable: {0}")]
    IssuerConnect(#[source] meshward_api::client::ClientError),
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("a file write task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("key or CSR generation: {0}")]
    Key(#[from] rcgen::Error),
    #[error("TLS credentials: {0}")]
    Tls(#[from] meshward_tls::TlsError),
    #[error("no node identity yet")]
    NoNodeIdentity,
    #[error("agent.workloads.kubernetes: {0}")]
    Kubernetes(#[from] meshward_kubernetes::KubernetesError),
}

/// Maps an issuer status to what the agent does about it.
pub(crate) fn status_error(status: tonic::Status) -> AgentError {
    match status.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            AgentError::NodeRejected(status.message().to_owned())
        }
        _ => AgentError::IssuerUnavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Readers' side: snapshots, whether the first sync is done, and a client to
/// the issuer authenticated as this node (for on-demand JWT-SVIDs).
#[derive(Clone)]
pub struct AgentHandle {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub ready: watch::Receiver<bool>,
    pub issuer: watch::Receiver<Option<IssuerClient>>,
}

/// The agent API client, as the node.
pub type IssuerClient =
    meshward_api::proto::agent_api_client::AgentApiClient<tonic::transport::Channel>;

/// Backoff after failures: 1 s doubling to 30 s.
/// Waits between failed rounds: doubling up to `MAX`, each wait drawn from its
/// upper half so that agents which failed together (an issuer outage) come back
/// spread out. Short enough that SVIDs renew within seconds of an issuer's return.
struct Backoff {
    current: Duration,
    draws: u64,
    jitter: std::collections::hash_map::RandomState,
}

impl Backoff {
    const START: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(8);

    fn new() -> Self {
        Self {
            current: Self::START,
            draws: 0,
            jitter: std::collections::hash_map::RandomState::new(),
        }
    }

    fn next(&mut self) -> Duration {
        use std::hash::BuildHasher;
        let ceiling = self.current;
        self.current = (self.current * 2).min(Self::MAX);
        self.draws += 1;
        let fraction = (self.jitter.hash_one(self.draws) % 1001) as f64 / 1000.0;
        ceiling / 2 + (ceiling / 2).mul_f64(fraction)
    }

    fn reset(&mut self) {
        self.current = Self::START;
    }
}

/// Starts the agent task.
pub fn start(config: &ProxyConfig) -> Result<AgentHandle, AgentError> {
    meshward_tls::install_crypto_provider();
    let agent = &config.agent;
    let source: Box<dyn WorkloadSource> = match (&agent.workloads.file, &agent.workloads.kubernetes)
    {
        (Some(path), None) => Box::new(FileSource::new(path.clone())),
        (None, Some(kubernetes)) => Box::new(kube_source::KubeSource::start(kubernetes)?),
        _ => {
            return Err(AgentError::Config(
                "agent.workloads: set file or kubernetes".into(),
            ));
        }
    };
    let bootstrap = match &agent.trust_bundle_path {
        Some(path) => std::fs::read_to_string(path)
            .map(|text| meshward_spiffe::pem::certificates(&text).unwrap_or_default())
            .map_err(|source| AgentError::File {
                path: path.clone(),
                source,
            })?,
        None => Vec::new(),
    };
    let store = NodeStore::new(&agent.data_dir);
    // The last bundle the issuer served is newer than the bootstrap one.
    let trusted = store.load_bundle().unwrap_or(bootstrap);
    if trusted.is_empty() {
        return Err(AgentError::Config(
            "agent.trust_bundle_path is required to verify the issuer on first contact".into(),
        ));
    }
    let (snapshots_tx, snapshots) =
        watch::channel(Arc::new(Snapshot::empty(config.trust_domain.clone())));
    let (ready_tx, ready) = watch::channel(false);
    let (issuer_tx, issuer) = watch::channel(None);
    let task = AgentTask {
        issuer: issuer_tx,
        issuers: Issuers::new(agent.issuer_address.clone()),
        client: None,
        config: config.clone(),
        store,
        bundles: TrustBundles::new(),
        identity: CertStore::new(),
        node: None,
        cache: SvidCache::default(),
        workloads: NodeWorkloads::default(),
        source,
        snapshots: snapshots_tx,
        ready: ready_tx,
    };
    task.bundles.set(&config.trust_domain, &trusted)?;
    tokio::spawn(task.run());
    Ok(AgentHandle {
        snapshots,
        ready,
        issuer,
    })
}

struct AgentTask {
    config: ProxyConfig,
    store: NodeStore,
    /// Trust for the issuer connection (the own trust domain's bundle).
    bundles: Arc<TrustBundles>,
    /// The node SVID presented to the issuer.
    identity: Arc<CertStore>,
    node: Option<NodeIdentity>,
    cache: SvidCache,
    workloads: NodeWorkloads,
    source: Box<dyn WorkloadSource>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    ready: watch::Sender<bool>,
    issuer: watch::Sender<Option<IssuerClient>>,
    /// The issuer replicas and which one answered last.
    issuers: Issuers,
    /// The connection the last round used, kept for the next when it succeeded
    /// (a failed round drops it: the next connects again, maybe elsewhere).
    client: Option<IssuerClient>,
}

impl AgentTask {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut next_sync = tokio::time::Instant::now();
        loop {
            if let Some(w) = self.source.poll() {
                self.workloads = w;
                next_sync = tokio::time::Instant::now();
            }
            if tokio::time::Instant::now() >= next_sync {
                match self.step().await {
                    Ok(()) => {
                        backoff.reset();
                        next_sync = tokio::time::Instant::now() + self.config.agent.sync_interval;
                    }
                    Err(e) => {
                        match e {
                            // banned, evicted or stale: start over with a fresh
                            // attestation, also after a restart
                            AgentError::NodeRejected(_) => {
                                self.node = None;
                                self.client = None;
                                self.store.forget();
                                self.issuer.send_replace(None);
                            }
                            // the replica went away mid-round: the next starts elsewhere
                            AgentError::IssuerUnavailable(_) => self.issuers.round_failed(),
                            _ => {}
                        }
                        let wait = backoff.next();
                        tracing::warn!("agent: {e}; retrying in {wait:?}");
                        next_sync = tokio::time::Instant::now() + wait;
                    }
                }
            }
            tokio::time::sleep(workloads::FILE_POLL.min(self.config.agent.sync_interval)).await;
        }
    }

    /// One round: node identity, then the sync.
    async fn step(&mut self) -> Result<(), AgentError> {
        let agent = &self.config.agent;
        let td = &self.config.trust_domain;
        let now = SystemTime::now();
        if self.node.is_none() {
            self.node = self.store.load().filter(|n| n.expires_at > now);
            if self.node.is_none() {
                let mut anonymous =
                    node::connect(&mut self.issuers, td, &self.bundles, &CertStore::new()).await?;
                let (node, bundle) = node::attest(agent, &mut anonymous).await?;
                tracing::info!("agent: attested as {}", node.spiffe_id);
                self.store.save(&node).await?;
                adopt_bundle(&self.bundles, &self.store, td, &bundle).await?;
                self.node = Some(node);
            }
            self.present_node_identity()?;
        }
        // the last round's connection, when it ended well: a handshake per round
        // was most of an idle node's CPU, and the issuer's at scale (the issuer
        // checks the node on every call, so a held connection grants nothing more)
        let mut client = match self.client.take() {
            Some(client) => client,
            None => node::connect(&mut self.issuers, td, &self.bundles, &self.identity).await?,
        };
        if self.node.as_ref().is_some_and(|n| n.renew_due(now)) {
            let renewed = node::renew(&mut client).await?;
            tracing::info!(
                "agent: renewed the node SVID (expires {:?})",
                renewed.expires_at
            );
            self.store.save(&renewed).await?;
            self.node = Some(renewed);
            self.present_node_identity()?;
            // the issuer checks the presented serial: use a connection with the new one
            client = node::connect(&mut self.issuers, td, &self.bundles, &self.identity).await?;
        }
        self.issuer.send_replace(Some(client.clone()));
        let auth = svids::fetch_authorizations(&mut client).await?;
        let own = own_bundle(td, auth.bundles.own.as_ref());
        if !own.x509_authorities.is_empty() {
            adopt_bundle(&self.bundles, &self.store, td, &own.x509_authorities).await?;
        }
        self.cache
            .sync(&mut client, &self.workloads, &auth, now)
            .await?;
        let snapshot = Snapshot {
            own,
            federated: auth
                .bundles
                .federated
                .iter()
                .filter_map(|b| match federated_bundle(b) {
                    Ok(bundle) => Some(bundle),
                    Err(e) => {
                        tracing::warn!("agent: skipped a federated bundle: {e}");
                        None
                    }
                })
                .collect(),
            pods: self.cache.pods(&self.workloads, &auth),
            local: self.cache.local(&auth),
            node_name: self.workloads.node.clone(),
            node_id: self.node.as_ref().map(|n| n.spiffe_id.clone()),
        };
        self.snapshots.send_replace(Arc::new(snapshot));
        self.client = Some(client);
        if !self.ready.send_replace(true) {
            tracing::info!("agent: ready: the first sync is done, the node's SVIDs are in hand");
        }
        Ok(())
    }

    fn present_node_identity(&self) -> Result<(), AgentError> {
        let node = self.node.as_ref().ok_or(AgentError::NoNodeIdentity)?;
        Ok(self.identity.set(node.chain.clone(), &node.key_pkcs8)?)
    }
}

/// The own bundle as the issuer sent it. Its X.509 authorities are what matters
/// most (every handshake): JSON that does not parse costs the JWT keys only.
fn own_bundle(
    td: &TrustDomain,
    sent: Option<&meshward_api::proto::Bundle>,
) -> meshward_spiffe::Bundle {
    let Some(sent) = sent else {
        return meshward_spiffe::Bundle::new(td.clone());
    };
    wire_bundle(td, sent).unwrap_or_else(|e| {
        tracing::error!(
            "agent: the own bundle's JSON is unusable, keeping its X.509 authorities only: {e}"
        );
        authorities_only(td, sent)
    })
}

/// A federated bundle as the issuer sent it.
fn federated_bundle(
    b: &meshward_api::proto::Bundle,
) -> Result<meshward_spiffe::Bundle, Box<dyn std::error::Error>> {
    let td = TrustDomain::parse(&b.trust_domain)?;
    Ok(wire_bundle(&td, b)?)
}

/// A bundle of `td` as the issuer sends it: the SPIFFE JSON (X.509 authorities and
/// JWT keys) when present, else the X.509 authorities alone.
fn wire_bundle(
    td: &TrustDomain,
    sent: &meshward_api::proto::Bundle,
) -> Result<meshward_spiffe::Bundle, meshward_spiffe::InvalidBundle> {
    if sent.jwks.is_empty() {
        return Ok(authorities_only(td, sent));
    }
    meshward_spiffe::Bundle::from_spiffe_json(td, &sent.jwks)
}

fn authorities_only(
    td: &TrustDomain,
    sent: &meshward_api::proto::Bundle,
) -> meshward_spiffe::Bundle {
    meshward_spiffe::Bundle {
        x509_authorities: sent
            .x509_authorities
            .iter()
            .cloned()
            .map(CertificateDer::from)
            .collect(),
        ..meshward_spiffe::Bundle::new(td.clone())
    }
}

/// Trusts `bundle` for the issuer connection and keeps it for the next start.
async fn adopt_bundle(
    bundles: &TrustBundles,
    store: &NodeStore,
    trust_domain: &TrustDomain,
    bundle: &[CertificateDer<'static>],
) -> Result<(), AgentError> {
    bundles.set(trust_domain, bundle)?;
    store.save_bundle(bundle).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_waits_drawn_from_the_upper_half() {
        let mut backoff = Backoff::new();
        let mut ceiling = Backoff::START;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = backoff.next();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} for {ceiling:?}"
            );
            waits.push(wait);
            ceiling = (ceiling * 2).min(Backoff::MAX);
        }
        assert!(waits.iter().all(|w| *w <= Backoff::MAX));
        let spread: std::collections::BTreeSet<Duration> = waits[4..].iter().copied().collect();
        assert!(
            spread.len() > 1,
            "capped waits are all {spread:?}: no jitter"
        );
        backoff.reset();
        assert!(backoff.next() <= Backoff::START);
    }
}
