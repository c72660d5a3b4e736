//! `meshward issuer run`: the issuance server's listeners and background tasks.
//!
//! - agent API: gRPC over TLS on `agent_listen` (server SVID `spiffe://<td>/spire/server`;
//!   client certificates optional at the TLS layer, required by every call but Attest*)
//! - admin API: gRPC on the unix socket `admin_socket` (mode 0600)
//! - health: `/live`, `/ready` and `/metrics` on `health_listen`
//! - optional federation bundle endpoint (HTTPS) on `bundle_endpoint.listen`
//! - every 10 s: CA rotation step, server SVID renewal at half life, trust bundle refresh

mod admin_api;
mod agent_api;
mod bundle_configmap;
mod bundle_endpoint;
mod convert;
mod federation_watch;
mod health;
mod spire_objects;
mod templates_watch;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{BundleEndpointProfile, IssuerConfig};
use crate::keys::KeyManager;
use crate::keys::files::FileKeys;
use crate::keys::pkcs11::Pkcs11Keys;
use meshward_tls::{Authorizer, CertStore, SpiffeClientVerifier, TrustBundles};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};

use crate::ca::{Authority, UpstreamCa};
use crate::datastore::{Datastore, SqlStore};
use crate::service::{Issuer, Settings};
use crate::x509::SvidTemplate;
use meshward_api::proto::admin_api_server::AdminApiServer;
use meshward_api::proto::agent_api_server::AgentApiServer;
use meshward_spiffe::SpiffeId;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the gRPC server; accept pauses when full.
const ACCEPT_QUEUE: usize = 128;
const TICK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{what}: {source}")]
    Startup {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What failed to start, keeping why (an error, or a message where there is none).
fn startup<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> ServerError {
    let what = what.into();
    move |e| ServerError::Startup {
        what,
        source: e.into(),
    }
}

/// Renders the process's metrics in the Prometheus text format (`/metrics` on the
/// health port); the binary owns the recorder.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Runs the issuer until `shutdown` completes.
pub async fn run(
    config: IssuerConfig,
    metrics: MetricsRender,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    meshward_tls::install_crypto_provider();
    let issuer = open_issuer(&config).await?;
    let bundles = TrustBundles::new();
    // the own bundle as PEM, for the ConfigMap writer: changes when rotation does
    let (bundle_pem, _) = watch::channel(String::new());
    let server_cert = CertStore::new();
    refresh_bundle(&issuer, &bundles, &bundle_pem)
        .await
        .map_err(startup("trust bundle"))?;
    let server_svid_expiry = renew_server_svid(&issuer, &server_cert)
        .await
        .map_err(startup("server SVID"))?;
    // all bound before /ready can say yes
    let listeners = Listeners::bind(&config, &server_cert).await?;

    let tls = tls_config(&issuer, &bundles, &server_cert);
    let (connections, incoming) = mpsc::channel(ACCEPT_QUEUE);
    let accept = tokio::spawn(accept_tls(
        listeners.agent,
        tokio_rustls::TlsAcceptor::from(tls),
        connections,
    ));
    let agent_server = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .add_service(AgentApiServer::new(agent_api::AgentService {
            issuer: issuer.clone(),
        }))
        .serve_with_incoming(ReceiverStream::new(incoming));
    let admin_server = tonic::transport::Server::builder()
        .add_service(AdminApiServer::new(admin_api::AdminService {
            issuer: issuer.clone(),
            https_web_ca_file: config.federation.https_web_ca_file.clone(),
        }))
        .serve_with_incoming(UnixListenerStream::new(listeners.admin));
    let health_server = health::serve(listeners.health, issuer.clone(), metrics);
    follow_sources(&config, &issuer, &bundle_pem).await?;
    let bundle_server = async {
        let Some((listener, cert)) = listeners.bundle else {
            return std::future::pending().await;
        };
        bundle_endpoint::serve(listener, bundle_endpoint::tls_config(cert), issuer.clone())
            .await
            .map_err(startup("bundle endpoint"))
    };

    tracing::info!(
        "trust domain {}, agent API on {}, admin socket {}, health on {}",
        config.trust_domain,
        config.agent_listen,
        config.admin_socket.display(),
        config.health_listen
    );
    let housekeeping = housekeeping(
        &issuer,
        &bundles,
        &bundle_pem,
        &server_cert,
        server_svid_expiry,
    );
    let result = tokio::select! {
        r = agent_server => r.map_err(startup("agent API")),
        r = admin_server => r.map_err(startup("admin API")),
        r = health_server => r.map_err(startup("health")),
        r = bundle_server => r,
        () = housekeeping => Ok(()),
        () = shutdown => Ok(()),
    };
    accept.abort();
    let _ = std::fs::remove_file(&config.admin_socket);
    result
}

/// The datastore, the CA and the attestors, as `config` says.
async fn open_issuer(config: &IssuerConfig) -> Result<Arc<Issuer<SqlStore>>, ServerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(startup(format!("create {}", config.data_dir.display())))?;
    let store = SqlStore::connect(&config.datastore_url())
        .await
        .map_err(startup("datastore"))?;
    let upstream = match &config.upstream_ca {
        Some(files) => Some(
            UpstreamCa::from_files(&files.cert_chain, &files.key)
                .map_err(startup("upstream_ca"))?,
        ),
        None => None,
    };
    let keys: Arc<dyn KeyManager> = match &config.ca_key_manager.pkcs11 {
        None => Arc::new(FileKeys::new(&config.data_dir.join("ca"))),
        Some(pkcs11) => {
            Arc::new(Pkcs11Keys::open(pkcs11).map_err(startup("ca_key_manager.pkcs11"))?)
        }
    };
    tracing::info!("CA keys: {}", keys.describe());
    // keys made and found in a token are blocking calls: off the async workers
    let (data_dir, trust_domain, ttl) = (
        config.data_dir.clone(),
        config.trust_domain.clone(),
        config.ca_ttl,
    );
    let authority = tokio::task::spawn_blocking(move || {
        Authority::load_or_init_with(
            &data_dir,
            &trust_domain,
            ttl,
            upstream,
            keys,
            SystemTime::now(),
        )
    })
    .await
    .map_err(startup("CA"))?
    .map_err(startup("CA"))?;
    let settings = Settings {
        trust_domain: config.trust_domain.clone(),
        instance: instance_name(),
        default_x509_svid_ttl: config.default_x509_svid_ttl,
        default_jwt_svid_ttl: config.default_jwt_svid_ttl,
        jwt_issuer: config.jwt_issuer.clone(),
        agent_svid_ttl: config.agent_svid_ttl,
        join_token_ttl: config.join_token_ttl,
        bundle_refresh_hint: config
            .bundle_endpoint
            .as_ref()
            .map_or(Duration::from_secs(300), |b| b.refresh_hint),
    };
    let mut issuer = Issuer::new(settings, authority, store)
        .await
        .map_err(startup("issuer"))?;
    if let Some(psat) = &config.k8s_psat {
        issuer = issuer.with_attestor(
            crate::attestor::k8s_psat::PsatAttestor::from_config(psat)
                .map_err(startup("k8s_psat"))?,
        );
    }
    if let Some(iid) = &config.aws_iid {
        let attestor = crate::attestor::aws_iid::AwsIidAttestor::from_config(iid)
            .map_err(startup("aws_iid"))?;
        tracing::info!(
            accounts = ?iid.account_ids,
            "aws_iid attestation: {} region certificates",
            attestor.regions()
        );
        issuer = issuer.with_attestor(attestor);
    }
    Ok(Arc::new(issuer))
}

