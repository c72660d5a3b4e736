use std::collections::BTreeMap;

use super::*;
use crate::{EngineOptions, Workload, load_str};

const HEAD: &str = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: shop}\nspec:\n";

fn load(spec: &str) -> Result<crate::PolicySet, String> {
    load_str(
        &format!("{HEAD}{spec}"),
        "ra.yaml",
        &EngineOptions::default(),
    )
    .into_policy_set(&EngineOptions::default())
    .map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn workload(namespace: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        namespace: namespace.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn a_rule_compiles_with_every_field() {
    let set = load(concat!(
        "  selector: {matchLabels: {app: api}}\n",
        "  jwtRules:\n",
        "  - issuer: https://issuer.example\n",
        "    audiences: [api]\n",
        "    jwksUri: https://issuer.example/keys\n",
        "    fromHeaders: [{name: X-Token, prefix: 'Token '}]\n",
        "    fromParams: [tok]\n",
        "    fromCookies: [session]\n",
        "    forwardOriginalToken: true\n",
        "    outputPayloadToHeader: x-jwt-payload\n",
        "    outputClaimToHeaders: [{header: x-team, claim: org.team}]\n",
        "    timeout: 1500ms\n",
    ))
    .unwrap();
    let rules = set.jwt_rules(&workload("shop", &[("app", "api")]));
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(rule.issuer, "https://issuer.example");
    assert_eq!(rule.audiences, ["api"]);
    assert_eq!(
        rule.keys,
        KeySource::Uri("https://issuer.example/keys".into())
    );
    assert_eq!(
        rule.locations,
        [
            TokenLocation::Header {
                name: HeaderName::from_static("x-token"),
                prefix: "Token ".into()
            },
            TokenLocation::Param("tok".into()),
            TokenLocation::Cookie("session".into()),
        ]
    );
    assert!(rule.forward_original_token);
    assert_eq!(
        rule.output_payload_to_header,
        Some(HeaderName::from_static("x-jwt-payload"))
    );
    assert_eq!(
        rule.output_claim_to_headers,
        [(
            HeaderName::from_static("x-team"),
            vec!["org".to_owned(), "team".to_owned()]
        )]
    );
    assert_eq!(rule.timeout, Duration::from_millis(1500));
    // another workload of the namespace is not selected
    assert!(
        set.jwt_rules(&workload("shop", &[("app", "web")]))
            .is_empty()
    );
}

#[test]
fn defaults_are_istios_and_spiffe_issuers_use_the_trust_bundle() {
    let set = load("  jwtRules:\n  - issuer: spiffe://math.example.com\n    audiences: [shop]\n")
        .unwrap();
    let rules = set.jwt_rules(&workload("shop", &[]));
    assert_eq!(rules[0].locations, TokenLocation::defaults());
    assert!(!rules[0].forward_original_token);
    assert_eq!(rules[0].timeout, DEFAULT_JWKS_TIMEOUT);
    assert_eq!(
        rules[0].keys,
        KeySource::TrustBundle(TrustDomain::parse("math.example.com").unwrap())
    );
    let set = load("  jwtRules:\n  - issuer: https://accounts.example\n").unwrap();
    assert_eq!(
        set.jwt_rules(&workload("shop", &[]))[0].keys,
        KeySource::Discovery("https://accounts.example".into())
    );
}

#[test]
fn root_namespace_rules_apply_to_every_namespace_and_target_refs_to_none() {
    let text = concat!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: mesh, namespace: istio-system}\nspec:\n  jwtRules: [{issuer: spiffe://a.example, audiences: [shop]}]\n---\n",
        "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {name: gw, namespace: shop}\nspec:\n  targetRef: {kind: Gateway, name: gw}\n  jwtRules: [{issuer: spiffe://b.example, audiences: [shop]}]\n",
    );
    let options = EngineOptions::default();
    let report = load_str(text, "ra.yaml", &options);
    assert_eq!(report.authentication_count(), 2);
    let set = report.into_policy_set(&options).unwrap();
    let rules = set.jwt_rules(&workload("shop", &[]));
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].issuer, "spiffe://a.example");
    assert_eq!(set.len(), 0, "no AuthorizationPolicy was loaded");
}

