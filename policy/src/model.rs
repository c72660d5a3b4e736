//! Compiled policies and how one rule is matched against one request.
//!
//! Boolean structure (reference §3): a policy matches if any rule matches; a rule
//! if (any `from`) and (any `to`) and (every `when`); a source or operation if every
//! field set in it matches; a field if any of its values matches (`not*` forms: if
//! none does). Each YAML field compiles to one [`Clause`] that keeps its field path,
//! so a miss can say exactly which field failed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use ipnet::IpNet;

use crate::request::{PseudoHeader, Request};
use crate::template::PathMatch;
use crate::value::StringMatch;
use meshward_spiffe::SpiffeId;

/// `metadata.namespace/metadata.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a policy came from: a file (or another source) and the 1-based document number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
            Self::Custom => "CUSTOM",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One compiled, validated AuthorizationPolicy.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) id: PolicyId,
    /// `id` as text, as logs and metrics name the policy.
    pub(crate) label: Arc<str>,
    pub(crate) origin: Origin,
    pub(crate) action: Action,
    /// CUSTOM only: the extension provider's name.
    pub(crate) provider: Option<String>,
    /// `istio.io/dry-run: "true"`: evaluated and reported, never enforced.
    pub(crate) dry_run: bool,
    /// `None`: every workload of the namespace (or of the mesh, in the root namespace).
    pub(crate) selector: Option<BTreeMap<String, String>>,
    /// `targetRef(s)` set: never applies to a workload (gateways and waypoints only).
    pub(crate) targets_gateway: bool,
    /// Empty: matches nothing (ALLOW without rules = allow-nothing).
    pub(crate) rules: Vec<Rule>,
}

impl Policy {
    pub(crate) fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// The first rule that matches, and its index.
    pub(crate) fn first_match(&self, request: &Request) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| matches!(rule.evaluate(request, self.action), RuleOutcome::Matched))
    }
}

#[derive(Debug)]
pub(crate) struct Rule {
    /// OR of sources, each an AND of clauses; empty = any source.
    pub(crate) from: Vec<Vec<Clause>>,
    /// OR of operations, each an AND of clauses; empty = any operation.
    pub(crate) to: Vec<Vec<Clause>>,
    /// AND of conditions.
    pub(crate) when: Vec<Clause>,
    /// Whether any clause names an HTTP-only attribute (reference §5).
    pub(crate) uses_http: bool,
    /// The decision in words when this rule decides.
    pub(crate) explanation: Arc<str>,
}

/// How one rule fared against one request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RuleOutcome<'a> {
    Matched,
    /// The first clause that did not match.
    Missed(&'a Clause),
    /// An ALLOW rule naming HTTP-only attributes, on a TCP connection: Istio drops it.
    DroppedForTcp,
}

impl Rule {
    pub(crate) fn evaluate(&self, request: &Request, action: Action) -> RuleOutcome<'_> {
        let tcp = request.http.is_none();
        if tcp && self.uses_http && action == Action::Allow {
            return RuleOutcome::DroppedForTcp;
        }
        let failing = first_failing_group(&self.from, request)
            .or_else(|| first_failing_group(&self.to, request))
            .or_else(|| self.when.iter().find(|c| !c.matches(request)));
        match failing {
            Some(clause) => RuleOutcome::Missed(clause),
            None => RuleOutcome::Matched,
        }
    }
}

/// `None` if some group matches (or there is none); else the first group's failing clause.
fn first_failing_group<'a>(groups: &'a [Vec<Clause>], request: &Request) -> Option<&'a Clause> {
    let mut first_miss = None;
    for group in groups {
        match group.iter().find(|c| !c.matches(request)) {
            None => return None,
            Some(clause) => {
                first_miss.get_or_insert(clause);
            }
        }
    }
    first_miss
}

/// One YAML field of a source, operation or condition, e.g. `notPaths`.
#[derive(Debug)]
pub(crate) struct Clause {
    /// Field path in the policy, e.g. `rules[0].to[0].operation.notPaths`.
    pub(crate) field: String,
    pub(crate) attribute: Attribute,
    pub(crate) matchers: Vec<Matcher>,
    /// `not*` / `notValues`: matches when no value matches.
    pub(crate) negated: bool,
}

/// The request attribute a clause reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attribute {
    Principal,
    Namespace,
    ServiceAccount,
    TrustDomain,
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Sni,
    RequestPrincipal,
    Audience,
    Presenter,
    Claim(Vec<String>),
    Host,
    Method,
    Path,
    Header(HeaderName),
    /// `request.headers[:method]` and friends, with Envoy's meaning.
    Pseudo(PseudoHeader),
    /// `experimental.envoy.filters.*`: Envoy dynamic metadata, which meshward never has.
    EnvoyMetadata,
}

