//! Outbound (15001): connections pods make, taken by TPROXY. The source pod is
//! found by its address. An enrolled pod (it has an SVID) calling an address of
//! the mesh goes over HBONE (a Service's cluster IP first resolved to one of its
//! pods, `services.rs`). A pod without identity calling a pod of this node gets
//! that pod's inbound checks here (STRICT refuses); anything else passes through
//! unchanged (and meets STRICT at the destination node, as in Istio).

use meshward_spiffe::SpiffeId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use super::services::Resolved;
use super::socket::{connect_marked, reset};
use super::state::PodTls;
use super::{Shared, copy, inbound};
use crate::capture::PASSTHROUGH_MARK;
use crate::metrics::{ConnectionLabels, Reporter};

/// One connection a pod made (TPROXY: the accepted socket's local address is
/// the original destination).
pub(crate) async fn connection(shared: Arc<Shared>, tcp: TcpStream, client: SocketAddr) {
    match tcp.local_addr() {
        Ok(target) => handle(&shared, tcp, client, target).await,
        Err(e) => tracing::warn!(%client, "outbound: no original destination: {e}"),
    }
}

async fn handle(shared: &Arc<Shared>, tcp: TcpStream, client: SocketAddr, target: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let state = shared.state.borrow().clone();
    let tls = state.pod(client.ip()).and_then(|pod| pod.tls.clone());
    // A Service address: one of the Service's pods, whoever calls (kube-proxy's
    // DNAT would otherwise pick a pod of this node behind our back).
    let destination = match shared.services.resolve(target) {
        Resolved::Endpoint(endpoint) => endpoint,
        Resolved::NoEndpoint => {
            tracing::info!(
                target: "access",
                src_addr = %client, dst_addr = %target,
                "outbound refused: the Service has no ready endpoint"
            );
            return reset(tcp);
        }
        Resolved::NotAService => target,
    };
    // A caller without identity reaching a pod of this node never leaves the node,
    // so no other node's inbound checks would see it: it gets this node's.
    if tls.is_none() {
        if let Some(pod) = state.pod(destination.ip()) {
            let pod = pod.clone();
            return Box::pin(inbound::plaintext_to(
                shared.clone(),
                tcp,
                client,
                destination,
                pod,
            ))
            .await;
        }
    }
    let meshed = state.pod(destination.ip()).is_some()
        || shared
            .outbound
            .mesh_cidrs
            .iter()
            .any(|net| net.contains(&destination.ip()));
    // The connect and passthrough futures are boxed: an async fn's state is as
    // large as its largest stage, and every open connection pays for it. Boxed,
    // a connection in its copy stage holds a pointer instead (8.6 KB -> see
    // benches/README.md, memory per idle connection).
    let Some(tls) = tls.filter(|_| meshed) else {
        return Box::pin(passthrough(shared, tcp, client, destination)).await;
    };
    let remote = state.pod(destination.ip()).is_none();
    let route = Route {
        client,
        service: target,
        destination,
        remote,
    };
    through_tunnel(shared, tcp, &tls, route).await;
}

/// Where an outbound connection goes.
struct Route {
    client: SocketAddr,
    /// What the client asked for (a Service address, or the destination itself).
    service: SocketAddr,
    destination: SocketAddr,
    /// The destination pod runs on another node.
    remote: bool,
}

/// The connection's bytes through an HBONE tunnel to its destination's node, as
/// the client's identity (`tls`).
async fn through_tunnel(shared: &Arc<Shared>, mut tcp: TcpStream, tls: &PodTls, route: Route) {
    let Route {
        client,
        service: target,
        destination,
        remote,
    } = route;
    let started = Instant::now();
    let peer = SocketAddr::new(destination.ip(), shared.hbone_port);
    let open = shared.hbone.open(tls, client, destination, peer, remote);
    let mut tunnel = match Box::pin(open).await {
        Ok(tunnel) => tunnel,
        Err(e) => {
            tracing::info!(
                target: "access",
                src_addr = %client, src_principal = %tls.spiffe_id, dst_addr = %destination,
                service_addr = %target, "outbound refused: {e}{}", e.hint()
            );
            return reset(tcp);
        }
    };
    let labels = ConnectionLabels {
        reporter: Reporter::Source,
        source_principal: Some(tls.spiffe_id.clone()),
        destination_principal: Some(SpiffeId::clone(&tunnel.peer_id)),
        mutual_tls: true,
    };
    labels.opened();
    let (moved, result) =
        copy::bidirectional(&mut tcp, &mut tunnel.io, shared.limits.idle_timeout).await;
    labels.closed(moved.sent, moved.received);
    tracing::debug!(
        target: "access",
        src_addr = %client, src_principal = %tls.spiffe_id, dst_addr = %destination,
        service_addr = %target, dst_principal = %tunnel.peer_id, bytes_sent = moved.sent, bytes_received = moved.received,
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        error = result.as_ref().err().map_or_else(|| "-".to_owned(), ToString::to_string),
        "outbound complete"
    );
    // the peer reset the stream (a TCP policy refused it): reset the client too
    if result.is_err() {
        reset(tcp);
    }
}

/// Bytes that leave the mesh (or meet STRICT on another node) as they are. The
/// socket carries [`PASSTHROUGH_MARK`]: capture drops it on the way to a pod of
/// this node, so a passthrough can never skip a local pod's inbound checks.
async fn passthrough(shared: &Shared, mut tcp: TcpStream, client: SocketAddr, target: SocketAddr) {
    let mark = shared.mark | PASSTHROUGH_MARK;
    let mut upstream = match connect_marked(target, mark, shared.limits.connect_timeout).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::debug!(%client, %target, "passthrough failed: {e}");
            return reset(tcp);
        }
    };
    let labels = ConnectionLabels {
        reporter: Reporter::Source,
        source_principal: None,
        destination_principal: None,
        mutual_tls: false,
    };
    labels.opened();
    let (moved, result) =
        copy::bidirectional(&mut tcp, &mut upstream, shared.limits.idle_timeout).await;
    labels.closed(moved.sent, moved.received);
    if let Err(e) = result {
        tracing::debug!(%client, %target, "passthrough ended: {e}");
        reset(tcp);
    }
}
