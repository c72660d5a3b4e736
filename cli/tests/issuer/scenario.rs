//! The agent-and-operator scenario on each datastore, and config refusal.

use meshward_api::attestation::join_token_request;

use super::*;

async fn scenario(datastore_url: &str, dir: &Path) {
    let mut issuer = Issuer::new(meshward(), TD, dir, datastore_url);

    // 1. an operator makes a join token; the agent attests with it
    let token = issuer.cli_json(&["token", "generate", "-ttl", "300"]);
    let token = token["value"].as_str().unwrap().to_owned();
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let (node_key, csr) = p256_csr();
    let attested: Attested = client
        .attest_agent(join_token_request(&token, csr))
        .await
        .unwrap()
        .into_inner()
        .into();
    let node_id = format!("spiffe://{TD}/spire/agent/join_token/{token}");
    assert_eq!(attested.spiffe_id, node_id);
    let (chain, roots) = (attested.chain, attested.roots);
    check_x509_svid(&chain, &roots, &node_id, SystemTime::now()).unwrap();

    // a used token is refused
    let again = client
        .attest_agent(join_token_request(&token, p256_csr().1))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "{again}");
    // both attempts, in the issuer's metrics
    let (status, metrics) = http_get(issuer.health, "/metrics").unwrap();
    assert_eq!(status, 200);
    // one attestation of each outcome, two X509-SVIDs signed (the issuer's own
    // server SVID and the node's), two token lookups
    for (want, value) in [
        (
            "meshward_issuer_attestations_total{method=\"join_token\",result=\"ok\"}",
            1.0,
        ),
        (
            "meshward_issuer_attestations_total{method=\"join_token\",result=\"permission_denied\"}",
            1.0,
        ),
        ("meshward_issuer_svids_signed_total{type=\"x509\"}", 2.0),
        (
            "meshward_issuer_datastore_duration_seconds_count{operation=\"consume_join_token\"}",
            2.0,
        ),
    ] {
        let got = metrics
            .lines()
            .find_map(|l| l.strip_prefix(want)?.trim().parse::<f64>().ok());
        assert_eq!(got, Some(value), "{want}:\n{metrics}");
    }

    // without the node SVID, node calls are refused
    let anonymous = client
        .list_authorized_entries(proto::ListAuthorizedEntriesRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous}");

    // 2. an entry for a workload on this node; the node signs for it over mTLS
    let created = issuer.cli_json(&[
        "entry",
        "create",
        "-spiffeID",
        &format!("spiffe://{TD}/ns/default/sa/curl-spire"),
        "-parentID",
        &node_id,
        "-selector",
        "k8s:ns:default",
        "-selector",
        "k8s:sa:curl-spire",
        "-dns",
        "curl-spire.default.svc",
    ]);
    let entry_id = created["entries"][0]["id"].as_str().unwrap().to_owned();
    identity.set(chain.clone(), &node_key).unwrap();
    let mut client = connect(&issuer, &identity).await;
    let entries = client
        .list_authorized_entries(proto::ListAuthorizedEntriesRequest {})
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].selectors,
        ["k8s:ns:default", "k8s:sa:curl-spire"]
    );
    let results = client
        .batch_new_x509_svid(proto::BatchNewX509SvidRequest {
            params: vec![
                proto::NewX509SvidParams {
                    entry_id: entry_id.clone(),
                    csr: p256_csr().1,
                    ..Default::default()
                },
                proto::NewX509SvidParams {
                    entry_id: "no-such-entry".into(),
                    csr: p256_csr().1,
                    ..Default::default()
                },
                proto::NewX509SvidParams {
                    entry_id: entry_id.clone(),
                    csr: b"not a csr".to_vec(),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let workload: Vec<_> = results[0]
        .svid
        .as_ref()
        .unwrap()
        .cert_chain
        .iter()
        .map(|c| c.clone().into())
        .collect();
    check_x509_svid(
        &workload,
        &roots,
        &format!("spiffe://{TD}/ns/default/sa/curl-spire"),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        results[1].code,
        Code::PermissionDenied as i32,
        "{}",
        results[1].message
    );
    assert_eq!(
        results[2].code,
        Code::InvalidArgument as i32,
        "{}",
        results[2].message
    );
    let jwt = client
        .new_jwt_svid(proto::NewJwtSvidRequest {
            entry_id: entry_id.clone(),
            audience: vec!["payments".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bundles = client
        .get_bundles(proto::GetBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let own = bundles.own.unwrap();
    assert_eq!(own.trust_domain, TD);
    // the JWT-SVID verifies against the bundle's JWT keys, for its audience and ID
    let subject = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    verify_jwt_svid(&jwt.token, &own.jwks, "payments", &subject).unwrap();
    assert!(verify_jwt_svid(&jwt.token, &own.jwks, "other", &subject).is_err());

    // 3. a restart keeps entries, the node, and the CA (the node SVID still works)
    issuer.restart();
    let shown = issuer.cli_json(&["entry", "show", "-entryID", &entry_id]);
    assert_eq!(shown["entries"].as_array().unwrap().len(), 1);
    let mut client = connect(&issuer, &identity).await;
    assert_eq!(
        client
            .list_authorized_entries(proto::ListAuthorizedEntriesRequest {})
            .await
            .unwrap()
            .into_inner()
            .entries
            .len(),
        1
    );
    let agents = issuer.cli_json(&["agent", "list"]);
    assert_eq!(agents["agents"][0]["spiffe_id"], node_id.as_str());

    // 4. bad input names the field; a ban stops renewal; eviction stops everything
    let (code, _, stderr) = issuer.cli(&[
        "entry",
        "create",
        "-spiffeID",
        "spiffe://elsewhere/x",
        "-parentID",
        &node_id,
        "-selector",
        "a:b",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("InvalidArgument: spiffe_id: spiffe://elsewhere/x is not in trust domain"),
        "{stderr}"
    );
    let (code, _, stderr) = issuer.cli(&[
        "entry",
        "create",
        "-spiffeID",
        &format!("spiffe://{TD}/x"),
        "-parentID",
        &node_id,
        "-selector",
        "nocolon",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("selectors[0]"), "{stderr}");
    issuer.cli_json(&["agent", "ban", "-spiffeID", &node_id]);
    let denied = client
        .renew_agent(proto::RenewAgentRequest { csr: p256_csr().1 })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("banned"), "{denied}");
    issuer.cli_json(&["agent", "evict", "-spiffeID", &node_id]);
    let evicted = client
        .list_authorized_entries(proto::ListAuthorizedEntriesRequest {})
        .await
        .unwrap_err();
    assert!(evicted.message().contains("not attested"), "{evicted}");
    let (code, stdout, _) = issuer.cli(&["healthcheck"]);
    assert_eq!((code, stdout.as_str()), (0, "Server is healthy.\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/issuer.sqlite3", dir.path().display());
    scenario(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_on_postgres() {
    let Some(db) = TestDatabase::create("issuer_on_postgres").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    scenario(db.url(), dir.path()).await;
}

#[test]
fn a_bad_config_file_is_refused_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("issuer.yaml");
    std::fs::write(
        &config,
        "trust_domain: math.example.com\nca_ttl: 1h\ndefault_x509_svid_ttl: 2h\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(["issuer", "run", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("default_x509_svid_ttl: must not exceed ca_ttl (1h)"),
        "{stderr}"
    );
}
