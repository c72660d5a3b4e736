//! How bytes reach a pod: same-node plaintext (class 1), and connections a policy
//! change no longer allows (class 11).

use std::time::Duration;

use meshward_integration::{PodSpec, available_or_skip};

use crate::support::{curl_spire, echo_mesh, eventually, raw_exchange, status, tcp_echo};
use crate::{Findings, NONE, allow_curl_spire, text};

const SERVICE_IP: &str = "10.96.0.10";

/// A connection reset by the daemon, as curl reports it (see the first use).
fn refused(r: &meshward_integration::CurlResponse) -> bool {
    matches!(r.exit_code, Some(7 | 52 | 55 | 56))
}

/// Class 1: a pod without identity on the echoserver's own node, by pod address,
/// over TCP, and through a Service address that kube-proxy's DNAT turns into the
/// pod's, meets STRICT like any plaintext client.
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
    let _tcp = tcp_echo(&mesh);
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
    // The daemon accepts (TPROXY), then resets at once: curl meets the reset while
    // it completes its connect (7), before its request (55) or after it (52, 56).
    // Never an answer, never a timeout; the log line below says it was meshward.
    findings.check("1 same-node HTTP", r.status.is_none() && refused(&r), &r);
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

    // kube-proxy's part, as it programs every node: a Service address DNATed to the
    // pod in nat OUTPUT, behind the daemon's back (it watches no Services here)
    let node = mesh.cluster.node("node-2").unwrap().netns();
    // a node has a route for Service addresses (its default route, on EKS)
    node.ip(&["route", "add", "10.96.0.0/12", "dev", "eth0"])
        .unwrap();
    let dnat = format!("{ip}:8080");
    let rule = [
        "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", SERVICE_IP, "--dport", "80",
    ];
    let added = node
        .command("iptables", &rule)
        .args(["-j", "DNAT", "--to-destination", &dnat])
        .status()
        .unwrap();
    assert!(added.success(), "iptables DNAT");
    let r = mesh
        .cluster
        .curl("intruder", &[&format!("http://{SERVICE_IP}/secret")])
        .unwrap();
    let through_service = r.status.is_none() && refused(&r);
    findings.check("1 same-node through a Service address", through_service, &r);
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
    let _tcp = tcp_echo(&mesh);
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
