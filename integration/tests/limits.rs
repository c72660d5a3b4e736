//! The daemons' `limits:` end to end: past `max_streams_per_connection` the HBONE
//! pool opens a second connection; past `max_connections` a listener leaves
//! connections in the kernel's backlog until one ends; pooled connections without
//! streams close after `pool_idle_timeout`; a peer that never finishes its TLS
//! handshake (or, after mTLS, the HTTP/2 preface) is dropped after
//! `handshake_timeout`.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use meshward_integration::hbone::{LeafSpec, mint_leaf, silent_after_handshake};
use meshward_integration::{Mesh, available_or_skip};
use support::{
    TD, connect_from, curl_spire, echo_mesh, echoed, eventually, example, node_metric, read_echo,
    tcp_echo,
};

const LIMITS: &str = "limits:\n  max_connections: 2\n  max_streams_per_connection: 1\n  pool_idle_timeout: 2s\n  handshake_timeout: 2s\n";

#[test]
fn streams_spill_connections_wait_and_idle_tunnels_close() {
    let Some(()) = available_or_skip("streams_spill_connections_wait_and_idle_tunnels_close")
    else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true).proxy_yaml(LIMITS);
    });
    let _tcp = tcp_echo(&mesh);
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let echo = SocketAddr::new(mesh.pod_ip("echoserver").unwrap(), 9000);
    let tunnels = |mesh: &Mesh| node_metric(mesh, "node-1", "meshward_hbone_connections", &[]);

    let first = eventually(&mesh, "the first connection echoes", || {
        let mut c = connect_from(&mesh, "curl-spire", echo).map_err(|e| e.to_string())?;
        echoed(&mut c, Duration::from_secs(5)).map(|()| c)
    });
    assert_eq!(tunnels(&mesh), 1.0, "{}", mesh.logs());
    // one stream per connection: the second client gets its own HBONE connection
    let mut second = connect_from(&mesh, "curl-spire", echo).unwrap();
    echoed(&mut second, Duration::from_secs(5)).unwrap();
    assert_eq!(
        tunnels(&mesh),
        2.0,
        "a second connection past the stream cap"
    );

    // two connections served at once: the third waits in the backlog, unserved
    let mut third = connect_from(&mesh, "curl-spire", echo).unwrap();
    let waiting = echoed(&mut third, Duration::from_millis(1500));
    assert!(waiting.is_err(), "served past max_connections: {waiting:?}");
    // until one of the two ends: then it is served, bytes sent meanwhile included
    first.shutdown(std::net::Shutdown::Both).unwrap();
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    read_echo(&mut third).unwrap();

    // without streams, pooled connections close after pool_idle_timeout (2 s)
    drop((second, third));
    eventually(&mesh, "idle HBONE connections closed", || {
        match tunnels(&mesh) {
            0.0 => Ok(()),
            n => Err(format!("{n} still open")),
        }
    });
    assert_eq!(
        node_metric(
            &mesh,
            "node-1",
            "meshward_hbone_connections_opened_total",
            &[]
        ),
        2.0,
        "the third client reused an idle connection"
    );

    // a peer that connects to 15008 and never speaks is dropped after 2 s
    let node_1 = mesh.cluster.node("node-1").unwrap().netns();
    let hbone = SocketAddr::new(echo.ip(), 15008);
    let mut silent = node_1
        .run(move || TcpStream::connect_timeout(&hbone, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let read = silent.read(&mut [0u8; 64]);
    assert!(
        matches!(&read, Ok(0)) || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "not closed within 8 s: {read:?}"
    );
    let timeouts = node_metric(
        &mesh,
        "node-2",
        "meshward_tls_handshake_failures_total",
        &["direction=\"inbound\"", "reason=\"timeout\""],
    );
    assert_eq!(timeouts, 1.0, "{}", mesh.logs());

    // one that completes mTLS and then never sends the HTTP/2 preface is dropped
    // after handshake_timeout too
    let ca = mesh.issuer_ca_dir().unwrap();
    let spec = LeafSpec::svid(&format!("spiffe://{TD}/ns/default/sa/curl-spire"));
    let credentials = mint_leaf(&ca, &spec).unwrap();
    let kept = silent_after_handshake(node_1, hbone, &credentials, Duration::from_secs(8)).unwrap();
    assert!(
        kept.is_some(),
        "an mTLS peer without HTTP/2 was still connected after 8 s"
    );
}
