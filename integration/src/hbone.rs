//! A hand-driven HBONE peer for adversarial tests: mTLS with whatever certificate
//! the test minted ([`mint_leaf`], signed by the mesh's own CA), one HTTP/2 CONNECT
//! with whatever headers the test chose, then raw bytes through the tunnel. It
//! checks nothing about the server: it plays the attacker, not a node proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{HarnessError, Result};
use crate::netns::Netns;

/// A client certificate chain and its key.
#[derive(Debug)]
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// What a leaf looks like: its URI and IP SANs, CA flag and key usages.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub uris: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub is_ca: bool,
    pub usages: Vec<KeyUsagePurpose>,
    /// Valid from a minute ago until this long from now; `None`: for decades.
    pub valid_for: Option<Duration>,
}

impl LeafSpec {
    /// What the issuer signs: one URI SAN, not a CA, `digitalSignature`.
    pub fn svid(uri: &str) -> Self {
        Self {
            uris: vec![uri.to_owned()],
            ips: Vec::new(),
            is_ca: false,
            usages: vec![KeyUsagePurpose::DigitalSignature],
            valid_for: None,
        }
    }
}

/// A leaf signed by the signing CA in `ca_dir` (`ca.pem`, `ca.key`, as the issuer
/// keeps them), valid now, with the CA's chain after it.
pub fn mint_leaf(ca_dir: &Path, spec: &LeafSpec) -> Result<Credentials> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).map_err(HarnessError::io(format!("read {}", path.display())))
    };
    let invalid = |e: rcgen::Error| HarnessError::Invalid(format!("mint a leaf: {e}"));
    let ca_pem = read("ca.pem")?;
    let ca_key = KeyPair::from_pem(&read("ca.key")?).map_err(invalid)?;
    let ca_chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| HarnessError::Invalid(format!("{}: {e}", ca_dir.display())))?;
    let issuer = Issuer::from_ca_cert_der(&ca_chain[0], ca_key).map_err(invalid)?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = spec
        .uris
        .iter()
        .map(|u| Ok(SanType::URI(u.as_str().try_into()?)))
        .collect::<std::result::Result<_, rcgen::Error>>()
        .map_err(invalid)?;
    params
        .subject_alt_names
        .extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.is_ca = if spec.is_ca {
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_usages.clone_from(&spec.usages);
    if let Some(valid_for) = spec.valid_for {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + valid_for;
    }
    let key = KeyPair::generate().map_err(invalid)?;
    let leaf = params.signed_by(&key, &issuer).map_err(invalid)?;
    let mut chain = vec![leaf.der().clone()];
    chain.extend(ca_chain);
    Ok(Credentials {
        chain,
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    })
}

/// How one tunnel attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tunnel {
    /// The TLS handshake or the HTTP/2 connection failed.
    Refused(String),
    /// The CONNECT was answered with a status other than 200.
    Status(u16),
    /// The CONNECT was accepted; the bytes that came back through the tunnel.
    Open(Vec<u8>),
}

/// From inside `ns`: mTLS to `peer` (a pod's address on 15008) with `credentials`,
/// CONNECT to `target` with `headers`, write `send`, read until the stream ends or
/// `timeout` passes.
pub fn tunnel(
    ns: &Netns,
    peer: SocketAddr,
    target: SocketAddr,
    headers: &[(&str, &str)],
    credentials: &Credentials,
    send: &[u8],
    timeout: Duration,
) -> Result<Tunnel> {
    let connect = Connect {
        target,
        headers,
        send,
        wait: Duration::ZERO,
    };
    tunnel_with(ns, peer, &connect, credentials, timeout)
}

/// What [`tunnel_with`] asks once its connection is up.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    pub target: SocketAddr,
    pub headers: &'a [(&'a str, &'a str)],
    pub send: &'a [u8],
    /// How long the HTTP/2 connection idles before the CONNECT (a certificate may
    /// expire meanwhile).
    pub wait: Duration,
}

/// [`tunnel`], with the CONNECT made `connect.wait` after the connection is up.
pub fn tunnel_with(
    ns: &Netns,
    peer: SocketAddr,
    connect: &Connect<'_>,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<Tunnel> {
    let Connect {
        target,
        headers,
        send,
        wait,
    } = *connect;
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    let (credentials, send) = (credentials.clone(), send.to_vec());
    on_a_runtime_in(ns, move || async move {
        let exchange = exchange(peer, target, headers, credentials, send, wait);
        match tokio::time::timeout(timeout + wait, exchange).await {
            Ok(outcome) => Ok(outcome),
            Err(_) => Err(HarnessError::Invalid(format!(
                "HBONE exchange with {peer} did not end within {timeout:?}"
            ))),
        }
    })
}

