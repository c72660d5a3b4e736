//! A decision and its words. The words of every decision a rule can make are
//! written once, when the policy is compiled ([`explanation`]): the data path
//! logs one per request and keeps it with the request's record, so a decision
//! shares them instead of formatting them.

use std::fmt;
use std::sync::{Arc, LazyLock};

use crate::model::{Action, Policy, PolicyId, Rule};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A CUSTOM policy matched and its provider is not available: fail closed.
    CustomProviderUnavailable,
    /// A DENY policy matched.
    Denied,
    /// An ALLOW policy matched.
    Allowed,
    /// ALLOW policies apply to the workload, none matched.
    NoAllowMatched,
    /// No ALLOW policy applies and the default mode is `deny`.
    NoAllowPolicyDefaultDeny,
    /// No ALLOW policy applies and the default mode is `allow-if-no-policy`.
    NoAllowPolicyAllowIfNoPolicy,
}

/// One decision. Borrowed from the [`crate::PolicySet`] it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    pub effect: Effect,
    /// The deciding policy, if one decided.
    pub policy: Option<DecidingPolicy<'a>>,
    /// The index of the deciding rule in `spec.rules`.
    pub rule: Option<usize>,
    pub reason: Reason,
    /// The decision in words (its `Display`), shared.
    pub explanation: &'a Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecidingPolicy<'a> {
    pub id: &'a PolicyId,
    /// `id` as text (`namespace/name`), shared.
    pub label: &'a Arc<str>,
    pub action: Action,
    pub provider: Option<&'a str>,
}

impl<'a> Decision<'a> {
    /// Rule `index` (`rule`) of `policy` decided.
    pub(crate) fn by(
        effect: Effect,
        policy: &'a Policy,
        (index, rule): (usize, &'a Rule),
        reason: Reason,
    ) -> Self {
        Self {
            effect,
            policy: Some(DecidingPolicy {
                id: &policy.id,
                label: &policy.label,
                action: policy.action,
                provider: policy.provider.as_deref(),
            }),
            rule: Some(index),
            reason,
            explanation: &rule.explanation,
        }
    }

    /// No policy decided: the default for `reason`.
    pub(crate) fn by_default(effect: Effect, reason: Reason) -> Decision<'static> {
        static DEFAULTS: LazyLock<[Arc<str>; 3]> = LazyLock::new(|| {
            [
                "denied: no ALLOW policy matched".into(),
                "denied: no ALLOW policy applies to the workload (default mode deny)".into(),
                "allowed: no ALLOW policy applies to the workload (default mode allow-if-no-policy)"
                    .into(),
            ]
        });
        let explanation = match reason {
            Reason::NoAllowPolicyDefaultDeny => &DEFAULTS[1],
            Reason::NoAllowPolicyAllowIfNoPolicy => &DEFAULTS[2],
            _ => &DEFAULTS[0],
        };
        Decision {
            effect,
            policy: None,
            rule: None,
            reason,
            explanation,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.explanation)
    }
}

/// The words of a decision by rule `rule` of policy `label` (`provider`: a
/// CUSTOM policy's, which decides only when it is not configured).
pub(crate) fn explanation(
    label: &str,
    action: Action,
    provider: Option<&str>,
    rule: usize,
) -> Arc<str> {
    match action {
        Action::Custom => format!(
            "denied: CUSTOM policy {label} rule {rule} matched and its provider {:?} is not configured (fail closed)",
            provider.unwrap_or_default()
        ),
        Action::Deny => format!("denied by DENY policy {label} rule {rule}"),
        Action::Allow => format!("allowed by ALLOW policy {label} rule {rule}"),
        // AUDIT never decides (a shadow match)
        Action::Audit => format!("audited by AUDIT policy {label} rule {rule}"),
    }
    .into()
}

/// A matching policy that does not decide: AUDIT, or anything in dry-run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowMatch<'a> {
    pub policy: &'a PolicyId,
    pub action: Action,
    pub dry_run: bool,
    pub rule: usize,
}
