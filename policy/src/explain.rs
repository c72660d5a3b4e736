//! "Why was this refused?": every policy that applies, each rule's outcome, the
//! field that failed for near misses, and the decision, from the same code that decides.

use std::fmt;

use crate::decision::Decision;
use crate::engine::PolicySet;
use crate::model::{Action, Attribute, Clause, Origin, Policy, PolicyId, RuleOutcome};
use crate::request::{Request, Workload};

#[derive(Debug, Clone)]
pub struct Explanation<'a> {
    pub decision: Decision<'a>,
    pub policies: Vec<PolicyExplanation<'a>>,
}

#[derive(Debug, Clone)]
pub struct PolicyExplanation<'a> {
    pub id: &'a PolicyId,
    pub origin: &'a Origin,
    pub action: Action,
    pub dry_run: bool,
    pub rules: Vec<RuleExplanation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleExplanation {
    Matched,
    /// `field` wanted one of `wanted` (or none of them, when negated); the request had `got`.
    Missed {
        field: String,
        negated: bool,
        wanted: Vec<String>,
        got: String,
    },
    DroppedForTcp,
}

impl PolicySet {
    pub fn explain<'s>(&'s self, workload: &Workload, request: &Request) -> Explanation<'s> {
        let policies = self
            .all_applicable(workload)
            .into_iter()
            .map(|p| explain_policy(p, request))
            .collect();
        Explanation {
            decision: self.evaluate(workload, request),
            policies,
        }
    }
}

fn explain_policy<'a>(policy: &'a Policy, request: &Request) -> PolicyExplanation<'a> {
    let rules = policy
        .rules
        .iter()
        .map(|rule| match rule.evaluate(request, policy.action) {
            RuleOutcome::Matched => RuleExplanation::Matched,
            RuleOutcome::DroppedForTcp => RuleExplanation::DroppedForTcp,
            RuleOutcome::Missed(clause) => missed(clause, request),
        })
        .collect();
    PolicyExplanation {
        id: &policy.id,
        origin: &policy.origin,
        action: policy.action,
        dry_run: policy.dry_run,
        rules,
    }
}

fn missed(clause: &Clause, request: &Request) -> RuleExplanation {
    RuleExplanation::Missed {
        field: clause.field.clone(),
        negated: clause.negated,
        wanted: clause.matchers.iter().map(ToString::to_string).collect(),
        got: request_value(&clause.attribute, request),
    }
}

/// The request's value of an attribute, for people.
fn request_value(attribute: &Attribute, request: &Request) -> String {
    let none = || "(none)".to_owned();
    let quoted = |v: Option<&str>| v.map_or_else(none, |v| format!("{v:?}"));
    let http = request.http.as_deref();
    let jwt = http.and_then(|h| h.jwt());
    match attribute {
        Attribute::Principal => request.source.as_ref().map_or_else(
            || "(none: plaintext, no peer identity)".into(),
            |id| format!("{:?}", id.principal()),
        ),
        Attribute::ServiceAccount => quoted(request.source.as_ref().map(|id| id.principal())),
        Attribute::Namespace => quoted(request.source_namespace()),
        Attribute::TrustDomain => quoted(request.source.as_ref().map(|id| id.trust_domain_name())),
        Attribute::SourceIp => request.source_ip.to_string(),
        Attribute::RemoteIp => request.remote_ip.to_string(),
        Attribute::DestinationIp => request.destination_ip.to_string(),
        Attribute::DestinationPort => request.destination_port.to_string(),
        Attribute::Sni => quoted(request.sni.as_deref()),
        Attribute::RequestPrincipal => quoted(http.and_then(|h| h.jwt_principal())),
        Attribute::Audience => jwt.map_or_else(none, |j| format!("{:?}", j.audiences)),
        Attribute::Presenter => quoted(jwt.and_then(|j| j.presenter.as_deref())),
        Attribute::Claim(path) => jwt.map_or_else(none, |j| format!("{:?}", j.claim_values(path))),
        Attribute::Host => quoted(http.map(|h| h.host_name())),
        Attribute::Method => quoted(http.map(|h| h.method())),
        Attribute::Path => quoted(http.map(|h| h.target().path())),
        Attribute::Pseudo(pseudo) => quoted(http.map(|h| h.pseudo_header(*pseudo)).as_deref()),
        Attribute::Header(name) => {
            let values: Vec<String> = http
                .into_iter()
                .flat_map(|h| h.header_values(name))
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect();
            if values.is_empty() {
                "(absent)".into()
            } else {
                format!("{values:?}")
            }
        }
        Attribute::EnvoyMetadata => "(no Envoy metadata in meshward)".into(),
    }
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.policies.is_empty() {
            writeln!(f, "no policy applies to this workload")?;
        }
        for p in &self.policies {
            let mode = if p.dry_run {
                " (dry-run: reported, never enforced)"
            } else {
                ""
            };
            writeln!(f, "{} policy {} from {}{mode}", p.action, p.id, p.origin)?;
            if p.rules.is_empty() {
                writeln!(f, "  no rules: matches nothing")?;
            }
            for (i, rule) in p.rules.iter().enumerate() {
                write!(f, "  rule {i}: ")?;
                match rule {
                    RuleExplanation::Matched => writeln!(f, "matched")?,
                    RuleExplanation::DroppedForTcp => writeln!(
                        f,
                        "ignored: an ALLOW rule with HTTP-only fields never matches TCP traffic"
                    )?,
                    RuleExplanation::Missed {
                        field,
                        negated,
                        wanted,
                        got,
                    } => {
                        let want = if *negated { "none of" } else { "one of" };
                        writeln!(
                            f,
                            "no match: {field} wants {want} {wanted:?}, request has {got}"
                        )?
                    }
                }
            }
        }
        write!(f, "decision: {}", self.decision)
    }
}
