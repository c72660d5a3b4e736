//! Service cluster IPs through the mesh: the daemons watch Services and
//! EndpointSlices in the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`) as the `meshward-node` ServiceAccount, and a pod's curl to
//! a cluster IP reaches the Service's pod over HBONE with the caller's identity,
//! as on EKS where capture sees the address before kube-proxy's DNAT.
#![allow(clippy::unwrap_used)]

mod support;

use meshward_integration::PodSpec;
use serde_json::json;
use support::{TD, curl_spire, echo_mesh_with_api, eventually, example, status};

#[test]
fn a_service_cluster_ip_reaches_its_pod_with_identity() {
    let test = "a_service_cluster_ip_reaches_its_pod_with_identity";
    let Some(env) = echo_mesh_with_api(test, |spec| {
        // a second endpoint, on the caller's own node
        let second = PodSpec::new("echoserver-2")
            .namespace("echoserver")
            .label("app", "echoserver");
        spec.pod("node-1", curl_spire(), true)
            .pod("node-1", second, true);
    }) else {
        return;
    };
    let (plane, mesh) = (env.plane, &env.mesh);
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let _echo_2 = mesh
        .cluster
        .spawn_in_pod(
            "echoserver-2",
            env!("CARGO_BIN_EXE_echoserver"),
            &["--listen", "0.0.0.0:8080"],
        )
        .unwrap();
    let pod_ip = mesh.pod_ip("echoserver").unwrap().to_string();
    let pod_2_ip = mesh.pod_ip("echoserver-2").unwrap().to_string();
    // a Service whose cluster IP the server allocates from its range, and the slice
    // an EndpointSlice controller would write (no controllers run here)
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echoserver", "namespace": "echoserver"},
        // a target port by name, unlike the slice's number: mapped by the port's name
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
    });
    plane.apply(&service.to_string()).unwrap();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echoserver-x1", "namespace": "echoserver",
                     "labels": {"kubernetes.io/service-name": "echoserver"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": [pod_ip], "conditions": {"ready": true}},
            {"addresses": [pod_2_ip], "conditions": {"ready": true}},
        ],
    });
    plane.apply(&slice.to_string()).unwrap();
    let cluster_ip = plane
        .kubectl(&[
            "get",
            "service",
            "echoserver",
            "-n",
            "echoserver",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .unwrap();

    // both endpoints serving before the round robin is counted (a loaded machine
    // may take a moment to start the second echoserver)
    let direct = format!("http://{pod_2_ip}:8080/direct");
    eventually(mesh, "echoserver-2 answers", || {
        status(mesh, "curl-spire", &[&direct], 200)
    });
    let url = format!("http://{cluster_ip}/via-service");
    let r = eventually(mesh, "the service answers", || {
        status(mesh, "curl-spire", &[&url], 200)
    });
    let seen = r.json().unwrap();
    assert_eq!(seen["http"]["originalUrl"], "/via-service");
    let xfcc = seen["request"]["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap();
    assert!(
        xfcc.ends_with(&format!("URI=spiffe://{TD}/ns/default/sa/curl-spire")),
        "{xfcc}"
    );
    // new connections take the ready endpoints in turn
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..4 {
        let r = status(mesh, "curl-spire", &[&url], 200).unwrap();
        let pod = r.json().unwrap()["environment"]["POD_NAME"].clone();
        *served.entry(pod.as_str().unwrap().to_owned()).or_default() += 1;
    }
    let want = [("echoserver".to_owned(), 2), ("echoserver-2".to_owned(), 2)];
    assert_eq!(served, want.into_iter().collect(), "round robin");

    // the pods leave the service: the connection is refused at once, not hung
    plane
        .kubectl(&[
            "delete",
            "endpointslice",
            "echoserver-x1",
            "-n",
            "echoserver",
        ])
        .unwrap();
    eventually(mesh, "no endpoint left", || {
        let r = mesh
            .cluster
            .curl("curl-spire", &["--max-time", "5", &url])
            .map_err(|e| e.to_string())?;
        match (r.status, r.exit_code) {
            (None, Some(code)) if code != 28 => Ok(()),
            other => Err(format!("still answered or hung: {other:?}")),
        }
    });
}
