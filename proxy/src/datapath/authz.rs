//! Authorization of inbound streams and requests: the attributes policies see, the
//! decision (counted by policy and action), and the access log: one line on target
//! `access` per connection or request, with both identities, the decision, the
//! deciding policy and why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshward_extauthz::{CheckInput, PeerInput, Verdict};
use meshward_policy::{CustomCheck, HttpRequest, PolicySet, Request};
use meshward_spiffe::SpiffeId;

use super::custom::{self, Providers};
use super::policies::Policies;
use super::state::{LocalPod, MeshState};
use crate::metrics::{self, ConnectionLabels, Principal, Reporter};

/// The verified client of an mTLS tunnel.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) spiffe_id: SpiffeId,
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

/// A decision, as logs and metrics tell it.
#[derive(Debug, Clone)]
pub(crate) struct DecisionRecord {
    pub(crate) allowed: bool,
    /// `namespace/name` of the deciding policy, or `-`.
    pub(crate) policy: String,
    /// The decision in words (which policy and rule, or which default).
    pub(crate) reason: String,
    /// The CUSTOM policy whose provider allowed it, if one matched: a connection
    /// kept open is closed when another one comes to apply (`revocation.rs`).
    pub(crate) approved_by: Option<CustomApproval>,
}

impl DecisionRecord {
    /// A refusal by `policy` (`-`: by no policy) for `reason`.
    pub(crate) fn refused(policy: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            allowed: false,
            policy: policy.into(),
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
    /// The request policies judge, at L4 (`http: None`) or for one HTTP request.
    pub(crate) fn request(&self, http: Option<HttpRequest>) -> Request {
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

    /// Decides and counts the decision (a CUSTOM policy that matches denies: this
    /// is for requests no provider was asked about).
    pub(crate) fn authorize(&self, policies: &PolicySet, request: &Request) -> DecisionRecord {
        self.record(request, policies.evaluate(&self.pod.workload, request))
    }

    /// Decides, once the provider of a matching CUSTOM policy allowed `request`.
    pub(crate) fn authorize_after_custom(
        &self,
        policies: &PolicySet,
        request: &Request,
    ) -> DecisionRecord {
        self.record(
            request,
            policies.evaluate_after_custom(&self.pod.workload, request),
        )
    }

    fn record(&self, request: &Request, decision: meshward_policy::Decision<'_>) -> DecisionRecord {
        let (policy, action) = decision.policy.map_or(("-".to_owned(), "-"), |p| {
            (p.id.to_string(), p.action.as_str())
        });
        let layer = if request.http.is_some() { "l7" } else { "l4" };
        metrics::decision(layer, decision.is_allowed(), &policy, action);
        DecisionRecord {
            allowed: decision.is_allowed(),
            policy,
            reason: decision.to_string(),
            approved_by: None,
        }
    }

    /// The one L4 decision of this stream (a TCP connection: judged once), made
    /// with the policies in force now; a refusal is logged here. Called when the
    /// CONNECT for a `tcp` port arrives (so the refusal is a `401`) or, for a
    /// detected TCP stream, before its first byte is forwarded.
    ///
    /// A CUSTOM policy that matches the connection asks its provider first (the
    /// gRPC form, as Envoy's network ext_authz: no HTTP part in the check).
    pub(crate) async fn authorize_connection(
        &self,
        policies: &Policies,
        providers: &Providers,
        started: std::time::Instant,
    ) -> DecisionRecord {
        let set = policies.borrow().clone();
        let request = self.request(None);
        let record = match set.custom_check(&self.pod.workload, &request) {
            None => self.authorize(&set, &request),
            Some(check) => {
                let (source, destination) = self.check_peers();
                let input = CheckInput {
                    source,
                    destination,
                    http: None,
                };
                let asked = custom::ask(providers, &check, &input).await;
                if let Verdict::Allow { .. } = asked.verdict {
                    let mut record = self.authorize_after_custom(&set, &request);
                    record.reason = format!("{}; {}", asked.reason, record.reason);
                    record.approved_by = Some(CustomApproval::of(&check));
                    record
                } else {
                    let policy = check.policy.to_string();
                    metrics::decision("l4", false, &policy, "CUSTOM");
                    DecisionRecord::refused(policy, asked.reason)
                }
            }
        };
        if !record.allowed {
            self.log_connection(&record, 0, 0, started.elapsed(), None);
        }
        record
    }

    /// Whether the peer is still trusted by the pod (see [`MeshState::trusts`]).
    pub(crate) fn peer_trusted(&self, state: &MeshState) -> bool {
        self.peer
            .as_ref()
            .is_none_or(|p| state.trusts(self.destination.ip(), &p.spiffe_id))
    }

    /// The access log line of one HTTP request.
    pub(crate) fn log_request(
        &self,
        method: &str,
        path: &str,
        status: u16,
        record: &DecisionRecord,
        duration: Duration,
    ) {
        tracing::info!(
            target: "access",
            src_addr = %self.source,
            src_principal = self.source_principal().to_string().as_str(),
            dst_addr = %self.destination,
            dst_workload = %self.pod.info.name,
            dst_namespace = %self.pod.info.namespace,
            dst_principal = self.destination_principal().to_string().as_str(),
            method,
            path,
            status,
            decision = if record.allowed { "allow" } else { "deny" },
            policy = %record.policy,
            duration_ms = duration.as_secs_f64() * 1e3,
            "{}",
            record.reason
        );
    }

    /// The access log line of one TCP connection, when it ends.
    pub(crate) fn log_connection(
        &self,
        record: &DecisionRecord,
        sent: u64,
        received: u64,
        duration: Duration,
        error: Option<&str>,
    ) {
        tracing::info!(
            target: "access",
            src_addr = %self.source,
            src_principal = self.source_principal().to_string().as_str(),
            dst_addr = %self.destination,
            dst_workload = %self.pod.info.name,
            dst_namespace = %self.pod.info.namespace,
            dst_principal = self.destination_principal().to_string().as_str(),
            decision = if record.allowed { "allow" } else { "deny" },
            policy = %record.policy,
            bytes_sent = sent,
            bytes_received = received,
            duration_ms = duration.as_secs_f64() * 1e3,
            error = error.unwrap_or("-"),
            "connection complete: {}",
            record.reason
        );
    }
}
