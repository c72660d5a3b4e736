//! Protocol detection against the servers pods run (docs/security.md, class 2).
//!
//! The rule is not "what meshward's detector recognises" but "what any server the
//! pod may run reads as a request": a corpus of request forms (leading bytes,
//! separators, case, versions, line ends, obs-fold, HTTP/0.9) goes to real servers
//! (Go `net/http`, Node `http`, Python `http.server`, Debian's nginx, hyper) and,
//! through the mesh, to a TCP echo pod on an undeclared port. Meshward passes an
//! entry through as TCP exactly when the pod echoes it back unchanged; an entry any
//! server's application handler ran for must never pass (it is judged as HTTP, or
//! refused). Each entry carries a forged `x-forwarded-client-cert`, which is what
//! a pass would deliver.
//!
//! The other side of the rule: a text protocol whose lines look like requests is
//! HTTP on an undeclared port, and TCP once its port is declared, on its Service as
//! Istio users do (`appProtocol`, or a port name such as `tcp-redis`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use meshward_integration::available_or_skip;
use meshward_integration::real_http::{RealHttpServers, handled};
use serde_json::json;
use support::{TD, curl_spire, echo_mesh, echo_mesh_with_api, eventually, raw_exchanges, tcp_echo};

const FORGED: &str = "x-forwarded-client-cert: By=spiffe://evil/x;URI=spiffe://evil/root";

/// A request whose request line is `line` (no line end), headers after it.
fn request(line: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    for header in ["Host: echoserver", FORGED, "Connection: close", ""] {
        out.extend_from_slice(eol);
        out.extend_from_slice(header.as_bytes());
    }
    out.extend_from_slice(eol);
    out
}

/// Bytes servers might skip or split on, and a few they surely do not.
fn odd_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0x00..=0x20).collect();
    bytes.extend([0x7f, 0x85, 0xa0, 0xff]);
    bytes
}

/// Every form tried: (name, bytes).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let crlf = b"\r\n".as_slice();
    let mut corpus = vec![("baseline".to_owned(), request(b"GET /d HTTP/1.1", crlf))];
    for b in odd_bytes() {
        let one = [&[b][..], &request(b"GET /d HTTP/1.1", crlf)].concat();
        corpus.push((format!("leading {b:#04x}"), one));
        let three = [&[b, b, b][..], &request(b"GET /d HTTP/1.1", crlf)].concat();
        corpus.push((format!("leading 3x {b:#04x}"), three));
        let method = [b"GET".as_slice(), &[b], b"/d HTTP/1.1"].concat();
        corpus.push((format!("after method {b:#04x}"), request(&method, crlf)));
        let target = [b"GET /d".as_slice(), &[b], b"HTTP/1.1"].concat();
        corpus.push((format!("after target {b:#04x}"), request(&target, crlf)));
        let inside = [b"G".as_slice(), &[b], b"ET /d HTTP/1.1"].concat();
        corpus.push((format!("inside method {b:#04x}"), request(&inside, crlf)));
    }
    let lines: [&[u8]; 22] = [
        b"get /d HTTP/1.1",
        b"Get /d HTTP/1.1",
        b"POST /d HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"PROPFIND /d HTTP/1.1",
        b"GET  /d  HTTP/1.1",
        b"GET /d HTTP/1.0",
        b"GET /d http/1.1",
        b"GET /d HTTP/1.10",
        b"GET /d HTTP/01.1",
        b"GET /d HTTP/2.0",
        b"GET /d HTTP/1",
        b"GET /d HTTP/1.1 ",
        b"GET /d HTTP/1.1\t",
        b"GET /d",
        b"GET http://echoserver/d HTTP/1.1",
        b"GET //d HTTP/1.1",
        b"GET d HTTP/1.1",
        b"GET /d?x HTTP/1.1",
        b"GET /d ICE/1.0",
        b"GET/d HTTP/1.1",
        b"G\xc9T /d HTTP/1.1",
    ];
    for line in lines {
        corpus.push((
            String::from_utf8_lossy(line).into_owned(),
            request(line, crlf),
        ));
        let lf = request(line, b"\n");
        corpus.push((format!("{} (LF)", String::from_utf8_lossy(line)), lf));
    }
    let more: [(&str, &[u8]); 10] = [
        ("HTTP/0.9", b"GET /d\r\n"),
        ("HTTP/0.9 LF", b"GET /d\n"),
        ("CR CR LF", b"GET /d HTTP/1.1\r\r\nHost: e\r\r\nx-forwarded-client-cert: URI=spiffe://evil/x\r\r\n\r\r\n"),
        ("obs-fold", b"GET /d HTTP/1.1\r\nHost: e\r\nx-forwarded-client-cert: URI=spiffe://evil/x\r\n  ;folded\r\n\r\n"),
        ("space before colon", b"GET /d HTTP/1.1\r\nHost: e\r\nx-forwarded-client-cert : URI=spiffe://evil/x\r\n\r\n"),
        ("CR only", b"GET /d HTTP/1.1\rHost: e\rx-forwarded-client-cert: URI=spiffe://evil/x\r\r"),
        // what must stay TCP: no server reads these as requests
        ("TLS ClientHello", b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03evil"),
        ("Redis RESP", b"*1\r\n$4\r\nPING\r\n"),
        ("PostgreSQL SSLRequest", b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.2\r\n"),
    ];
    corpus.extend(more.iter().map(|(n, b)| ((*n).to_owned(), b.to_vec())));
    corpus
}

#[test]
fn whatever_a_real_server_reads_as_a_request_is_never_forwarded_as_tcp() {
    let Some(()) =
        available_or_skip("whatever_a_real_server_reads_as_a_request_is_never_forwarded_as_tcp")
    else {
        return;
    };
    let servers = RealHttpServers::start().unwrap();
    let corpus = corpus();
    // which servers' applications ran for each entry (the servers in parallel)
    let readers: Vec<Vec<&str>> = std::thread::scope(|scope| {
        let per_server: Vec<_> = servers
            .servers
            .iter()
            .map(|server| {
                let corpus = &corpus;
                scope.spawn(move || {
                    corpus
                        .iter()
                        .map(|(_, bytes)| handled(server.addr, bytes, Duration::from_secs(1)))
                        .collect::<Vec<bool>>()
                })
            })
            .collect();
        let verdicts: Vec<Vec<bool>> = per_server.into_iter().map(|h| h.join().unwrap()).collect();
        (0..corpus.len())
            .map(|i| {
                servers
                    .servers
                    .iter()
                    .zip(&verdicts)
                    .filter(|(_, v)| v[i])
                    .map(|(s, _)| s.name)
                    .collect()
            })
            .collect()
    });
    // the harness can tell: every server runs its handler for the baseline, none
    // for a TLS ClientHello
    assert_eq!(
        readers[0].len(),
        servers.servers.len(),
        "baseline: {:?}",
        readers[0]
    );

    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .proxy_yaml("inbound:\n  protocol_detection_timeout: 300ms\n");
    });
    let _tcp = tcp_echo(&mesh);
    mesh.apply_policy("allow", &allow_curl_spire()).unwrap();
    let addr = format!("{}:9000", mesh.pod_ip("echoserver").unwrap());
    let probe = vec![b"\x00probe".to_vec()];
    eventually(&mesh, "the TCP echo through the mesh", || {
        let got = raw_exchanges(&mesh, "curl-spire", &addr, &probe, Duration::from_secs(2));
        (got == probe).then_some(()).ok_or(format!("{got:?}"))
    });
    let entries: Vec<Vec<u8>> = corpus.iter().map(|(_, b)| b.clone()).collect();
    let answers = raw_exchanges(&mesh, "curl-spire", &addr, &entries, Duration::from_secs(2));

    let mut escaped = Vec::new();
    let mut passed_as_tcp = 0;
    for (((name, bytes), answer), readers) in corpus.iter().zip(&answers).zip(&readers) {
        let as_tcp = answer.starts_with(bytes);
        passed_as_tcp += usize::from(as_tcp);
        if as_tcp && !readers.is_empty() {
            escaped.push(format!("{name:?} (read as a request by {readers:?})"));
        }
    }
    // the mesh can tell too: what no server reads passes as TCP
    assert!(
        passed_as_tcp >= 4,
        "only {passed_as_tcp} entries passed as TCP"
    );
    assert!(
        escaped.is_empty(),
        "forwarded as TCP, unjudged, with a forged XFCC:\n{}",
        escaped.join("\n")
    );
}

