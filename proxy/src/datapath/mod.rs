//! The node proxy's data path. A connection flows through these stages:
//!
//! ```text
//! pod A --TPROXY--> outbound.rs (15001) --pool.rs: mTLS + HTTP/2 CONNECT--> peer node
//! peer --REDIRECT--> inbound.rs (15008): pod's SVID, verify client, CONNECT checks
//!                   -> serve.rs: detect.rs -> TCP: admit.rs once, copy.rs
//!                                          -> HTTP: http.rs, admit.rs per request,
//!                                             xfcc, upstream.rs -> pod B
//! plaintext --REDIRECT--> inbound.rs (15006): STRICT refuses; PERMISSIVE -> serve.rs
//! ```
//!
//! `state.rs` turns the agent's snapshots into TLS configurations per pod;
//! `policies.rs` keeps the policy set current. Both are watch channels: a stage
//! reads the current value without waiting on a writer. `admit.rs` is the one place
//! a stream or request is admitted or refused (`refusal.rs`). The locks on the way
//! are short and never held across an await (the connection pools' maps, the JWKS
//! cache, revocation's table of held connections), except that requests needing
//! keys a JWKS fetch is getting wait for that one fetch.

mod access_log;
mod admit;
mod body;
mod coalesce;
mod copy;
mod custom;
mod detect;
mod diagnose;
mod drain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod h2;
mod h2_stream;
mod http;
mod inbound;
mod jwks;
mod outbound;
mod policies;
mod policy_objects;
mod pool;
mod refusal;
mod responses;
mod revocation;
mod serve;
mod services;
mod socket;
mod state;
mod stream;
mod upstream;

/// The Kubernetes clients of `authorization.kubernetes` (policies) and
/// `outbound.kubernetes` (Services), where configured.
fn kubernetes_sources(
    config: &ProxyConfig,
) -> Result<(Option<meshward_kubernetes::Connection>, Services), DataPathError> {
    let policy_api = match &config.authorization.kubernetes {
        Some(api) => Some(meshward_kubernetes::connect(api).map_err(DataPathError::PolicySource)?),
        None => None,
    };
    let services = match &config.outbound.kubernetes {
        Some(api) => Services::watch(
            meshward_kubernetes::connect(api).map_err(DataPathError::ServiceSource)?,
        ),
        None => Services::none(),
    };
    Ok((policy_api, services))
}

#[cfg(test)]
mod testing;

pub use drain::{Drain, DrainSignal, channel as drain_channel};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AppProtocol, InboundConfig, LimitsConfig, OutboundConfig, ProxyConfig};
use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::agent::AgentHandle;
use crate::capture::BoundSocket;
use custom::Providers;
use jwks::JwksCache;
use policies::Policies;
use pool::HbonePool;
use revocation::Revocations;
use services::Services;
use state::MeshState;
use upstream::UpstreamPool;