impl Attribute {
    pub(crate) fn is_http_only(&self) -> bool {
        matches!(
            self,
            Self::RequestPrincipal
                | Self::Audience
                | Self::Presenter
                | Self::Claim(_)
                | Self::Host
                | Self::Method
                | Self::Path
                | Self::Header(_)
                | Self::Pseudo(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Matcher {
    Str(StringMatch),
    Path(PathMatch),
    Ip(IpNet),
    Port(u16),
    /// `namespace/name`; the literal, never a pattern (CVE-2026-39350).
    ServiceAccount {
        namespace: String,
        name: String,
    },
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(m) => m.fmt(f),
            Self::Path(m) => m.fmt(f),
            Self::Ip(net) => net.fmt(f),
            Self::Port(p) => p.fmt(f),
            Self::ServiceAccount { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}

impl Rule {
    /// Whether the rule names `port` as a destination port (`ports` or
    /// `destination.port`, not negated).
    pub(crate) fn targets_port(&self, port: u16) -> bool {
        self.to
            .iter()
            .flatten()
            .chain(&self.when)
            .filter(|c| c.attribute == Attribute::DestinationPort && !c.negated)
            .any(|c| c.matchers.contains(&Matcher::Port(port)))
    }
}

impl Clause {
    pub(crate) fn matches(&self, request: &Request) -> bool {
        // On TCP, HTTP-only constraints of DENY/AUDIT/CUSTOM rules match anything
        // (ALLOW rules using them were already dropped by `Rule::evaluate`).
        if request.http.is_none() && self.attribute.is_http_only() {
            return true;
        }
        self.any_value_matches(request) != self.negated
    }

    fn any_str(&self, value: &[u8]) -> bool {
        self.matchers.iter().any(|m| match m {
            Matcher::Str(s) => s.matches(value),
            _ => false,
        })
    }

    fn any_ip(&self, ip: std::net::IpAddr) -> bool {
        self.matchers
            .iter()
            .any(|m| matches!(m, Matcher::Ip(net) if net.contains(&ip)))
    }

    fn any_value_matches(&self, request: &Request) -> bool {
        let source = request.source.as_ref();
        let http = request.http.as_deref();
        let jwt = http.and_then(|h| h.jwt());
        match &self.attribute {
            Attribute::Principal => {
                source.is_some_and(|id| self.any_str(id.principal().as_bytes()))
            }
            Attribute::Namespace => request
                .source_namespace()
                .is_some_and(|ns| self.any_str(ns.as_bytes())),
            Attribute::TrustDomain => {
                source.is_some_and(|id| self.any_str(id.trust_domain_name().as_bytes()))
            }
            Attribute::ServiceAccount => source.is_some_and(|id| {
                self.matchers.iter().any(|m| match m {
                    Matcher::ServiceAccount { namespace, name } => {
                        service_account_matches(id, namespace, name)
                    }
                    _ => false,
                })
            }),
            Attribute::SourceIp => self.any_ip(request.source_ip),
            Attribute::RemoteIp => self.any_ip(request.remote_ip),
            Attribute::DestinationIp => self.any_ip(request.destination_ip),
            Attribute::DestinationPort => self
                .matchers
                .iter()
                .any(|m| matches!(m, Matcher::Port(p) if *p == request.destination_port)),
            Attribute::Sni => request
                .sni
                .as_deref()
                .is_some_and(|sni| self.any_str(sni.as_bytes())),
            Attribute::RequestPrincipal => http
                .and_then(|h| h.jwt_principal())
                .is_some_and(|p| self.any_str(p.as_bytes())),
            Attribute::Audience => {
                jwt.is_some_and(|j| j.audiences.iter().any(|a| self.any_str(a.as_bytes())))
            }
            Attribute::Presenter => jwt
                .and_then(|j| j.presenter.as_deref())
                .is_some_and(|p| self.any_str(p.as_bytes())),
            Attribute::Claim(path) => jwt.is_some_and(|j| {
                j.claim_values(path)
                    .into_iter()
                    .any(|v| self.any_str(v.as_bytes()))
            }),
            Attribute::Host => http.is_some_and(|h| self.any_str(h.host_name().as_bytes())),
            Attribute::Method => http.is_some_and(|h| self.any_str(h.method().as_bytes())),
            Attribute::Path => http.is_some_and(|h| {
                let path = h.target().path();
                self.matchers
                    .iter()
                    .any(|m| matches!(m, Matcher::Path(p) if p.matches(path)))
            }),
            Attribute::Header(name) => {
                http.is_some_and(|h| h.header_values(name).iter().any(|v| self.any_str(v)))
            }
            Attribute::Pseudo(pseudo) => {
                http.is_some_and(|h| self.any_str(h.pseudo_header(*pseudo).as_bytes()))
            }
            Attribute::EnvoyMetadata => false,
        }
    }
}

/// Istio's `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`, by segments, with no pattern
/// characters: dots and the like are literal (CVE-2026-39350).
fn service_account_matches(id: &SpiffeId, namespace: &str, name: &str) -> bool {
    let segments: Vec<&str> = id.segments().collect();
    segments.windows(2).enumerate().any(|(i, w)| {
        w == ["ns", namespace] && segments[i + 2..].windows(2).any(|w2| w2 == ["sa", name])
    })
}
