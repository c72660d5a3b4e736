//! Capture on a simulated node: the daemon's iptables chains take a pod's
//! outbound connections, plaintext to local pods and HBONE to local pods, and the
//! original destination comes back with SO_ORIGINAL_DST. Removal restores the
//! plain path; installing twice leaves one set of rules. A daemon that stops removes
//! its rules, or keeps them (`capture.on_exit: keep`) so its pods fail closed.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use meshward_integration::{
    Cluster, Mesh, Netns, PodSpec, RunExt, available_or_skip, meshward_binary,
};
use support::{connect_from, curl_spire, echo_mesh, echoed, eventually, status, tcp_echo};

/// A listener in `ns` that answers one connection with a tiny HTTP response and
/// reports the connection's original destination: for REDIRECTed connections by
/// SO_ORIGINAL_DST, for TPROXYed ones (`transparent`) the socket's local address.
fn capture_listener(
    ns: &Netns,
    port: u16,
    transparent: bool,
) -> std::thread::JoinHandle<SocketAddr> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = ns
        .run(move || {
            if transparent {
                meshward_proxy::capture::transparent_listener(addr)
            } else {
                TcpListener::bind(addr)
            }
        })
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let original = if transparent {
            stream.local_addr().unwrap()
        } else {
            meshward_proxy::capture::original_destination(&stream).unwrap()
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\ncaptured",
        );
        original
    })
}

/// Every table's rules (`iptables-save`).
fn all_rules(ns: &Netns) -> String {
    String::from_utf8_lossy(&ns.command("iptables-save", &[]).run().unwrap().stdout).into_owned()
}

/// The jumps capture adds to built-in chains, each expected exactly once.
const JUMPS: [&str; 5] = [
    "-j MESHWARD_PREROUTING",
    "-j MESHWARD_OUTPUT",
    "-j MESHWARD_DIVERT",
    "-j MESHWARD_REPLIES",
    "-j MESHWARD_GUARD",
];

fn nat_rules(ns: &Netns) -> String {
    String::from_utf8_lossy(
        &ns.command("iptables-save", &["-t", "nat"])
            .run()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn pod_traffic_is_captured_and_the_original_destination_recovered() {
    let Some(()) =
        available_or_skip("pod_traffic_is_captured_and_the_original_destination_recovered")
    else {
        return;
    };
    let mut c = Cluster::new().unwrap();
    c.add_node("node-1").unwrap();
    c.add_node("node-2").unwrap();
    c.add_pod("node-1", PodSpec::new("a")).unwrap();
    c.add_pod("node-2", PodSpec::new("b")).unwrap();
    let (a, b) = (c.pod("a").unwrap().ip(), c.pod("b").unwrap().ip());
    let config = c.log_dir().join("proxy.yaml");
    std::fs::write(&config, "capture:\n  pod_interface_prefix: veth\n").unwrap();
    let node = c.node("node-1").unwrap().netns();
    let bin = meshward_binary().unwrap();
    let capture = |action: &str| {
        node.command(
            bin.to_str().unwrap(),
            &["proxy", "capture", action, "-c", config.to_str().unwrap()],
        )
        .run()
        .unwrap()
    };
    capture("--install");
    capture("--install"); // idempotent, in every table and in the policy routing
    let rules = all_rules(node);
    for jump in JUMPS {
        assert_eq!(rules.matches(jump).count(), 1, "{jump}:\n{rules}");
    }
    let ip_rules = node.ip(&["rule"]).unwrap();
    assert_eq!(ip_rules.matches("lookup 1337").count(), 1, "{ip_rules}");

    // outbound: pod a -> pod b on node-2 lands on 15001 of node-1
    let outbound = capture_listener(node, 15001, true);
    let r = c.curl("a", &[&format!("http://{b}:8080/x")]).unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (Some(200), "captured"),
        "{r:?}"
    );
    assert_eq!(outbound.join().unwrap(), SocketAddr::new(b, 8080));

    // inbound plaintext: pod b -> pod a lands on 15006 of node-1
    let plaintext = capture_listener(node, 15006, false);
    let r = c.curl("b", &[&format!("http://{a}:9090/")]).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(plaintext.join().unwrap(), SocketAddr::new(a, 9090));

    // inbound HBONE port: pod b -> pod a:15008 lands on 15008 of node-1
    let hbone = capture_listener(node, 15008, false);
    let r = c.curl("b", &[&format!("http://{a}:15008/")]).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(hbone.join().unwrap(), SocketAddr::new(a, 15008));

    // removed: the plain path is back (nothing listens on b:8080, so refused)
    capture("--remove");
    assert!(!all_rules(node).contains("MESHWARD"), "{}", all_rules(node));
    assert!(!node.ip(&["rule"]).unwrap().contains("lookup 1337"));
    let r = c.curl("a", &[&format!("http://{b}:8080/x")]).unwrap();
    assert_eq!(r.exit_code, Some(7), "{r:?}");
}

/// The echo mesh with `curl-spire` (identity) and `curl` (none) on node-1, Istio's
/// default mode (no policy needed), and `capture_yaml` in every daemon's `capture:`.
fn echo_mesh_with_callers(capture_yaml: &str) -> (Mesh, meshward_integration::Process, String) {
    let (mesh, echo) = echo_mesh(|spec| {
        spec.capture_yaml(capture_yaml)
            .default_mode("allow-if-no-policy")
            .pod("node-1", curl_spire(), true)
            .pod("node-1", PodSpec::new("curl"), false);
    });
    let url = format!("http://{}:8080/", mesh.pod_ip("echoserver").unwrap());
    eventually(&mesh, "curl-spire reaches the echoserver", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });
    let r = mesh.cluster.curl("curl", &[&url]).unwrap();
    assert_eq!(
        r.status, None,
        "plaintext is refused while node-2's daemon runs: {r:?}"
    );
    (mesh, echo, url)
}

