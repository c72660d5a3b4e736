//! Authorization of inbound streams and requests: the attributes policies see, the
//! decision, and the line every refusal leaves in the log (target `access`).

use std::net::SocketAddr;
use std::sync::Arc;

use meshward_policy::{HttpRequest, Identity, PolicySet, Request};

use super::state::LocalPod;

/// The verified client of an mTLS tunnel.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) identity: Identity,
    pub(crate) spiffe_id: String,
    /// The client's leaf certificate (XFCC's `Hash`).
    pub(crate) leaf_der: Vec<u8>,
}

/// One stream to a local pod: a CONNECT on an HBONE tunnel, or a plaintext connection.
#[derive(Debug)]
pub(crate) struct InboundStream {
    /// `None` for plaintext (PERMISSIVE).
    pub(crate) peer: Option<Arc<Peer>>,
    /// The client: the source pod as its node reported it, or the TCP peer.
    pub(crate) source: SocketAddr,
    /// The pod address the client asked for.
    pub(crate) destination: SocketAddr,
    pub(crate) pod: Arc<LocalPod>,
}

impl InboundStream {
    /// The request policies judge, at L4 (`http: None`) or for one HTTP request.
    pub(crate) fn request(&self, http: Option<HttpRequest>) -> Request {
        Request {
            source: self.peer.as_ref().map(|p| p.identity.clone()),
            source_namespace: None,
            source_ip: self.source.ip(),
            remote_ip: self.source.ip(),
            destination_ip: self.destination.ip(),
            destination_port: self.destination.port(),
            sni: None,
            http,
        }
    }

    /// The client's principal for logs: `-` for plaintext.
    pub(crate) fn principal(&self) -> &str {
        self.peer.as_ref().map_or("-", |p| p.identity.principal())
    }

    /// Decides and logs; `true` when allowed.
    pub(crate) fn authorize(&self, policies: &PolicySet, request: &Request) -> bool {
        let decision = policies.evaluate(&self.pod.workload, request);
        let (method, path) = request
            .http
            .as_ref()
            .map_or(("-", "-"), |h| (h.method(), h.target().path()));
        let policy = decision
            .policy
            .map_or_else(|| "-".to_owned(), |p| p.id.to_string());
        if decision.is_allowed() {
            tracing::debug!(
                target: "access",
                src_addr = %self.source, src_principal = self.principal(),
                dst_addr = %self.destination, dst_pod = %self.pod.info.name,
                method, path, %policy, "allowed: {decision}"
            );
        } else {
            tracing::info!(
                target: "access",
                src_addr = %self.source, src_principal = self.principal(),
                dst_addr = %self.destination, dst_pod = %self.pod.info.name,
                dst_namespace = %self.pod.info.namespace,
                method, path, %policy, "refused: {decision}"
            );
        }
        decision.is_allowed()
    }
}
