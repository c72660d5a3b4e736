//! The environment proves itself: routing between pods across and within nodes,
//! isolation between clusters, and cleanup that leaves nothing behind.

#![allow(clippy::unwrap_used)] // a test: a failed step should panic with its error

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use meshward_integration::{
    Cluster, Netns, PodSpec, available_or_skip, list_namespaces, process_is_running,
    remove_by_prefix, wait_for_port,
};
use meshward_proxy::config::WorkloadsFile;

const ECHOSERVER: &str = env!("CARGO_BIN_EXE_echoserver");

/// node-1: curl, echo-1; node-2: echo-2.
fn two_node_cluster() -> Cluster {
    let mut c = Cluster::new().expect("cluster");
    c.add_node("node-1").unwrap();
    c.add_node("node-2").unwrap();
    c.add_pod("node-1", PodSpec::new("curl").service_account("curl-spire"))
        .unwrap();
    c.add_pod("node-1", PodSpec::new("echo-1").namespace("echoserver"))
        .unwrap();
    c.add_pod(
        "node-2",
        PodSpec::new("echo-2")
            .namespace("echoserver")
            .label("version", "v2"),
    )
    .unwrap();
    c
}

fn start_echo(c: &Cluster, pod: &str, args: &[&str]) -> meshward_integration::Process {
    let process = c.spawn_in_pod(pod, ECHOSERVER, args).unwrap();
    let p = c.pod(pod).unwrap();
    wait_for_port(
        p.netns(),
        SocketAddr::new(p.ip(), 8080),
        Duration::from_secs(10),
    )
    .unwrap();
    process
}

#[test]
fn pod_reaches_pod_on_another_node_with_curl() {
    let Some(()) = available_or_skip("pod_reaches_pod_on_another_node_with_curl") else {
        return;
    };
    let c = two_node_cluster();
    let _echo = start_echo(&c, "echo-2", &[]);
    let target = format!(
        "http://{}:8080/api/payment?x=1",
        c.pod("echo-2").unwrap().ip()
    );
    let r = c
        .curl(
            "curl",
            &[
                "-X",
                "POST",
                "-H",
                "x-forwarded-client-cert: By=a;URI=b",
                &target,
            ],
        )
        .unwrap();
    assert_eq!((r.exit_code, r.status), (Some(0), Some(200)), "{r:?}");
    let body = r.json().expect("JSON body");
    assert_eq!(body["http"]["method"], "POST");
    assert_eq!(body["http"]["originalUrl"], "/api/payment?x=1");
    assert_eq!(body["request"]["query"]["x"], "1");
    assert_eq!(
        body["request"]["headers"]["x-forwarded-client-cert"],
        "By=a;URI=b"
    );
    // routed, not NATed: the server sees the curl pod's own address
    assert_eq!(body["host"]["ip"], c.pod("curl").unwrap().ip().to_string());
    assert_eq!(body["environment"]["NODE_NAME"], "node-2");
}

#[test]
fn pods_on_the_same_node_reach_each_other_and_text_format() {
    let Some(()) = available_or_skip("pods_on_the_same_node_reach_each_other_and_text_format")
    else {
        return;
    };
    let c = two_node_cluster();
    let _echo = start_echo(&c, "echo-1", &["--format", "text"]);
    let target = format!("http://{}:8080/list", c.pod("echo-1").unwrap().ip());
    let r = c
        .curl("curl", &["-H", "x-b: \"q\"", "-H", "x-a: 1", &target])
        .unwrap();
    assert_eq!(r.status, Some(200), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(
        r.body
            .contains("\tpod name:\techo-1\n\tpod namespace:\techoserver\n"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("\tmethod=GET\n\treal path=/list\n"),
        "{}",
        r.body
    );
    // sorted, two trailing spaces, HTML-escaped
    assert!(
        r.body.contains("\tx-a=1  \n\tx-b=&quot;q&quot;  \n"),
        "{}",
        r.body
    );
    assert!(
        r.body.ends_with("Request Body:\n\t-no body in request-\n"),
        "{}",
        r.body
    );
}

#[test]
fn tcp_echo_mode() {
    let Some(()) = available_or_skip("tcp_echo_mode") else {
        return;
    };
    let c = two_node_cluster();
    let _echo = start_echo(&c, "echo-2", &["--tcp"]);
    let addr = SocketAddr::new(c.pod("echo-2").unwrap().ip(), 8080);
    let echoed = c
        .pod("curl")
        .unwrap()
        .netns()
        .run(move || -> std::io::Result<Vec<u8>> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"port 9000\n")?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            Ok(buf)
        })
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"port 9000\n");
}

#[test]
fn connection_to_a_closed_port_is_refused_not_hung() {
    let Some(()) = available_or_skip("connection_to_a_closed_port_is_refused_not_hung") else {
        return;
    };
    let c = two_node_cluster();
    let r = c
        .curl(
            "curl",
            &[&format!("http://{}:9999/", c.pod("echo-2").unwrap().ip())],
        )
        .unwrap();
    assert_eq!(r.exit_code, Some(7), "{r:?}");
    assert_eq!(r.status, None);
}

