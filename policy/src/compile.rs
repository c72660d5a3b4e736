//! Wire form -> compiled [`Policy`], with Istio's admission checks.
//!
//! A policy with any invalid part is rejected as a whole: dropping a bad value could
//! widen an ALLOW (an `ipBlocks` list that loses its only entry allows every source).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::condition_key::condition_attribute;
use crate::decision::explanation;
use crate::error::{Notice, PolicyError};
use crate::model::{Action, Attribute, Clause, Matcher, Origin, Policy, PolicyId, Rule};
use crate::options::EngineOptions;
use crate::request::PseudoHeader;

/// The longest value a policy field may hold (a path, a principal, a header value):
/// far above real ones, and a bound on what every request is compared with.
pub const MAX_VALUE_BYTES: usize = 4096;
use crate::spec::{
    ActionSpec, ConditionSpec, ObjectMeta, OperationSpec, PolicyDocument, RuleSpec, SourceSpec,
    Values, WorkloadSelector,
};
use crate::template::PathMatch;
use crate::value::{InvalidValue, StringMatch, parse_ip_block, parse_port};

const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Compiles one document; every problem found is returned, not just the first.
pub(crate) fn compile(
    doc: PolicyDocument,
    origin: Origin,
    options: &EngineOptions,
    notices: &mut Vec<Notice>,
) -> Result<Policy, Vec<PolicyError>> {
    let mut c = Compiler::new(&origin, options, notices);
    let policy = c.policy(doc);
    match policy {
        Some(policy) if c.errors.is_empty() => Ok(policy),
        _ => Err(c.errors),
    }
}

/// One document's compilation: where it is, and what was found wrong with it.
/// RequestAuthentication (`authn/`) compiles with it too.
pub(crate) struct Compiler<'a> {
    pub(crate) origin: &'a Origin,
    options: &'a EngineOptions,
    pub(crate) id: Option<PolicyId>,
    pub(crate) errors: Vec<PolicyError>,
    notices: &'a mut Vec<Notice>,
}

impl<'a> Compiler<'a> {
    pub(crate) fn new(
        origin: &'a Origin,
        options: &'a EngineOptions,
        notices: &'a mut Vec<Notice>,
    ) -> Self {
        Compiler {
            origin,
            options,
            id: None,
            errors: Vec::new(),
            notices,
        }
    }

