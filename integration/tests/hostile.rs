//! Hostile input against the running mesh (issue 14, docs/security.md): raw bytes,
//! slow and oversized request lines, hand-written HTTP/2 frames, hand-minted
//! certificates, forged addresses. Each test names the classes it holds; each one
//! failed against the mesh before its fix. Policies are files the daemons reload.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

mod support;

use meshward_integration::hbone::{LeafSpec, RogueServer, Tunnel, mint_leaf, tunnel};
use meshward_integration::{PodSpec, available_or_skip};
use rcgen::KeyUsagePurpose;
use support::{TD, contains, curl_spire, echo_mesh, eventually, h2_request, raw_exchange, status};

const NONE: Duration = Duration::ZERO;

/// Every hostile case is checked and every failure reported at once, so one run
/// shows which classes hold (and, before a fix, which ones fell).
#[derive(Default)]
struct Findings(std::cell::RefCell<Vec<String>>);

impl Findings {
    fn check(&self, class: &str, holds: bool, detail: impl std::fmt::Debug) {
        if !holds {
            self.0.borrow_mut().push(format!("{class}: {detail:?}"));
        }
    }

    fn assert_none(self, mesh: &meshward_integration::Mesh) {
        let failed = self.0.into_inner();
        assert!(failed.is_empty(), "{}\n{}", failed.join("\n"), mesh.logs());
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
const PAUSE: Duration = Duration::from_millis(1200);

fn allow_curl_spire(extra: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-curl-spire, namespace: echoserver}}\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"{TD}/ns/default/sa/curl-spire\"]\n{extra}"
    )
}

fn deny(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: echoserver}}\nspec:\n  action: DENY\n  rules:\n{rules}"
    )
}

/// Class 1: a pod without identity on the echoserver's own node, by pod address
/// and over TCP, meets STRICT like any plaintext client.
#[test]
fn a_pod_without_identity_on_the_same_node_is_refused() {
    let Some(()) = available_or_skip("a_pod_without_identity_on_the_same_node_is_refused") else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true).pod(
            "node-2",
            PodSpec::new("intruder").service_account("intruder"),
            false,
        );
    });
    let _tcp = mesh
        .cluster
        .spawn_in_pod(
            "echoserver",
            env!("CARGO_BIN_EXE_echoserver"),
            &["--listen", "0.0.0.0:9000", "--tcp"],
        )
        .unwrap();
    // everyone with an identity may call: only the missing identity can refuse
    mesh.apply_policy(
        "allow-any-identity",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: any, namespace: echoserver}\nspec:\n  rules:\n  - from:\n    - source:\n        principals: [\"*\"]\n",
    )
    .unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    eventually(&mesh, "the meshed caller is served", || {
        status(&mesh, "curl-spire", &[&format!("http://{ip}:8080/")], 200)
    });

    let findings = Findings::default();
    let r = mesh
        .cluster
        .curl("intruder", &[&format!("http://{ip}:8080/secret")])
        .unwrap();
    // a reset before or after curl sent its request: never an answer, never a timeout
    findings.check(
        "1 same-node HTTP",
        r.status.is_none() && matches!(r.exit_code, Some(52 | 55 | 56)),
        &r,
    );
    let intruder = mesh.pod_ip("intruder").unwrap().to_string();
    let logged = mesh
        .daemon_log("node-2")
        .lines()
        .any(|l| l.contains("refused: plaintext") && l.contains(&intruder));
    findings.check("1 same-node refusal logged", logged, "no refusal line");
    let echoed = raw_exchange(
        &mesh,
        "intruder",
        &format!("{ip}:9000"),
        &[(NONE, b"ping\n")],
    );
    findings.check("1 same-node TCP", echoed.is_empty(), text(&echoed));
    findings.assert_none(&mesh);
}

