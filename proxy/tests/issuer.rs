//! The real issuer process, driven as an operator and an agent would: the CLI
//! over the admin socket, the agent API over SPIFFE-authenticated TLS. The same
//! scenario runs on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward_issuer::client::{Code, agent_client};
use meshward_issuer::proto;
use meshward_test_support::daemon::{free_port, http_get};
use meshward_test_support::issuer::{IssuerProcess, sqlite_url};
use meshward_test_support::postgres::TestDatabase;
use meshward_test_support::{check_x509_svid, p256_csr};
use meshward_tls::CertStore;

const TD: &str = "math.example.com";

type Issuer = IssuerProcess;

fn meshward() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meshward"))
}

/// An agent's view: its identity store and an API client.
async fn connect(
    issuer: &Issuer,
    identity: &Arc<CertStore>,
) -> meshward_issuer::proto::agent_api_client::AgentApiClient<tonic::transport::Channel> {
    agent_client(
        &issuer.agent.to_string(),
        TD,
        issuer.bundle(),
        identity.clone(),
    )
    .await
    .unwrap()
}

async fn scenario(datastore_url: &str, dir: &Path) {
    let mut issuer = Issuer::new(meshward(), TD, dir, datastore_url);

    // 1. an operator makes a join token; the agent attests with it
    let token = issuer.cli_json(&["token", "generate", "-ttl", "300"]);
    let token = token["value"].as_str().unwrap().to_owned();
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let (node_key, csr) = p256_csr();
    let attested = client
        .attest_join_token(proto::AttestJoinTokenRequest {
            token: token.clone(),
            csr,
        })
        .await
        .unwrap()
        .into_inner();
    let node_svid = attested.svid.unwrap();
    let node_id = format!("spiffe://{TD}/spire/agent/join_token/{token}");
    assert_eq!(node_svid.spiffe_id, node_id);
    let chain: Vec<_> = node_svid
        .cert_chain
        .iter()
        .map(|c| c.clone().into())
        .collect();
    let roots: Vec<_> = attested
        .bundle
        .unwrap()
        .x509_authorities
        .into_iter()
        .map(Into::into)
        .collect();
    check_x509_svid(&chain, &roots, &node_id, SystemTime::now()).unwrap();

    // a used token is refused
    let again = client
        .attest_join_token(proto::AttestJoinTokenRequest {
            token: token.clone(),
            csr: p256_csr().1,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "{again}");
    // both attempts, in the issuer's metrics
    let (status, metrics) = http_get(issuer.health, "/metrics").unwrap();
    assert_eq!(status, 200);
    for want in [
        "meshward_issuer_attestations_total{method=\"join_token\",result=\"ok\"}",
        "meshward_issuer_attestations_total{method=\"join_token\",result=\"permission_denied\"}",
        "meshward_issuer_svids_signed_total{type=\"x509\"}",
        "meshward_issuer_datastore_duration_seconds_count{operation=\"consume_join_token\"}",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
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
    assert_eq!(jwt.token.split('.').count(), 3);
    let bundles = client
        .get_bundles(proto::GetBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bundles.own.unwrap().trust_domain, TD);

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
        meshward_tls::Authorizer::Exact(format!("spiffe://{TD}/spire/server")),
    );
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let body = fetch_bundle(SocketAddr::from(([127, 0, 0, 1], port)), config, "issuer").await;
    let fetched = meshward_issuer::Bundle::from_spiffe_json(TD, &body).unwrap();
    assert_eq!(fetched.refresh_hint, Duration::from_secs(120));
    assert_eq!(
        (fetched.x509_authorities.len(), fetched.jwt_keys.len()),
        (1, 1)
    );
    let (_, shown, _) = issuer.cli(&["bundle", "show", "-format", "spiffe"]);
    assert_eq!(
        meshward_issuer::Bundle::from_spiffe_json(TD, &shown)
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
    assert!(meshward_issuer::Bundle::from_spiffe_json(TD, &body).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_psat_attestation_through_token_review() {
    use meshward_test_support::kube_api::{FakeKubeApi, FakePod};
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let agent_pod = api.add_agent_pod(
        "ip-10-0-1-23.ec2.internal",
        "node-uid-1",
        "meshward-node-abcde",
        "pod-uid-1",
    );
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &api.issuer_psat_yaml(),
    );
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let attest = |cluster: &str, token: String| proto::AttestK8sPsatRequest {
        cluster: cluster.into(),
        token,
        csr: p256_csr().1,
    };
    let token = api.service_account_token(&agent_pod, "meshward-issuer", Duration::from_secs(600));
    let attested = client
        .attest_k8s_psat(attest("eks", token.clone()))
        .await
        .unwrap()
        .into_inner();
    let node_id = format!("spiffe://{TD}/spire/agent/k8s_psat/eks/node-uid-1");
    assert_eq!(attested.svid.unwrap().spiffe_id, node_id);
    let agents = issuer.cli_json(&["agent", "show", "-spiffeID", &node_id]);
    let agent = &agents["agents"][0];
    assert_eq!(agent["attestation_type"], "k8s_psat");
    assert_eq!(agent["can_reattest"], true);
    let selectors: Vec<&str> = agent["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in [
        "k8s_psat:cluster:eks",
        "k8s_psat:agent_ns:meshward",
        "k8s_psat:agent_sa:meshward-node",
        "k8s_psat:agent_pod_name:meshward-node-abcde",
        "k8s_psat:agent_pod_uid:pod-uid-1",
        "k8s_psat:agent_node_name:ip-10-0-1-23.ec2.internal",
        "k8s_psat:agent_node_uid:node-uid-1",
        "k8s_psat:agent_node_ip:10.0.1.23",
    ] {
        assert!(
            selectors.contains(&want),
            "{want} missing from {selectors:?}"
        );
    }
    // PSAT nodes may attest again (a restarted agent pod)
    client
        .attest_k8s_psat(attest("eks", token.clone()))
        .await
        .unwrap();

    let refused = |r: Result<tonic::Response<proto::AttestResponse>, tonic::Status>, want: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        assert!(e.message().contains(want), "want {want:?} in {e}");
    };
    refused(
        client.attest_k8s_psat(attest("gke", token.clone())).await,
        "cluster \"gke\" is not configured",
    );
    let wrong_audience =
        api.service_account_token(&agent_pod, "someone-else", Duration::from_secs(600));
    refused(
        client.attest_k8s_psat(attest("eks", wrong_audience)).await,
        "not valid for audience",
    );
    let mut forged = token.clone();
    forged.pop();
    refused(
        client.attest_k8s_psat(attest("eks", forged)).await,
        "not valid for audience",
    );
    let other_sa = FakePod {
        service_account: "default".into(),
        ..agent_pod.clone()
    };
    let token_other =
        api.service_account_token(&other_sa, "meshward-issuer", Duration::from_secs(600));
    refused(
        client.attest_k8s_psat(attest("eks", token_other)).await,
        "not in the allow-list",
    );
    // the pod was replaced: same name, new UID
    api.add_pod(FakePod {
        uid: "pod-uid-2".into(),
        ..agent_pod.clone()
    });
    refused(
        client.attest_k8s_psat(attest("eks", token)).await,
        "another UID",
    );
    // a banned node cannot attest again
    issuer.cli_json(&["agent", "ban", "-spiffeID", &node_id]);
    let fresh = FakePod {
        uid: "pod-uid-2".into(),
        ..agent_pod
    };
    let token = api.service_account_token(&fresh, "meshward-issuer", Duration::from_secs(600));
    refused(client.attest_k8s_psat(attest("eks", token)).await, "banned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_templates_give_matching_pods_on_the_node_their_ids() {
    use meshward_test_support::kube_api::FakeKubeApi;
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let agent_pod = api.add_agent_pod("node-1", "node-uid-1", "meshward-node-1", "agent-uid");
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &api.issuer_psat_yaml(),
    );
    let template = dir.path().join("clusterspiffeid.yaml");
    std::fs::write(
        &template,
        "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: default\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}\"\n  podSelector:\n    matchLabels:\n      spiffe: enabled\n  workloadSelectorTemplates:\n  - \"k8s:ns:{{ .PodMeta.Namespace }}\"\n  dnsNameTemplates:\n  - \"{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc\"\n  ttl: 30m\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        issuer.cli(&["template", "apply", "-f", template.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Applied templates: default\n");
    let listed = issuer.cli_json(&["template", "list"]);
    assert_eq!(listed["templates"][0]["x509_svid_ttl"], 1800);

    // the node attests with its projected token, then signs for its pods by template
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let (node_key, csr) = p256_csr();
    let token = api.service_account_token(&agent_pod, "meshward-issuer", Duration::from_secs(600));
    let attested = client
        .attest_k8s_psat(proto::AttestK8sPsatRequest {
            cluster: "eks".into(),
            token,
            csr,
        })
        .await
        .unwrap()
        .into_inner();
    let node_chain: Vec<_> = attested
        .svid
        .unwrap()
        .cert_chain
        .into_iter()
        .map(Into::into)
        .collect();
    let roots: Vec<_> = attested
        .bundle
        .unwrap()
        .x509_authorities
        .into_iter()
        .map(Into::into)
        .collect();
    identity.set(node_chain, &node_key).unwrap();
    let mut client = connect(&issuer, &identity).await;
    let templates = client
        .list_identity_templates(proto::ListIdentityTemplatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(templates.templates[0].name, "default");

    let pod = |name: &str, node: &str, labelled: bool| proto::PodAttributes {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("{name}-uid"),
        service_account: "curl-spire".into(),
        node_name: node.into(),
        labels: if labelled {
            [("spiffe".to_owned(), "enabled".to_owned())].into()
        } else {
            Default::default()
        },
        namespace_labels: Default::default(),
    };
    let by_template = |p: proto::PodAttributes| proto::NewX509SvidParams {
        csr: p256_csr().1,
        template: "default".into(),
        pod: Some(p),
        ..Default::default()
    };
    let results = client
        .batch_new_x509_svid(proto::BatchNewX509SvidRequest {
            params: vec![
                by_template(pod("curl-1", "node-1", true)),
                by_template(pod("curl-2", "node-1", false)),
                by_template(pod("curl-3", "node-2", true)),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let svid = results[0]
        .svid
        .as_ref()
        .unwrap_or_else(|| panic!("{}", results[0].message));
    let chain: Vec<_> = svid.cert_chain.iter().map(|c| c.clone().into()).collect();
    let id = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    check_x509_svid(&chain, &roots, &id, SystemTime::now()).unwrap();
    let lifetime = svid.expires_at
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!(
        (1700..=1800).contains(&lifetime),
        "the template's 30m TTL, got {lifetime}s"
    );
    assert_eq!(results[1].code, Code::PermissionDenied as i32);
    assert!(
        results[1].message.contains("does not select"),
        "{}",
        results[1].message
    );
    assert_eq!(results[2].code, Code::PermissionDenied as i32);
    assert!(
        results[2].message.contains("not on this node"),
        "{}",
        results[2].message
    );
    // an entry ID and a template at once is ambiguous
    let both = client
        .batch_new_x509_svid(proto::BatchNewX509SvidRequest {
            params: vec![proto::NewX509SvidParams {
                entry_id: "x".into(),
                ..by_template(pod("curl-1", "node-1", true))
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    let jwt = client
        .new_jwt_svid(proto::NewJwtSvidRequest {
            audience: vec!["payments".into()],
            template: "default".into(),
            pod: Some(pod("curl-1", "node-1", true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwt.token.split('.').count(), 3);

    // a template that cannot render is refused whole, with its name
    std::fs::write(&template, "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: broken\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/{{ .PodMeta.Nope }}\"\n").unwrap();
    let (code, _, stderr) = issuer.cli(&["template", "apply", "-f", template.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("template \"broken\": unknown template expression"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spiffe_id_objects_become_identity_templates() {
    use meshward_test_support::kube_api::FakeKubeApi;
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let object = |name: &str, template: &str| {
        serde_json::json!({
            "metadata": {"name": name, "uid": "u1", "generation": 1},
            "spec": {"spiffeIDTemplate": template, "podSelector": {"matchLabels": {"spiffe": "enabled"}}, "ttl": "20m"},
        })
    };
    let by_sa = "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";
    api.apply_cluster_spiffe_id(object("default", by_sa));
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!("cluster_spiffe_ids: {}\n", api.connection_yaml()),
    );
    // an operator's own template beside them is never touched
    let own = dir.path().join("own.yaml");
    std::fs::write(&own, format!("apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: own\nspec:\n  spiffeIDTemplate: \"{by_sa}\"\n")).unwrap();
    let (code, _, stderr) = issuer.cli(&["template", "apply", "-f", own.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let names = || -> Vec<String> {
        let listed = issuer.cli_json(&["template", "list"]);
        let mut names: Vec<String> = listed["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let wait_for = |want: &[&str]| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let now = names();
            if now == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "templates {now:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&["k8s/default", "own"]);
    // a new object, a refused one (not a SPIFFE ID of this trust domain), a deletion
    api.apply_cluster_spiffe_id(object(
        "by-name",
        "spiffe://{{ .TrustDomain }}/pod/{{ .PodMeta.Name }}",
    ));
    api.apply_cluster_spiffe_id(object("foreign", "spiffe://elsewhere.example/x"));
    wait_for(&["k8s/by-name", "k8s/default", "own"]);
    api.delete_cluster_spiffe_id("default");
    wait_for(&["k8s/by-name", "own"]);
    assert!(
        issuer.log().contains("ClusterSPIFFEID foreign refused"),
        "{}",
        issuer.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_bundle_is_kept_in_a_config_map() {
    use meshward_test_support::kube_api::FakeKubeApi;
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "bundle_configmap:\n  namespace: meshward-system\n  kubernetes: {}\n",
            api.connection_yaml()
        ),
    );
    let (code, shown, stderr) = issuer.cli(&["bundle", "show"]);
    assert_eq!(code, 0, "{stderr}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let written = loop {
        let data = api
            .config_map("meshward-system", "meshward-bundle")
            .and_then(|cm| cm["data"]["bundle.pem"].as_str().map(str::to_owned));
        if let Some(pem) = data {
            break pem;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no bundle ConfigMap: {}",
            issuer.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(written.trim(), shown.trim());
    assert!(written.contains("BEGIN CERTIFICATE"), "{written}");
    assert!(
        issuer
            .log()
            .contains("trust bundle written to ConfigMap meshward-system/meshward-bundle"),
        "{}",
        issuer.log()
    );
}
