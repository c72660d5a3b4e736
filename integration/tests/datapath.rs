//! The data path end to end, as a user meets it: two nodes running
//! `meshward proxy run` with capture installed, real curl in pod namespaces, the
//! echoserver showing what arrived. Policies are files the daemons hot-reload.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

mod support;

use meshward_integration::{Mesh, PodSpec, available_or_skip};
use support::{TD, curl_spire, echo_mesh, eventually, example, node_metric, status, tcp_echo};

/// How a TCP exchange from a pod ended: what came back, and whether the stream
/// ended with a close, a reset or a timeout, and when.
struct TcpOutcome {
    data: String,
    end: String,
    seconds: f64,
}

/// A TCP exchange from a pod: send `ping`, read until the stream ends (5 s at most).
fn tcp_ping(mesh: &Mesh, pod: &str, addr: &str) -> TcpOutcome {
    let (ip, port) = addr.split_once(':').unwrap();
    let script = format!(
        r"import socket,time
t=time.monotonic()
data=b''
end='closed'
try:
  s=socket.create_connection(('{ip}',{port}),timeout=5)
  s.sendall(b'ping')
  s.shutdown(socket.SHUT_WR)
  while True:
    b=s.recv(100)
    if not b: break
    data+=b
except ConnectionResetError: end='reset'
except socket.timeout: end='timeout'
except OSError as e: end='error: '+str(e)
print(end, time.monotonic()-t)
print(data.decode(), end='')
"
    );
    let out = mesh
        .cluster
        .exec_in_pod(pod, "python3", &["-c", &script], Duration::from_secs(20))
        .unwrap()
        .stdout;
    let (first, data) = out.split_once('\n').unwrap_or((&out, ""));
    let (end, seconds) = first.rsplit_once(' ').unwrap_or((first, "0"));
    TcpOutcome {
        data: data.to_owned(),
        end: end.to_owned(),
        seconds: seconds.parse().unwrap_or(f64::MAX),
    }
}

