//! SIGTERM drains a node daemon (`proxy/src/datapath/drain.rs`): it stops
//! accepting, a stream already under way goes on, and the daemon stops once
//! nothing is open, or when `limits.drain_grace_period` has passed.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshward_integration::{Mesh, available_or_skip, process_is_running};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{connect_from, draining_echo_mesh, echoed, eventually};

const GRACE: Duration = Duration::from_secs(4);

/// SIGTERM to node-2's daemon, without waiting for it; its PID.
fn terminate_node_2(mesh: &Mesh) -> i32 {
    let pid = mesh.daemon_pid("node-2").unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    pid
}

/// How long `pid` took to exit, at most `within`.
fn exits_within(pid: i32, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if !process_is_running(pid) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn sigterm_keeps_streams_under_way_refuses_new_ones_and_stops_when_drained() {
    let Some(()) = available_or_skip(
        "sigterm_keeps_streams_under_way_refuses_new_ones_and_stops_when_drained",
    ) else {
        return;
    };
    let (mut mesh, _echo, _tcp) = draining_echo_mesh(GRACE);
    let echo = SocketAddr::new(mesh.pod_ip("echoserver").unwrap(), 9000);
    let open = |mesh: &Mesh| {
        let mut c = connect_from(mesh, "curl-spire", echo).map_err(|e| e.to_string())?;
        echoed(&mut c, Duration::from_secs(5)).map(|()| c)
    };

    // a TCP stream held through the destination node while its daemon drains
    let mut held = eventually(&mesh, "a held stream", || open(&mesh));
    let pid = terminate_node_2(&mesh);
    std::thread::sleep(Duration::from_millis(500));
    echoed(&mut held, Duration::from_secs(2)).expect("a stream under way goes on");
    assert!(process_is_running(pid), "stopped with a stream open");
    assert!(open(&mesh).is_err(), "a new stream while draining");
    // the grace period ends it
    let took = exits_within(pid, GRACE + Duration::from_secs(5));
    assert!(took.is_some(), "still running past the grace period");
    assert!(
        mesh.daemon_log("node-2")
            .contains("drain_grace_period passed with connections still open"),
        "{}",
        mesh.daemon_log("node-2")
    );
    assert!(
        echoed(&mut held, Duration::from_secs(2)).is_err(),
        "cut at the end"
    );
    drop(held);

    // with nothing left open, it stops as soon as the last stream ends
    mesh.stop_daemon("node-2");
    mesh.start_daemon("node-2").unwrap();
    let held = eventually(&mesh, "a held stream after the restart", || open(&mesh));
    let pid = terminate_node_2(&mesh);
    std::thread::sleep(Duration::from_millis(300));
    assert!(process_is_running(pid), "stopped with a stream open");
    held.shutdown(std::net::Shutdown::Both).unwrap();
    drop(held);
    let took = exits_within(pid, GRACE).expect("did not stop once drained");
    assert!(
        mesh.daemon_log("node-2")
            .contains("drained: every connection ended"),
        "stopped after {took:?}: {}",
        mesh.daemon_log("node-2")
    );
}
