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

/// Waits (bounded) until `target` resolves to `want`.
async fn resolves(services: &Services, target: &str, want: Resolved) {
    let what = format!("{target} resolved to {want:?}");
    let (target, want) = (addr(target), want);
    // read from the map the channel gives (resolving through `services` would
    // take the channel's lock a second time)
    testing::settles(&mut services.map.clone(), &what, |map| {
        let now = match map.endpoints.get(&target).map(Vec::as_slice) {
            None => Resolved::NotAService,
            Some([]) => Resolved::NoEndpoint,
            Some([only]) => Resolved::Endpoint(*only),
            Some(_) => return false,
        };
        now == want
    })
    .await;
    assert_eq!(services.resolve(target), want);
}

/// `object` (as the unit tests above build it) with its apiVersion and kind, for
/// the real API server.
fn typed(api_version: &str, kind: &str, mut object: Value) -> Value {
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_services_and_endpoint_slices_in_the_kubernetes_api() {
    let test = "follows_services_and_endpoint_slices_in_the_kubernetes_api";
    let Some((plane, client, _token_dir)) = testing::real_api(test) else {
        return;
    };
    // cluster IPs of the server's own range (10.96.0.0/16)
    let mut service = echoserver_service();
    service["spec"]["clusterIP"] = json!("10.96.10.10");
    service["spec"]["clusterIPs"] = json!(["10.96.10.10"]);
    let slice = echoserver_slice("echoserver-a", &[("10.0.1.5", None)]);
    testing::apply(
        plane,
        &[
            testing::namespace("echoserver"),
            testing::namespace("payments"),
            typed("v1", "Service", service),
            typed("discovery.k8s.io/v1", "EndpointSlice", slice),
        ],
    );
    let services = Services::watch(client);
    let endpoint = Resolved::Endpoint(addr("10.0.1.5:8080"));
    resolves(&services, "10.96.10.10:80", endpoint).await;

    // the pod goes away: the service stays, without an endpoint
    testing::delete(plane, "endpointslice", "echoserver", "echoserver-a");
    resolves(&services, "10.96.10.10:80", Resolved::NoEndpoint).await;
    // a second service appears
    let api = json!({
        "metadata": {"name": "api", "namespace": "payments"},
        "spec": {"clusterIP": "10.96.10.30", "ports": [{"port": 443}]},
    });
    testing::apply(plane, &[typed("v1", "Service", api)]);
    resolves(&services, "10.96.10.30:443", Resolved::NoEndpoint).await;
}