#[test]
fn admission_refuses_what_would_accept_other_tokens() {
    for (spec, want) in [
        (
            "  jwtRules: [{jwksUri: 'https://k.example/'}]\n",
            "spec.jwtRules[0].issuer: is required",
        ),
        (
            "  jwtRules: [{issuer: a, jwks: '{\"keys\":[{}]}', jwksUri: 'https://k/'}]\n",
            "only one of jwks and jwksUri",
        ),
        (
            "  jwtRules: [{issuer: a, jwksUri: 'http://k.example/keys'}]\n",
            "spec.jwtRules[0].jwksUri: \"http://k.example/keys\" is not an https:// URL",
        ),
        (
            "  jwtRules: [{issuer: a, jwks: 'nope'}]\n",
            "spec.jwtRules[0].jwks: not JSON",
        ),
        (
            "  jwtRules: [{issuer: a, jwks: '{\"keys\":[]}'}]\n",
            "non-empty `keys`",
        ),
        (
            "  jwtRules: [{issuer: accounts}]\n",
            "jwks or jwksUri is required",
        ),
        (
            "  jwtRules: [{issuer: 'spiffe://Bad_TD'}]\n",
            "spec.jwtRules[0].issuer",
        ),
        (
            "  jwtRules: [{issuer: spiffe://a.example, outputClaimToHeaders: [{header: x-forwarded-client-cert, claim: sub}]}]\n",
            "x-forwarded-client-cert is set by the proxy",
        ),
        (
            "  jwtRules: [{issuer: spiffe://a.example, outputClaimToHeaders: [{header: x-a, claim: 'a..b'}]}]\n",
            "outputClaimToHeaders[0].claim",
        ),
        (
            "  jwtRules: [{issuer: spiffe://a.example, fromHeaders: [{name: 'bad header'}]}]\n",
            "fromHeaders[0].name",
        ),
        (
            "  jwtRules: [{issuer: spiffe://a.example, timeout: soon}]\n",
            "timeout: \"soon\"",
        ),
        (
            "  jwtRules: [{issuer: spiffe://a.example, audiences: ['']}]\n",
            "audiences",
        ),
        (
            "  jwtRules: [{issuer: spiffe://a.example, jwksUrl: x}]\n",
            "unknown field `jwksUrl`",
        ),
        (
            "  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Gateway, name: g}\n",
            "only one of selector, targetRef",
        ),
    ] {
        let errors = load(spec).expect_err(spec);
        assert!(errors.contains(want), "{spec}: {errors}");
        assert!(errors.contains("ra.yaml: document 1"), "{errors}");
    }
}

#[test]
fn two_objects_with_one_name_fail_the_load() {
    let one = format!("{HEAD}  jwtRules: [{{issuer: spiffe://a.example, audiences: [shop]}}]\n");
    let report = load_str(
        &format!("{one}---\n{one}"),
        "ra.yaml",
        &EngineOptions::default(),
    );
    let errors = report
        .into_policy_set(&EngineOptions::default())
        .unwrap_err();
    assert!(
        errors[0].to_string().contains("defined twice"),
        "{errors:?}"
    );
}

#[test]
fn a_spiffe_issuer_without_audiences_is_refused_by_name() {
    for keys in ["", "    jwksUri: https://keys.example/jwks\n"] {
        let err = load(&format!(
            "  jwtRules:\n  - issuer: spiffe://math.example.com\n{keys}"
        ))
        .unwrap_err();
        assert!(
            err.contains("ra.yaml")
                && err.contains("spec.jwtRules[0].audiences")
                && err.contains("JWT-SVID"),
            "{err}"
        );
    }
    assert!(
        load("  jwtRules:\n  - issuer: spiffe://math.example.com\n    audiences: [api]\n").is_ok()
    );
}
