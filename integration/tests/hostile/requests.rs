//! What a request is: protocol detection (class 2) and the request judged being
//! the request forwarded (classes 3-8, pseudo-header conditions, class 13).

use std::time::Duration;

use meshward_integration::available_or_skip;

use crate::support::{
    TD, contains, curl_spire, echo_mesh, eventually, h2_request, raw_exchange, status,
};
use crate::{Findings, NONE, PAUSE, allow_curl_spire, deny, text};

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
    // HTTP/2 methods that differ only in case (Istio's 2026 advisories): refused
    // as HTTP/1's are, so a pod that folds case never gets `delete` past a DENY
    // on `DELETE`
    for method in ["delete", "Delete"] {
        let h2 = h2_request(&[
            (":method", method),
            (":scheme", "http"),
            (":authority", "echoserver"),
            (":path", "/anything"),
            ("x-forwarded-client-cert", "URI=spiffe://evil/x"),
        ]);
        let got = raw_exchange(&mesh, "curl-spire", &addr, &[(NONE, &h2)]);
        findings.check(
            &format!("8 HTTP/2 method {method}"),
            !got.is_empty() && !contains(&got, "evil") && !contains(&got, ours),
            text(&got),
        );
    }

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
    // duplicated and conflicting framing, in raw bytes
    let raw =
        |bytes: &[u8]| raw_exchange(&mesh, "curl-spire", &format!("{ip}:8080"), &[(NONE, bytes)]);
    let got = raw(b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: admin.example\r\nConnection: close\r\n\r\n");
    findings.check("4 two Host headers", contains(&got, " 400 "), text(&got));
    let got = raw(b"POST /x HTTP/1.1\r\nHost: e\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n");
    let smuggled = contains(&got, "\"originalUrl\":\"/admin\"");
    // an h2c upgrade is not forwarded: the request is answered as HTTP/1.1, and the
    // pod never sees the upgrade asked (later requests would escape per-request policy)
    let got = raw(b"GET /x HTTP/1.1\r\nHost: e\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nConnection: close\r\n\r\n");
    let upgraded = contains(&got, " 101 ") || contains(&got, "h2c");
    findings.check(
        "h2c upgrade dropped",
        contains(&got, " 200 ") && !upgraded,
        text(&got),
    );
    // a head past limits.max_header_bytes (64 KiB): refused whole, never cut short
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: e\r\nx-big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(70 * 1024)
    );
    let got = raw(big.as_bytes());
    findings.check("oversized head", contains(&got, " 431 "), text(&got));
    findings.check(
        "smuggled request behind Content-Length + chunked",
        !smuggled,
        text(&got),
    );

    // 5: no spelling of a denied host escapes
    for host in ["admin.example:8080", "ADMIN.Example.", "admin.example.:80"] {
        call(
            "5 host forms",
            &["-H", &format!("Host: {host}"), &url("/")],
            403,
        );
    }
    // 5: on one connection, each request is judged by its own authority (the
    // proxy keeps a connection's last normalized one, for the same text only)
    let got = raw(b"GET /x HTTP/1.1\r\nHost: public.example\r\n\r\nGET /x HTTP/1.1\r\nHost: ADMIN.example.\r\n\r\nGET /x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n");
    let answers = text(&got);
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| answers.get(at + 9..at + 12))
        .collect();
    findings.check(
        "5 host per request on one connection",
        statuses == ["200", "403", "200"],
        &answers,
    );
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