async fn exchange(
    peer: SocketAddr,
    target: SocketAddr,
    headers: Vec<(String, String)>,
    credentials: Credentials,
    send: Vec<u8>,
    wait: Duration,
) -> Tunnel {
    let refused = |what: &str, e: &dyn std::fmt::Display| Tunnel::Refused(format!("{what}: {e}"));
    let tls = match mtls(peer, credentials).await {
        Ok(tls) => tls,
        Err(refusal) => return refusal,
    };
    let (mut sender, connection) = match hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) => return refused("HTTP/2", &e),
    };
    tokio::spawn(connection);
    tokio::time::sleep(wait).await;
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(target.to_string());
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Empty::<Bytes>::new()) else {
        return Tunnel::Refused("request".into());
    };
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => return refused("CONNECT", &e),
    };
    if response.status() != http::StatusCode::OK {
        return Tunnel::Status(response.status().as_u16());
    }
    let mut io = match hyper::upgrade::on(response).await {
        Ok(upgraded) => TokioIo::new(upgraded),
        Err(e) => return refused("upgrade", &e),
    };
    let mut received = Vec::new();
    if io.write_all(&send).await.is_ok() {
        let _ = io.read_to_end(&mut received).await;
    }
    Tunnel::Open(received)
}

/// mTLS to `peer` with `credentials` (ALPN h2; the server's certificate is not
/// checked: the attacker does not care who answers).
async fn mtls(
    peer: SocketAddr,
    credentials: Credentials,
) -> std::result::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Tunnel> {
    let refused = |what: &str, e: &dyn std::fmt::Display| Tunnel::Refused(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer))
        })
        .and_then(|b| {
            b.with_client_auth_cert(credentials.chain, PrivateKeyDer::Pkcs8(credentials.key))
        });
    let mut config = match config {
        Ok(config) => config,
        Err(e) => return Err(refused("client config", &e)),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = match tokio::net::TcpStream::connect(peer).await {
        Ok(tcp) => tcp,
        Err(e) => return Err(refused("connect", &e)),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let Ok(name) = ServerName::try_from("hbone.invalid") else {
        return Err(Tunnel::Refused("server name".into()));
    };
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| refused("handshake", &e))
}

/// From inside `ns`: mTLS to `peer` with `credentials`, then not one byte of
/// HTTP/2. How long the server kept the connection before closing it; `None`:
/// still open after `wait`.
pub fn silent_after_handshake(
    ns: &Netns,
    peer: SocketAddr,
    credentials: &Credentials,
    wait: Duration,
) -> Result<Option<Duration>> {
    let credentials = credentials.clone();
    on_a_runtime_in(ns, move || async move {
        let mut tls = mtls(peer, credentials)
            .await
            .map_err(|refusal| HarnessError::Invalid(format!("{refusal:?}")))?;
        let started = std::time::Instant::now();
        // the server speaks first (its SETTINGS), then closes or not
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(wait, async {
            while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        Ok(closed.ok().map(|()| started.elapsed()))
    })
}

/// Runs `work` to its end on a runtime of its own inside `ns` (its sockets are
/// the namespace's).
fn on_a_runtime_in<T, F>(ns: &Netns, work: impl FnOnce() -> F + Send + 'static) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>>,
{
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HarnessError::io("a runtime for the HBONE client"))?
            .block_on(work())
    })?
}

/// An HBONE server that should not be there (at an address of the mesh, with a
/// certificate the mesh's CA signed): it answers every CONNECT with 200 and
/// `reply`. Stops when dropped.
pub struct RogueServer {
    connects: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RogueServer {
    /// Starts serving on `listen` inside `ns`.
    pub fn start(
        ns: &Netns,
        listen: SocketAddr,
        credentials: &Credentials,
        reply: &'static [u8],
    ) -> Result<Self> {
        let listener = ns
            .run(move || std::net::TcpListener::bind(listen))?
            .map_err(HarnessError::io(format!("listen on {listen}")))?;
        listener
            .set_nonblocking(true)
            .map_err(HarnessError::io("non-blocking listener"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth().with_single_cert(
                    credentials.chain.clone(),
                    PrivateKeyDer::Pkcs8(credentials.key.clone_key()),
                )
            })
            .map_err(|e| HarnessError::Invalid(format!("rogue server config: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let connects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let counted = connects.clone();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let serve = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (acceptor, counted) = (acceptor.clone(), counted.clone());
                        tokio::spawn(async move {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_rogue(tls, counted, reply).await;
                            }
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            connects,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// How many CONNECT requests reached it.
    pub fn connects(&self) -> usize {
        self.connects.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RogueServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_rogue(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    connects: Arc<std::sync::atomic::AtomicUsize>,
    reply: &'static [u8],
) {
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        connects.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let _ = io.write_all(reply).await;
                let _ = io.shutdown().await;
            }
        });
        async { Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new())) }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// Accepts any server certificate: the attacker does not care whom it reached.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