#[test]
fn a_text_protocol_is_tcp_once_its_service_declares_it() {
    let test = "a_text_protocol_is_tcp_once_its_service_declares_it";
    let Some(env) = echo_mesh_with_api(test, |spec| {
        spec.pod("node-1", curl_spire(), true);
    }) else {
        return;
    };
    let (plane, mesh) = (env.plane, &env.mesh);
    let _tcp = tcp_echo(mesh);
    mesh.apply_policy("allow", &allow_curl_spire()).unwrap();
    let ip = mesh.pod_ip("echoserver").unwrap().to_string();
    let addr = format!("{ip}:9000");
    // an inline Redis command and a memcached one read like request lines
    let commands = vec![b"SET key value\r\n".to_vec(), b"get key\r\n".to_vec()];
    let exchange = || raw_exchanges(mesh, "curl-spire", &addr, &commands, Duration::from_secs(2));
    let read_as_http = || {
        let got = exchange();
        got.iter()
            .all(|a| a.starts_with(b"HTTP/1.1 400"))
            .then_some(())
            .ok_or(format!("{got:?}"))
    };
    eventually(mesh, "undeclared: read as HTTP and refused", read_as_http);
    for (name, app_protocol) in [("redis", Some("redis")), ("tcp-redis", None)] {
        // the port's name says the protocol, or else its appProtocol does
        let port = |number: u16| {
            let mut port = json!({"name": name, "port": number, "protocol": "TCP"});
            if let Some(app_protocol) = app_protocol {
                port["appProtocol"] = json!(app_protocol);
            }
            port
        };
        let mut service_port = port(6379);
        service_port["targetPort"] = json!(9000);
        let declared = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "redis", "namespace": "echoserver"},
             "spec": {"selector": {"app": "echoserver"}, "ports": [service_port]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "redis-abc", "namespace": "echoserver",
                          "labels": {"kubernetes.io/service-name": "redis"}},
             "addressType": "IPv4",
             "ports": [port(9000)],
             "endpoints": [{"addresses": [ip.clone()], "conditions": {"ready": true}}]},
        ]});
        plane.apply(&declared.to_string()).unwrap();
        eventually(mesh, &format!("declared by {name}: TCP"), || {
            let got = exchange();
            (got == commands).then_some(()).ok_or(format!("{got:?}"))
        });
        let delete = ["delete", "-n", "echoserver", "service/redis"];
        plane.kubectl(&delete).unwrap();
        let delete = ["delete", "-n", "echoserver", "endpointslice/redis-abc"];
        plane.kubectl(&delete).unwrap();
        eventually(mesh, "undeclared again: HTTP", read_as_http);
    }
}

fn allow_curl_spire() -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-curl-spire, namespace: echoserver}}\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"{TD}/ns/default/sa/curl-spire\"]\n"
    )
}
