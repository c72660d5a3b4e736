use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::datapath::testing;

fn echoserver_service() -> Value {
    json!({
        "metadata": {"name": "echoserver", "namespace": "echoserver"},
        "spec": {
            "clusterIP": "10.100.0.10", "clusterIPs": ["10.100.0.10"],
            "ports": [
                // a named target port: the slice holds the number, found by port name
                {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        },
    })
}

fn echoserver_slice(name: &str, addresses: &[(&str, Option<bool>)]) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "echoserver",
                     "labels": {"kubernetes.io/service-name": "echoserver"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": addresses.iter().map(|(ip, ready)| match ready {
            Some(ready) => json!({"addresses": [ip], "conditions": {"ready": ready}}),
            None => json!({"addresses": [ip]}),
        }).collect::<Vec<_>>(),
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn cluster_ips_map_to_ready_endpoints_of_the_same_named_port() {
    let services: Vec<Service> = [
        echoserver_service(),
        // headless: no cluster IP, nothing to resolve
        json!({"metadata": {"name": "headless", "namespace": "echoserver"},
               "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        // no endpoints at all
        json!({"metadata": {"name": "empty", "namespace": "other"},
               "spec": {"clusterIP": "10.100.0.20", "ports": [{"port": 9000}]}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let slices: Vec<EndpointSlice> = [
        echoserver_slice(
            "echoserver-a",
            &[("10.0.1.5", Some(true)), ("10.0.3.9", Some(false))],
        ),
        echoserver_slice("echoserver-b", &[("10.0.2.7", None)]),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let map = build(services.iter(), slices.iter());
    assert_eq!(
        map.endpoints.get(&addr("10.100.0.10:80")).unwrap(),
        &[addr("10.0.1.5:8080"), addr("10.0.2.7:8080")],
        "ready (or unstated) endpoints, target port from the slice"
    );
    assert!(
        !map.endpoints.contains_key(&addr("10.100.0.10:53")),
        "UDP is not proxied"
    );
    assert_eq!(map.endpoints.get(&addr("10.100.0.20:9000")).unwrap(), &[]);
    assert_eq!(map.endpoints.len(), 2);

    let (_tx, rx) = watch::channel(Arc::new(map));
    let services = Services::following(rx);
    let picks: BTreeSet<SocketAddr> = (0..4)
        .map(|_| match services.resolve(addr("10.100.0.10:80")) {
            Resolved::Endpoint(endpoint) => endpoint,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(picks.len(), 2, "round robin over both endpoints");
    assert_eq!(
        services.resolve(addr("10.100.0.20:9000")),
        Resolved::NoEndpoint
    );
    assert_eq!(
        services.resolve(addr("10.0.1.5:8080")),
        Resolved::NotAService
    );
}

/// Waits (bounded) until the map has `len` service addresses.
async fn settles(services: &Services, len: usize) {
    let what = format!("{len} service addresses");
    testing::settles(&mut services.map.clone(), &what, |map| {
        map.endpoints.len() == len
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_services_and_endpoint_slices_in_the_kubernetes_api() {
    let dir = tempfile::tempdir().unwrap();
    let api = meshward_test_support::kube_api::FakeKubeApi::start(dir.path()).await;
    api.apply_service(echoserver_service());
    api.apply_endpoint_slice(echoserver_slice("echoserver-a", &[("10.0.1.5", None)]));
    let client = testing::kube_client(&api);
    let services = Services::watch(client);
    settles(&services, 1).await;
    assert_eq!(
        services.resolve(addr("10.100.0.10:80")),
        Resolved::Endpoint(addr("10.0.1.5:8080"))
    );

    // the pod goes away: the service stays, without an endpoint
    api.delete_endpoint_slice("echoserver", "echoserver-a");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while services.resolve(addr("10.100.0.10:80")) != Resolved::NoEndpoint {
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoint never left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a second service appears
    api.apply_service(json!({
        "metadata": {"name": "api", "namespace": "payments"},
        "spec": {"clusterIP": "10.100.0.30", "ports": [{"port": 443}]},
    }));
    settles(&services, 2).await;
}