/// node-2's daemon stops as the kubelet stops it (SIGTERM), cleanly.
fn stop_node_2(mesh: &mut Mesh) {
    let exit = mesh.stop_daemon("node-2").unwrap();
    assert!(exit.contains("exit status: 0"), "{exit}\n{}", mesh.logs());
}

#[test]
fn a_stopped_daemon_removes_its_rules_by_default() {
    let Some(()) = available_or_skip("a_stopped_daemon_removes_its_rules_by_default") else {
        return;
    };
    let (mut mesh, _echo, url) = echo_mesh_with_callers("");
    stop_node_2(&mut mesh);
    let node = mesh.cluster.node("node-2").unwrap().netns();
    assert!(!nat_rules(node).contains("MESHWARD"), "{}", nat_rules(node));
    // the trade-off: the pod is reachable again, without mTLS or authorization
    let r = mesh.cluster.curl("curl", &[&url]).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
}

#[test]
fn a_stopped_daemon_with_on_exit_keep_fails_closed() {
    let Some(()) = available_or_skip("a_stopped_daemon_with_on_exit_keep_fails_closed") else {
        return;
    };
    let (mut mesh, _echo, url) = echo_mesh_with_callers("  on_exit: keep\n");
    let config = mesh.node_config("node-2");
    // somewhere the echoserver pod can reach when nothing captures it: the issuer
    let issuer = format!("http://{}:8081/", mesh.cluster.host("issuer").unwrap().ip());
    stop_node_2(&mut mesh);
    let node_2_rules = |mesh: &Mesh| all_rules(mesh.cluster.node("node-2").unwrap().netns());
    let rules = node_2_rules(&mesh);
    for jump in JUMPS {
        assert_eq!(rules.matches(jump).count(), 1, "{jump} kept:\n{rules}");
    }
    assert!(rules.contains("-j TPROXY --on-port 15001"), "{rules}");
    // neither the meshed caller nor plaintext reaches the pod while no daemon runs
    for pod in ["curl-spire", "curl"] {
        let r = mesh.cluster.curl(pod, &["--max-time", "3", &url]).unwrap();
        assert_eq!(r.status, None, "{pod}: {r:?}");
    }
    // and the node's own pods cannot leave: their TCP goes to a port no one holds
    let out = mesh
        .cluster
        .curl("echoserver", &["--max-time", "3", &issuer])
        .unwrap();
    // (TPROXY drops what no socket takes: unanswered, the README's "refused or
    // unanswered")
    assert!(
        out.status.is_none() && matches!(out.exit_code, Some(7 | 28)),
        "outbound must fail closed: {out:?}"
    );
    // a daemon starting over the kept rules takes them as they are, and serves
    mesh.start_daemon("node-2").unwrap();
    eventually(&mesh, "served again after the restart", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });
    let rules = node_2_rules(&mesh);
    for jump in JUMPS {
        assert_eq!(
            rules.matches(jump).count(),
            1,
            "{jump} after restart:\n{rules}"
        );
    }
    stop_node_2(&mut mesh);
    let node = mesh.cluster.node("node-2").unwrap().netns();
    // uninstalling: `proxy capture --remove` takes the rules away
    node.command(
        meshward_binary().unwrap().to_str().unwrap(),
        &[
            "proxy",
            "capture",
            "--remove",
            "-c",
            config.to_str().unwrap(),
        ],
    )
    .run()
    .unwrap();
    assert!(!all_rules(node).contains("MESHWARD"), "{}", all_rules(node));
    let r = mesh.cluster.curl("curl", &[&url]).unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    let out = mesh
        .cluster
        .curl("echoserver", &["--max-time", "3", &issuer])
        .unwrap();
    assert!(
        !matches!(out.exit_code, Some(7 | 28)),
        "outbound is plain again: {out:?}"
    );
}