#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    #[error("listen on {addr} ({role}): {source}")]
    Listen {
        addr: SocketAddr,
        role: &'static str,
        source: std::io::Error,
    },
    #[error("authorization.kubernetes: {0}")]
    PolicySource(#[source] meshward_kubernetes::KubernetesError),
    #[error("outbound.kubernetes: {0}")]
    ServiceSource(#[source] meshward_kubernetes::KubernetesError),
    #[error("authorization.jwks.ca_file: {0}")]
    JwksCaFile(#[source] meshward_tls::CaFileError),
    #[error("TLS for JWKS fetches: {0}")]
    JwksTls(#[source] rustls::Error),
    #[error("extension_providers {name:?}: {source}")]
    ExtensionProvider {
        name: String,
        source: meshward_extauthz::CheckError,
    },
}

/// What every stage reads.
pub(crate) struct Shared {
    pub(crate) state: watch::Receiver<Arc<MeshState>>,
    pub(crate) policies: Policies,
    pub(crate) inbound: InboundConfig,
    pub(crate) outbound: OutboundConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) mark: u32,
    pub(crate) hbone_port: u16,
    own_ports: [u16; 3],
    pub(crate) hbone: Arc<HbonePool>,
    pub(crate) upstream: Arc<UpstreamPool>,
    pub(crate) services: Services,
    /// RequestAuthentication keys fetched from `jwksUri` and discovery.
    pub(crate) jwks: Arc<JwksCache>,
    /// The external authorizers CUSTOM policies name.
    pub(crate) providers: Providers,
    /// Connections judged once, closed by a change that no longer allows them.
    pub(crate) revocations: Arc<Revocations>,
    /// Started on SIGTERM: every stage winds down (`drain.rs`).
    pub(crate) drain: Drain,
}

impl Shared {
    /// The proxy's own listener ports: never a destination inside a tunnel.
    pub(crate) fn is_own_port(&self, port: u16) -> bool {
        self.own_ports.contains(&port)
    }

    /// What a local pod's port is declared to speak: by this node's
    /// `inbound.ports`, else by the pod's Services; `None`: detected.
    pub(crate) fn declared_protocol(&self, destination: SocketAddr) -> Option<AppProtocol> {
        self.inbound
            .ports
            .get(&destination.port())
            .copied()
            .or_else(|| self.services.declared(destination))
    }
}

/// The listening data path; [`DataPath::run`] serves it.
pub struct DataPath {
    shared: Arc<Shared>,
    /// Bound at start, listening once the agent is ready (`run`).
    outbound: BoundSocket,
    hbone: BoundSocket,
    plaintext: BoundSocket,
    agent_ready: watch::Receiver<bool>,
}

impl DataPath {
    /// Binds the three listeners (all addresses: capture delivers to them) and
    /// starts following the agent's identities and the policy files.
    /// `drain`: when it starts, the data path winds down and `run` returns.
    pub fn bind(
        config: &ProxyConfig,
        agent: &AgentHandle,
        drain: Drain,
    ) -> Result<Self, DataPathError> {
        let capture = &config.capture;
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let listen = |port, role: &'static str| {
            let addr = any(port);
            crate::capture::bind(addr, port == capture.outbound_port)
                .map_err(|source| DataPathError::Listen { addr, role, source })
        };
        let outbound = listen(capture.outbound_port, "outbound")?;
        let hbone = listen(capture.inbound_hbone_port, "inbound HBONE")?;
        let plaintext = listen(capture.inbound_plaintext_port, "inbound plaintext")?;
        let limits = config.limits.clone();
        let (policy_api, services) = kubernetes_sources(config)?;
        let state = state::follow(agent.snapshots.clone(), &config.hbone);
        let policies = policies::watch_policies(
            config.authorization.policy_paths.clone(),
            policy_api,
            config.engine_options(),
        );
        let shared = Arc::new(Shared {
            revocations: Revocations::start(policies.clone(), state.clone()),
            state,
            policies,
            inbound: config.inbound.clone(),
            outbound: config.outbound.clone(),
            mark: capture.mark,
            hbone_port: capture.inbound_hbone_port,
            own_ports: [
                capture.outbound_port,
                capture.inbound_plaintext_port,
                capture.inbound_hbone_port,
            ],
            hbone: HbonePool::new(capture.mark, &limits),
            upstream: UpstreamPool::new(capture.mark, &limits),
            services,
            limits,
            jwks: Arc::new(JwksCache::new(&config.authorization.jwks)?),
            providers: Providers::new(&config.extension_providers)?,
            drain,
        });
        shared.jwks.clone().keep_fresh(shared.policies.clone());
        Ok(Self {
            shared,
            outbound,
            hbone,
            plaintext,
            agent_ready: agent.ready.clone(),
        })
    }

    /// The policy set in force, following reloads (for the admin endpoints).
    pub fn policies(&self) -> watch::Receiver<Arc<meshward_policy::PolicySet>> {
        self.shared.policies.clone()
    }

    /// Listens once the agent is ready (so a daemon starting beside another, as
    /// in an upgrade, takes no connection it cannot serve yet), then serves until
    /// drained: once the drain has started, returns when every connection the
    /// listeners accepted has ended.
    pub async fn run(self) -> Result<(), DataPathError> {
        let shared = &self.shared;
        let mut ready = self.agent_ready;
        tokio::select! {
            r = ready.wait_for(|ready| *ready) => if r.is_err() { return Ok(()) },
            () = shared.drain.started() => return Ok(()),
        }
        let listen = |socket: BoundSocket, role: &'static str, port: u16| {
            socket
                .listen()
                .and_then(TcpListener::from_std)
                .map_err(|source| DataPathError::Listen {
                    addr: SocketAddr::from(([0, 0, 0, 0], port)),
                    role,
                    source,
                })
        };
        let capture = &shared.own_ports;
        let outbound = listen(self.outbound, "outbound", capture[0])?;
        let hbone = listen(self.hbone, "inbound HBONE", capture[2])?;
        let plaintext = listen(self.plaintext, "inbound plaintext", capture[1])?;
        tracing::info!("data path listening");
        tokio::join!(
            accept_loop(shared.clone(), outbound, "outbound", outbound::connection),
            accept_loop(shared.clone(), hbone, "inbound HBONE", inbound::hbone),
            accept_loop(
                shared.clone(),
                plaintext,
                "inbound plaintext",
                inbound::plaintext
            ),
        );
        Ok(())
    }
}

/// Accepts until the drain starts, at most `limits.max_connections` served at
/// once (past that the kernel's backlog holds the rest: backpressure, not
/// unbounded tasks); then closes the listener and returns once every connection
/// it accepted has ended.
async fn accept_loop<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    role: &'static str,
    handle: F,
) where
    F: Fn(Arc<Shared>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = shared.limits.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    loop {
        let accepted = tokio::select! {
            () = shared.drain.started() => break,
            accepted = accept(&listener, &permits, role) => accepted,
        };
        let Some((permit, tcp, client)) = accepted else {
            return;
        };
        // the permit goes when the work is done; not `async move { work.await }`,
        // whose state would hold the connection's future twice (as captured and as
        // awaited), 1.3 KB more per open outbound connection
        let work = handle(shared.clone(), tcp, client);
        tokio::spawn(work.map(move |()| drop(permit)));
    }
    drop(listener);
    let live = max - permits.available_permits();
    tracing::info!(listener = role, live, "draining: no new connections");
    // every permit back: every connection of this listener has ended
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    tracing::info!(listener = role, "drained");
}

/// The next connection, with the permit it holds; `None` once the permits are
/// closed (never, while the loop lives).
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    role: &str,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = permits.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((tcp, client)) => return Some((permit, tcp, client)),
            Err(e) => {
                // EMFILE and friends: wait for connections to close instead of spinning
                tracing::warn!("{role}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