/// Class 2: detection never widens a request. Slow, fragmented and oversized
/// requests are served as HTTP (judged per request, XFCC set by meshward) or
/// refused; never forwarded as opaque bytes carrying the client's own XFCC. The
/// policy is principal-only, so an opaque TCP stream would be allowed: exactly
/// where a misdetection turned into a forged identity at the pod.
#[test]
fn slow_fragmented_and_oversized_requests_are_judged_or_refused() {
    let Some(()) =
        available_or_skip("slow_fragmented_and_oversized_requests_are_judged_or_refused")
    else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .proxy_yaml("inbound:\n  protocol_detection_timeout: 300ms\n");
    });
    mesh.apply_policy("allow", &allow_curl_spire("")).unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    let addr = format!("{ip}:8080");
    eventually(&mesh, "allowed", || {
        status(&mesh, "curl-spire", &[&format!("http://{addr}/")], 200)
    });
    let forged = b"GET /anything HTTP/1.1\r\nHost: echoserver\r\nx-forwarded-client-cert: By=spiffe://evil/x;URI=spiffe://math.example.com/ns/admin/sa/root\r\nConnection: close\r\n\r\n";
    let findings = Findings::default();
    // `want`: what the answer must contain; `None`: no answer at all (refused)
    let case = |what: &str, parts: &[(Duration, &[u8])], want: Option<&str>| {
        let got = raw_exchange(&mesh, "curl-spire", &addr, parts);
        let judged = want.map_or(got.is_empty(), |want| contains(&got, want));
        findings.check(
            &format!("2 {what}"),
            !contains(&got, "evil") && judged,
            text(&got),
        );
    };
    let ours = "sa/curl-spire";

    // silent past the detection timeout, then HTTP: refused, not TCP
    case("silence first", &[(PAUSE, forged)], None);
    // the first byte, a pause, the rest: still HTTP, judged
    case(
        "slow request line",
        &[(NONE, &forged[..1]), (PAUSE, &forged[1..])],
        Some(ours),
    );
    // leading empty lines, which servers skip
    let crlf_first = [b"\r\n\r\n".as_slice(), forged].concat();
    case("leading CRLF", &[(NONE, &crlf_first)], Some(ours));
    // a request line far longer than detection reads
    let long = format!(
        "GET /anything?{} HTTP/1.1\r\nHost: echoserver\r\nx-forwarded-client-cert: URI=spiffe://evil/x\r\nConnection: close\r\n\r\n",
        "a".repeat(10_000)
    );
    case(
        "oversized request line",
        &[(NONE, long.as_bytes())],
        Some(ours),
    );
    // a lower-case method is no method this server knows, but HTTP all the same
    let lower = b"get /anything HTTP/1.1\r\nHost: e\r\nx-forwarded-client-cert: URI=spiffe://evil/x\r\nConnection: close\r\n\r\n";
    case("lower-case method", &[(NONE, lower)], Some(" 400 "));

    // HTTP/2 with hand-written frames: silent first, then fragmented
    let h2 = h2_request(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "echoserver"),
        (":path", "/anything"),
        ("x-forwarded-client-cert", "URI=spiffe://evil/x"),
    ]);
    case("HTTP/2 after silence", &[(PAUSE, &h2)], None);
    case(
        "fragmented HTTP/2 preface",
        &[(NONE, &h2[..5]), (PAUSE, &h2[5..])],
        Some(ours),
    );
    let logged = mesh
        .daemon_log("node-2")
        .contains("refused: the client sent nothing");
    findings.check("2 silence logged", logged, "no refusal line");
    findings.assert_none(&mesh);
}

