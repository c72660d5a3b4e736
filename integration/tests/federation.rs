//! Two clusters of two trust domains on one underlay, federated as an operator
//! does it (relationships in both issuers, `federatesWith` on the entries), under
//! load: both CAs rotate with no failed request, and deleting the relationship
//! cuts the partner off, open connections included (issue 16, item 7).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshward_integration::{Mesh, PodSpec, available_or_skip};
use support::{TD, connect_from, echo_mesh, echoed, eventually, status, tcp_echo};

const PARTNER: &str = "payments.example.org";

/// The CA certificates of a cluster's bundle (PEM blocks).
fn cas(mesh: &Mesh, trust_domain: &str) -> Vec<String> {
    mesh.issuer_cli_of(trust_domain, &["bundle", "show"])
        .unwrap()
        .split("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|block| !block.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn federated_clusters_survive_ca_rotation_under_load_and_deletion_cuts_them_off() {
    let Some(()) = available_or_skip(
        "federated_clusters_survive_ca_rotation_under_load_and_deletion_cuts_them_off",
    ) else {
        return;
    };
    // one-minute CAs in both clusters: the next CA is published at 30 s, signs
    // from 50 s, and the first expires at 60 s; bundles are re-fetched every 2 s
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.cluster(PARTNER, &["node-3"])
            .pod(
                "node-3",
                PodSpec::new("payments")
                    .namespace("payments")
                    .service_account("checkout"),
                true,
            )
            .issuer_yaml(
                "ca_ttl: 1m\ndefault_x509_svid_ttl: 20s\ndefault_jwt_svid_ttl: 20s\nagent_svid_ttl: 20s\njoin_token_ttl: 20s\n",
            )
            .bundle_refresh_hint(2)
            .svid_ttl(20);
    });
    let _tcp = tcp_echo(&mesh);
    let first_partner_cas = cas(&mesh, PARTNER);
    let first_own_cas = cas(&mesh, TD);
    mesh.federate(TD, PARTNER).unwrap();
    mesh.federate(PARTNER, TD).unwrap();
    mesh.federate_pod("echoserver", &[PARTNER]).unwrap();
    mesh.federate_pod("payments", &[TD]).unwrap();
    mesh.apply_policy(
        "allow-partner",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-partner, namespace: echoserver}}\nspec:\n  rules:\n  - from:\n    - source:\n        principals: [\"{PARTNER}/ns/payments/sa/checkout\"]\n"
        ),
    )
    .unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = format!("http://{ip}:8080/load");
    eventually(&mesh, "the partner's workload is served", || {
        status(&mesh, "payments", &[&url], 200)
    });

    // load from B to A across both rotations: every request served
    let started = Instant::now();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/load_across_rotation.py");
    let out = mesh
        .cluster
        .exec_in_pod(
            "payments",
            "python3",
            &[script, &url, "75", "6000"],
            Duration::from_secs(110),
        )
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    assert_eq!(report["failed"], 0, "{report}\n{}", mesh.logs());
    assert!(report["ok"].as_u64().unwrap() > 100, "{report}");
    // both CAs did rotate: past the first CAs' minute, neither bundle holds them,
    // so the last requests came with SVIDs of the new CAs, trusted across domains
    assert!(started.elapsed() > Duration::from_secs(60));
    let partner_cas = cas(&mesh, PARTNER);
    assert!(
        first_partner_cas.iter().all(|ca| !partner_cas.contains(ca)),
        "B's first CA is still in its bundle"
    );
    let own_cas = cas(&mesh, TD);
    assert!(first_own_cas.iter().all(|ca| !own_cas.contains(ca)));
    assert!(report["hashes"].as_array().unwrap().len() >= 2, "{report}");

    // A deletes the relationship: A's nodes drop B's bundle, so a connection B
    // holds open is closed and new ones are refused in the handshake
    let mut held = connect_from(&mesh, "payments", SocketAddr::new(ip, 9000)).unwrap();
    echoed(&mut held, Duration::from_secs(10)).unwrap();
    let refusals_before = handshake_refusals(&mesh);
    mesh.issuer_cli(&["federation", "delete", "-id", PARTNER])
        .unwrap();
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let cut = Instant::now();
    let mut byte = [0u8; 1];
    match held.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "the held connection was not closed ({other:?} after {:?})\n{}",
            cut.elapsed(),
            mesh.logs()
        ),
    }
    eventually(&mesh, "the partner's workload is refused", || {
        match mesh.cluster.curl("payments", &["--max-time", "5", &url]) {
            Ok(r) if r.status.is_none() => Ok(()),
            other => Err(format!("still answered: {other:?}")),
        }
    });
    // ... in a new handshake (the daemon logs just after the alert B's node saw)
    eventually(&mesh, "a new handshake refused, logged", || {
        let refusals = handshake_refusals(&mesh);
        (refusals > refusals_before)
            .then_some(())
            .ok_or_else(|| format!("{refusals} unknown_trust_domain lines, as before"))
    });
}

/// How many handshakes node-2 refused for a trust domain it holds no bundle of.
fn handshake_refusals(mesh: &Mesh) -> usize {
    mesh.daemon_log("node-2")
        .matches("reason=\"unknown_trust_domain\"")
        .count()
}
