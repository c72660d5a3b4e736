//! Who is talking: hand-minted certificates (class 10), forged source addresses
//! (class 9), and a rogue destination (class 12).

use std::time::Duration;

use meshward_integration::available_or_skip;
use meshward_integration::hbone::{
    Connect, LeafSpec, RogueServer, Tunnel, mint_leaf, tunnel, tunnel_with,
};
use rcgen::KeyUsagePurpose;

use crate::support::{TD, contains, curl_spire, echo_mesh, eventually, status};
use crate::{Findings, allow_curl_spire};

/// Classes 9 and 10: certificates minted by the mesh's own CA, one rule broken
/// each, are refused in the handshake; a valid SVID cannot borrow another pod's
/// address through the HBONE `forwarded` header.
#[test]
fn hand_made_certificates_and_forged_addresses() {
    let Some(()) = available_or_skip("hand_made_certificates_and_forged_addresses") else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true);
    });
    let curl_ip = mesh.pod_ip("curl-spire").unwrap();
    mesh.apply_policy(
        "allow",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow, namespace: echoserver}}\nspec:\n  rules:\n  - from:\n    - source:\n        principals: [\"*\"]\n    to:\n    - operation:\n        paths: [\"/any-identity\"]\n  - from:\n    - source:\n        ipBlocks: [\"{curl_ip}/32\"]\n    to:\n    - operation:\n        paths: [\"/from-curl-spire\"]\n"
        ),
    )
    .unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    eventually(&mesh, "policy in force", || {
        status(
            &mesh,
            "curl-spire",
            &[&format!("http://{ip}:8080/from-curl-spire")],
            200,
        )
    });
    let ca = mesh.issuer_ca_dir().unwrap();
    let node = mesh.cluster.node("node-1").unwrap().netns();
    let peer = std::net::SocketAddr::new(ip, 15008);
    let target = std::net::SocketAddr::new(ip, 8080);
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: echoserver\r\nConnection: close\r\n\r\n")
    };
    let open = |spec: &LeafSpec, headers: &[(&str, &str)], path: &str| {
        let credentials = mint_leaf(&ca, spec).unwrap();
        tunnel(
            node,
            peer,
            target,
            headers,
            &credentials,
            get(path).as_bytes(),
            Duration::from_secs(15),
        )
        .unwrap()
    };
    let answered = |outcome: &Tunnel, code: &str| match outcome {
        Tunnel::Open(bytes) => contains(bytes, &format!(" {code} ")),
        _ => false,
    };

    // the harness itself: a leaf as the issuer signs it is served
    let findings = Findings::default();
    let valid = LeafSpec::svid(&format!("spiffe://{TD}/ns/evil/sa/mallory"));
    let credentials = mint_leaf(&ca, &valid).unwrap();
    let get_any = get("/any-identity");
    let outcome = tunnel(
        node,
        peer,
        target,
        &[],
        &credentials,
        get_any.as_bytes(),
        Duration::from_secs(15),
    )
    .unwrap();
    assert!(answered(&outcome, "200"), "{outcome:?}");
    // XFCC's Hash is of the leaf this client presented (hashed once per connection)
    let hash = meshward_proxy::xfcc::leaf_hash(&credentials.chain[0]);
    assert!(
        matches!(&outcome, Tunnel::Open(bytes) if contains(bytes, &format!("Hash={hash};"))),
        "no Hash={hash} in {}",
        match &outcome {
            Tunnel::Open(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        }
    );

    // 10: each X509-SVID rule broken once, by a certificate the bundle trusts
    let broken = [
        LeafSpec::svid(&format!("spiffe://{TD}/ns/default/sa/a,b=c")),
        LeafSpec::svid(&format!("spiffe://{TD}/ns/x;URI=spiffe:")),
        LeafSpec {
            uris: vec![format!("spiffe://{TD}/a"), format!("spiffe://{TD}/b")],
            ..valid.clone()
        },
        LeafSpec {
            usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            ..valid.clone()
        },
        LeafSpec {
            usages: vec![],
            ..valid.clone()
        },
        LeafSpec {
            is_ca: true,
            ..valid.clone()
        },
    ];
    for spec in &broken {
        let outcome = open(spec, &[], "/any-identity");
        let refused = matches!(outcome, Tunnel::Refused(_));
        findings.check("10 X509-SVID rules", refused, (spec, outcome));
    }
    let logged = mesh.daemon_log("node-2").contains("not an X509-SVID");
    findings.check("10 refusal logged", logged, "no handshake failure line");

    // a trust domain the mesh has no bundle for, though the mesh's CA signed it
    let foreign = LeafSpec::svid("spiffe://evil.example/ns/default/sa/curl-spire");
    let outcome = open(&foreign, &[], "/any-identity");
    findings.check(
        "untrusted trust domain",
        matches!(outcome, Tunnel::Refused(_)),
        outcome,
    );
    // a CONNECT naming another pod than the one whose certificate the tunnel showed
    let credentials = mint_leaf(&ca, &valid).unwrap();
    let elsewhere = std::net::SocketAddr::new(curl_ip, 8080);
    let outcome = tunnel(
        node,
        peer,
        elsewhere,
        &[],
        &credentials,
        b"",
        Duration::from_secs(15),
    )
    .unwrap();
    findings.check(
        "CONNECT to another pod",
        outcome == Tunnel::Status(400),
        outcome,
    );

    // 9: a valid SVID claiming curl-spire's address is judged by its own
    let claim = format!("for=\"{curl_ip}:40000\"");
    let outcome = open(&valid, &[("forwarded", &claim)], "/from-curl-spire");
    findings.check("9 forged forwarded", answered(&outcome, "403"), outcome);

    // a certificate that expires while its connection stays open opens no stream
    // after its expiry: the identity is the certificate's, and it is gone
    let expiring = LeafSpec {
        valid_for: Some(Duration::from_secs(3)),
        ..valid
    };
    let credentials = mint_leaf(&ca, &expiring).unwrap();
    let request = get("/any-identity");
    let late = Connect {
        target,
        headers: &[],
        send: request.as_bytes(),
        wait: Duration::from_secs(5),
    };
    let outcome = tunnel_with(node, peer, &late, &credentials, Duration::from_secs(15)).unwrap();
    findings.check(
        "a stream after the peer's certificate expired",
        !matches!(outcome, Tunnel::Open(_)),
        outcome,
    );
    findings.assert_none(&mesh);
}

