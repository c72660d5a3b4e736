//! A hitless upgrade: each node's daemon is replaced by a new one as a DaemonSet
//! rolling update with `maxSurge: 1, maxUnavailable: 0` does, under HTTP/1.1 and
//! HTTP/2 load and with a long TCP stream open through it. The listeners are
//! shared (SO_REUSEPORT) and handed over on close (`tcp_migrate_req`), the capture
//! rules stay in place, the old daemon drains (`proxy/src/capture.rs`,
//! `cli/src/proxy_cli/mod.rs`, `proxy/src/datapath/drain.rs`).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshward_integration::{Mesh, Process, available_or_skip};
use support::{connect_from, draining_echo_mesh, echoed, eventually, status};

/// Longer than any stream below: the old daemon keeps them to their end.
const GRACE: Duration = Duration::from_secs(30);
/// How long each held stream lives.
const STREAM: Duration = Duration::from_secs(10);

/// A shell loop in curl-spire: a request on a new connection every 50 ms (curl
/// `extra` arguments), each status code a line of `<name>.codes`, until
/// `<name>.stop` exists or 120 s have passed.
fn request_loop(mesh: &Mesh, name: &str, url: &str, extra: &str) -> (Process, PathBuf, PathBuf) {
    let dir = mesh.cluster.log_dir();
    let (codes, stop) = (
        dir.join(format!("{name}.codes")),
        dir.join(format!("{name}.stop")),
    );
    let script = format!(
        "end=$(( $(date +%s) + 120 )); while [ ! -e {stop} ] && [ $(date +%s) -lt $end ]; do \
         echo \"$(date +%s.%N) $(curl -sS -o /dev/null -w '%{{http_code}}' --max-time 5 {extra} {url} 2>&1)\" >> {codes}; sleep 0.05; done",
        stop = stop.display(),
        codes = codes.display(),
    );
    let process = mesh
        .cluster
        .spawn_in_pod("curl-spire", "sh", &["-c", &script])
        .unwrap();
    (process, codes, stop)
}

/// Stops a loop and returns its status codes.
fn codes_of((mut process, codes, stop): (Process, PathBuf, PathBuf)) -> Vec<String> {
    std::fs::write(&stop, "").unwrap();
    process.terminate(Duration::from_secs(10));
    read_lines(&codes)
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// After a first exchange that marks the stream as TCP, writes a byte every 50 ms
/// for [`STREAM`] and reads each echo back; the bytes that came back, or where it
/// broke.
fn hold_stream(mut stream: TcpStream) -> Result<usize, String> {
    echoed(&mut stream, Duration::from_secs(5))?;
    let started = Instant::now();
    let mut echoed = 0;
    while started.elapsed() < STREAM {
        let byte = [b'a' + (echoed % 26) as u8];
        stream
            .write_all(&byte)
            .map_err(|e| format!("write after {echoed} bytes: {e}"))?;
        let mut back = [0u8];
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("read after {echoed} bytes: {e}"))?;
        if back != byte {
            return Err(format!("byte {echoed} came back as {back:?}"));
        }
        echoed += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(echoed)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn replacing_each_daemon_under_load_drops_no_request_and_no_stream_byte() {
    let Some(()) =
        available_or_skip("replacing_each_daemon_under_load_drops_no_request_and_no_stream_byte")
    else {
        return;
    };
    let (mut mesh, _echo, _tcp) = draining_echo_mesh(GRACE);
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = format!("http://{ip}:8080/");
    eventually(&mesh, "the first request", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });
    let http1 = request_loop(&mesh, "http1", &url, "--http1.1");
    let http2 = request_loop(&mesh, "http2", &url, "--http2-prior-knowledge");
    let echo = SocketAddr::new(ip, 9000);

    let mut report = Vec::new();
    // the destination's daemon first (inbound HBONE), then the source's (capture)
    for node in ["node-2", "node-1"] {
        let stream = connect_from(&mesh, "curl-spire", echo).unwrap();
        let held = std::thread::spawn(move || hold_stream(stream));
        std::thread::sleep(Duration::from_millis(500));
        let began = unix_now();
        let upgrade = mesh
            .upgrade_daemon(node, GRACE + Duration::from_secs(5))
            .unwrap();
        let echoed = held.join().unwrap();
        assert!(
            echoed.as_ref().is_ok_and(|n| *n > 100),
            "the stream held through {node}'s upgrade: {echoed:?}\n--- old daemon ---\n{}",
            upgrade.old_log
        );
        assert!(
            upgrade.old_drained_after < GRACE,
            "{node}'s old daemon did not drain: {upgrade:?}"
        );
        assert!(
            upgrade
                .old_log
                .contains("capture rules kept: a successor daemon serves this node"),
            "{}",
            upgrade.old_log
        );
        report.push(format!(
            "{node} (from {began:.3}): new daemon ready after {:?}, old drained {:?} after SIGTERM, stream {} bytes",
            upgrade.new_ready_after,
            upgrade.old_drained_after,
            echoed.unwrap_or_default()
        ));
    }
    // requests after both upgrades go through the new daemons
    std::thread::sleep(Duration::from_secs(2));
    for (name, codes) in [("HTTP/1.1", codes_of(http1)), ("HTTP/2", codes_of(http2))] {
        let failed: Vec<&String> = codes.iter().filter(|c| !c.ends_with(" 200")).collect();
        assert!(
            codes.len() > 100 && failed.is_empty(),
            "{name}: {} of {} requests failed: {failed:?}\n{}",
            failed.len(),
            codes.len(),
            report.join("\n")
        );
        report.push(format!("{name}: {} requests, none failed", codes.len()));
    }
    eprintln!("{}", report.join("\n"));
}
