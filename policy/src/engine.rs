//! The compiled policy set: an index by (namespace, label) and the decision.
//!
//! Decision order (reference §2): CUSTOM, then DENY, then ALLOW. "If there are any
//! CUSTOM policies that match the request, evaluate and deny the request if the
//! evaluation result is deny. If there are any DENY policies that match the request,
//! deny the request. If there are no ALLOW policies for the workload, allow the
//! request. If any of the ALLOW policies match the request, allow the request. Deny
//! the request." meshward's `deny` default mode replaces the third step by deny.
//! AUDIT and dry-run policies never change the decision.

// foldhash (seeded per process) rather than SipHash: the index is read on every
// decision, by namespace and label keys of cluster objects (not of traffic), and
// SipHash was 2.1k of a decision's 3.3k instructions
use foldhash::HashMap;
use std::sync::Arc;

use crate::authn::{JwtRule, RequestAuthentication};
use crate::decision::{Decision, Effect, Reason, ShadowMatch};
use crate::model::{Action, Origin, Policy, PolicyId, Rule};
use crate::options::{DefaultMode, EngineOptions};
use crate::request::{Request, Workload};

/// An immutable, compiled set of policies. Cheap to share (`Arc` inside); a reload
/// builds a new set and swaps it in.
#[derive(Debug, Clone)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: EngineOptions,
    namespaces: HashMap<String, NamespaceIndex>,
    len: usize,
    summaries: Vec<PolicySummary>,
    /// RequestAuthentications, sorted by namespace and name.
    authentications: Vec<RequestAuthentication>,
}

/// A CUSTOM policy matched: which provider must decide.
#[derive(Debug, Clone, Copy)]
pub struct CustomCheck<'s> {
    pub policy: &'s PolicyId,
    pub rule: usize,
    /// `spec.provider.name`.
    pub provider: &'s str,
    matched: &'s Policy,
    matched_rule: &'s Rule,
}

/// One loaded policy, as admin endpoints list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySummary {
    pub id: PolicyId,
    pub action: Action,
    pub dry_run: bool,
    /// `false` for targetRef policies: they never apply to a workload here.
    pub applies: bool,
    pub origin: Origin,
}

/// The policies of one namespace: those without selector, and selected ones filed
/// under one of their label pairs, so a workload only looks at policies that could
/// select it and hashes each of its labels once per decision.
#[derive(Debug, Default)]
struct NamespaceIndex {
    every_workload: ByAction,
    by_label: HashMap<String, HashMap<String, ByAction>>,
}

/// Policies split by the step of the decision that reads them.
#[derive(Debug, Default)]
struct ByAction {
    custom: Vec<Arc<Policy>>,
    deny: Vec<Arc<Policy>>,
    allow: Vec<Arc<Policy>>,
    audit: Vec<Arc<Policy>>,
    dry_run: Vec<Arc<Policy>>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Custom,
    Deny,
    Allow,
    Audit,
    DryRun,
}

impl ByAction {
    fn list_mut(&mut self, policy: &Policy) -> &mut Vec<Arc<Policy>> {
        match (policy.dry_run, policy.action) {
            (true, _) => &mut self.dry_run,
            (false, Action::Custom) => &mut self.custom,
            (false, Action::Deny) => &mut self.deny,
            (false, Action::Allow) => &mut self.allow,
            (false, Action::Audit) => &mut self.audit,
        }
    }

    fn list(&self, step: Step) -> &[Arc<Policy>] {
        match step {
            Step::Custom => &self.custom,
            Step::Deny => &self.deny,
            Step::Allow => &self.allow,
            Step::Audit => &self.audit,
            Step::DryRun => &self.dry_run,
        }
    }
}

/// The lists that can hold policies for one workload; at most two namespaces, each
/// with its unselected list and one list per workload label found in the index.
struct Candidates<'s> {
    lists: Vec<&'s ByAction>,
}

impl<'s> Candidates<'s> {
    /// Policies of one step that select `workload`, root namespace first, in a
    /// stable order.
    fn policies<'c>(
        &'c self,
        step: Step,
        workload: &'c Workload,
    ) -> impl Iterator<Item = &'s Policy> + 'c {
        self.lists
            .iter()
            .flat_map(move |l| l.list(step))
            .map(|p| &**p)
            .filter(|p| p.selects(&workload.labels))
    }
}

impl PolicySet {
    pub(crate) fn new(
        mut policies: Vec<Policy>,
        mut authentications: Vec<RequestAuthentication>,
        options: EngineOptions,
    ) -> Self {
        authentications.sort_by(|a, b| a.id.cmp(&b.id));
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        let len = policies.len();
        let summaries = policies
            .iter()
            .map(|p| PolicySummary {
                id: p.id.clone(),
                action: p.action,
                dry_run: p.dry_run,
                applies: !p.targets_gateway,
                origin: p.origin.clone(),
            })
            .collect();
        let mut namespaces: HashMap<String, NamespaceIndex> = HashMap::default();
        for policy in policies.into_iter().filter(|p| !p.targets_gateway) {
            let index = namespaces.entry(policy.id.namespace.clone()).or_default();
            let lists = match policy.selector.as_ref().and_then(|s| s.iter().next()) {
                None => &mut index.every_workload,
                Some((k, v)) => index
                    .by_label
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default(),
            };
            lists.list_mut(&policy).push(Arc::new(policy));
        }
        Self {
            inner: Arc::new(Inner {
                options,
                namespaces,
                len,
                summaries,
                authentications,
            }),
        }
    }