/// Classes 3-8 and the pseudo-header conditions: the request policy judged is the
/// request the pod receives: identity headers, authority, path, header values.
#[test]
fn the_request_judged_is_the_request_forwarded() {
    let Some(()) = available_or_skip("the_request_judged_is_the_request_forwarded") else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true);
    });
    mesh.apply_policy("allow", &allow_curl_spire("")).unwrap();
    mesh.apply_policy(
        "deny",
        &deny(
            "deny",
            "  - to:\n    - operation:\n        hosts: [\"admin.example\"]\n  - to:\n    - operation:\n        paths: [\"/admin\"]\n  - when:\n    - key: request.headers[x-role]\n      values: [\"admin\"]\n",
        ),
    )
    .unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = |path: &str| format!("http://{ip}:8080{path}");
    eventually(&mesh, "allowed", || {
        status(&mesh, "curl-spire", &[&url("/")], 200)
    });
    let findings = Findings::default();
    // curl from curl-spire: the status, and the request as the echoserver saw it
    let call = |class: &str, args: &[&str], want: u16| -> Option<serde_json::Value> {
        let r = mesh.cluster.curl("curl-spire", args).unwrap();
        findings.check(class, r.status == Some(want), (args, r.status, &r.body));
        r.json()
    };

    // 3: our XFCC survives a Connection option naming it
    let args = [
        "-H",
        "Connection: keep-alive, x-forwarded-client-cert",
        "-H",
        "x-forwarded-client-cert: URI=spiffe://evil/x",
        &url("/xfcc"),
    ];
    let echo = call("3 Connection: x-forwarded-client-cert", &args, 200).unwrap_or_default();
    let xfcc = echo["request"]["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ours = format!("URI=spiffe://{TD}/ns/default/sa/curl-spire");
    findings.check("3 XFCC set last", xfcc.ends_with(&ours), &echo);

    // 4: absolute-form: the target's authority is judged and forwarded
    let args = [
        "--request-target",
        "http://public.example/x",
        "-H",
        "Host: admin.example",
        &url("/"),
    ];
    let echo = call("4 absolute-form", &args, 200).unwrap_or_default();
    let host = &echo["request"]["headers"]["host"];
    findings.check(
        "4 absolute-form host forwarded",
        host == "public.example",
        host,
    );
    let args = [
        "--request-target",
        "http://admin.example/x",
        "-H",
        "Host: public.example",
        &url("/"),
    ];
    call("4 absolute-form judged", &args, 403);
    call(
        "4 scheme",
        &["--request-target", "ftp://public.example/x", &url("/")],
        400,
    );
    // HTTP/2 whose host header names another authority than :authority
    let conflicting = h2_request(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "public.example"),
        (":path", "/x"),
        ("host", "admin.example"),
    ]);
    let got = raw_exchange(
        &mesh,
        "curl-spire",
        &format!("{ip}:8080"),
        &[(NONE, &conflicting)],
    );
    let refused = contains(&got, "bad request") && !contains(&got, "originalUrl");
    findings.check("4 HTTP/2 host vs :authority", refused, text(&got));

    // 5: no spelling of a denied host escapes
    for host in ["admin.example:8080", "ADMIN.Example.", "admin.example.:80"] {
        call(
            "5 host forms",
            &["-H", &format!("Host: {host}"), &url("/")],
            403,
        );
    }
    // 6: path parameters
    for path in ["/admin;x=1", "/public/..;/admin", "/admin;"] {
        call("6 path parameters", &["--path-as-is", &url(path)], 403);
    }
    // 7: dot-segments then merged slashes, once: the pod gets the judged path
    let echo = call("7 judged path", &["--path-as-is", &url("/a//../b")], 200).unwrap_or_default();
    let path = &echo["http"]["originalUrl"];
    findings.check("7 forwarded path", path == "/a/b", path);
    call(
        "7 merged then denied",
        &["--path-as-is", &url("/x/..//admin")],
        403,
    );
    // 8: one header line with two values is two values
    call(
        "8 one line",
        &["-H", "x-role: guest, admin", &url("/")],
        403,
    );
    call(
        "8 two lines",
        &["-H", "x-role: guest", "-H", "x-role: admin", &url("/")],
        403,
    );
    call("8 allowed value", &["-H", "x-role: guest", &url("/")], 200);

    // pseudo-headers in conditions load and match as Envoy matches them
    let delete = "  - when:\n    - key: request.headers[:method]\n      values: [\"DELETE\"]\n";
    mesh.apply_policy("deny-delete", &deny("deny-delete", delete))
        .unwrap();
    let denied = eventually_holds(|| {
        mesh.cluster
            .curl("curl-spire", &["-X", "DELETE", &url("/x")])
            .unwrap()
            .status
            == Some(403)
    });
    findings.check("pseudo-header condition", denied, "DELETE still served");

    // 13: oversized values and documents are refused by name; the set stays
    let huge_value = "p".repeat(100_000);
    let rules = format!("  - to:\n    - operation:\n        paths: [\"/{huge_value}\"]\n");
    mesh.apply_policy("huge-value", &deny("huge-value", &rules))
        .unwrap();
    let reported = eventually_holds(|| {
        mesh.daemon_log("node-2")
            .contains("paths[0]: 100001 bytes; a value holds at most 4096")
    });
    findings.check("13 oversized value", reported, "not reported");
    mesh.delete_policy("huge-value").unwrap();
    let padding = "x".repeat(1024 * 1024);
    let huge_file = format!("# {padding}\n{}", deny("huge-file", "  - {}\n"));
    mesh.apply_policy("huge-file", &huge_file).unwrap();
    let reported = eventually_holds(|| {
        mesh.daemon_log("node-2")
            .contains("a policy source holds at most 524288")
    });
    findings.check("13 oversized file", reported, "not reported");
    // the last good set is still in force: the DENY-all in the big file took no effect
    call(
        "13 last good set kept",
        &["-H", "x-role: guest", &url("/")],
        200,
    );
    findings.assert_none(&mesh);
}

