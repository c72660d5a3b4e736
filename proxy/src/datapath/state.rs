//! What the data path knows, rebuilt whenever the agent publishes a snapshot: the
//! node's pods by IP, each with its TLS configurations (its SVID as server and as
//! client), and the trust bundles every handshake verifies against. Connections read
//! the current [`MeshState`] once, at accept; rotation swaps it for new handshakes
//! while established ones keep the configuration they started with.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{HboneConfig, PodInfo};
use meshward_jwt::KeySet;
use meshward_policy::Workload;
use meshward_spiffe::{SpiffeId, TrustDomain};
use meshward_tls::{Authorizer, SpiffeClientVerifier, SpiffeServerVerifier, TrustBundles};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;

use crate::agent::{Snapshot, WorkloadSvid};
use crate::metrics;

/// How often the seconds-to-expiry gauges are refreshed.
const EXPIRY_REPORT: Duration = Duration::from_secs(5);

/// ALPN of HBONE: HTTP/2 inside mTLS.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// A pod on this node.
#[derive(Debug)]
pub(crate) struct LocalPod {
    pub(crate) info: PodInfo,
    /// Its attributes as policies select them.
    pub(crate) workload: Workload,
    /// `None`: the pod has no SVID (no entry or template grants it one).
    pub(crate) tls: Option<Arc<PodTls>>,
}

/// One pod identity, ready for handshakes.
pub(crate) struct PodTls {
    pub(crate) spiffe_id: SpiffeId,
    /// Serial of the leaf: distinguishes an SVID from its renewal (pool keys).
    pub(crate) serial: String,
    /// Presented on 15008 to clients of this pod; client certificates required.
    pub(crate) server: Arc<ServerConfig>,
    /// Presented to peer nodes when this pod calls out.
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) issued_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    /// The trust domains whose peers it accepts: its own and those it federates with.
    pub(crate) trusts: Vec<TrustDomain>,
}

impl std::fmt::Debug for PodTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodTls")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// The node's pods, immutable; swapped whole.
#[derive(Debug, Default)]
pub(crate) struct MeshState {
    pods: HashMap<IpAddr, Arc<LocalPod>>,
    /// The trust domains this node has a bundle of now.
    bundles: BTreeSet<TrustDomain>,
    /// Their JWT-SVID keys (RequestAuthentication rules with a `spiffe://` issuer).
    jwt_keys: HashMap<TrustDomain, Arc<KeySet>>,
}

impl MeshState {
    /// Whether the pod at `pod` accepts `peer` now: its trust domain is the pod's
    /// or one it federates with, and the node still holds that domain's bundle.
    /// Tunnels and connections opened earlier are judged again with this.
    pub(crate) fn trusts(&self, pod: IpAddr, peer: &SpiffeId) -> bool {
        let td = peer.trust_domain();
        self.bundles.contains(&td)
            && self
                .pod(pod)
                .and_then(|p| p.tls.as_ref())
                .is_some_and(|tls| tls.trusts.contains(&td))
    }

    /// The JWT-SVID keys of `td` for tokens sent to `pod`: only its own trust
    /// domain's or one it federates with, as for its X509-SVID peers.
    pub(crate) fn jwt_keys(&self, pod: &LocalPod, td: &TrustDomain) -> Option<Arc<KeySet>> {
        pod.tls.as_ref().filter(|tls| tls.trusts.contains(td))?;
        self.jwt_keys.get(td).cloned()
    }

    pub(crate) fn pod(&self, ip: IpAddr) -> Option<&Arc<LocalPod>> {
        self.pods.get(&ip)
    }

    /// Sets the seconds-to-expiry gauge of every identity held, and the age of
    /// the oldest one: what grows while no issuer answers.
    fn report_expiry(&self) {
        let now = SystemTime::now();
        let mut oldest = 0.0f64;
        for tls in self.pods.values().filter_map(|p| p.tls.as_ref()) {
            let left = tls
                .expires_at
                .duration_since(now)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics::svid_seconds_to_expiry(&tls.spiffe_id, left);
            let age = now
                .duration_since(tls.issued_at)
                .map_or(0.0, |d| d.as_secs_f64());
            oldest = oldest.max(age);
        }
        metrics::svid_oldest_age_seconds(oldest);
    }
}

/// Builds TLS configurations from SVIDs, reusing those of SVIDs it has seen.
pub(crate) struct StateBuilder {
    bundles: Arc<TrustBundles>,
    /// (SPIFFE ID, serial, federated trust domains) -> configs, from the previous build.
    built: HashMap<(SpiffeId, String, BTreeSet<TrustDomain>), Arc<PodTls>>,
    federated: Vec<TrustDomain>,
    /// aws-lc-rs with `hbone.key_exchange`.
    provider: Arc<CryptoProvider>,
}

impl StateBuilder {
    pub(crate) fn new(hbone: &HboneConfig) -> Self {
        Self {
            bundles: TrustBundles::new(),
            built: HashMap::new(),
            federated: Vec::new(),
            provider: meshward_tls::crypto_provider(&hbone.key_exchange),
        }
    }