/// Class 12: the source checks whom it reached. Something at a mesh address answers
/// with an SVID the mesh's CA signed, but not one issued for that address: the
/// source node refuses it before sending a byte of the request.
#[test]
fn the_source_refuses_a_destination_its_svid_does_not_name() {
    let Some(()) = available_or_skip("the_source_refuses_a_destination_its_svid_does_not_name")
    else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .mesh_cidr("10.0.0.0/8");
    });
    mesh.apply_policy("allow", &allow_curl_spire("")).unwrap();
    let echo_ip = mesh.pod_ip("echoserver").unwrap();
    eventually(&mesh, "the real echoserver answers", || {
        status(
            &mesh,
            "curl-spire",
            &[&format!("http://{echo_ip}:8080/")],
            200,
        )
    });
    // the rogue stands at an address of the mesh that no pod of ours holds
    let host = mesh.cluster.host("issuer").unwrap();
    let rogue_ip = std::net::IpAddr::V4(host.ip());
    let ca = mesh.issuer_ca_dir().unwrap();
    let findings = Findings::default();
    let echoserver_id = format!("spiffe://{TD}/ns/echoserver/sa/default");
    let cases = [
        ("an SVID naming no address", LeafSpec::svid(&echoserver_id)),
        (
            "the echoserver's SVID, naming the echoserver's address",
            LeafSpec {
                ips: vec![echo_ip],
                ..LeafSpec::svid(&echoserver_id)
            },
        ),
    ];
    for (what, spec) in cases {
        let credentials = mint_leaf(&ca, &spec).unwrap();
        let rogue = RogueServer::start(
            host.netns(),
            std::net::SocketAddr::new(rogue_ip, 15008),
            &credentials,
            b"hijacked",
        )
        .unwrap();
        let r = mesh
            .cluster
            .curl("curl-spire", &[&format!("http://{rogue_ip}:8080/")])
            .unwrap();
        let refused = !r.body.contains("hijacked") && rogue.connects() == 0;
        findings.check(&format!("12 {what}"), refused, (&r, rogue.connects()));
    }
    let logged = mesh
        .daemon_log("node-1")
        .contains("whose SVID does not name that address");
    findings.check("12 refusal logged", logged, "no log line");
    findings.assert_none(&mesh);
}