/// Polls `check` for up to 10 s (policy reloads take a second or two).
fn eventually_holds(mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// Classes 9 and 10: certificates minted by the mesh's own CA, one rule broken
/// each, are refused in the handshake; a valid SVID cannot borrow another pod's
/// address through the HBONE `forwarded` header.
#[test]
fn hand_made_certificates_and_forged_addresses() {
    let Some(()) = available_or_skip("hand_made_certificates_and_forged_addresses") else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true);
    });
    let curl_ip = mesh.pod_ip("curl-spire").unwrap();
    mesh.apply_policy(
        "allow",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow, namespace: echoserver}}\nspec:\n  rules:\n  - from:\n    - source:\n        principals: [\"*\"]\n    to:\n    - operation:\n        paths: [\"/any-identity\"]\n  - from:\n    - source:\n        ipBlocks: [\"{curl_ip}/32\"]\n    to:\n    - operation:\n        paths: [\"/from-curl-spire\"]\n"
        ),
    )
    .unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    eventually(&mesh, "policy in force", || {
        status(
            &mesh,
            "curl-spire",
            &[&format!("http://{ip}:8080/from-curl-spire")],
            200,
        )
    });
    let ca = mesh.issuer_ca_dir().unwrap();
    let node = mesh.cluster.node("node-1").unwrap().netns();
    let peer = std::net::SocketAddr::new(ip, 15008);
    let target = std::net::SocketAddr::new(ip, 8080);
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: echoserver\r\nConnection: close\r\n\r\n")
    };
    let open = |spec: &LeafSpec, headers: &[(&str, &str)], path: &str| {
        let credentials = mint_leaf(&ca, spec).unwrap();
        tunnel(
            node,
            peer,
            target,
            headers,
            &credentials,
            get(path).as_bytes(),
            Duration::from_secs(15),
        )
        .unwrap()
    };
    let answered = |outcome: &Tunnel, code: &str| match outcome {
        Tunnel::Open(bytes) => contains(bytes, &format!(" {code} ")),
        _ => false,
    };

    // the harness itself: a leaf as the issuer signs it is served
    let findings = Findings::default();
    let valid = LeafSpec::svid(&format!("spiffe://{TD}/ns/evil/sa/mallory"));
    let outcome = open(&valid, &[], "/any-identity");
    assert!(answered(&outcome, "200"), "{outcome:?}");

    // 10: each X509-SVID rule broken once, by a certificate the bundle trusts
    let broken = [
        LeafSpec::svid(&format!("spiffe://{TD}/ns/default/sa/a,b=c")),
        LeafSpec::svid(&format!("spiffe://{TD}/ns/x;URI=spiffe:")),
        LeafSpec {
            uris: vec![format!("spiffe://{TD}/a"), format!("spiffe://{TD}/b")],
            ..valid.clone()
        },
        LeafSpec {
            usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            ..valid.clone()
        },
        LeafSpec {
            usages: vec![],
            ..valid.clone()
        },
        LeafSpec {
            is_ca: true,
            ..valid.clone()
        },
    ];
    for spec in &broken {
        let outcome = open(spec, &[], "/any-identity");
        let refused = matches!(outcome, Tunnel::Refused(_));
        findings.check("10 X509-SVID rules", refused, (spec, outcome));
    }
    let logged = mesh.daemon_log("node-2").contains("not an X509-SVID");
    findings.check("10 refusal logged", logged, "no handshake failure line");

    // 9: a valid SVID claiming curl-spire's address is judged by its own
    let claim = format!("for=\"{curl_ip}:40000\"");
    let outcome = open(&valid, &[("forwarded", &claim)], "/from-curl-spire");
    findings.check("9 forged forwarded", answered(&outcome, "403"), outcome);
    findings.assert_none(&mesh);
}

