//! One inbound stream to a local pod: its two identities, the attributes policies
//! and external authorizers see of it, and the record of a decision (`admit.rs`
//! makes it; `access_log.rs` writes it).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use meshward_extauthz::PeerInput;
use meshward_policy::{CustomCheck, HttpRequest, Request};
use meshward_spiffe::SpiffeId;

use super::coalesce::OpenStream;
use super::state::LocalPod;
use crate::metrics::{ConnectionLabels, DecisionMetrics, Principal, Reporter, RequestMetrics};

/// The verified client of an mTLS tunnel.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) spiffe_id: SpiffeId,
    /// XFCC's `Hash` of the client's leaf certificate.
    pub(crate) leaf_hash: String,
    /// Its `notAfter`: past it, the identity is gone, and so are new streams.
    pub(crate) expires_at: std::time::SystemTime,
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
    /// Its part of the access log's text line (`access_log.rs`): rendered
    /// once, as every request on the stream logs it.
    peers_text: OnceLock<Box<str>>,
    /// The XFCC its requests carry, made at the first (it was 2.6k instructions
    /// of an HTTP request when made for each).
    xfcc: OnceLock<Option<http::HeaderValue>>,
    pub(crate) request_metrics: RequestMetrics,
    pub(crate) decision_metrics: DecisionMetrics,
    /// Counted among its HBONE connection's open streams while it lives
    /// (`coalesce.rs`; held for its drop); `None` for plaintext.
    _counted: Option<OpenStream>,
}

/// A decision, as logs and metrics tell it. Its words are shared with the
/// policy set (made when the policy was compiled), not formatted per request.
#[derive(Debug, Clone)]
pub(crate) struct DecisionRecord {
    pub(crate) allowed: bool,
    /// `namespace/name` of the deciding policy, or `-`.
    pub(crate) policy: Arc<str>,
    /// Its action (`ALLOW`, `DENY`, `CUSTOM`), or `-`.
    pub(crate) action: &'static str,
    /// The decision in words (which policy and rule, or which default).
    pub(crate) reason: Arc<str>,
    /// The CUSTOM policy whose provider allowed it, if one matched: a connection
    /// kept open is closed when another one comes to apply (`revocation.rs`).
    pub(crate) approved_by: Option<CustomApproval>,
}

impl DecisionRecord {
    /// A refusal by `policy` (`-`: by no policy) for `reason`.
    pub(crate) fn refused(policy: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Self {
        Self {
            allowed: false,
            policy: policy.into(),
            action: "-",
            reason: reason.into(),
            approved_by: None,
        }
    }
}

/// Which CUSTOM policy's provider was asked, and allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomApproval {
    policy: String,
    provider: String,
}

impl CustomApproval {
    pub(crate) fn of(check: &CustomCheck<'_>) -> Self {
        Self {
            policy: check.policy.to_string(),
            provider: check.provider.to_owned(),
        }
    }

    /// Whether this approval answers `check` (the same policy, the same provider).
    pub(crate) fn answers(&self, check: &CustomCheck<'_>) -> bool {
        self.policy == check.policy.to_string() && self.provider == check.provider
    }
}

impl InboundStream {
    pub(crate) fn new(
        peer: Option<Arc<Peer>>,
        source: SocketAddr,
        destination: SocketAddr,
        pod: Arc<LocalPod>,
    ) -> Self {
        Self {
            peer,
            source,
            destination,
            pod,
            peers_text: OnceLock::new(),
            xfcc: OnceLock::new(),
            request_metrics: RequestMetrics::default(),
            decision_metrics: DecisionMetrics::default(),
            _counted: None,
        }
    }

    /// The stream, counted among its tunnel's open streams while it lives.
    pub(crate) fn counted(self, open: OpenStream) -> Self {
        Self {
            _counted: Some(open),
            ..self
        }
    }

    /// Its part of the access log's text line, made by `render` the first time.
    pub(super) fn peers_text(&self, render: impl FnOnce() -> String) -> &str {
        self.peers_text.get_or_init(|| render().into_boxed_str())
    }

    /// The XFCC its HTTP requests carry to the pod ([`crate::xfcc::value`]).
    pub(crate) fn xfcc(&self) -> Option<http::HeaderValue> {
        let made = self.xfcc.get_or_init(|| {
            let by = self.pod.tls.as_ref().map(|t| &t.spiffe_id);
            let peer = self.peer.as_ref().map(|p| crate::xfcc::PeerCertificate {
                spiffe_id: &p.spiffe_id,
                leaf_hash: &p.leaf_hash,
            });
            crate::xfcc::value(by, peer.as_ref())
        });
        made.clone()
    }

    /// The request policies judge, at L4 (`http: None`) or for one HTTP request.
    pub(crate) fn request(&self, http: Option<Box<HttpRequest>>) -> Request {
        Request {
            source: self.peer.as_ref().map(|p| p.spiffe_id.clone()),
            source_namespace: None,
            source_ip: self.source.ip(),
            remote_ip: self.source.ip(),
            destination_ip: self.destination.ip(),
            destination_port: self.destination.port(),
            sni: None,
            http,
        }
    }

    /// The two ends as an external authorizer sees them: the client (its verified
    /// SPIFFE ID) and the pod.
    pub(crate) fn check_peers(&self) -> (PeerInput, PeerInput) {
        (
            PeerInput {
                address: self.source,
                principal: self.peer.as_ref().map(|p| p.spiffe_id.to_string()),
            },
            PeerInput {
                address: self.destination,
                principal: self.pod.tls.as_ref().map(|t| t.spiffe_id.to_string()),
            },
        )
    }

    /// The client's SPIFFE ID; `unknown` for plaintext.
    pub(crate) fn source_principal(&self) -> Principal<'_> {
        Principal(self.peer.as_ref().map(|p| &p.spiffe_id))
    }

    /// The pod's SPIFFE ID (the certificate the client was shown); `unknown` without.
    pub(crate) fn destination_principal(&self) -> Principal<'_> {
        Principal(self.pod.tls.as_ref().map(|t| &t.spiffe_id))
    }

    pub(crate) fn connection_labels(&self) -> ConnectionLabels {
        ConnectionLabels {
            reporter: Reporter::Destination,
            source_principal: self.source_principal().0.cloned(),
            destination_principal: self.destination_principal().0.cloned(),
            mutual_tls: self.peer.is_some(),
        }
    }
}
