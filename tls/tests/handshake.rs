//! Real TLS 1.3 handshakes in memory between SPIFFE peers.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use meshward_spiffe::{SpiffeId, TrustDomain};
use meshward_tls::{
    Authorizer, CertStore, SpiffeClientVerifier, SpiffeServerVerifier, TrustBundles,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName};

/// A certificate chain and its PKCS#8 key.
type Creds = (Vec<CertificateDer<'static>>, Vec<u8>);

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).unwrap()
}

fn ca(td: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut p = CertificateParams::default();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{td} CA {n}"));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
    let cert = p.self_signed(&key).unwrap().der().clone();
    Ca {
        issuer: Issuer::from_ca_cert_der(&cert, key).unwrap(),
        cert,
    }
}

fn svid(ca: &Ca, uris: &[&str]) -> Creds {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
        .collect();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (vec![cert.der().clone()], key.serialize_der())
}

fn store(creds: Option<Creds>) -> Arc<CertStore> {
    let store = CertStore::new();
    if let Some((chain, key)) = creds {
        store.set(chain, &key).unwrap();
    }
    store
}

/// Runs a handshake; Ok(()) or the first error from either side.
fn handshake(client: ClientConfig, server: ServerConfig) -> Result<(), String> {
    let mut c = ClientConnection::new(
        Arc::new(client),
        ServerName::try_from("ignored.example").unwrap(),
    )
    .unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut &buf[..]).unwrap();
        c.process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        if !c.is_handshaking() && !s.is_handshaking() {
            // the server learns about a bad client certificate only on its next read
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

struct Setup {
    bundles: Arc<TrustBundles>,
    ca: Ca,
}

fn setup() -> Setup {
    meshward_tls::install_crypto_provider();
    let ca = ca("td");
    let bundles = TrustBundles::new();
    bundles
        .set(&td("td"), std::slice::from_ref(&ca.cert))
        .unwrap();
    Setup { bundles, ca }
}

fn configs(
    s: &Setup,
    client_creds: Option<Creds>,
    server_authorizer: Authorizer,
    client_authorizer: Authorizer,
    mandatory: bool,
) -> (ClientConfig, ServerConfig) {
    let server = ServerConfig::builder()
        .with_client_cert_verifier(SpiffeClientVerifier::new(
            s.bundles.clone(),
            server_authorizer,
            mandatory,
        ))
        .with_cert_resolver(store(Some(svid(&s.ca, &["spiffe://td/spire/server"]))));
    let client = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(
            s.bundles.clone(),
            client_authorizer,
        ))
        .with_client_cert_resolver(store(client_creds));
    (client, server)
}

#[test]
fn mutual_spiffe_authentication() {
    let s = setup();
    let (c, sv) = configs(
        &s,
        Some(svid(&s.ca, &["spiffe://td/node/a"])),
        Authorizer::TrustDomain(td("td")),
        Authorizer::Exact(id("spiffe://td/spire/server")),
        true,
    );
    handshake(c, sv).unwrap();
}

#[test]
fn refusals_say_why() {
    let s = setup();
    let stranger = ca("td");
    let other_td = ca("other.td");
    let cases: Vec<(Option<Creds>, Authorizer, Authorizer, bool, &str)> = vec![
        (
            Some(svid(&stranger, &["spiffe://td/node/a"])),
            Authorizer::AnyTrusted,
            Authorizer::AnyTrusted,
            true,
            "UnknownIssuer",
        ),
        (
            Some(svid(&other_td, &["spiffe://other.td/x"])),
            Authorizer::AnyTrusted,
            Authorizer::AnyTrusted,
            true,
            "not in any bundle",
        ),
        (
            Some(svid(&s.ca, &["spiffe://td/a", "spiffe://td/b"])),
            Authorizer::AnyTrusted,
            Authorizer::AnyTrusted,
            true,
            "exactly one",
        ),
        (
            Some(svid(&s.ca, &["https://td/a"])),
            Authorizer::AnyTrusted,
            Authorizer::AnyTrusted,
            true,
            "scheme is missing or invalid",
        ),
        (
            Some(svid(&s.ca, &["spiffe://td/a"])),
            Authorizer::Exact(id("spiffe://td/b")),
            Authorizer::AnyTrusted,
            true,
            "not authorized",
        ),
        (
            None,
            Authorizer::AnyTrusted,
            Authorizer::AnyTrusted,
            true,
            "server",
        ),
        (
            None,
            Authorizer::AnyTrusted,
            Authorizer::Exact(id("spiffe://td/someone-else")),
            false,
            "client: ",
        ),
    ];
    for (creds, server_auth, client_auth, mandatory, want) in cases {
        let (c, sv) = configs(&s, creds, server_auth, client_auth, mandatory);
        let e = handshake(c, sv).unwrap_err();
        assert!(e.contains(want), "want {want:?} in {e:?}");
    }
}

#[test]
fn optional_client_auth_lets_anonymous_clients_in() {
    let s = setup();
    let (c, sv) = configs(
        &s,
        None,
        Authorizer::AnyTrusted,
        Authorizer::AnyTrusted,
        false,
    );
    handshake(c, sv).unwrap();
}

#[test]
fn rotation_of_bundles_and_certificates() {
    let s = setup();
    let next = ca("td");
    let server_store = store(Some(svid(&next, &["spiffe://td/spire/server"])));
    let server = || {
        ServerConfig::builder()
            .with_client_cert_verifier(SpiffeClientVerifier::new(
                s.bundles.clone(),
                Authorizer::AnyTrusted,
                false,
            ))
            .with_cert_resolver(server_store.clone())
    };
    let client = || {
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(SpiffeServerVerifier::new(
                s.bundles.clone(),
                Authorizer::AnyTrusted,
            ))
            .with_no_client_auth()
    };
    assert!(
        handshake(client(), server())
            .unwrap_err()
            .contains("UnknownIssuer")
    );
    s.bundles
        .set(&td("td"), &[s.ca.cert.clone(), next.cert.clone()])
        .unwrap();
    handshake(client(), server()).unwrap();
    server_store
        .set(
            svid(&s.ca, &["spiffe://td/spire/server"]).0,
            &svid(&s.ca, &["spiffe://td/x"]).1,
        )
        .unwrap_err();
}
