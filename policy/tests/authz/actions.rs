//! Actions, their order, the special policies, dry-run and the two default modes.

use meshward_policy::{Action, DefaultMode, Effect, EngineOptions, Reason};

use crate::support::*;

const CURL: &str = "math.example.com/ns/default/sa/curl-spire";

#[test]
fn default_deny_even_without_any_policy() {
    let s = set("");
    let d = s.evaluate(&echo(), &http("GET", "/").build()).clone();
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.reason, Reason::NoAllowPolicyDefaultDeny);
    assert_eq!(
        d.to_string(),
        "denied: no ALLOW policy applies to the workload (default mode deny)"
    );
}

#[test]
fn allow_if_no_policy_is_istio_behaviour() {
    let options = EngineOptions {
        default_mode: DefaultMode::AllowIfNoPolicy,
        ..EngineOptions::default()
    };
    let s = set_with("", options.clone());
    assert!(allowed(&s, &echo(), &http("GET", "/")));
    // once an ALLOW policy applies, what it does not match is denied
    let s = set_with(
        &allow_rule("to:\n- operation:\n    paths: [\"/ok\"]"),
        options.clone(),
    );
    check(
        &s,
        &[(http("GET", "/ok"), true), (http("GET", "/no"), false)],
    );
    // a DENY alone does not switch to deny-by-default
    let s = set_with(
        &deny_rule("to:\n- operation:\n    paths: [\"/no\"]"),
        options,
    );
    check(
        &s,
        &[(http("GET", "/ok"), true), (http("GET", "/no"), false)],
    );
}

#[test]
fn allow_nothing_spec_and_empty_rules() {
    let options = EngineOptions {
        default_mode: DefaultMode::AllowIfNoPolicy,
        ..EngineOptions::default()
    };
    for spec in ["  {}", "  action: ALLOW", "  rules: []"] {
        let s = set_with(&policy("nothing", spec), options.clone());
        let d = s.evaluate(&echo(), &http("GET", "/").build()).clone();
        assert_eq!(d.effect, Effect::Deny, "{spec}");
        assert_eq!(d.reason, Reason::NoAllowMatched, "{spec}");
    }
}

#[test]
fn allow_all_and_deny_all() {
    let s = set(&policy("all", "  rules:\n  - {}"));
    check(&s, &[(http("GET", "/"), true), (tcp(), true)]);
    let s = set(&(policy("all", "  rules:\n  - {}")
        + &policy("deny-all", "  action: DENY\n  rules:\n  - {}")));
    check(&s, &[(http("GET", "/"), false), (tcp(), false)]);
}

#[test]
fn deny_wins_over_allow() {
    let s = set(&(allow_rule("from:\n- source:\n    principals: [\"*\"]")
        + &deny_rule("to:\n- operation:\n    paths: [\"/admin*\"]")));
    check(
        &s,
        &[
            (http("GET", "/x").from(CURL), true),
            (http("GET", "/admin").from(CURL), false),
        ],
    );
    let d = s
        .evaluate(&echo(), &http("GET", "/admin").from(CURL).build())
        .clone();
    assert_eq!(d.reason, Reason::Denied);
    let p = d.policy.unwrap();
    assert_eq!(
        (p.id.to_string(), p.action, d.rule),
        ("echoserver/deny".to_string(), Action::Deny, Some(0))
    );
    assert_eq!(&**p.label, "echoserver/deny");
    assert_eq!(
        d.to_string(),
        "denied by DENY policy echoserver/deny rule 0"
    );
}

