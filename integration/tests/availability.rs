//! The issuer as a tier-0 service: replicas on one PostgreSQL, agents that fail
//! over between them (`proxy/src/agent/issuers.rs`), and a mesh that drops no
//! request while a replica is lost.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use meshward_integration::{Mesh, available_or_skip};
use meshward_test_support::postgres::TestDatabase;
use meshward_test_support::postgres_server::PostgresServer;
use support::{curl_spire, echo_mesh, eventually, example, node_metric, status};

/// Short, so that every phase below outlives the SVIDs it started with.
const SVID_TTL: Duration = Duration::from_secs(30);

/// Requests from curl-spire to the echoserver, each on a new connection (a new
/// mTLS handshake with the SVIDs of the moment), for `how_long`; the failures.
fn load(mesh: &Mesh, how_long: Duration) -> (usize, Vec<String>) {
    let url = format!("http://{}:8080/", mesh.pod_ip("echoserver").unwrap());
    let started = Instant::now();
    let (mut sent, mut failures) = (0, Vec::new());
    while started.elapsed() < how_long {
        sent += 1;
        if let Err(e) = status(mesh, "curl-spire", &[&url, "--max-time", "5"], 200) {
            failures.push(format!("after {:?}: {e}", started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (sent, failures)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The SVIDs `node` holds, as its admin port lists them (`/certs`).
fn certs(mesh: &Mesh, node: &str) -> Vec<serde_json::Value> {
    let (_, body) = mesh.admin_get(node, "/certs").unwrap();
    let certs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(!certs.is_empty(), "{node} holds no SVID: {body}");
    certs
}

/// `issued_at` of each SVID on both nodes.
fn issue_times(mesh: &Mesh) -> Vec<u64> {
    ["node-1", "node-2"]
        .iter()
        .flat_map(|node| certs(mesh, node))
        .map(|cert| cert["issued_at"].as_u64().unwrap())
        .collect()
}

/// Every SVID `node` holds was issued at or after `since` (unix seconds).
fn renewed_since(mesh: &Mesh, node: &str, since: u64) {
    for cert in certs(mesh, node) {
        let issued_at = cert["issued_at"].as_u64().unwrap();
        assert!(
            issued_at >= since,
            "{node}: {} issued at {issued_at}, before {since}: not renewed\n{}",
            cert["spiffe_id"],
            mesh.daemon_log(node)
        );
    }
}

#[test]
fn losing_an_issuer_replica_drops_no_request_and_svids_renew_from_the_other() {
    let Some(()) = available_or_skip(
        "losing_an_issuer_replica_drops_no_request_and_svids_renew_from_the_other",
    ) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = runtime.block_on(TestDatabase::create("issuer_replicas")) else {
        return;
    };
    let (mut mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .svid_ttl(u32::try_from(SVID_TTL.as_secs()).unwrap())
            .replicated_issuer(2, db.url());
    });
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let url = format!("http://{}:8080/", mesh.pod_ip("echoserver").unwrap());
    eventually(&mesh, "the first request", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });
    // Each replica is lost in turn for longer than an SVID lives, so whichever
    // one a node was using, every SVID in use at the end was signed by the other.
    let phase = SVID_TTL + Duration::from_secs(8);
    let mut report = Vec::new();
    for (lost, other) in [(0, 1), (1, 0)] {
        let lost_at = unix_now();
        let status = mesh.kill_issuer(lost).unwrap();
        let (sent, failures) = load(&mesh, phase);
        assert!(
            failures.is_empty(),
            "replica {lost} lost ({status}): {} of {sent} requests failed: {failures:#?}\n{}\n--- replica {other} ---\n{}",
            failures.len(),
            mesh.logs(),
            mesh.issuer_replica_log(other).unwrap()
        );
        assert_eq!(mesh.issuer_ready(other).unwrap(), Some(true));
        for node in ["node-1", "node-2"] {
            renewed_since(&mesh, node, lost_at);
        }
        mesh.restart_issuer(lost).unwrap();
        report.push(format!("replica {lost} lost: {sent} requests, none failed"));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn every_issuer_down_past_half_an_svid_ttl_drops_no_request_and_svids_renew_on_its_return() {
    let Some(()) = available_or_skip(
        "every_issuer_down_past_half_an_svid_ttl_drops_no_request_and_svids_renew_on_its_return",
    ) else {
        return;
    };
    const TTL: u64 = 60;
    // longer than half a TTL: past the point where every SVID is due for renewal
    let outage = Duration::from_secs(TTL / 2 + 4);
    let (mut mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true).svid_ttl(TTL as u32);
    });
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let url = format!("http://{}:8080/", mesh.pod_ip("echoserver").unwrap());
    eventually(&mesh, "the first request", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });
    // the outage starts when every SVID has more than the outage left to live
    // (renewals are spread over 45-55% of the TTL, so such moments come often)
    let young = TTL - outage.as_secs() - 6;
    let deadline = Instant::now() + Duration::from_secs(TTL);
    while issue_times(&mesh).iter().any(|t| unix_now() - t > young) {
        assert!(Instant::now() < deadline, "the SVIDs are never all young");
        std::thread::sleep(Duration::from_millis(250));
    }

    let status_text = mesh.kill_issuer(0).unwrap();
    let (sent, failures) = load(&mesh, outage);
    assert!(
        failures.is_empty(),
        "no issuer ({status_text}): {} of {sent} requests failed: {failures:#?}\n{}",
        failures.len(),
        mesh.logs()
    );
    // the SVIDs are past half their life, unrenewed, and still valid
    let oldest = node_metric(&mesh, "node-1", "meshward_svid_oldest_age_seconds", &[]);
    assert!(oldest > (TTL / 2) as f64, "oldest SVID age {oldest} s");
    for node in ["node-1", "node-2"] {
        for cert in certs(&mesh, node) {
            assert!(cert["seconds_to_expiry"].as_u64().unwrap() > 0, "{cert}");
        }
    }

    let back = unix_now();
    mesh.restart_issuer(0).unwrap();
    let returned = Instant::now();
    while issue_times(&mesh).iter().any(|t| *t < back) {
        assert!(
            returned.elapsed() < Duration::from_secs(15),
            "SVIDs not renewed 15 s after the issuer returned\n{}",
            mesh.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let renewed_within = returned.elapsed();
    let (sent_after, failures) = load(&mesh, Duration::from_secs(3));
    assert!(failures.is_empty(), "{failures:#?}");
    eprintln!(
        "issuer down {outage:?}: {sent} requests, none failed; every SVID renewed {renewed_within:?} after its return; {sent_after} more after"
    );
}

/// Waits (at most `within`) until both replicas report `ready`.
fn replicas_ready(mesh: &Mesh, ready: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now: Vec<Option<bool>> = (0..2).map(|r| mesh.issuer_ready(r).unwrap()).collect();
        if now.iter().all(|r| *r == Some(ready)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "replicas' readiness {now:?}, want {ready} within {within:?}\n--- replica 0 ---\n{}\n--- replica 1 ---\n{}",
            mesh.issuer_replica_log(0).unwrap(),
            mesh.issuer_replica_log(1).unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_datastore_restart_loses_nothing_and_readiness_follows_it() {
    let test = "a_datastore_restart_loses_nothing_and_readiness_follows_it";
    let Some(()) = available_or_skip(test) else {
        return;
    };
    let Some(postgres) = PostgresServer::start(test) else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .svid_ttl(60)
            .replicated_issuer(2, &postgres.url());
    });
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let url = format!("http://{}:8080/", mesh.pod_ip("echoserver").unwrap());
    eventually(&mesh, "the first request", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });
    let entries = mesh.issuer_cli(&["entry", "show"]).unwrap();
    replicas_ready(&mesh, true, Duration::from_secs(10));

    postgres.pause();
    let noticed = replicas_ready(&mesh, false, Duration::from_secs(20));
    let (sent, failures) = load(&mesh, Duration::from_secs(10));
    assert!(
        failures.is_empty(),
        "datastore down: {} of {sent} requests failed: {failures:#?}",
        failures.len()
    );
    postgres.resume();
    let recovered = replicas_ready(&mesh, true, Duration::from_secs(30));

    assert_eq!(mesh.issuer_cli(&["entry", "show"]).unwrap(), entries);
    // both replicas write again: a token made through one is seen by the other
    let token = mesh
        .issuer_cli(&[
            "token",
            "generate",
            "-spiffeID",
            &format!("spiffe://{}/node/later", mesh.trust_domain()),
        ])
        .unwrap();
    assert!(token.contains("Token: "), "{token}");
    let (sent_after, failures) = load(&mesh, Duration::from_secs(3));
    assert!(failures.is_empty(), "{failures:#?}");
    eprintln!(
        "datastore down: not ready after {noticed:?}, {sent} requests none failed; ready {recovered:?} after its return; {sent_after} more after"
    );
}
