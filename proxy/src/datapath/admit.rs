//! The one admission step: whether a stream (L4) or a request (L7) reaches its pod,
//! and, for connections held open, whether it still may.
//!
//! The rules, in order: the pod still trusts the peer's trust domain; the request's
//! token verifies (RequestAuthentication; L7 only); the provider of the first
//! matching CUSTOM policy allows it (asked with the body it reads); DENY and ALLOW
//! policies allow it. The answer is [`Admitted`] or a typed [`Refusal`]
//! (`refusal.rs`), which knows its HTTP or gRPC response, its CONNECT status and
//! its access-log record; each boundary renders it (`http.rs` per request,
//! `inbound.rs` per CONNECT, `serve.rs` per detected TCP stream). [`rejudge`]
//! applies the same rules to a held connection on each change (`revocation.rs`),
//! taking the provider's earlier answer instead of asking it again.

use std::sync::{Arc, LazyLock};

use http::Request;
use meshward_extauthz::{CheckInput, HeaderChange, Verdict};
use meshward_jwt::JwtFailure;
use meshward_policy::{CustomCheck, HttpRequest, JwtClaims, PolicySet, Workload};

use super::body::ProxyBody;
use super::http::head::{Head, LastAuthority};
use super::jwks::RequestKeys;
use super::refusal::{CustomAnswer, Refusal};
use super::state::MeshState;
use super::stream::{CustomApproval, DecisionRecord, InboundStream, Peer};
use super::upstream::Version;
use super::{Shared, custom};
use crate::metrics;

/// A stream or request the pod may receive.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) record: DecisionRecord,
    /// The request as policy judged it: a held connection is judged again from it.
    pub(crate) judged: meshward_policy::Request,
    /// Headers the CUSTOM provider adds to the pod's response.
    pub(crate) on_allow: Vec<HeaderChange>,
}

/// Judges `stream` as one TCP connection, with the policies and trust of now.
pub(crate) async fn connection(
    shared: &Shared,
    stream: &InboundStream,
) -> Result<Admitted, Refusal> {
    let layer = "l4";
    trusted(
        &shared.state.borrow(),
        stream.destination.ip(),
        stream.peer.as_deref(),
    )?;
    let set = shared.policies.borrow().clone();
    let judged = stream.request(None);
    let approval = match set.custom_check(&stream.pod.workload, &judged) {
        None => None,
        Some(check) => {
            // the gRPC form, as Envoy's network ext_authz: no HTTP part in the check
            let (source, destination) = stream.check_peers();
            let input = CheckInput {
                source,
                destination,
                http: None,
            };
            let asked = custom::ask(&shared.providers, &check, &input).await;
            Some(allowed_by(layer, stream, &check, asked)?.approval)
        }
    };
    let record = decide(layer, stream, &set, &judged, approval)?;
    Ok(Admitted {
        record,
        judged,
        on_allow: Vec::new(),
    })
}

/// Judges one HTTP request whose head `http::prepare_head` has made what the pod
/// may receive. Its headers move into the judged request (`Admitted::judged`),
/// and a CUSTOM provider's changes are made there, so policy judges them as
/// changed; `http::as_judged` gives them back for forwarding. Its authority is
/// normalized through the connection's `authority`. `path` becomes the
/// normalized path as soon as it is known (the access log's, refused or not).
pub(crate) async fn request(
    shared: &Shared,
    stream: &InboundStream,
    request: &mut Request<ProxyBody>,
    head: &Head,
    authority: &LastAuthority,
    path: &mut String,
) -> Result<Admitted, Refusal> {
    let layer = "l7";
    let set = shared.policies.borrow().clone();
    // a token that does not verify is refused here; one that does gives the request
    // principal, and the headers are shaped (token removed, claims written) before
    // policy sees them
    let claims = authenticate(shared, stream, &set, request)
        .await
        .map_err(|failure| unauthenticated(failure, head, request))?;
    let malformed = |e: meshward_policy::BadRequest| Refusal::Malformed(e.to_string());
    let authority = authority.parse(&head.authority).map_err(malformed)?;
    let headers = std::mem::take(request.headers_mut());
    let http = HttpRequest::with_authority(
        request.method().as_str(),
        &head.target,
        authority,
        headers,
        set.options().path_normalization,
    )
    .map_err(malformed)?;
    http.target().path().clone_into(path);
    let mut judged = stream.request(Some(Box::new(match claims {
        Some(claims) => http.with_jwt(claims),
        None => http,
    })));
    trusted(
        &shared.state.borrow(),
        stream.destination.ip(),
        stream.peer.as_deref(),
    )?;
    let mut on_allow = Vec::new();
    let approval = match set.custom_check(&stream.pod.workload, &judged) {
        None => None,
        Some(check) => {
            // boxed: the exchange with a provider is the largest state a request
            // can have, and most requests never ask one (see `http.rs`)
            let ask = ask_about_request(shared, stream, &check, request, &judged, head.version);
            let allow = Box::pin(ask).await?;
            if let Some(http) = judged.http.as_mut() {
                let headers = http.headers_mut();
                meshward_extauthz::apply_headers(headers, &allow.upstream, &allow.remove);
            }
            on_allow = allow.downstream;
            Some(allow.approval)
        }
    };
    let record = decide(layer, stream, &set, &judged, approval)?;
    Ok(Admitted {
        record,
        judged,
        on_allow,
    })
}

