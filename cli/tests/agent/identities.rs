//! Which identities the agent serves, and when `proxy run` says it is ready.

use super::*;
use meshward_test_support::tcp_proxy::TcpProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_exactly_the_granted_identities() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    issuer.cli_json(&[
        "entry",
        "create",
        "-spiffeID",
        &format!("spiffe://{TD}/ns/default/sa/curl-spire"),
        "-parentID",
        &format!("spiffe://{TD}/node/node-1"),
        "-selector",
        "k8s:ns:default",
        "-selector",
        "k8s:sa:curl-spire",
    ]);
    let template = dir.path().join("template.yaml");
    std::fs::write(
        &template,
        "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: enabled\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}\"\n  podSelector:\n    matchLabels:\n      spiffe: enabled\n",
    )
    .unwrap();
    assert_eq!(
        issuer
            .cli(&["template", "apply", "-f", template.to_str().unwrap()])
            .0,
        0
    );

    let workloads = dir.path().join("workloads.yaml");
    write_workloads(
        &workloads,
        vec![
            pod("curl", "default", "curl-spire", "10.40.1.2", &[]),
            pod(
                "echo",
                "echoserver",
                "default",
                "10.40.1.3",
                &[("spiffe", "enabled")],
            ),
            pod("stranger", "default", "other", "10.40.1.4", &[]),
        ],
    );
    let config = config(dir.path(), &issuer, &token);
    let mut handle = meshward_proxy::agent::start(&config).unwrap();
    let snapshot = wait_for(&mut handle, "SVIDs for curl and echo", |s| {
        !ids(s, "10.40.1.2").is_empty() && !ids(s, "10.40.1.3").is_empty()
    })
    .await;
    // readiness follows the first published snapshot
    tokio::time::timeout(Duration::from_secs(5), handle.ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        snapshot.node_id.as_ref().map(ToString::to_string),
        Some(format!("spiffe://{TD}/node/node-1"))
    );
    assert_eq!(
        ids(&snapshot, "10.40.1.2"),
        [format!("spiffe://{TD}/ns/default/sa/curl-spire")]
    );
    assert_eq!(
        ids(&snapshot, "10.40.1.3"),
        [format!("spiffe://{TD}/ns/echoserver/sa/default")]
    );
    assert!(
        ids(&snapshot, "10.40.1.4").is_empty(),
        "no grant, no identity"
    );
    for p in snapshot.pods.values() {
        for svid in &p.svids {
            check_x509_svid(
                &svid.chain,
                &snapshot.own.x509_authorities,
                svid.spiffe_id.as_str(),
                SystemTime::now(),
            )
            .unwrap();
            // the key is the one the certificate was made for
            let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain[0]).unwrap();
            let key = rcgen::KeyPair::try_from(svid.key_pkcs8.as_slice()).unwrap();
            assert_eq!(
                leaf.public_key().raw,
                rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
            );
        }
    }
    assert!(
        !snapshot.own.jwt_keys.is_empty(),
        "the own bundle carries its JWT keys"
    );

    // a pod leaves: its SVIDs go
    write_workloads(
        &workloads,
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    wait_for(&mut handle, "echo forgotten", |s| {
        !s.pods.contains_key(&"10.40.1.3".parse::<IpAddr>().unwrap())
    })
    .await;

    // an agent restart reuses the node SVID from data_dir: the used token is not needed
    drop(handle);
    let mut restarted = meshward_proxy::agent::start(&config).unwrap();
    let snapshot = wait_for(&mut restarted, "SVIDs after restart", |s| {
        !ids(s, "10.40.1.2").is_empty()
    })
    .await;
    assert_eq!(
        snapshot.node_id.as_ref().map(ToString::to_string),
        Some(format!("spiffe://{TD}/node/node-1"))
    );
    let agents = issuer.cli_json(&["agent", "list"]);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
}