/// The issuer's sockets, bound before anything is served.
struct Listeners {
    agent: TcpListener,
    health: TcpListener,
    admin: UnixListener,
    /// The federation bundle endpoint and the certificate it serves, if configured.
    bundle: Option<(TcpListener, Arc<CertStore>)>,
}

impl Listeners {
    async fn bind(
        config: &IssuerConfig,
        server_cert: &Arc<CertStore>,
    ) -> Result<Self, ServerError> {
        let tcp = |addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(startup(format!("listen on {addr}")))
        };
        let bundle = match &config.bundle_endpoint {
            None => None,
            Some(endpoint) => {
                let cert = match (&endpoint.profile, &endpoint.cert_file, &endpoint.key_file) {
                    (BundleEndpointProfile::HttpsWeb, Some(cert_file), Some(key_file)) => {
                        bundle_endpoint::web_certificate(cert_file, key_file)
                            .map_err(startup("bundle_endpoint"))?
                    }
                    _ => server_cert.clone(),
                };
                Some((tcp(endpoint.listen).await?, cert))
            }
        };
        Ok(Self {
            agent: tcp(config.agent_listen).await?,
            health: tcp(config.health_listen).await?,
            admin: bind_admin_socket(&config.admin_socket)?,
            bundle,
        })
    }
}