/// Judges a held connection again under `set` and `state`: the same rules, with
/// `approved_by` (the CUSTOM provider that allowed it when it opened) standing for
/// the provider, which is not asked again. A CUSTOM policy that has come to apply
/// since refuses it: its provider was never asked (the next connection asks it).
/// Not counted as a decision: nothing new was admitted.
pub(crate) fn rejudge(set: &PolicySet, state: &MeshState, held: &Held<'_>) -> Result<(), Refusal> {
    trusted(state, held.request.destination_ip, held.peer)?;
    let custom_allowed = match set.custom_check(held.workload, held.request) {
        None => false,
        Some(check) if held.approved_by.is_some_and(|a| a.answers(&check)) => true,
        Some(check) => {
            let reason = format!(
                "CUSTOM policy {} (provider {:?}) now applies; its provider was never asked about this connection",
                check.policy, check.provider
            );
            let record = DecisionRecord::refused(check.policy.to_string(), reason);
            return Err(Refusal::CustomNeverAsked(Box::new(record)));
        }
    };
    let decision = evaluate(set, held.workload, held.request, custom_allowed);
    if decision.is_allowed() {
        Ok(())
    } else {
        Err(Refusal::Denied(Box::new(record_of(&decision))))
    }
}

/// A connection held open, as it was admitted.
pub(crate) struct Held<'a> {
    pub(crate) workload: &'a Workload,
    pub(crate) peer: Option<&'a Peer>,
    pub(crate) request: &'a meshward_policy::Request,
    pub(crate) approved_by: Option<&'a CustomApproval>,
}

/// Whether the pod at `pod_ip` still trusts `peer` (plaintext has none to distrust):
/// the handshake trusted it, but a federation may have ended since, and tunnels and
/// requests outlive it (see [`MeshState::trusts`]).
pub(crate) fn trusted(
    state: &MeshState,
    pod_ip: std::net::IpAddr,
    peer: Option<&Peer>,
) -> Result<(), Refusal> {
    match peer {
        Some(peer) if !state.trusts(pod_ip, &peer.spiffe_id) => {
            Err(Refusal::Untrusted(peer.spiffe_id.clone()))
        }
        _ => Ok(()),
    }
}

/// The provider of a matching CUSTOM policy allowed the request.
struct Approval {
    by: CustomApproval,
    /// Its words, for the access log.
    said: String,
}

/// A provider's allow, with the changes it asks for.
struct CustomAllow {
    approval: Approval,
    /// Set on, and removed from, the request the pod receives.
    upstream: Vec<HeaderChange>,
    remove: Vec<String>,
    /// Added to the pod's response.
    downstream: Vec<HeaderChange>,
}

/// DENY and ALLOW, once CUSTOM is settled: no CUSTOM policy matched the request
/// (`approval` none: each caller has just asked `custom_check`), or the provider
/// of the one that did allowed it. Counted by layer, policy and action.
fn decide(
    layer: &'static str,
    stream: &InboundStream,
    set: &PolicySet,
    request: &meshward_policy::Request,
    approval: Option<Approval>,
) -> Result<DecisionRecord, Refusal> {
    // not `evaluate`: it would look for a matching CUSTOM policy a second time
    let decision = set.evaluate_after_custom(&stream.pod.workload, request);
    let mut record = record_of(&decision);
    let counted = &stream.decision_metrics;
    counted.count(layer, record.allowed, &record.policy, record.action);
    if !record.allowed {
        return Err(Refusal::Denied(Box::new(record)));
    }
    if let Some(approval) = approval {
        record.reason = format!("{}; {}", approval.said, record.reason).into();
        record.approved_by = Some(approval.by);
    }
    Ok(record)
}

