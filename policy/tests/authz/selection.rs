//! Which policies apply to a workload: namespace scoping, the root namespace,
//! selectors, targetRefs.

use meshward_policy::EngineOptions;

use crate::support::*;

fn allow_all(name: &str, namespace: &str, selector: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{selector}  rules:\n  - {{}}\n---\n"
    )
}

#[test]
fn namespace_scoping() {
    let s = set(&allow_all("a", "other", ""));
    assert!(!allowed(&s, &echo(), &http("GET", "/")));
    assert!(allowed(&s, &workload("other", &[]), &http("GET", "/")));
}

#[test]
fn root_namespace_applies_mesh_wide() {
    let s = set(&allow_all("mesh", "istio-system", ""));
    assert!(allowed(&s, &echo(), &http("GET", "/")));
    assert!(allowed(&s, &workload("anything", &[]), &http("GET", "/")));
    let options = EngineOptions {
        root_namespace: "meshward-root".into(),
        ..EngineOptions::default()
    };
    let s = set_with(&allow_all("mesh", "istio-system", ""), options.clone());
    assert!(!allowed(&s, &echo(), &http("GET", "/")));
    let s = set_with(&allow_all("mesh", "meshward-root", ""), options);
    assert!(allowed(&s, &echo(), &http("GET", "/")));
}

#[test]
fn root_namespace_selector_applies_to_matching_workloads_everywhere() {
    let s = set(&allow_all(
        "mesh",
        "istio-system",
        "  selector:\n    matchLabels:\n      app: echo\n",
    ));
    assert!(allowed(&s, &echo(), &http("GET", "/")));
    assert!(allowed(
        &s,
        &workload("x", &[("app", "echo")]),
        &http("GET", "/")
    ));
    assert!(!allowed(
        &s,
        &workload("x", &[("app", "other")]),
        &http("GET", "/")
    ));
}

#[test]
fn selector_match_labels_is_a_subset_match() {
    let s = set(&allow_all(
        "sel",
        "echoserver",
        "  selector:\n    matchLabels:\n      app: echo\n      version: v1\n",
    ));
    assert!(allowed(
        &s,
        &workload(
            "echoserver",
            &[("app", "echo"), ("version", "v1"), ("x", "y")]
        ),
        &http("GET", "/")
    ));
    assert!(!allowed(
        &s,
        &workload("echoserver", &[("app", "echo")]),
        &http("GET", "/")
    ));
    assert!(!allowed(
        &s,
        &workload("echoserver", &[("app", "echo"), ("version", "V1")]),
        &http("GET", "/")
    ));
    assert!(!allowed(
        &s,
        &workload("echoserver", &[("version", "v1")]),
        &http("GET", "/")
    ));
}

#[test]
fn empty_selector_selects_everything() {
    let s = set(&allow_all("sel", "echoserver", "  selector: {}\n"));
    assert!(allowed(
        &s,
        &workload("echoserver", &[("any", "thing")]),
        &http("GET", "/")
    ));
}

#[test]
fn target_ref_policies_never_apply_to_workloads() {
    for target in [
        "  targetRef:\n    kind: Gateway\n    group: gateway.networking.k8s.io\n    name: gw\n",
        "  targetRefs:\n  - kind: Service\n    group: \"\"\n    name: echo\n",
    ] {
        let s = set(&allow_all("t", "echoserver", target));
        assert!(!allowed(&s, &echo(), &http("GET", "/")), "{target}");
        // and the workload is not switched to "has an ALLOW policy" either
        let text = s.explain(&echo(), &http("GET", "/").build()).to_string();
        assert!(text.contains("no policy applies"), "{text}");
    }
}

#[test]
fn unrelated_policies_do_not_change_the_decision() {
    let mut yaml = allow_rule("to:\n- operation:\n    paths: [\"/ok\"]");
    for i in 0..50 {
        yaml += &allow_all(&format!("p{i}"), &format!("ns{i}"), "");
        yaml += &allow_all(
            &format!("q{i}"),
            "echoserver",
            &format!("  selector:\n    matchLabels:\n      app: other{i}\n"),
        );
    }
    let s = set(&yaml);
    check(
        &s,
        &[(http("GET", "/ok"), true), (http("GET", "/no"), false)],
    );
}
