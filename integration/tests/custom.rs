//! CUSTOM AuthorizationPolicies end to end: the node proxy asks real ext_authz
//! servers (Envoy's gRPC protocol and its HTTP form, as OPA-Envoy and Istio's
//! sample server speak them) before DENY and ALLOW, applies what they say, and
//! fails closed when they cannot be asked.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use meshward_integration::{CurlResponse, LoopbackForward, Mesh, available_or_skip};
use meshward_test_support::ext_authz::{Behaviour, ExtAuthzServer};
use support::{TD, connect_from, curl_spire, echo_mesh, echoed, eventually, tcp_echo};

const DENIED_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: echoserver}}\nspec:\n{spec}"
    )
}

fn custom(provider: &str, paths: &str) -> String {
    format!(
        "  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules:\n  - to:\n    - operation:\n        paths: [\"{paths}\"]\n"
    )
}

fn get(mesh: &Mesh, path: &str, allow: bool) -> CurlResponse {
    let url = format!("http://{}:8080{path}", mesh.pod_ip("echoserver").unwrap());
    let mut args = vec![url.as_str()];
    if allow {
        args.splice(0..0, ["-H", "x-ext-authz: allow"]);
    }
    mesh.cluster.curl("curl-spire", &args).unwrap()
}

fn received_header(r: &CurlResponse, name: &str) -> Option<String> {
    r.json()?["request"]["headers"][name]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn custom_policies_ask_ext_authz_servers_before_deny_and_allow() {
    let Some(()) = available_or_skip("custom_policies_ask_ext_authz_servers_before_deny_and_allow")
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let curl_spire_id = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    let grpc = runtime.block_on(ExtAuthzServer::grpc(Behaviour {
        allowed_principals: vec![curl_spire_id.clone()],
        ..Behaviour::default()
    }));
    let http = runtime.block_on(ExtAuthzServer::http(Behaviour::default()));
    let slow = runtime.block_on(ExtAuthzServer::grpc(Behaviour {
        delay: Duration::from_secs(3),
        ..Behaviour::default()
    }));
    let port = |s: &ExtAuthzServer| s.address().port();
    let providers = format!(
        "extension_providers:\n\
         - name: ext-authz-grpc\n  envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {}, timeout: 2s}}\n\
         - name: ext-authz-http\n  envoyExtAuthzHttp:\n    service: 127.0.0.1\n    port: {}\n    timeout: 2s\n    pathPrefix: /check\n    includeRequestHeadersInCheck: [x-ext-authz]\n    headersToUpstreamOnAllow: [x-ext-authz-check-result]\n    headersToDownstreamOnDeny: [x-ext-authz-check-result]\n\
         - name: slow\n  envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {}, timeout: 1s, statusOnError: \"503\"}}\n\
         - name: slow-open\n  envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {}, timeout: 1s, failOpen: true}}\n\
         - name: unreachable\n  envoyExtAuthzGrpc: {{service: 127.0.0.1, port: 9, timeout: 1s}}\n\
         - name: body-partial\n  envoyExtAuthzGrpc: {{service: 127.0.0.1, port: {}, timeout: 2s, includeRequestBodyInCheck: {{maxRequestBytes: 16, allowPartialMessage: true}}}}\n\
         - name: body-strict\n  envoyExtAuthzHttp: {{service: 127.0.0.1, port: {}, timeout: 2s, includeRequestHeadersInCheck: [x-ext-authz], includeRequestBodyInCheck: {{maxRequestBytes: 16}}}}\n\
         - name: http-open\n  envoyExtAuthzHttp: {{service: 127.0.0.1, port: {}, timeout: 2s, failOpen: true}}\n",
        port(&grpc),
        port(&http),
        port(&slow),
        port(&slow),
        port(&grpc),
        port(&http),
        port(&http),
    );
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .proxy_yaml(&providers);
    });
    // the daemons reach the authorizers at 127.0.0.1:<port> in their namespace
    let _forwards: Vec<LoopbackForward> = [&grpc, &http, &slow]
        .iter()
        .flat_map(|server| {
            let target: SocketAddr = server.address();
            ["node-1", "node-2"].map(|node| {
                let ns = mesh.cluster.node(node).unwrap().netns();
                LoopbackForward::start(ns, target.port(), target).unwrap()
            })
        })
        .collect();
    for (name, spec) in [
        ("grpc", custom("ext-authz-grpc", "/grpc/*")),
        ("http", custom("ext-authz-http", "/http/*")),
        ("missing", custom("not-configured", "/missing/*")),
        ("slow", custom("slow", "/slow/*")),
        ("slow-open", custom("slow-open", "/open/*")),
        ("unreachable", custom("unreachable", "/unreachable/*")),
        ("body-partial", custom("body-partial", "/partial/*")),
        ("body-strict", custom("body-strict", "/strict/*")),
        (
            "deny-forbidden",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"*/forbidden\"]\n".into(),
        ),
        (
            "allow-curl-spire",
            format!("  rules:\n  - from:\n    - source:\n        principals: [\"{TD}/ns/default/sa/curl-spire\"]\n"),
        ),
    ] {
        mesh.apply_policy(name, &policy(name, &spec)).unwrap();
    }
    mesh.wait_for_policy_count(10).unwrap();

    // gRPC: allowed with the header, and the pod sees what the authorizer set
    let r = eventually(&mesh, "gRPC ext_authz allows", || {
        let r = get(&mesh, "/grpc/a?x=1", true);
        (r.status == Some(200))
            .then_some(r)
            .ok_or("not yet".to_owned())
    });
    assert_eq!(
        received_header(&r, "x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
    let check = grpc.seen().into_iter().last().unwrap();
    assert_eq!(check.method, "GET");
    assert_eq!(check.path, "/grpc/a?x=1");
    assert_eq!(
        check.source_principal,
        format!("spiffe://{TD}/ns/default/sa/curl-spire")
    );
    assert_eq!(
        check.destination_principal,
        format!("spiffe://{TD}/ns/echoserver/sa/default")
    );
    assert!(
        check
            .source_address
            .starts_with(&mesh.pod_ip("curl-spire").unwrap().to_string())
    );
    // denied: the authorizer's status, body and headers reach the client
    let r = get(&mesh, "/grpc/a", false);
    assert_eq!((r.status, r.body.as_str()), (Some(403), DENIED_BODY));
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
    // allowed by the authorizer, still denied by a DENY policy
    let r = get(&mesh, "/grpc/forbidden", true);
    assert_eq!(
        (r.status, r.body.as_str()),
        (Some(403), "RBAC: access denied")
    );

    // HTTP form: method and path under pathPrefix, listed headers only
    let r = get(&mesh, "/http/b", true);
    assert_eq!(r.status, Some(200), "{}", r.body);
    assert_eq!(
        received_header(&r, "x-ext-authz-check-result").as_deref(),
        Some("allowed")
    );
    let check = http.seen().into_iter().last().unwrap();
    assert_eq!(
        (check.method.as_str(), check.path.as_str()),
        ("GET", "/check/http/b")
    );
    assert!(check.headers.iter().any(|(n, _)| n == "x-ext-authz"));
    assert!(
        !check
            .headers
            .iter()
            .any(|(n, _)| n == "x-forwarded-client-cert")
    );
    let r = get(&mesh, "/http/b", false);
    assert_eq!((r.status, r.body.as_str()), (Some(403), DENIED_BODY));
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));

    // never fail open unless told to
    let r = get(&mesh, "/missing/c", true);
    assert_eq!(
        (r.status, r.body.as_str()),
        (Some(403), "RBAC: access denied")
    );
    assert_eq!(
        get(&mesh, "/slow/c", true).status,
        Some(503),
        "statusOnError"
    );
    assert_eq!(get(&mesh, "/unreachable/c", true).status, Some(403));
    assert_eq!(get(&mesh, "/open/c", true).status, Some(200), "failOpen");
    // a request no CUSTOM policy matches never reaches an authorizer
    let before = grpc.seen().len() + http.seen().len();
    assert_eq!(get(&mesh, "/plain", false).status, Some(200));
    assert_eq!(grpc.seen().len() + http.seen().len(), before);
    let logs = mesh.daemon_log_when("node-2", |log| log.contains("could not be asked"));
    assert!(logs.contains("could not be asked"), "{logs}");

    // the body: its first maxRequestBytes go to the authorizer, all of it to the pod
    let long = "0123456789abcdefghijklmnopqrstuvwxyz";
    let post = |path: &str| {
        let url = format!("http://{}:8080{path}", mesh.pod_ip("echoserver").unwrap());
        let args = [
            "-H",
            "x-ext-authz: allow",
            "--data-binary",
            long,
            url.as_str(),
        ];
        mesh.cluster.curl("curl-spire", &args).unwrap()
    };
    let r = post("/partial/d");
    assert_eq!(r.status, Some(200), "{}", r.body);
    assert_eq!(r.json().unwrap()["request"]["body"], long);
    assert_eq!(
        grpc.seen().into_iter().last().unwrap().body,
        long.as_bytes()[..16]
    );
    // larger than maxRequestBytes without allowPartialMessage: 413, nothing asked
    let asked = http.seen().len();
    assert_eq!(post("/strict/d").status, Some(413));
    assert_eq!(http.seen().len(), asked);
    let url = format!(
        "http://{}:8080/strict/e",
        mesh.pod_ip("echoserver").unwrap()
    );
    let small = [
        "-H",
        "x-ext-authz: allow",
        "--data-binary",
        "short",
        url.as_str(),
    ];
    assert_eq!(
        mesh.cluster.curl("curl-spire", &small).unwrap().status,
        Some(200)
    );
    assert_eq!(http.seen().into_iter().last().unwrap().body, b"short");

    // TCP: a CUSTOM policy on a port asks the gRPC provider, with no HTTP part
    // (the DENY on HTTP paths goes too: on TCP, Istio's DENY with HTTP-only fields
    // matches every connection)
    let _tcp = tcp_echo(&mesh);
    for name in [
        "grpc",
        "http",
        "missing",
        "slow",
        "slow-open",
        "unreachable",
        "body-partial",
        "body-strict",
        "deny-forbidden",
    ] {
        mesh.delete_policy(name).unwrap();
    }
    let on_port = |provider: &str| {
        let spec = format!(
            "  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules:\n  - to:\n    - operation:\n        ports: [\"9000\"]\n"
        );
        mesh.apply_policy("tcp", &policy("tcp", &spec)).unwrap();
    };
    on_port("ext-authz-grpc");
    mesh.wait_for_policy_count(2).unwrap();
    let echo = SocketAddr::new(mesh.pod_ip("echoserver").unwrap(), 9000);
    let seen_before = grpc.seen().len();
    eventually(
        &mesh,
        "the TCP connection is allowed by the provider",
        || {
            let mut stream = connect_from(&mesh, "curl-spire", echo).map_err(|e| e.to_string())?;
            echoed(&mut stream, Duration::from_secs(5))
        },
    );
    let check = grpc.seen().into_iter().last().unwrap();
    assert!(grpc.seen().len() > seen_before);
    assert!(!check.http, "a TCP check carries no HTTP request");
    assert_eq!(check.source_principal, curl_spire_id);
    // an HTTP authorizer cannot judge TCP: the connection is refused, and
    // `failOpen` does not change that (a configuration that cannot work is not
    // an outage)
    let refused = || {
        let mut stream = connect_from(&mesh, "curl-spire", echo).map_err(|e| e.to_string())?;
        match echoed(&mut stream, Duration::from_secs(5)) {
            Ok(()) => Err("still echoed".to_owned()),
            Err(_) => Ok(()),
        }
    };
    let allowed = || {
        let mut stream = connect_from(&mesh, "curl-spire", echo).map_err(|e| e.to_string())?;
        echoed(&mut stream, Duration::from_secs(5))
    };
    // each refusal follows an allowed state, so it cannot pass on the policy before;
    // and it must last (a connection judged just before a reload is closed by it)
    on_port("http-open");
    eventually(&mesh, "refused with failOpen too", refused);
    for _ in 0..3 {
        refused().unwrap();
    }
    on_port("ext-authz-grpc");
    eventually(&mesh, "allowed by the gRPC provider again", allowed);
    on_port("ext-authz-http");
    eventually(&mesh, "the TCP connection is refused", refused);

    // a CUSTOM policy that comes to apply to an open connection closes it: its
    // provider was never asked about it (the next connection asks)
    mesh.delete_policy("tcp").unwrap();
    mesh.wait_for_policy_count(1).unwrap();
    eventually(&mesh, "allowed without CUSTOM", allowed);
    let mut held = connect_from(&mesh, "curl-spire", echo).unwrap();
    echoed(&mut held, Duration::from_secs(5)).unwrap();
    on_port("ext-authz-grpc");
    mesh.wait_for_policy_count(2).unwrap();
    eventually(&mesh, "the held connection is closed", || {
        match echoed(&mut held, Duration::from_secs(2)) {
            Ok(()) => Err("still echoed".to_owned()),
            Err(_) => Ok(()),
        }
    });
    let seen_before = grpc.seen().len();
    let mut stream = connect_from(&mesh, "curl-spire", echo).unwrap();
    echoed(&mut stream, Duration::from_secs(5)).unwrap();
    assert!(
        grpc.seen().len() > seen_before,
        "the new connection was asked"
    );
}
