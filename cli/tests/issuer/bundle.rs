//! The trust bundle as others fetch it: the HTTPS bundle endpoint (the ConfigMap:
//! `real_kubernetes.rs`).

use super::*;

/// GET / over TLS with `config`; the response body.
async fn fetch_bundle(addr: SocketAddr, config: rustls::ClientConfig, name: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = connector.connect(server_name, tcp).await.unwrap();
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{response}"
    );
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_endpoint_https_spiffe_and_https_web() {
    meshward_tls::install_crypto_provider();
    // https_spiffe: the issuer's own SVID, verified like a federating peer would
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "bundle_endpoint:\n  listen: 127.0.0.1:{port}\n  refresh_hint: 2m\n  profile: https_spiffe\n"
        ),
    );
    let verifier = meshward_tls::SpiffeServerVerifier::new(
        issuer.bundle(),
        meshward_tls::Authorizer::Exact(
            meshward_spiffe::SpiffeId::parse(&format!("spiffe://{TD}/spire/server")).unwrap(),
        ),
    );
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let body = fetch_bundle(SocketAddr::from(([127, 0, 0, 1], port)), config, "issuer").await;
    let fetched = meshward_spiffe::Bundle::from_spiffe_json(
        &meshward_spiffe::TrustDomain::parse(TD).unwrap(),
        &body,
    )
    .unwrap();
    assert_eq!(fetched.refresh_hint, Duration::from_secs(120));
    assert_eq!(
        (fetched.x509_authorities.len(), fetched.jwt_keys.len()),
        (1, 1)
    );
    // a client that never finishes its request head is closed, not kept
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let verifier = meshward_tls::SpiffeServerVerifier::new(
            issuer.bundle(),
            meshward_tls::Authorizer::AnyTrusted,
        );
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("issuer").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: iss").await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a half-sent request held the connection for 20 s"
        );
    }
    let (_, shown, _) = issuer.cli(&["bundle", "show", "-format", "spiffe"]);
    assert_eq!(
        meshward_spiffe::Bundle::from_spiffe_json(
            &meshward_spiffe::TrustDomain::parse(TD).unwrap(),
            &shown
        )
        .unwrap()
        .sequence,
        fetched.sequence
    );

    // https_web: a Web PKI certificate from files, checked with the host name
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bundles.math.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("web.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("web.key"), key.serialize_pem()).unwrap();
    let port = free_port();
    let _issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "bundle_endpoint:\n  listen: 127.0.0.1:{port}\n  profile: https_web\n  cert_file: {0}/web.pem\n  key_file: {0}/web.key\n",
            dir.path().display()
        ),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let body = fetch_bundle(
        SocketAddr::from(([127, 0, 0, 1], port)),
        config,
        "bundles.math.example.com",
    )
    .await;
    assert!(
        meshward_spiffe::Bundle::from_spiffe_json(
            &meshward_spiffe::TrustDomain::parse(TD).unwrap(),
            &body
        )
        .is_ok()
    );
}
