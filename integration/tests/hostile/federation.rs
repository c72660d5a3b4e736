//! Class 14, federation: a workload of a federated trust domain reaches only the
//! pods whose identity federates with that domain (SPIRE's `federatesWith`), and
//! nothing else does, though the node trusts the domain's bundle for them.

use std::path::Path;
use std::time::Duration;

use meshward_integration::available_or_skip;
use meshward_integration::hbone::{Credentials, LeafSpec, Tunnel, mint_leaf, tunnel};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};

use crate::support::{contains, echo_mesh, eventually, tcp_echo};

const PARTNER: &str = "partner.example";

/// A CA of the partner domain, kept as the issuer keeps its own (`ca.pem`, `ca.key`).
fn partner_ca(dir: &Path) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{PARTNER}").as_str().try_into().unwrap(),
    )];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
}

#[test]
fn a_federated_workload_reaches_only_pods_that_federate_with_it() {
    let Some(()) =
        available_or_skip("a_federated_workload_reaches_only_pods_that_federate_with_it")
    else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|_| {});
    let _tcp = tcp_echo(&mesh);
    mesh.apply_policy(
        "allow-any-identity",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-any-identity, namespace: echoserver}\nspec:\n  rules:\n  - from:\n    - source:\n        principals: [\"*\"]\n",
    )
    .unwrap();
    // the mesh's issuer trusts the partner's bundle (set by hand, as before a
    // federation relationship keeps it fresh)
    let dir = tempfile::tempdir().unwrap();
    partner_ca(dir.path());
    let bundle = dir.path().join("ca.pem");
    mesh.issuer_cli(&[
        "bundle",
        "set",
        "-id",
        &format!("spiffe://{PARTNER}"),
        "-path",
        bundle.to_str().unwrap(),
    ])
    .unwrap();
    let foreign: Credentials = mint_leaf(
        dir.path(),
        &LeafSpec::svid(&format!("spiffe://{PARTNER}/ns/payments/sa/api")),
    )
    .unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    let node = mesh.cluster.node("node-1").unwrap().netns();
    let call = || {
        tunnel(
            node,
            std::net::SocketAddr::new(ip, 15008),
            std::net::SocketAddr::new(ip, 8080),
            &[],
            &foreign,
            b"GET /from-partner HTTP/1.1\r\nHost: echoserver\r\nConnection: close\r\n\r\n",
            Duration::from_secs(15),
        )
        .unwrap()
    };

    // the echoserver federates with the partner: its workloads are served, and
    // the pod learns who called
    mesh.federate_pod("echoserver", &[PARTNER]).unwrap();
    let served = eventually(&mesh, "the partner's workload is served", || match call() {
        Tunnel::Open(bytes) if contains(&bytes, " 200 ") => Ok(bytes),
        other => Err(format!("{other:?}")),
    });
    assert!(
        contains(
            &served,
            &format!("URI=spiffe://{PARTNER}/ns/payments/sa/api")
        ),
        "{}",
        String::from_utf8_lossy(&served)
    );
    // it no longer does: a connection the partner holds open is closed, and the
    // same certificate, with the same bundle on the node, is refused in the handshake
    let held = std::thread::scope(|scope| {
        let open = scope.spawn(|| {
            let started = std::time::Instant::now();
            let outcome = tunnel(
                node,
                std::net::SocketAddr::new(ip, 15008),
                std::net::SocketAddr::new(ip, 9000),
                &[],
                &foreign,
                b"\0tcp",
                Duration::from_secs(30),
            )
            .unwrap();
            (outcome, started.elapsed())
        });
        std::thread::sleep(Duration::from_secs(2));
        mesh.federate_pod("echoserver", &[]).unwrap();
        open.join().unwrap()
    });
    assert!(
        matches!(&held.0, Tunnel::Open(bytes) if contains(bytes, "\0tcp")),
        "the held connection was served first: {:?}",
        held.0
    );
    assert!(
        held.1 < Duration::from_secs(20),
        "the held connection stayed open for {:?}\n{}",
        held.1,
        mesh.logs()
    );
    eventually(&mesh, "the partner's workload is refused", || {
        match call() {
            Tunnel::Refused(reason) => Ok(reason),
            Tunnel::Open(bytes) => Err(format!(
                "still answered: {}",
                String::from_utf8_lossy(&bytes)
            )),
            other => Err(format!("still answered: {other:?}")),
        }
    });
    // the daemon writes its log line just after the alert the client saw
    eventually(&mesh, "the refusal is logged as not_federated", || {
        let logs = mesh.daemon_log("node-2");
        logs.contains("not_federated")
            .then_some(())
            .ok_or_else(|| "no not_federated line yet".to_owned())
    });
}