/// The serial of a pod's first SVID, and when it was issued and expires.
fn first_svid(snapshot: &Snapshot, ip: &str) -> Option<(String, SystemTime, SystemTime)> {
    let ip: IpAddr = ip.parse().unwrap();
    let svid = snapshot.pods.get(&ip)?.svids.first()?;
    let serial = meshward_tls::serial_of(&svid.chain[0])?;
    Some((serial, svid.issued_at, svid.expires_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_survive_an_issuer_outage_and_renew_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    // renewed at half its life: about every 5 s
    curl_spire_entry_with(&issuer, &["-x509SVIDTTL", "10"]);
    write_workloads(
        &dir.path().join("workloads.yaml"),
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    let config = config(dir.path(), &issuer, &token);
    let mut handle = meshward_proxy::agent::start(&config).unwrap();
    let snapshot = wait_for(&mut handle, "a first SVID", |s| {
        first_svid(s, "10.40.1.2").is_some()
    })
    .await;
    let (serial, issued, expires) = first_svid(&snapshot, "10.40.1.2").unwrap();

    // the issuer goes away past the renewal time: renewals fail, the SVID stays
    issuer.stop();
    let renew_due = issued + (expires.duration_since(issued).unwrap() * 6) / 10;
    let wait = renew_due
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_secs(1);
    tokio::time::sleep(wait).await;
    let during = handle.snapshots.borrow().clone();
    assert!(SystemTime::now() < expires, "the outage outlived the SVID");
    assert_eq!(
        first_svid(&during, "10.40.1.2").map(|s| s.0),
        Some(serial.clone()),
        "the same SVID is served while renewals fail"
    );
    // back: a new SVID
    issuer.start();
    wait_for(&mut handle, "a renewed SVID", |s| {
        first_svid(s, "10.40.1.2").is_some_and(|(renewed, _, _)| renewed != serial)
    })
    .await;
}

/// One connection to the issuer serves every sync (a handshake each second was
/// most of an idle node's CPU and, at 10,000 nodes, the issuer's); a renewed node
/// SVID opens the next, as the issuer checks the presented one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_share_one_issuer_connection() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    curl_spire_entry(&issuer);
    write_workloads(
        &dir.path().join("workloads.yaml"),
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    let front = TcpProxy::start(issuer.agent).await;
    let config = config_at(dir.path(), &issuer, &token, front.address());
    let mut handle = meshward_proxy::agent::start(&config).unwrap();
    wait_for(&mut handle, "a first SVID", |s| {
        first_svid(s, "10.40.1.2").is_some()
    })
    .await;
    // attestation (no client certificate yet), then the node SVID's connection
    let opened = front.accepted();
    assert_eq!(opened, 2, "connections to attest and to sync");
    // four more syncs (one a second)
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert_eq!(front.accepted(), opened, "each sync opened a connection");
}

#[test]
fn proxy_run_is_ready_after_attestation_and_first_sync() {
    use meshward_test_support::daemon::{Daemon, free_port, http_status};
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_meshward"));
    let mut issuer = start_issuer(dir.path());
    let token = issuer.cli_json(&["token", "generate"]);
    write_workloads(
        &dir.path().join("workloads.yaml"),
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    std::fs::write(dir.path().join("bundle.pem"), issuer.bundle_pem()).unwrap();
    let ready = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "trust_domain: {TD}\nreadiness_listen: {ready}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  join_token: {}\n  workloads:\n    file: {}\n{}",
            issuer.agent,
            dir.path().join("bundle.pem").display(),
            dir.path().join("agent").display(),
            token["value"].as_str().unwrap(),
            dir.path().join("workloads.yaml").display(),
            // this host is not a node: no capture rules, listeners on free ports
            format_args!(
                "capture:\n  install: false\n  outbound_port: {}\n  inbound_plaintext_port: {}\n  inbound_hbone_port: {}\nadmin_listen: 127.0.0.1:{}\nmetrics_listen: 127.0.0.1:{}\n",
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                free_port()
            ),
        ),
    )
    .unwrap();
    // no issuer yet: the daemon runs but is not ready, since it cannot attest
    issuer.stop();
    let mut proxy = Daemon::spawn(
        bin,
        &["proxy", "run", "-c", config.to_str().unwrap()],
        &dir.path().join("proxy.log"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut answered = None;
    while std::time::Instant::now() < deadline && answered.is_none() {
        answered = http_status(ready, "/healthz/ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        answered,
        Some(503),
        "not ready before attestation: {}",
        proxy.log()
    );
    issuer.start();
    proxy.wait_http_ok(ready, "/healthz/ready", Duration::from_secs(40));
    assert!(
        proxy
            .log()
            .contains("attested as spiffe://math.example.com/spire/agent/join_token/"),
        "{}",
        proxy.log()
    );
    assert_eq!(http_status(ready, "/other"), Some(404));
    let status = proxy.stop();
    assert!(status.contains("exit status: 0"), "{status}");
}