/// The words of a decision name the rule that decided (made once per rule when
/// the set is built, and shared by every decision of that rule).
#[test]
fn a_decision_says_which_rule_of_which_policy_decided() {
    let s = set(&policy(
        "paths",
        "  rules:
  - to:
    - operation:
        paths: [\"/a\"]
  - to:
    - operation:
        paths: [\"/b\"]",
    ));
    let b = s.evaluate(&echo(), &http("GET", "/b").build()).clone();
    assert_eq!(
        b.to_string(),
        "allowed by ALLOW policy echoserver/paths rule 1"
    );
    let a = s.evaluate(&echo(), &http("GET", "/a").build()).clone();
    assert_eq!(
        a.to_string(),
        "allowed by ALLOW policy echoserver/paths rule 0"
    );
    let none = s.evaluate(&echo(), &http("GET", "/c").build()).clone();
    assert_eq!(none.to_string(), "denied: no ALLOW policy matched");
}

#[test]
fn audit_never_decides() {
    let audit = policy("audit", "  action: AUDIT\n  rules:\n  - {}");
    let s = set(&audit);
    let req = http("GET", "/").build();
    let d = s.evaluate(&echo(), &req);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reason,
        Reason::NoAllowPolicyDefaultDeny,
        "AUDIT is not an ALLOW policy"
    );
    let shadow = s.shadow_matches(&echo(), &req);
    assert_eq!(shadow.len(), 1);
    assert_eq!(
        (shadow[0].action, shadow[0].dry_run),
        (Action::Audit, false)
    );
    let s = set(&(audit + &policy("all", "  rules:\n  - {}")));
    assert!(allowed(&s, &echo(), &http("GET", "/")));
}

#[test]
fn custom_without_provider_fails_closed_for_what_it_matches() {
    let custom = policy(
        "ext",
        "  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - to:\n    - operation:\n        paths: [\"/ext/*\"]",
    );
    let s = set(&(custom + &policy("all", "  rules:\n  - {}")));
    check(
        &s,
        &[
            (http("GET", "/ext/a"), false),
            (http("GET", "/other"), true),
        ],
    );
    let d = s.evaluate(&echo(), &http("GET", "/ext/a").build()).clone();
    assert_eq!(d.reason, Reason::CustomProviderUnavailable);
    assert_eq!(d.policy.unwrap().provider, Some("opa"));
    assert_eq!(
        d.to_string(),
        "denied: CUSTOM policy echoserver/ext rule 0 matched and its provider \"opa\" is not configured (fail closed)"
    );
}

#[test]
fn custom_is_evaluated_before_deny() {
    let s = set(&(policy(
        "ext",
        "  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - {}",
    ) + &deny_rule("to:\n- operation:\n    paths: [\"/\"]")));
    let d = s.evaluate(&echo(), &http("GET", "/").build()).clone();
    assert_eq!(d.policy.unwrap().action, Action::Custom);
}

#[test]
fn dry_run_policies_are_reported_never_enforced() {
    let dry = |action: &str| {
        format!(
            "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: dry\n  namespace: echoserver\n  annotations:\n    istio.io/dry-run: \"true\"\nspec:\n  action: {action}\n  rules:\n  - {{}}\n---\n"
        )
    };
    // a dry-run DENY does not deny
    let s = set(&(dry("DENY") + &policy("all", "  rules:\n  - {}")));
    let req = http("GET", "/").build();
    assert_eq!(s.evaluate(&echo(), &req).effect, Effect::Allow);
    let shadow = s.shadow_matches(&echo(), &req);
    assert_eq!(
        (shadow.len(), shadow[0].action, shadow[0].dry_run),
        (1, Action::Deny, true)
    );
    // a workload whose only ALLOW is dry-run has no enforced ALLOW policy
    let options = EngineOptions {
        default_mode: DefaultMode::AllowIfNoPolicy,
        ..EngineOptions::default()
    };
    let s = set_with(
        &(dry("ALLOW") + &deny_rule("to:\n- operation:\n    paths: [\"/x\"]")),
        options,
    );
    check(&s, &[(http("GET", "/"), true), (http("GET", "/x"), false)]);
}

#[test]
fn explain_names_the_failing_field() {
    let s = set(&allow_rule(
        "to:\n- operation:\n    methods: [\"POST\"]\n    paths: [\"/api/payment\"]",
    ));
    let req = http("GET", "/list").build();
    let e = s.explain(&echo(), &req);
    let text = e.to_string();
    assert!(
        text.contains("spec.rules[0].to[0].operation.methods"),
        "{text}"
    );
    assert!(text.contains("\"GET\""), "{text}");
    assert!(
        text.contains("decision: denied: no ALLOW policy matched"),
        "{text}"
    );
    let e = s.explain(&echo(), &http("POST", "/api/payment").build());
    assert!(e.to_string().contains("rule 0: matched"), "{e}");
    assert!(e.decision.is_allowed());
}

/// As the node proxy decides: the provider of a matching CUSTOM policy first,
/// then DENY and ALLOW for what it allows.
#[test]
fn custom_with_a_provider_that_allows_and_one_that_denies() {
    let s = set(&(policy(
        "ext",
        "  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - to:\n    - operation:\n        paths: [\"/ext/*\"]",
    ) + &deny_rule("to:\n- operation:\n    paths: [\"/ext/forbidden\"]")
        + &policy("all", "  rules:\n  - {}")));
    let decide = |provider_allows: bool, path: &str| {
        let request = http("GET", path).build();
        match s.custom_check(&echo(), &request) {
            Some(check) => {
                assert_eq!((check.provider, check.policy.name.as_str()), ("opa", "ext"));
                provider_allows && s.evaluate_after_custom(&echo(), &request).is_allowed()
            }
            None => s.evaluate(&echo(), &request).is_allowed(),
        }
    };
    assert!(
        decide(true, "/ext/a"),
        "the provider allows, and so does ALLOW"
    );
    assert!(!decide(false, "/ext/a"), "the provider denies");
    assert!(
        !decide(true, "/ext/forbidden"),
        "DENY still applies after the provider"
    );
    assert!(
        decide(false, "/other"),
        "no CUSTOM policy matches: no provider asked"
    );
}
