//! The agent with the Kubernetes API: its pod watch and PSAT attestation.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_watches_the_pods_of_this_node() {
    use meshward_test_support::kube_api::{FakeKubeApi, FakePod};
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let fake = |name: &str, node: &str, ip: &str, sa: &str| FakePod {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("{name}-uid"),
        node_name: node.into(),
        service_account: sa.into(),
        ip: ip.into(),
        image: "example.com/app:1".into(),
        ..Default::default()
    };
    api.add_pod(fake("curl", "node-1", "10.40.1.2", "curl-spire"));
    api.add_pod(fake("elsewhere", "node-2", "10.40.2.2", "curl-spire"));
    api.add_pod(fake("pending", "node-1", "", "curl-spire"));
    let endpoint = KubeApi {
        url: &api.url(),
        ca_file: api.ca_file(),
        token_file: api.token_file(),
    };
    let (_issuer, mut handle) = agent_on_kubernetes(dir.path(), &endpoint);
    // listed: only this node's running pod
    let snapshot = wait_for(&mut handle, "curl from the pod list", |s| {
        !ids(s, "10.40.1.2").is_empty()
    })
    .await;
    assert_eq!(
        snapshot.pods.len(),
        1,
        "{:?}",
        snapshot.pods.keys().collect::<Vec<_>>()
    );
    // watched: a new pod gets its IP, the first one is deleted
    api.add_pod(fake("pending", "node-1", "10.40.1.9", "curl-spire"));
    wait_for(&mut handle, "the pod that got an IP", |s| {
        !ids(s, "10.40.1.9").is_empty()
    })
    .await;
    api.remove_pod("default", "curl");
    wait_for(&mut handle, "the deleted pod forgotten", |s| {
        !s.pods.contains_key(&"10.40.1.2".parse::<IpAddr>().unwrap())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_attests_with_its_projected_service_account_token() {
    use meshward_test_support::kube_api::FakeKubeApi;
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let agent_pod = api.add_agent_pod("node-1", "node-uid-1", "meshward-node-1", "agent-pod-uid");
    let issuer = IssuerProcess::with_extra(
        Path::new(env!("CARGO_BIN_EXE_meshward")),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &api.issuer_psat_yaml(),
    );
    // a node alias: every node of cluster eks may serve the curl-spire entry
    let alias = format!("spiffe://{TD}/cluster/eks");
    issuer.cli_json(&[
        "entry",
        "create",
        "-node",
        "-spiffeID",
        &alias,
        "-selector",
        "k8s_psat:cluster:eks",
    ]);
    issuer.cli_json(&[
        "entry",
        "create",
        "-spiffeID",
        &format!("spiffe://{TD}/ns/default/sa/curl-spire"),
        "-parentID",
        &alias,
        "-selector",
        "k8s:sa:curl-spire",
    ]);
    let token_path = dir.path().join("psat-token");
    std::fs::write(
        &token_path,
        api.service_account_token(&agent_pod, "meshward-issuer", Duration::from_secs(600)),
    )
    .unwrap();
    std::fs::write(dir.path().join("bundle.pem"), issuer.bundle_pem()).unwrap();
    write_workloads(
        &dir.path().join("workloads.yaml"),
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    let yaml = format!(
        "trust_domain: {TD}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  k8s_psat:\n    cluster: eks\n    token_path: {}\n  workloads:\n    file: {}\n  sync_interval: 1s\n",
        issuer.agent,
        dir.path().join("bundle.pem").display(),
        dir.path().join("agent").display(),
        token_path.display(),
        dir.path().join("workloads.yaml").display()
    );
    let config = ProxyConfig::from_yaml(&yaml, "proxy.yaml").unwrap();
    let mut handle = meshward_proxy::agent::start(&config).unwrap();
    let snapshot = wait_for(&mut handle, "the SVID through the node alias", |s| {
        !ids(s, "10.40.1.2").is_empty()
    })
    .await;
    let node_id = snapshot
        .node_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert_eq!(
        node_id,
        format!("spiffe://{TD}/spire/agent/k8s_psat/eks/node-uid-1")
    );
    assert_eq!(
        ids(&snapshot, "10.40.1.2"),
        [format!("spiffe://{TD}/ns/default/sa/curl-spire")]
    );

    // evicted: a PSAT node attests again by itself (re-reading its token)
    issuer.cli_json(&["agent", "evict", "-spiffeID", &node_id]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let agents = issuer.cli_json(&["agent", "list"]);
        if agents["agents"].as_array().is_some_and(|a| a.len() == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not attest again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
