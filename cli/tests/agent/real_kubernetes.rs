//! The agent against the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`): Pods bound to a node, their IPs written through the
//! `status` subresource as a kubelet would, watched with the real server's
//! `spec.nodeName` field selector, as the `meshward-node` ServiceAccount under
//! the RBAC of `docker/k8s/base`.

use meshward_test_support::control_plane::{self, ControlPlane};

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