#[test]
fn workloads_files_list_each_nodes_pods() {
    let Some(()) = available_or_skip("workloads_files_list_each_nodes_pods") else {
        return;
    };
    let c = two_node_cluster();
    let file = WorkloadsFile::from_file(c.node("node-1").unwrap().workloads_file()).unwrap();
    assert_eq!(file.node, "node-1");
    let names: Vec<&str> = file.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["curl", "echo-1"]);
    let curl = &file.workloads[0];
    assert_eq!(
        (curl.namespace.as_str(), curl.service_account.as_str()),
        ("default", "curl-spire")
    );
    assert_eq!(curl.ip, c.pod("curl").unwrap().ip());
    let file = WorkloadsFile::from_file(c.node("node-2").unwrap().workloads_file()).unwrap();
    assert_eq!(file.workloads[0].labels["version"], "v2");
}

#[test]
fn nothing_is_left_behind() {
    let Some(()) = available_or_skip("nothing_is_left_behind") else {
        return;
    };
    let root_links_before = root_links();
    let (names, pids, prefix) = {
        let mut c = two_node_cluster();
        c.add_host("issuer").unwrap();
        let echo = start_echo(&c, "echo-2", &[]);
        let sleeper = c.spawn_in_pod("curl", "sleep", &["600"]).unwrap();
        let pids = vec![echo.pid(), sleeper.pid()];
        // leak the handles on purpose: the cluster must still kill them
        std::mem::forget(echo);
        std::mem::forget(sleeper);
        let names: Vec<String> = c.namespaces().iter().map(|s| s.to_string()).collect();
        assert_eq!(names.len(), 3 + 2 + 1 + 1);
        (names, pids, c.prefix().to_owned())
    };
    let existing = list_namespaces();
    for name in &names {
        assert!(!existing.contains(name), "namespace {name} left behind");
    }
    for pid in pids {
        assert!(!process_is_running(pid), "process {pid} left behind");
    }
    let root_links_after = root_links();
    assert!(!root_links_after.iter().any(|l| l.contains(&prefix)));
    assert_eq!(
        root_links_before, root_links_after,
        "the root namespace's interfaces changed"
    );
}

#[test]
fn a_panicking_test_cleans_up_too() {
    let Some(()) = available_or_skip("a_panicking_test_cleans_up_too") else {
        return;
    };
    let result = std::panic::catch_unwind(|| {
        let c = two_node_cluster();
        let prefix = c.prefix().to_owned();
        std::panic::panic_any(prefix);
    });
    let prefix = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(
        !list_namespaces()
            .iter()
            .any(|n| n.starts_with(&format!("{prefix}-")))
    );
}

#[test]
fn two_clusters_with_the_same_addresses_do_not_interfere() {
    let Some(()) = available_or_skip("two_clusters_with_the_same_addresses_do_not_interfere")
    else {
        return;
    };
    let pid = std::process::id();
    let build = |tag: &str| {
        let mut c = Cluster::with_prefix(&format!("mwt{pid:x}{tag}"), 99).unwrap();
        c.add_node("node-1").unwrap();
        c.add_pod("node-1", PodSpec::new("client")).unwrap();
        c.add_pod("node-1", PodSpec::new(&format!("server-{tag}")))
            .unwrap();
        c
    };
    let (a, b) = (build("a"), build("b"));
    assert_eq!(
        a.pod("server-a").unwrap().ip(),
        b.pod("server-b").unwrap().ip()
    );
    let _ea = start_echo(&a, "server-a", &[]);
    let _eb = start_echo(&b, "server-b", &[]);
    let ip = a.pod("server-a").unwrap().ip();
    let std::thread::Result::Ok((ra, rb)) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.curl("client", &[&format!("http://{ip}:8080/")]).unwrap());
        let tb = s.spawn(|| b.curl("client", &[&format!("http://{ip}:8080/")]).unwrap());
        ta.join().and_then(|ra| tb.join().map(|rb| (ra, rb)))
    }) else {
        panic!("curl thread panicked")
    };
    assert_eq!(ra.json().unwrap()["environment"]["POD_NAME"], "server-a");
    assert_eq!(rb.json().unwrap()["environment"]["POD_NAME"], "server-b");
}

#[test]
fn cleanup_command_removes_leftovers_by_prefix() {
    let Some(()) = available_or_skip("cleanup_command_removes_leftovers_by_prefix") else {
        return;
    };
    let prefix = format!("mwt{:x}leak", std::process::id());
    for i in 0..2 {
        std::mem::forget(Netns::create(&format!("{prefix}-{i}")).unwrap());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cluster-cleanup"))
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 namespace(s)"));
    assert!(!list_namespaces().iter().any(|n| n.starts_with(&prefix)));
    assert!(remove_by_prefix(&prefix).is_empty());
}

fn root_links() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut links: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .collect();
    links.sort();
    links
}
