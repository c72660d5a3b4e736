//! The SPIFFE Workload API on a unix socket (SPIFFE_Workload_API.md), so
//! go-spiffe, py-spiffe and the Rust `spiffe` crate work unchanged.
//!
//! Every call needs the `workload.spiffe.io: true` metadata (InvalidArgument
//! otherwise). The caller is the pod its process belongs to (see `caller`); a
//! caller with no identity gets PermissionDenied. Streams send the full state at
//! once, then again whenever the agent publishes a snapshot that changes it.

mod authority;
mod caller;
mod jwt;

use meshward_spiffe::{SpiffeId, TrustDomain};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use crate::agent::{AgentHandle, Snapshot, WorkloadSvid};
use crate::config::PodInfo;
use crate::workload_proto::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use crate::workload_proto::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};

const SECURITY_HEADER: &str = "workload.spiffe.io";
/// Messages a slow stream reader may have waiting; then the stream waits.
const STREAM_QUEUE: usize = 4;

/// Serves the Workload API on `path` until the future is dropped.
pub async fn serve(path: &Path, agent: AgentHandle) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    // Every local process may ask; who it is decides what it gets.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Each connection goes through the :authority filter (see `authority`).
    let incoming = UnixListenerStream::new(listener).map(|s| s.map(authority::FilteredStream::new));
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi { agent }))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| e.to_string())
}

struct WorkloadApi {
    agent: AgentHandle,
}

/// Checks the security header and finds the caller's process ID.
fn caller_pid<T>(request: &Request<T>) -> Result<i32, Status> {
    let values: Vec<_> = request.metadata().get_all(SECURITY_HEADER).iter().collect();
    if values.len() != 1 || values[0] != "true" {
        return Err(Status::invalid_argument(
            "security header missing from request",
        ));
    }
    request
        .extensions()
        .get::<authority::CallerPid>()
        .and_then(|caller| caller.0)
        .ok_or_else(|| {
            Status::permission_denied("cannot identify the calling process (no peer credentials)")
        })
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

/// What a caller holds: its pod's identities, or, for a local process, those of
/// the `unix:` entries whose every selector it has.
struct CallerIdentities {
    pod: Option<PodInfo>,
    svids: Vec<Arc<WorkloadSvid>>,
    /// The foreign trust domains whose bundles the caller receives.
    federates_with: BTreeSet<TrustDomain>,
}

impl CallerIdentities {
    /// The federated bundles this caller may see, by trust domain ID.
    fn federated_bundles(&self, snapshot: &Snapshot) -> HashMap<String, Vec<u8>> {
        self.federated(snapshot)
            .map(|b| {
                (
                    trust_domain_id(&b.trust_domain),
                    der_concat(&b.x509_authorities),
                )
            })
            .collect()
    }

    /// The federated bundles of the domains the caller federates with.
    fn federated<'a>(
        &'a self,
        snapshot: &'a Snapshot,
    ) -> impl Iterator<Item = &'a meshward_spiffe::Bundle> + 'a {
        snapshot
            .federated
            .iter()
            .filter(|b| self.federates_with.contains(&b.trust_domain))
    }
}

/// The caller's identities in one snapshot; `None` when it has none.
fn identities(snapshot: &Snapshot, pid: i32) -> Option<CallerIdentities> {
    let found = match caller::pod_of(snapshot, pid) {
        Some(pod) => CallerIdentities {
            pod: Some(pod.pod.clone()),
            svids: pod.svids.clone(),
            federates_with: pod.federates_with.clone(),
        },
        None => {
            let selectors = caller::unix_selectors(pid);
            let granted: Vec<_> = snapshot
                .local
                .iter()
                .filter(|l| l.selectors.iter().all(|s| selectors.contains(s)))
                .collect();
            CallerIdentities {
                pod: None,
                svids: granted.iter().map(|l| l.svid.clone()).collect(),
                federates_with: granted
                    .iter()
                    .flat_map(|l| l.federates_with.iter().cloned())
                    .collect(),
            }
        }
    };
    (!found.svids.is_empty()).then_some(found)
}