    pub(crate) fn error(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(PolicyError::Invalid {
            origin: self.origin.clone(),
            policy: self.id.clone(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn notice(&mut self, message: String) {
        let message = match &self.id {
            Some(id) => format!("policy {id}: {message}"),
            None => message,
        };
        self.notices.push(Notice {
            origin: self.origin.clone(),
            message,
        });
    }

    /// `metadata.namespace/metadata.name` (namespace `default` when unset).
    pub(crate) fn object_id(&mut self, meta: &ObjectMeta) -> Option<PolicyId> {
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            self.error("metadata.name", "is required");
            return None;
        };
        let namespace = meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let id = PolicyId { namespace, name };
        self.id = Some(id.clone());
        Some(id)
    }

    /// The workloads an object applies to: its selector's labels (`None`: every
    /// workload of the namespace), and whether it targets gateways instead
    /// (`targetRef(s)`), which never apply to a workload here.
    pub(crate) fn targets(
        &mut self,
        selector: Option<WorkloadSelector>,
        target_ref: bool,
        target_refs: bool,
    ) -> (Option<BTreeMap<String, String>>, bool) {
        let set =
            usize::from(selector.is_some()) + usize::from(target_ref) + usize::from(target_refs);
        if set > 1 {
            self.error(
                "spec",
                "only one of selector, targetRef and targetRefs may be set",
            );
        }
        let targets_gateway = target_ref || target_refs;
        if targets_gateway {
            self.notice(
                "uses targetRef(s): it applies to gateways and waypoints only, never to a workload"
                    .into(),
            );
        }
        (
            selector.and_then(|s| self.selector(s.match_labels)),
            targets_gateway,
        )
    }

    fn policy(&mut self, doc: PolicyDocument) -> Option<Policy> {
        let meta = doc.metadata;
        let id = self.object_id(&meta)?;
        let spec = doc.spec;

        let dry_run = match meta.annotations.get(DRY_RUN_ANNOTATION).map(String::as_str) {
            None => false,
            Some("true" | "True" | "TRUE" | "t" | "T" | "1") => true,
            Some("false" | "False" | "FALSE" | "f" | "F" | "0") => false,
            Some(other) => {
                self.error(
                    format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                    format!("{other:?} is not a boolean"),
                );
                false
            }
        };

        let (selector, targets_gateway) = self.targets(
            spec.selector,
            spec.target_ref.is_some(),
            spec.target_refs.is_some(),
        );

        let action = match spec.action.unwrap_or(ActionSpec::Allow) {
            ActionSpec::Allow => Action::Allow,
            ActionSpec::Deny => Action::Deny,
            ActionSpec::Audit => Action::Audit,
            ActionSpec::Custom => Action::Custom,
        };
        let provider = spec.provider.map(|p| p.name.unwrap_or_default());
        match (action, &provider) {
            (Action::Custom, None) => self.error("spec.provider", "is required for action CUSTOM"),
            (Action::Custom, Some(name)) if name.is_empty() => {
                self.error("spec.provider.name", "is required")
            }
            (Action::Custom, _) if dry_run => self.error(
                format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                "dry-run is not supported for action CUSTOM",
            ),
            (Action::Custom, _) => {}
            (_, Some(_)) => self.error(
                "spec.provider",
                format!("is only allowed with action CUSTOM, not {action}"),
            ),
            (_, None) => {}
        }
        if action == Action::Deny && spec.rules.as_ref().is_none_or(Vec::is_empty) {
            self.error(
                "spec.rules",
                "a DENY policy needs at least one rule (write `rules: [{}]` to deny everything)",
            );
        }

        let label: Arc<str> = id.to_string().into();
        let rules = spec
            .rules
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let explanation = explanation(&label, action, provider.as_deref(), i);
                self.rule(rule, &format!("spec.rules[{i}]"), action, explanation)
            })
            .collect();

        Some(Policy {
            id,
            label,
            origin: self.origin.clone(),
            action,
            provider,
            dry_run,
            selector,
            targets_gateway,
            rules,
        })
    }

    fn selector(&mut self, labels: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
        if labels.is_empty() {
            self.notice(
                "selector has no labels: it selects every workload of the namespace".into(),
            );
            return None;
        }
        for (key, value) in &labels {
            if key.is_empty() || key.contains('*') || value.contains('*') {
                self.error(
                    format!("spec.selector.matchLabels[{key}]"),
                    "label keys must be non-empty and wildcards are not supported",
                );
            }
        }
        Some(labels)
    }

    fn rule(&mut self, rule: RuleSpec, field: &str, action: Action, explanation: Arc<str>) -> Rule {
        let from = self.groups(rule.from, field, "from", "source", |c, f, src| {
            c.source(src.source, f)
        });
        let to = self.groups(rule.to, field, "to", "operation", |c, f, op| {
            c.operation(op.operation, f)
        });
        let when = rule
            .when
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .flat_map(|(i, cond)| self.condition(cond, &format!("{field}.when[{i}]")))
            .collect::<Vec<_>>();
        let clauses = || from.iter().chain(&to).flatten().chain(&when);
        let uses_http = clauses().any(|c| c.attribute.is_http_only());
        if uses_http && action != Action::Allow && clauses().all(|c| c.attribute.is_http_only()) {
            self.notice(format!(
                "{field} of this {action} policy uses only HTTP fields: on TCP traffic they are ignored, so it matches every TCP connection"
            ));
        }
        let rule = Rule {
            from,
            to,
            when,
            uses_http,
            explanation,
        };
        if uses_http {
            for port in self
                .options
                .tcp_ports
                .iter()
                .filter(|p| rule.targets_port(**p))
            {
                self.notice(format!(
                    "{field} uses HTTP fields and targets port {port}, which inbound.ports declares tcp: it never matches there (as in Istio)"
                ));
            }
        }
        rule
    }

    /// `from` / `to`: a list that, when present, must not be empty, of entries that
    /// must carry a non-empty `source` / `operation`.
    fn groups<T>(
        &mut self,
        list: Option<Vec<T>>,
        rule_field: &str,
        name: &str,
        inner: &str,
        mut compile: impl FnMut(&mut Self, &str, T) -> Option<Vec<Clause>>,
    ) -> Vec<Vec<Clause>> {
        let Some(list) = list else { return Vec::new() };
        if list.is_empty() {
            self.error(
                format!("{rule_field}.{name}"),
                "must not be empty when present",
            );
        }
        let mut groups = Vec::new();
        for (i, item) in list.into_iter().enumerate() {
            let field = format!("{rule_field}.{name}[{i}].{inner}");
            match compile(self, &field, item) {
                Some(clauses) if !clauses.is_empty() => groups.push(clauses),
                Some(_) => self.error(field, "must set at least one field"),
                None => self.error(field, "is required"),
            }
        }
        groups
    }

    fn source(&mut self, source: Option<SourceSpec>, field: &str) -> Option<Vec<Clause>> {
        let s = source?;
        let set = |v: &Values| v.as_ref().is_some_and(|v| !v.is_empty());
        if (set(&s.service_accounts) || set(&s.not_service_accounts))
            && (set(&s.principals)
                || set(&s.not_principals)
                || set(&s.namespaces)
                || set(&s.not_namespaces))
        {
            self.error(
                field,
                "serviceAccounts cannot be combined with principals or namespaces in one source",
            );
        }
        let mut out = Vec::new();
        let fields = [
            ("principals", s.principals, false, Attribute::Principal),
            (
                "notPrincipals",
                s.not_principals,
                true,
                Attribute::Principal,
            ),
            (
                "requestPrincipals",
                s.request_principals,
                false,
                Attribute::RequestPrincipal,
            ),
            (
                "notRequestPrincipals",
                s.not_request_principals,
                true,
                Attribute::RequestPrincipal,
            ),
            ("namespaces", s.namespaces, false, Attribute::Namespace),
            (
                "notNamespaces",
                s.not_namespaces,
                true,
                Attribute::Namespace,
            ),
            (
                "serviceAccounts",
                s.service_accounts,
                false,
                Attribute::ServiceAccount,
            ),
            (
                "notServiceAccounts",
                s.not_service_accounts,
                true,
                Attribute::ServiceAccount,
            ),
            (
                "trustDomains",
                s.trust_domains,
                false,
                Attribute::TrustDomain,
            ),
            (
                "notTrustDomains",
                s.not_trust_domains,
                true,
                Attribute::TrustDomain,
            ),
            ("ipBlocks", s.ip_blocks, false, Attribute::SourceIp),
            ("notIpBlocks", s.not_ip_blocks, true, Attribute::SourceIp),
            (
                "remoteIpBlocks",
                s.remote_ip_blocks,
                false,
                Attribute::RemoteIp,
            ),
            (
                "notRemoteIpBlocks",
                s.not_remote_ip_blocks,
                true,
                Attribute::RemoteIp,
            ),
        ];
        for (name, values, negated, attribute) in fields {
            out.extend(self.clause(format!("{field}.{name}"), values, negated, attribute, None));
        }
        Some(out)
    }

    fn operation(&mut self, operation: Option<OperationSpec>, field: &str) -> Option<Vec<Clause>> {
        let o = operation?;
        let mut out = Vec::new();
        let fields = [
            ("hosts", o.hosts, false, Attribute::Host),
            ("notHosts", o.not_hosts, true, Attribute::Host),
            ("ports", o.ports, false, Attribute::DestinationPort),
            ("notPorts", o.not_ports, true, Attribute::DestinationPort),
            ("methods", o.methods, false, Attribute::Method),
            ("notMethods", o.not_methods, true, Attribute::Method),
            ("paths", o.paths, false, Attribute::Path),
            ("notPaths", o.not_paths, true, Attribute::Path),
        ];
        for (name, values, negated, attribute) in fields {
            out.extend(self.clause(format!("{field}.{name}"), values, negated, attribute, None));
        }
        Some(out)
    }

    fn condition(&mut self, cond: ConditionSpec, field: &str) -> Vec<Clause> {
        let attribute = match condition_attribute(&cond.key) {
            Ok(attribute) => attribute,
            Err(reason) => {
                self.error(format!("{field}.key"), reason);
                return Vec::new();
            }
        };
        let key = Some(cond.key.as_str());
        let has = |v: &Values| v.as_ref().is_some_and(|v| !v.is_empty());
        if !has(&cond.values) && !has(&cond.not_values) {
            self.error(field, "at least one of values and notValues must be set");
        }
        let mut out = Vec::new();
        out.extend(self.clause(
            format!("{field}.values"),
            cond.values,
            false,
            attribute.clone(),
            key,
        ));
        out.extend(self.clause(
            format!("{field}.notValues"),
            cond.not_values,
            true,
            attribute,
            key,
        ));
        out
    }

    /// One field: its values parsed by the attribute's rules. `None` when unset or empty
    /// (Istio treats an empty list as unset).
    fn clause(
        &mut self,
        field: String,
        values: Values,
        negated: bool,
        attribute: Attribute,
        condition_key: Option<&str>,
    ) -> Option<Clause> {
        let values = values.filter(|v| !v.is_empty())?;
        let mut matchers = Vec::new();
        for (i, value) in values.iter().enumerate() {
            if value.len() > MAX_VALUE_BYTES {
                self.error(
                    format!("{field}[{i}]"),
                    format!(
                        "{} bytes; a value holds at most {MAX_VALUE_BYTES}",
                        value.len()
                    ),
                );
                continue;
            }
            match self.matchers(&attribute, value) {
                Ok(m) => matchers.extend(m),
                Err(InvalidValue(reason)) => self.error(format!("{field}[{i}]"), reason),
            }
        }
        let field = match condition_key {
            Some(key) => format!("{field} ({key})"),
            None => field,
        };
        Some(Clause {
            field,
            attribute,
            matchers,
            negated,
        })
    }

    fn matchers(
        &mut self,
        attribute: &Attribute,
        value: &str,
    ) -> Result<Vec<Matcher>, InvalidValue> {
        let plain = |v: &str| StringMatch::parse(v, false).map(Matcher::Str);
        Ok(match attribute {
            Attribute::Principal => {
                if value.starts_with("spiffe://") {
                    self.notice(format!(
                        "principal {value:?} starts with spiffe:// and can never match: write principals without it"
                    ));
                }
                self.principal_variants(value)
                    .iter()
                    .map(|v| plain(v))
                    .collect::<Result<_, _>>()?
            }
            Attribute::TrustDomain => self
                .trust_domain_variants(value)
                .iter()
                .map(|v| plain(v))
                .collect::<Result<_, _>>()?,
            Attribute::ServiceAccount => vec![service_account(value, self.id.as_ref())?],
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
                vec![Matcher::Ip(parse_ip_block(value)?)]
            }
            Attribute::DestinationPort => vec![Matcher::Port(parse_port(value)?)],
            Attribute::Path => vec![Matcher::Path(PathMatch::parse(value)?)],
            Attribute::Host => vec![Matcher::Str(StringMatch::parse(
                &self.host_name(value),
                true,
            )?)],
            Attribute::Header(_) => vec![Matcher::Str(
                StringMatch::parse(value, false)?.presence_means_present(),
            )],
            // the authority is compared in its normalized (lower-case) form
            Attribute::Pseudo(pseudo) => vec![Matcher::Str(
                StringMatch::parse(value, *pseudo == PseudoHeader::Authority)?
                    .presence_means_present(),
            )],
            Attribute::Namespace
            | Attribute::Sni
            | Attribute::RequestPrincipal
            | Attribute::Audience
            | Attribute::Presenter
            | Attribute::Claim(_)
            | Attribute::Method
            | Attribute::EnvoyMetadata => vec![plain(value)?],
        })
    }