/// Starts what feeds the issuer from outside: static federation relationships, and
/// the Kubernetes objects it follows (ClusterSPIFFEID, ClusterFederatedTrustDomain)
/// or writes (the bundle ConfigMap).
async fn follow_sources(
    config: &IssuerConfig,
    issuer: &Arc<Issuer<SqlStore>>,
    bundle_pem: &watch::Sender<String>,
) -> Result<(), ServerError> {
    if let Some(api) = &config.cluster_spiffe_ids {
        let api = meshward_kubernetes::connect(api).map_err(startup("cluster_spiffe_ids"))?;
        tokio::spawn(templates_watch::run(api, issuer.clone()));
    }
    crate::federation::start(&config.federation, issuer)
        .await
        .map_err(startup("federation"))?;
    if let Some(api) = &config.cluster_federated_trust_domains {
        let api = meshward_kubernetes::connect(api)
            .map_err(startup("cluster_federated_trust_domains"))?;
        tokio::spawn(federation_watch::run(api, issuer.clone()));
    }
    if let Some(target) = &config.bundle_configmap {
        let client =
            meshward_kubernetes::client(&target.kubernetes).map_err(startup("bundle_configmap"))?;
        tokio::spawn(bundle_configmap::run(
            client,
            target.clone(),
            bundle_pem.subscribe(),
        ));
    }
    Ok(())
}

/// Every `TICK`: a CA rotation step, the trust bundle refreshed, the server SVID
/// renewed at half life. Failures are retried at the next tick.
async fn housekeeping<D: Datastore>(
    issuer: &Issuer<D>,
    bundles: &TrustBundles,
    bundle_pem: &watch::Sender<String>,
    server_cert: &CertStore,
    mut server_svid_expiry: SystemTime,
) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let now = SystemTime::now();
        match issuer.rotate(now).await {
            Ok(true) => tracing::info!("CA rotation step changed the bundle"),
            Ok(false) => {}
            Err(e) => tracing::warn!("CA rotation failed (will retry): {e}"),
        }
        if let Err(e) = refresh_bundle(issuer, bundles, bundle_pem).await {
            tracing::warn!("bundle refresh failed (will retry): {e}");
        }
        if now >= server_svid_expiry {
            match renew_server_svid(issuer, server_cert).await {
                Ok(next) => server_svid_expiry = next,
                Err(e) => tracing::warn!("server SVID renewal failed (will retry): {e}"),
            }
        }
    }
}

fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

fn bind_admin_socket(path: &std::path::Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(startup(format!("create {}", dir.display())))?;
    }
    // a socket left by a previous run would make bind fail
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(startup(format!("bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(startup(format!("chmod {}", path.display())))?;
    Ok(listener)
}

fn tls_config<D: Datastore>(
    issuer: &Issuer<D>,
    bundles: &Arc<TrustBundles>,
    cert: &Arc<CertStore>,
) -> Arc<rustls::ServerConfig> {
    // Client certificates are optional at the TLS layer (attestation has none); the
    // handlers require them for everything else.
    let verifier = SpiffeClientVerifier::new(
        bundles.clone(),
        Authorizer::TrustDomain(issuer.settings().trust_domain.clone()),
        false,
    );
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Accepts TCP, runs the TLS handshake with a deadline, hands the stream on.
async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    connections: mpsc::Sender<
        Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
    >,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, connections) = (acceptor.clone(), connections.clone());
        tokio::spawn(async move {
            if let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            {
                let _ = connections.send(Ok(tls)).await;
            }
        });
    }
}

/// Trusts the own bundle for agent connections and publishes it as PEM.
async fn refresh_bundle<D: Datastore>(
    issuer: &Issuer<D>,
    bundles: &TrustBundles,
    pem: &watch::Sender<String>,
) -> Result<(), String> {
    let own = issuer.bundle().await.map_err(|e| e.to_string())?;
    bundles
        .set(&own.trust_domain, &own.x509_authorities)
        .map_err(|e| e.to_string())?;
    let now = own.to_pem();
    pem.send_if_modified(|published| {
        let changed = *published != now;
        if changed {
            now.clone_into(published);
        }
        changed
    });
    Ok(())
}

/// A new key and SVID for `spiffe://<td>/spire/server`; returns when to renew.
async fn renew_server_svid<D: Datastore>(
    issuer: &Issuer<D>,
    store: &CertStore,
) -> Result<SystemTime, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    let id: SpiffeId = issuer.server_id().map_err(|e| e.to_string())?;
    let svid = issuer
        .sign(
            csr.der(),
            &SvidTemplate {
                spiffe_id: &id,
                dns_names: &[],
                ip_addresses: &[],
                ttl: issuer.settings().agent_svid_ttl,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    store
        .set(svid.chain.clone(), &key.serialize_der())
        .map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    Ok(now + svid.expires_at.duration_since(now).unwrap_or_default() / 2)
}