fn der_concat(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    certs
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

/// The Workload API keys bundles by trust domain ID (`spiffe://<td>`).
fn trust_domain_id(td: &TrustDomain) -> String {
    td.id().to_string()
}

fn x509_response(snapshot: &Snapshot, caller: &CallerIdentities) -> X509svidResponse {
    let bundle = der_concat(&snapshot.own.x509_authorities);
    X509svidResponse {
        svids: caller
            .svids
            .iter()
            .map(|s| X509svid {
                spiffe_id: s.spiffe_id.to_string(),
                x509_svid: der_concat(&s.chain),
                x509_svid_key: s.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint: String::new(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles: caller.federated_bundles(snapshot),
    }
}

/// The own bundle and the federated ones the caller may see.
fn x509_bundles(snapshot: &Snapshot, caller: &CallerIdentities) -> X509BundlesResponse {
    let mut bundles = caller.federated_bundles(snapshot);
    bundles.insert(
        trust_domain_id(snapshot.trust_domain()),
        der_concat(&snapshot.own.x509_authorities),
    );
    X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    }
}

/// Streams `render(snapshot)` now and again whenever a new snapshot changes it,
/// until the client goes or `render` says the caller lost its identity (the
/// stream then ends with that status).
fn watch_stream<T: Clone + PartialEq + Send + 'static>(
    agent: &AgentHandle,
    render: impl Fn(&Snapshot) -> Result<T, Status> + Send + 'static,
) -> Result<ReceiverStream<Result<T, Status>>, Status> {
    let mut snapshots = agent.snapshots.clone();
    let first = render(&snapshots.borrow_and_update())?;
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(async move {
        if tx.send(Ok(first.clone())).await.is_err() {
            return;
        }
        let mut last = first;
        loop {
            tokio::select! {
                () = tx.closed() => return,
                changed = snapshots.changed() => if changed.is_err() { return },
            }
            let current = snapshots.borrow_and_update().clone();
            match render(&current) {
                Ok(next) if next == last => {}
                Ok(next) => {
                    if tx.send(Ok(next.clone())).await.is_err() {
                        return;
                    }
                    last = next;
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = ReceiverStream<Result<X509svidResponse, Status>>;
    type FetchX509BundlesStream = ReceiverStream<Result<X509BundlesResponse, Status>>;
    type FetchJWTBundlesStream = ReceiverStream<Result<JwtBundlesResponse, Status>>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let pid = caller_pid(&request)?;
        let stream = watch_stream(&self.agent, move |snapshot| {
            identities(snapshot, pid)
                .map(|caller| x509_response(snapshot, &caller))
                .ok_or_else(no_identity)
        })?;
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let pid = caller_pid(&request)?;
        let stream = watch_stream(&self.agent, move |snapshot| {
            identities(snapshot, pid)
                .map(|caller| x509_bundles(snapshot, &caller))
                .ok_or_else(no_identity)
        })?;
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let pid = caller_pid(&request)?;
        let request = request.into_inner();
        if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let snapshot = self.agent.snapshots.borrow().clone();
        let caller = identities(&snapshot, pid).ok_or_else(no_identity)?;
        let issuer = self
            .agent
            .issuer
            .borrow()
            .clone()
            .ok_or_else(|| Status::unavailable("the agent has no issuer connection yet"))?;
        let only = match request.spiffe_id.as_str() {
            "" => None,
            id => Some(SpiffeId::parse(id).map_err(|e| Status::invalid_argument(e.to_string()))?),
        };
        let svids = jwt::fetch(
            issuer,
            &snapshot.node_name,
            caller.pod.as_ref(),
            &caller.svids,
            only.as_ref(),
            &request.audience,
        )
        .await?;
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let pid = caller_pid(&request)?;
        let stream = watch_stream(&self.agent, move |snapshot| {
            let caller = identities(snapshot, pid).ok_or_else(no_identity)?;
            let jwks = jwt::jwt_only_jwks(&snapshot.own)?;
            let mut bundles: HashMap<String, Vec<u8>> = caller
                .federated(snapshot)
                .map(|b| (trust_domain_id(&b.trust_domain), b.jwt_jwks().into_bytes()))
                .collect();
            bundles.insert(trust_domain_id(snapshot.trust_domain()), jwks.into_bytes());
            Ok(JwtBundlesResponse { bundles })
        })?;
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let pid = caller_pid(&request)?;
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let snapshot: Arc<Snapshot> = self.agent.snapshots.borrow().clone();
        let caller = identities(&snapshot, pid).ok_or_else(no_identity)?;
        let trusted = |td: &meshward_spiffe::TrustDomain| {
            td == snapshot.trust_domain() || caller.federates_with.contains(td)
        };
        let (spiffe_id, claims) =
            jwt::validate(&snapshot, trusted, &request.svid, &request.audience)?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: spiffe_id.to_string(),
            claims: Some(claims),
        }))
    }
}

/// A Workload API client on `socket` (what `meshward api` and tests use). Every
/// request made through [`with_security_header`] carries the required metadata.
pub async fn client(
    socket: &Path,
) -> Result<
    crate::workload_proto::spiffe_workload_api_client::SpiffeWorkloadApiClient<
        tonic::transport::Channel,
    >,
    String,
> {
    let path = socket.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://workload.api")
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .map_err(|e| {
            format!(
                "cannot connect to the Workload API at {}: {e}",
                socket.display()
            )
        })?;
    Ok(crate::workload_proto::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel))
}

/// Wraps a message with `workload.spiffe.io: true`.
pub fn with_security_header<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}