    /// The host-name part of a `hosts` value, as requests are matched
    /// (`HttpRequest::host_name`): `:*` and a trailing dot dropped; an explicit port
    /// dropped with a notice, since the port of `Host` is the client's to choose.
    fn host_name(&mut self, value: &str) -> String {
        let (name, port) = match value.rsplit_once(':') {
            // `[fd00::1]` has colons of its own; only one after `]` is a port
            Some((name, port))
                if !port.contains(']') && (name.starts_with('[') || !name.contains(':')) =>
            {
                (name, Some(port))
            }
            _ => (value, None),
        };
        if let Some(port) = port.filter(|p| *p != "*") {
            self.notice(format!(
                "hosts value {value:?}: meshward matches the host name only, so port {port} is ignored; restrict the destination with `ports`"
            ));
        }
        match name.strip_suffix('.') {
            Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
            _ => name.to_owned(),
        }
    }

    /// Istio's trust-domain rewrite (reference §4, TD): a principal of exactly five
    /// parts `<td>/ns/<ns>/sa/<sa>` whose trust domain is the mesh's, an alias, or the
    /// literal `cluster.local` stands for the same account in every mesh trust domain.
    fn principal_variants(&self, value: &str) -> Vec<String> {
        let parts: Vec<&str> = value.split('/').collect();
        let td = parts[0];
        let rewritten = parts.len() == 5
            && td != "*"
            && (td == "cluster.local" || self.options.mesh_trust_domains().any(|m| m == td));
        if !rewritten {
            return vec![value.to_owned()];
        }
        let rest = &value[td.len()..];
        self.options
            .mesh_trust_domains()
            .map(|m| format!("{m}{rest}"))
            .collect()
    }

    fn trust_domain_variants(&self, value: &str) -> Vec<String> {
        if self.options.mesh_trust_domains().any(|m| m == value) {
            self.options
                .mesh_trust_domains()
                .map(str::to_owned)
                .collect()
        } else {
            vec![value.to_owned()]
        }
    }
}

/// `serviceAccounts` values: `ns/sa`, or `sa` in the policy's own namespace; no `*`.
fn service_account(value: &str, id: Option<&PolicyId>) -> Result<Matcher, InvalidValue> {
    if value.contains('*') {
        return Err(InvalidValue(format!(
            "{value:?}: wildcards are not allowed in serviceAccounts"
        )));
    }
    let (namespace, name) = match value.split_once('/') {
        Some((ns, sa)) => (ns.to_owned(), sa.to_owned()),
        None => (
            id.map(|i| i.namespace.clone()).unwrap_or_default(),
            value.to_owned(),
        ),
    };
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(InvalidValue(format!(
            "{value:?}: expected `namespace/name` or `name`"
        )));
    }
    Ok(Matcher::ServiceAccount { namespace, name })
}