fn evaluate<'s>(
    set: &'s PolicySet,
    workload: &Workload,
    request: &meshward_policy::Request,
    custom_allowed: bool,
) -> meshward_policy::Decision<'s> {
    if custom_allowed {
        set.evaluate_after_custom(workload, request)
    } else {
        // a CUSTOM policy that matches denies here: its provider was not asked
        set.evaluate(workload, request)
    }
}

fn record_of(decision: &meshward_policy::Decision<'_>) -> DecisionRecord {
    static NO_POLICY: LazyLock<Arc<str>> = LazyLock::new(|| "-".into());
    let (policy, action) = decision
        .policy
        .map_or((&*NO_POLICY, "-"), |p| (p.label, p.action.as_str()));
    DecisionRecord {
        allowed: decision.is_allowed(),
        policy: policy.clone(),
        action,
        reason: decision.explanation.clone(),
        approved_by: None,
    }
}

/// The provider's answer: its allow, or the refusal it is.
fn allowed_by(
    layer: &'static str,
    stream: &InboundStream,
    check: &CustomCheck<'_>,
    asked: custom::Asked,
) -> Result<CustomAllow, Refusal> {
    match asked.verdict {
        Verdict::Allow {
            upstream,
            remove,
            downstream,
        } => Ok(CustomAllow {
            approval: Approval {
                by: CustomApproval::of(check),
                said: asked.reason,
            },
            upstream,
            remove,
            downstream,
        }),
        Verdict::Deny {
            status,
            headers,
            body,
        } => {
            let policy = check.policy.to_string();
            let counted = &stream.decision_metrics;
            counted.count(layer, false, &policy, "CUSTOM");
            let record = Box::new(DecisionRecord::refused(policy, asked.reason));
            // a provider that is not configured is refused as RBAC refuses
            let answer = (!asked.not_configured).then(|| {
                Box::new(CustomAnswer {
                    status,
                    headers,
                    body,
                })
            });
            Err(Refusal::Custom { record, answer })
        }
    }
}

/// Asks the provider of `check` about the request policy judges (`judged`), with
/// the first bytes of its body if the provider reads them.
async fn ask_about_request(
    shared: &Shared,
    stream: &InboundStream,
    check: &CustomCheck<'_>,
    request: &mut Request<ProxyBody>,
    judged: &meshward_policy::Request,
    version: Version,
) -> Result<CustomAllow, Refusal> {
    let protocol = match version {
        Version::Http1 => "HTTP/1.1",
        Version::Http2 => "HTTP/2",
    };
    let Some(http) = judged.http.as_ref() else {
        return Err(Refusal::Malformed("no HTTP request".into()));
    };
    let mut input = custom::http_input(stream.check_peers(), http, protocol);
    let wanted = shared
        .providers
        .get(check.provider)
        .and_then(|a| a.body().cloned());
    if let Some(wanted) = wanted {
        let prefix =
            custom::read_for_check(request, &wanted)
                .await
                .map_err(|(status, reason)| {
                    let record = DecisionRecord::refused(check.policy.to_string(), reason);
                    Refusal::Body {
                        record: Box::new(record),
                        status,
                    }
                })?;
        if let Some(http) = input.http.as_mut() {
            http.body = Some(prefix);
        }
    }
    let asked = custom::ask(&shared.providers, check, &input).await;
    allowed_by("l7", stream, check, asked)
}

/// Authenticates `request` under the RequestAuthentication rules of its pod:
/// `Ok(None)` when there are none or it carries no token.
async fn authenticate(
    shared: &Shared,
    stream: &InboundStream,
    policies: &PolicySet,
    request: &mut Request<ProxyBody>,
) -> Result<Option<JwtClaims>, JwtFailure> {
    let rules = policies.jwt_rules(&stream.pod.workload);
    if rules.is_empty() {
        return Ok(None);
    }
    let state = shared.state.borrow().clone();
    let keys = RequestKeys {
        cache: &shared.jwks,
        state: &state,
        pod: &stream.pod,
    };
    let query = request.uri().query().map(str::to_owned);
    // boxed: only a pod with RequestAuthentication rules has this stage, and a
    // key fetch is part of its state (see `http.rs`)
    Box::pin(meshward_jwt::authenticate(
        &rules,
        request.headers_mut(),
        query.as_deref(),
        &keys,
    ))
    .await
}

fn unauthenticated(failure: JwtFailure, head: &Head, request: &Request<ProxyBody>) -> Refusal {
    metrics::jwt_refused(failure.reason());
    let realm = format!("http://{}{}", head.authority, request.uri().path());
    Refusal::Unauthenticated { failure, realm }
}