    pub(crate) fn build(&mut self, snapshot: &Snapshot) -> MeshState {
        self.update_bundles(snapshot);
        let mut built = HashMap::new();
        let mut pods = HashMap::new();
        for (ip, entry) in &snapshot.pods {
            // the first identity is the pod's default one, as in the Workload API
            let tls = entry.svids.first().and_then(|svid| {
                let key = (
                    svid.spiffe_id.clone(),
                    serial(svid),
                    entry.federates_with.clone(),
                );
                let tls = match self.built.get(&key) {
                    Some(tls) => tls.clone(),
                    None => match pod_tls(svid, &entry.federates_with, &self.bundles, &self.provider) {
                        Ok(tls) if self.built.keys().any(|(id, serial, _)| *id == key.0 && *serial != key.1) => {
                            metrics::svid_rotated(&key.0);
                            Arc::new(tls)
                        }
                        Ok(tls) => Arc::new(tls),
                        Err(e) => {
                            tracing::error!(pod = %entry.pod.name, id = %svid.spiffe_id, "unusable SVID: {e}");
                            return None;
                        }
                    },
                };
                built.insert(key, tls.clone());
                Some(tls)
            });
            let pod = LocalPod {
                workload: Workload {
                    namespace: entry.pod.namespace.clone(),
                    labels: entry.pod.labels.clone(),
                },
                info: entry.pod.clone(),
                tls,
            };
            pods.insert(*ip, Arc::new(pod));
        }
        self.built = built;
        let bundles = std::iter::once(snapshot.trust_domain().clone())
            .chain(self.federated.iter().cloned())
            .collect();
        MeshState {
            pods,
            bundles,
            jwt_keys: snapshot.jwt_keys(),
        }
    }

    fn update_bundles(&mut self, snapshot: &Snapshot) {
        let own = &snapshot.own;
        if !own.x509_authorities.is_empty() {
            if let Err(e) = self.bundles.set(&own.trust_domain, &own.x509_authorities) {
                tracing::error!("own trust bundle unusable, keeping the previous one: {e}");
            }
        }
        let mut now = Vec::new();
        for bundle in snapshot.federated.iter() {
            let td = &bundle.trust_domain;
            match self.bundles.set(td, &bundle.x509_authorities) {
                Ok(()) => now.push(td.clone()),
                Err(e) => tracing::error!("federated bundle of {td} unusable: {e}"),
            }
        }
        for gone in self.federated.iter().filter(|td| !now.contains(td)) {
            self.bundles.remove(gone);
        }
        self.federated = now;
    }
}

/// The JWT-SVID keys of every bundle the node holds; a bundle without any has no
/// entry (its JWT-SVIDs are refused).
fn serial(svid: &WorkloadSvid) -> String {
    svid.chain
        .first()
        .and_then(meshward_tls::serial_of)
        .unwrap_or_default()
}

/// `federates_with`: the foreign trust domains whose peers this pod's tunnels
/// accept, in both directions (its own domain always); the node may trust more
/// bundles, for other pods.
fn pod_tls(
    svid: &WorkloadSvid,
    federates_with: &BTreeSet<TrustDomain>,
    bundles: &Arc<TrustBundles>,
    provider: &Arc<CryptoProvider>,
) -> Result<PodTls, rustls::Error> {
    let mut trusts = vec![svid.spiffe_id.trust_domain()];
    trusts.extend(federates_with.iter().cloned());
    let trusted = || Authorizer::TrustDomains(trusts.clone());
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key_pkcs8.clone()));
    let chain: Vec<CertificateDer<'static>> = svid.chain.clone();
    // TLS 1.3 only, as HBONE peers speak it; no resumption (every tunnel is a full
    // mutual handshake, so a peer's current certificate is always the one checked)
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(SpiffeClientVerifier::new(bundles.clone(), trusted(), true))
        .with_single_cert(chain.clone(), key())?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    // the destination is an address, not a name: no SNI; whoever answers must
    // hold an SVID of the pod's own domain or one it federates with (pool.rs then
    // checks that an own-domain SVID names the address dialled)
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(bundles.clone(), trusted()))
        .with_client_auth_cert(chain, key())?;
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    client.enable_sni = false;
    client.resumption = rustls::client::Resumption::disabled();
    Ok(PodTls {
        spiffe_id: svid.spiffe_id.clone(),
        serial: serial(svid),
        server: Arc::new(server),
        client: Arc::new(client),
        issued_at: svid.issued_at,
        expires_at: svid.expires_at,
        trusts,
    })
}

/// Follows the agent's snapshots; the receiver always holds the current state.
pub(crate) fn follow(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    hbone: &HboneConfig,
) -> watch::Receiver<Arc<MeshState>> {
    let mut builder = StateBuilder::new(hbone);
    let first = builder.build(&snapshots.borrow_and_update());
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_REPORT);
        loop {
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    let state = Arc::new(builder.build(&snapshot));
                    state.report_expiry();
                    if tx.send(state).is_err() {
                        break;
                    }
                }
                _ = tick.tick() => tx.borrow().report_expiry(),
            }
        }
    });
    rx
}