/// Class 11: connections judged once (TCP, an upgraded WebSocket) are judged again
/// when the policy set changes, and closed when no longer allowed.
#[test]
fn a_policy_change_closes_the_connections_it_no_longer_allows() {
    let Some(()) = available_or_skip("a_policy_change_closes_the_connections_it_no_longer_allows")
    else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .proxy_yaml("inbound:\n  ports: {9000: tcp}\n");
    });
    let _tcp = mesh
        .cluster
        .spawn_in_pod(
            "echoserver",
            env!("CARGO_BIN_EXE_echoserver"),
            &["--listen", "0.0.0.0:9000", "--tcp"],
        )
        .unwrap();
    let rules = "    to:\n    - operation:\n        ports: [\"9000\"]\n  - from:\n    - source:\n        principals: [\"*\"]\n    to:\n    - operation:\n        paths: [\"/ws\"]\n";
    mesh.apply_policy("allow", &allow_curl_spire(rules))
        .unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap();
    eventually(&mesh, "the WebSocket path is allowed", || {
        status(&mesh, "curl-spire", &[&format!("http://{ip}:8080/ws")], 200)
    });
    // two long-lived connections, each echoing a byte every 200 ms; one line per
    // connection when it closes; both give up after 30 s
    let script = format!(
        r"import socket,time,sys
tcp=socket.create_connection(('{ip}',9000),timeout=5)
ws=socket.create_connection(('{ip}',8080),timeout=5)
ws.sendall(b'GET /ws HTTP/1.1\r\nHost: echoserver\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
head=b''
while b'\n' not in head.partition(b'\r\n\r\n')[2]:
  b=ws.recv(1000)
  if not b: sys.exit('upgrade failed: '+repr(head))
  head+=b
open_={{'tcp':tcp,'ws':ws}}
n=0
end=time.time()+30
while open_ and time.time()<end:
  for name,s in list(open_.items()):
    try:
      s.sendall(b'x')
      if not s.recv(100): raise OSError('closed')
    except OSError:
      print(name,'closed after',n,flush=True)
      del open_[name]
  n+=1
  if n==5: print('both open',flush=True)
  time.sleep(0.2)
for name in open_: print(name,'still open',flush=True)
"
    );
    let mut client = mesh
        .cluster
        .spawn_in_pod("curl-spire", "python3", &["-c", &script])
        .unwrap();
    eventually(&mesh, "both connections carry bytes", || {
        let log = client.log();
        if log.contains("both open") {
            Ok(())
        } else {
            Err(log)
        }
    });
    mesh.delete_policy("allow").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = client.log();
    let findings = Findings::default();
    findings.check("11 TCP closed", log.contains("tcp closed"), &log);
    findings.check("11 WebSocket closed", log.contains("ws closed"), &log);
    let logged = mesh
        .daemon_log("node-2")
        .contains("a policy change no longer allows");
    findings.check("11 closing logged", logged, "no log line");
    findings.assert_none(&mesh);
}

/// Class 12: the source checks whom it reached. Something at a mesh address answers
/// with an SVID the mesh's CA signed, but not one issued for that address: the
/// source node refuses it before sending a byte of the request.
#[test]
fn the_source_refuses_a_destination_its_svid_does_not_name() {
    let Some(()) = available_or_skip("the_source_refuses_a_destination_its_svid_does_not_name")
    else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .mesh_cidr("10.0.0.0/8");
    });
    mesh.apply_policy("allow", &allow_curl_spire("")).unwrap();
    let echo_ip = mesh.pod_ip("echoserver").unwrap();
    eventually(&mesh, "the real echoserver answers", || {
        status(
            &mesh,
            "curl-spire",
            &[&format!("http://{echo_ip}:8080/")],
            200,
        )
    });
    // the rogue stands at an address of the mesh that no pod of ours holds
    let host = mesh.cluster.host("issuer").unwrap();
    let rogue_ip = std::net::IpAddr::V4(host.ip());
    let ca = mesh.issuer_ca_dir().unwrap();
    let findings = Findings::default();
    let echoserver_id = format!("spiffe://{TD}/ns/echoserver/sa/default");
    let cases = [
        ("an SVID naming no address", LeafSpec::svid(&echoserver_id)),
        (
            "the echoserver's SVID, naming the echoserver's address",
            LeafSpec {
                ips: vec![echo_ip],
                ..LeafSpec::svid(&echoserver_id)
            },
        ),
    ];
    for (what, spec) in cases {
        let credentials = mint_leaf(&ca, &spec).unwrap();
        let rogue = RogueServer::start(
            host.netns(),
            std::net::SocketAddr::new(rogue_ip, 15008),
            &credentials,
            b"hijacked",
        )
        .unwrap();
        let r = mesh
            .cluster
            .curl("curl-spire", &[&format!("http://{rogue_ip}:8080/")])
            .unwrap();
        let refused = !r.body.contains("hijacked") && rogue.connects() == 0;
        findings.check(&format!("12 {what}"), refused, (&r, rogue.connects()));
    }
    let logged = mesh
        .daemon_log("node-1")
        .contains("whose SVID does not name that address");
    findings.check("12 refusal logged", logged, "no log line");
    findings.assert_none(&mesh);
}