    /// A set with no policies (everything denied under the `deny` default).
    pub fn empty(options: EngineOptions) -> Self {
        Self::new(Vec::new(), Vec::new(), options)
    }

    /// The JWT rules that apply to `workload`: those of every RequestAuthentication
    /// of the root namespace and of the workload's namespace that selects it, in
    /// a stable order. Empty: requests are not authenticated.
    pub fn jwt_rules(&self, workload: &Workload) -> Vec<Arc<JwtRule>> {
        let root = &self.inner.options.root_namespace;
        self.inner
            .authentications
            .iter()
            .filter(|a| a.id.namespace == *root || a.id.namespace == workload.namespace)
            .filter(|a| a.selects(&workload.labels))
            .flat_map(|a| a.rules.iter().cloned())
            .collect()
    }

    /// Every RequestAuthentication of the set, sorted by namespace and name.
    pub fn authentications(&self) -> &[RequestAuthentication] {
        &self.inner.authentications
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Number of policies, those with targetRefs included.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Every policy of the set, sorted by namespace and name.
    pub fn summaries(&self) -> &[PolicySummary] {
        &self.inner.summaries
    }

    fn candidates(&self, workload: &Workload) -> Candidates<'_> {
        let root = self.inner.options.root_namespace.as_str();
        let own = (workload.namespace != root).then_some(workload.namespace.as_str());
        let mut lists = Vec::with_capacity(4);
        for ns in std::iter::once(root).chain(own) {
            let Some(index) = self.inner.namespaces.get(ns) else {
                continue;
            };
            lists.push(&index.every_workload);
            if index.by_label.is_empty() {
                continue;
            }
            for (k, v) in &workload.labels {
                if let Some(lists_for_label) =
                    index.by_label.get(k).and_then(|values| values.get(v))
                {
                    lists.push(lists_for_label);
                }
            }
        }
        Candidates { lists }
    }

    /// Every policy that applies to `workload`, enforced or not, in decision order.
    pub(crate) fn all_applicable<'s>(&'s self, workload: &Workload) -> Vec<&'s Policy> {
        let candidates = self.candidates(workload);
        [
            Step::Custom,
            Step::Deny,
            Step::Allow,
            Step::Audit,
            Step::DryRun,
        ]
        .into_iter()
        .flat_map(|step| candidates.policies(step, workload).collect::<Vec<_>>())
        .collect()
    }

    /// The decision for one request to `workload`, without an external
    /// authorizer: a request a CUSTOM policy matches is denied (fail closed).
    pub fn evaluate<'s>(&'s self, workload: &Workload, request: &Request) -> Decision<'s> {
        if let Some(check) = self.custom_check(workload, request) {
            return Decision::by(
                Effect::Deny,
                check.matched,
                (check.rule, check.matched_rule),
                Reason::CustomProviderUnavailable,
            );
        }
        self.evaluate_after_custom(workload, request)
    }

    /// The first CUSTOM policy that matches the request: its provider must allow
    /// the request before DENY and ALLOW policies are read.
    pub fn custom_check<'s>(
        &'s self,
        workload: &Workload,
        request: &Request,
    ) -> Option<CustomCheck<'s>> {
        let candidates = self.candidates(workload);
        candidates
            .policies(Step::Custom, workload)
            .find_map(|p| p.first_match(request).map(|rule| (p, rule)))
            .map(|(policy, (rule, matched_rule))| CustomCheck {
                policy: &policy.id,
                rule,
                provider: policy.provider.as_deref().unwrap_or_default(),
                matched: policy,
                matched_rule,
            })
    }

    /// The decision once the provider of [`PolicySet::custom_check`] allowed the
    /// request (or no CUSTOM policy matched): DENY, then ALLOW, then the default.
    pub fn evaluate_after_custom<'s>(
        &'s self,
        workload: &Workload,
        request: &Request,
    ) -> Decision<'s> {
        let candidates = self.candidates(workload);
        let matched = |step| {
            candidates
                .policies(step, workload)
                .find_map(|p| p.first_match(request).map(|rule| (p, rule)))
        };
        if let Some((policy, rule)) = matched(Step::Deny) {
            return Decision::by(Effect::Deny, policy, rule, Reason::Denied);
        }
        if let Some((policy, rule)) = matched(Step::Allow) {
            return Decision::by(Effect::Allow, policy, rule, Reason::Allowed);
        }
        let any_allow_policy = candidates.policies(Step::Allow, workload).next().is_some();
        let (effect, reason) = match (any_allow_policy, self.inner.options.default_mode) {
            (true, _) => (Effect::Deny, Reason::NoAllowMatched),
            (false, DefaultMode::Deny) => (Effect::Deny, Reason::NoAllowPolicyDefaultDeny),
            (false, DefaultMode::AllowIfNoPolicy) => {
                (Effect::Allow, Reason::NoAllowPolicyAllowIfNoPolicy)
            }
        };
        Decision::by_default(effect, reason)
    }

    /// Dry-run and AUDIT policies that match: what they would have done, for logs.
    pub fn shadow_matches<'s>(
        &'s self,
        workload: &Workload,
        request: &Request,
    ) -> Vec<ShadowMatch<'s>> {
        let candidates = self.candidates(workload);
        [Step::Audit, Step::DryRun]
            .into_iter()
            .flat_map(|step| candidates.policies(step, workload).collect::<Vec<_>>())
            .filter_map(|p| {
                p.first_match(request).map(|(rule, _)| ShadowMatch {
                    policy: &p.id,
                    action: p.action,
                    dry_run: p.dry_run,
                    rule,
                })
            })
            .collect()
    }
}