/// An HTTP/1.1 upgrade (a WebSocket handshake) from a pod to the echoserver on
/// `ip:8080`, then `ping`: the lines that came back (status line; after a 101 the
/// echoserver's `xfcc: ...` line and the echoed `ping`).
fn upgrade_ping(mesh: &Mesh, pod: &str, ip: std::net::IpAddr) -> Vec<String> {
    let script = format!(
        r"import socket
s=socket.create_connection(('{ip}',8080),timeout=5)
s.sendall(b'GET /ws HTTP/1.1\r\nHost: echoserver\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-forwarded-client-cert: URI=spiffe://evil/x\r\n\r\n')
data=b''
def more():
  global data
  b=s.recv(1000)
  if not b: raise SystemExit
  data+=b
while b'\r\n\r\n' not in data: more()
head,_,data=data.partition(b'\r\n\r\n')
print(head.split(b'\r\n')[0].decode())
if b' 101 ' in head:
  while b'\n' not in data: more()
  line,_,data=data.partition(b'\n')
  print(line.decode())
  s.sendall(b'ping')
  while len(data)<4: more()
  print(data.decode())
"
    );
    let out = mesh
        .cluster
        .exec_in_pod(pod, "python3", &["-c", &script], Duration::from_secs(20))
        .unwrap();
    out.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn the_talk_across_nodes_and_on_one_node() {
    let Some(()) = available_or_skip("the_talk_across_nodes_and_on_one_node") else {
        return;
    };
    let (mesh, _http) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .pod(
                "node-1",
                PodSpec::new("curl").service_account("curl"),
                false,
            )
            .pod(
                "node-2",
                PodSpec::new("neighbour").service_account("neighbour"),
                true,
            )
            // judged before the tunnel opens (as ztunnel), so a refusal is a reset
            .proxy_yaml("inbound:\n  ports: {9000: tcp}\n");
    });
    let _tcp = tcp_echo(&mesh);
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = |path: &str| format!("http://{ip}:8080{path}");

    // a pod without identity: plaintext, refused by the destination node (STRICT):
    // a reset, as the README says, counted and logged there
    let refused = |node| node_metric(&mesh, node, "meshward_plaintext_refused_total", &[]);
    let before = refused("node-2");
    let r = mesh.cluster.curl("curl", &[&url("/")]).unwrap();
    assert_eq!(r.status, None, "no identity must get no answer: {r:?}");
    // node-1's daemon accepts for the destination, then resets once node-2 refused;
    // curl meets that reset in its connect (7) or after its request (52, 56). The
    // count at node-2 says the refusal was STRICT's, not a port nobody listens on.
    assert!(matches!(r.exit_code, Some(7 | 52 | 56)), "a reset: {r:?}");
    assert_eq!(refused("node-2") - before, 1.0);
    assert!(
        mesh.daemon_log_when("node-2", |log| log.contains("refused: plaintext"))
            .contains("refused: plaintext"),
        "{}",
        mesh.logs()
    );

    // identity, no policy at all: default deny
    let r = eventually(&mesh, "default deny", || {
        status(&mesh, "curl-spire", &[&url("/")], 403)
    });
    assert_eq!(r.body, "RBAC: access denied");
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // the talk's step 1, the namespace default-deny, still 403
    mesh.apply_policy("01-default-deny", &example("01-default-deny"))
        .unwrap();
    mesh.wait_for_policy_count(1).unwrap();
    status(&mesh, "curl-spire", &[&url("/")], 403).unwrap();
    // step 2: ALLOW the caller's principal -> 200, XFCC naming both identities,
    // even when the client tries to smuggle its own
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let r = eventually(&mesh, "allowed", || {
        status(
            &mesh,
            "curl-spire",
            &[
                "-H",
                "x-forwarded-client-cert: By=spiffe://evil/x;URI=spiffe://math.example.com/ns/admin/sa/root",
                &url("/hello"),
            ],
            200,
        )
    });
    let seen = r.json().unwrap();
    let xfcc = seen["request"]["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap()
        .to_owned();
    let (by, rest) = xfcc.split_once(";Hash=").unwrap();
    assert_eq!(by, format!("By=spiffe://{TD}/ns/echoserver/sa/default"));
    let (hash, rest) = rest.split_once(';').unwrap();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{xfcc}"
    );
    assert_eq!(
        rest,
        format!("Subject=\"\";URI=spiffe://{TD}/ns/default/sa/curl-spire")
    );

    // step 3: only POST /api/payment
    mesh.delete_policy("02-allow-curl-spire").unwrap();
    mesh.apply_policy("03-allow-payment-only", &example("03-allow-payment-only"))
        .unwrap();
    eventually(&mesh, "GET /list forbidden", || {
        status(&mesh, "curl-spire", &[&url("/list")], 403)
    });
    status(
        &mesh,
        "curl-spire",
        &["-X", "POST", "-d", "amount=5", &url("/api/payment")],
        200,
    )
    .unwrap();
    // the path policy judged is the path the app gets
    let r = status(
        &mesh,
        "curl-spire",
        &["-X", "POST", "--path-as-is", &url("/api//x/../payment")],
        200,
    )
    .unwrap();
    assert_eq!(r.json().unwrap()["http"]["originalUrl"], "/api/payment");

    // an allowed request whose pod port is closed: 503, never a hang
    let r = status(
        &mesh,
        "curl-spire",
        &["-X", "POST", &format!("http://{ip}:8081/api/payment")],
        503,
    )
    .unwrap();
    assert!(r.body.starts_with("upstream connect error"), "{}", r.body);
    // a malformed request-target: 400 before any policy
    status(
        &mesh,
        "curl-spire",
        &["-X", "POST", "--path-as-is", &url("/api/pay%00ment")],
        400,
    )
    .unwrap();
    // plaintext bytes straight at the HBONE port: the handshake fails, the
    // connection closes (no hang, no answer)
    let failed = || {
        let labels = ["direction=\"inbound\""];
        node_metric(
            &mesh,
            "node-2",
            "meshward_tls_handshake_failures_total",
            &labels,
        )
    };
    let before = failed();
    let r = mesh
        .cluster
        .curl("curl", &[&format!("http://{ip}:15008/")])
        .unwrap();
    assert_eq!(r.status, None, "{r:?}");
    // rustls answers bytes that are not a ClientHello with an alert (curl: "HTTP/0.9",
    // exit 1) and closes; never a hang (28), never an HTTP answer
    assert!(
        matches!(r.exit_code, Some(1 | 52 | 56)),
        "a close, no hang: {r:?}"
    );
    assert_eq!(failed() - before, 1.0);

    // a broken policy file is refused with everything that changed beside it: a
    // valid policy added in the same change (GET /list allowed) takes no effect
    let failed_reloads = || {
        let labels = ["result=\"failed\""];
        node_metric(&mesh, "node-2", "meshward_policy_reloads_total", &labels)
    };
    let before = failed_reloads();
    mesh.apply_policy("99-broken", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: echoserver}\nspec:\n  action: MAYBE\n").unwrap();
    let allow_list = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-list, namespace: echoserver}\nspec:\n  rules:\n  - to: [{operation: {methods: [\"GET\"], paths: [\"/list\"]}}]\n";
    mesh.apply_policy("98-allow-list", allow_list).unwrap();
    eventually(&mesh, "the broken file is reported", || {
        if mesh.daemon_log("node-2").contains("policy change refused") && failed_reloads() > before
        {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    status(
        &mesh,
        "curl-spire",
        &["-X", "POST", &url("/api/payment")],
        200,
    )
    .unwrap();
    status(&mesh, "curl-spire", &[&url("/list")], 403).unwrap();
    // the broken file gone, the valid one loads: it was the broken one that held it
    mesh.delete_policy("99-broken").unwrap();
    eventually(&mesh, "the valid change loads", || {
        status(&mesh, "curl-spire", &[&url("/list")], 200)
    });
    mesh.delete_policy("98-allow-list").unwrap();
    mesh.wait_for_policy_count(2).unwrap();

    // same node: the neighbour goes through the same mTLS and policy
    let r = status(&mesh, "neighbour", &[&url("/list")], 403).unwrap();
    assert_eq!(r.body, "RBAC: access denied");
    mesh.apply_policy(
        "04-allow-neighbour",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-neighbour, namespace: echoserver}}\nspec:\n  rules:\n  - from: [{{source: {{principals: [\"{TD}/ns/default/sa/neighbour\"]}}}}]\n    to: [{{operation: {{ports: [\"8080\", \"9000\"]}}}}]\n"
        ),
    )
    .unwrap();
    let r = eventually(&mesh, "neighbour allowed", || {
        status(&mesh, "neighbour", &[&url("/same-node")], 200)
    });
    let xfcc = r.json().unwrap()["request"]["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        xfcc.ends_with(&format!("URI=spiffe://{TD}/ns/default/sa/neighbour")),
        "{xfcc}"
    );

    // plain TCP on a port declared tcp: authorized once per connection, before the
    // tunnel opens; refused = reset without a byte, at once, logged by node-2
    let tcp = format!("{ip}:9000");
    let refused = tcp_ping(&mesh, "curl-spire", &tcp);
    assert_eq!(
        (refused.data.as_str(), refused.end.as_str()),
        ("", "reset"),
        "TCP must be refused for curl-spire with a reset"
    );
    assert!(
        refused.seconds < 2.0,
        "a reset at once, not a wait: {}",
        refused.seconds
    );
    let is_the_refusal = |l: &str| {
        l.contains("connection complete: denied")
            && l.contains("sa/curl-spire")
            && l.contains("dst_addr=")
            && l.contains(":9000")
    };
    let denied = mesh
        .daemon_log_when("node-2", |log| log.lines().any(is_the_refusal))
        .lines()
        .any(is_the_refusal);
    assert!(denied, "{}", mesh.logs());
    let allowed = tcp_ping(&mesh, "neighbour", &tcp);
    assert_eq!(
        (allowed.data.as_str(), allowed.end.as_str()),
        ("ping", "closed")
    );

    // HTTP/2 (prior knowledge) through the mesh, and gRPC's refusal
    let out = mesh
        .cluster
        .exec_in_pod(
            "neighbour",
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                "--http2-prior-knowledge",
                &url("/h2"),
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(out.stdout, "2 200", "{}", out.stderr);
    let r = status(
        &mesh,
        "curl-spire",
        &[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            "",
            &url("/pkg.Svc/Method"),
        ],
        200,
    )
    .unwrap();
    assert_eq!(r.header("grpc-status"), Some("7"), "{r:?}");

    // gRPC allowed: message and trailers arrive intact over two proxies
    let pod = mesh.cluster.pod("neighbour").unwrap().netns();
    let target = std::net::SocketAddr::new(ip, 8080);
    let (message, trailers) = pod.run(move || grpc_call(target)).unwrap();
    assert_eq!(message, grpc_frame(b"hello"));
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let xfcc = trailers.get("echo-xfcc").unwrap().to_str().unwrap();
    assert!(xfcc.ends_with("/ns/default/sa/neighbour"), "{xfcc}");

    // WebSocket: an allowed upgrade joins the client to the pod (with XFCC on the
    // handshake); a refused one gets the 403 like any request
    let lines = upgrade_ping(&mesh, "neighbour", ip);
    assert_eq!(lines.len(), 3, "{lines:?}\n{}", mesh.logs());
    assert!(lines[0].starts_with("HTTP/1.1 101"), "{lines:?}");
    // the handshake carried a forged XFCC: the pod saw meshward's only
    assert!(
        lines[1].ends_with(&format!("URI=spiffe://{TD}/ns/default/sa/neighbour"))
            && !lines[1].contains("evil"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "ping");
    let lines = upgrade_ping(&mesh, "curl-spire", ip);
    assert_eq!(lines, ["HTTP/1.1 403 Forbidden"]);
}

/// A gRPC message: uncompressed flag, big-endian length, payload.
fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// One unary gRPC call over HTTP/2 (run inside a pod's namespace): the response
/// body and its trailers.
fn grpc_call(target: std::net::SocketAddr) -> (Vec<u8>, http::HeaderMap) {
    use http_body_util::{BodyExt, Full};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(target),
        )
        .await
        .unwrap()
        .unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let request = http::Request::post(format!("http://{target}/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(bytes::Bytes::from(grpc_frame(b"hello"))))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        let collected =
            tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                .await
                .unwrap()
                .unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        (collected.to_bytes().to_vec(), trailers)
    })
}

#[test]
fn svid_rotation_under_load_fails_no_request() {
    let Some(()) = available_or_skip("svid_rotation_under_load_fails_no_request") else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        // renewed at half life: about every 10 s
        spec.pod("node-1", curl_spire(), true).svid_ttl(20);
    });
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let url = format!("http://{}:8080/load", mesh.pod_ip("echoserver").unwrap());
    eventually(&mesh, "allowed", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/load_across_rotation.py");
    let out = mesh
        .cluster
        .exec_in_pod(
            "curl-spire",
            "python3",
            &[script, &url, "25", "3000"],
            Duration::from_secs(60),
        )
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    assert_eq!(report["failed"], 0, "{report}\n{}", mesh.logs());
    assert!(report["ok"].as_u64().unwrap() > 100, "{report}");
    // the destination saw more than one client certificate: rotation happened
    assert!(
        report["hashes"].as_array().unwrap().len() >= 2,
        "{report}\n{}",
        mesh.logs()
    );
}

#[test]
fn permissive_plaintext_is_a_request_without_principal() {
    let Some(()) = available_or_skip("permissive_plaintext_is_a_request_without_principal") else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod(
            "node-1",
            PodSpec::new("curl").service_account("curl"),
            false,
        )
        .proxy_yaml("inbound:\n  plaintext: PERMISSIVE\n");
    });
    let url = |path: &str| format!("http://{}:8080{path}", mesh.pod_ip("echoserver").unwrap());

    // let through, but still judged: default deny
    let r = eventually(&mesh, "plaintext judged", || {
        status(&mesh, "curl", &[&url("/public")], 403)
    });
    assert_eq!(r.body, "RBAC: access denied");
    // a path anyone may call: 200, and no XFCC (there is no client certificate),
    // even when the client sends one
    mesh.apply_policy(
        "public",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: public, namespace: echoserver}\nspec:\n  rules:\n  - to: [{operation: {paths: [\"/public\"]}}]\n",
    )
    .unwrap();
    let r = eventually(&mesh, "public allowed", || {
        status(
            &mesh,
            "curl",
            &[
                "-H",
                "x-forwarded-client-cert: URI=spiffe://math.example.com/ns/x/sa/admin",
                &url("/public"),
            ],
            200,
        )
    });
    let headers = &r.json().unwrap()["request"]["headers"];
    assert!(
        headers.get("x-forwarded-client-cert").is_none(),
        "{headers}"
    );
    // a principal-only policy never matches plaintext: any identity may call
    // /private, and plaintext has none
    mesh.apply_policy(
        "any-identity",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: any-identity, namespace: echoserver}\nspec:\n  rules:\n  - from: [{source: {principals: [\"*\"]}}]\n    to: [{operation: {paths: [\"/private\"]}}]\n",
    )
    .unwrap();
    mesh.wait_for_policy_count(2).unwrap();
    let r = status(&mesh, "curl", &[&url("/private")], 403).unwrap();
    assert_eq!(r.body, "RBAC: access denied");
}
