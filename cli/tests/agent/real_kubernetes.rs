//! The agent against the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`): Pods bound to a node, their IPs written through the
//! `status` subresource as a kubelet would, watched with the real server's
//! `spec.nodeName` field selector, as the `meshward-node` ServiceAccount under
//! the RBAC of `docker/k8s/base`; and k8s_psat attestation with the projected
//! token a kubelet would mount, reviewed by the real server.

use meshward_test_support::control_plane::{self, ControlPlane};
use meshward_test_support::k8s_psat;

use super::*;

/// A Pod bound to `node` (no scheduler here), then its status as a kubelet writes
/// it: `ip` empty leaves it pending without an address.
fn kubelet_pod(plane: &ControlPlane, name: &str, node: &str, ip: &str) {
    plane
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: curl-spire\n  containers:\n  - {{name: app, image: \"example.com/app:1\"}}\n"
        ))
        .unwrap();
    if !ip.is_empty() {
        let status = format!(
            "{{\"status\":{{\"phase\":\"Running\",\"podIP\":\"{ip}\",\"podIPs\":[{{\"ip\":\"{ip}\"}}]}}}}"
        );
        plane
            .kubectl(&[
                "patch",
                "pod",
                name,
                "-n",
                "default",
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ])
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_watches_the_pods_of_this_node_on_a_real_api_server() {
    let Some(plane) = control_plane::shared(
        "kubernetes_source_watches_the_pods_of_this_node_on_a_real_api_server",
    ) else {
        return;
    };
    // the ServiceAccount admission plugin wants the pods' account to exist
    plane
        .apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: curl-spire, namespace: default}\n")
        .unwrap();
    kubelet_pod(plane, "curl", "node-1", "10.40.1.2");
    kubelet_pod(plane, "elsewhere", "node-2", "10.40.2.2");
    kubelet_pod(plane, "pending", "node-1", "");

    let dir = tempfile::tempdir().unwrap();
    // as the node daemon's own ServiceAccount, under the shipped RBAC
    let token_file = plane
        .component_token_file("meshward-node", dir.path())
        .unwrap();
    let endpoint = KubeApi {
        url: plane.url(),
        ca_file: plane.ca_file(),
        token_file: &token_file,
    };
    let (_issuer, mut handle) = agent_on_kubernetes(dir.path(), &endpoint);
    // listed: only this node's pod with an address
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
    assert_eq!(
        ids(&snapshot, "10.40.1.2"),
        [format!("spiffe://{TD}/ns/default/sa/curl-spire")]
    );
    // watched: the pending pod gets its IP, the first one is deleted (at once, as
    // a kubelet confirms a deletion: no kubelet here)
    kubelet_pod(plane, "pending", "node-1", "10.40.1.9");
    wait_for(&mut handle, "the pod that got an IP", |s| {
        !ids(s, "10.40.1.9").is_empty()
    })
    .await;
    plane
        .kubectl(&[
            "delete",
            "pod",
            "curl",
            "-n",
            "default",
            "--grace-period=0",
            "--force",
        ])
        .unwrap();
    wait_for(&mut handle, "the deleted pod forgotten", |s| {
        !s.pods.contains_key(&"10.40.1.2".parse::<IpAddr>().unwrap())
    })
    .await;
    // a pod of another node never shows
    assert!(ids(&handle.snapshots.borrow(), "10.40.2.2").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_attests_with_its_projected_service_account_token() {
    let Some(plane) =
        control_plane::shared("agent_attests_with_its_projected_service_account_token")
    else {
        return;
    };
    // the node daemon's pod, and the token the kubelet would mount in it
    let pod_name = "meshward-node-agent";
    k8s_psat::agent_pod(plane, pod_name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issuer = IssuerProcess::with_extra(
        Path::new(env!("CARGO_BIN_EXE_meshward")),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &k8s_psat::issuer_yaml(plane, dir.path()).unwrap(),
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
    let projected = k8s_psat::projected_token(plane, pod_name, k8s_psat::AUDIENCE).unwrap();
    std::fs::write(&token_path, projected).unwrap();
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
    let node_uid = k8s_psat::node_uid(plane).unwrap();
    assert_eq!(
        node_id,
        format!("spiffe://{TD}/spire/agent/k8s_psat/eks/{node_uid}")
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