/// Excluded ports and CIDRs pass beside the daemons: while they run, and after a
/// daemon stops with its rules kept, so a node that fails closed still lets its
/// pods reach what the operator excluded (the API server, instance metadata).
#[test]
fn excluded_ports_and_cidrs_pass_beside_the_daemons() {
    let Some(()) = available_or_skip("excluded_ports_and_cidrs_pass_beside_the_daemons") else {
        return;
    };
    let (mut mesh, _echo) = echo_mesh(|spec| {
        spec.capture_yaml("  on_exit: keep\n")
            .exclude_ports(&[9000])
            .exclude_issuer_address()
            .pod("node-1", PodSpec::new("curl"), false);
    });
    let _tcp = tcp_echo(&mesh);
    let ip = mesh.pod_ip("echoserver").unwrap();
    let excluded = SocketAddr::new(ip, 9000);
    let captured = format!("http://{ip}:8080/");
    let issuer = format!("http://{}:8081/", mesh.cluster.host("issuer").unwrap().ip());
    // plaintext from a pod without identity: STRICT and default deny never see it
    let bypass = |mesh: &Mesh| {
        let mut c = connect_from(mesh, "curl", excluded).map_err(|e| e.to_string())?;
        echoed(&mut c, Duration::from_secs(5))
    };
    eventually(&mesh, "the excluded port answers", || bypass(&mesh));
    let r = mesh
        .cluster
        .curl("curl", &["--max-time", "3", &captured])
        .unwrap();
    assert_eq!(r.status, None, "a captured port refuses plaintext: {r:?}");

    stop_node_2(&mut mesh);
    bypass(&mesh).unwrap();
    let r = mesh
        .cluster
        .curl("curl", &["--max-time", "3", &captured])
        .unwrap();
    assert_eq!(r.status, None, "the kept rules fail closed: {r:?}");
    // the excluded CIDR: the node's own pod reaches the issuer with no daemon
    let out = mesh
        .cluster
        .curl("echoserver", &["--max-time", "3", &issuer])
        .unwrap();
    assert!(
        !matches!(out.exit_code, Some(7 | 28)),
        "the excluded address is reachable: {out:?}"
    );
}
