//! Properties that must hold for every input, not just the tables.

use proptest::prelude::*;

use crate::support::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,4}",
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("".to_owned())
    ]
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 1..6).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// An ALLOW for an exact path never allows another (normalized) path.
    #[test]
    fn exact_path_allow_never_allows_another_path(allowed_path in "/[a-z]{1,4}(/[a-z]{1,4}){0,2}", other in path()) {
        let s = set(&allow_rule(&format!("to:\n- operation:\n    paths: [\"{allowed_path}\"]")));
        let req = http("GET", &other).build();
        let normalized = req.http.as_ref().unwrap().target().path().to_owned();
        let decision = s.evaluate(&echo(), &req);
        prop_assert_eq!(decision.is_allowed(), normalized == allowed_path, "{} -> {}", other, normalized);
    }

    /// Adding a policy for another workload (another namespace, or a selector the
    /// workload does not carry) never changes a decision.
    #[test]
    fn policies_for_other_workloads_change_nothing(
        path in path(),
        other_ns in "[a-z]{1,6}",
        other_app in "[a-z]{1,6}",
        deny in any::<bool>(),
    ) {
        prop_assume!(other_ns != "echoserver" && other_ns != "istio-system" && other_app != "echo");
        let base = allow_rule("to:\n- operation:\n    paths: [\"/a*\"]");
        let action = if deny { "DENY" } else { "ALLOW" };
        let extra = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: x\n  namespace: {other_ns}\nspec:\n  action: {action}\n  rules:\n  - {{}}\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: y\n  namespace: echoserver\nspec:\n  selector:\n    matchLabels:\n      app: {other_app}\n  action: {action}\n  rules:\n  - {{}}\n"
        );
        let req = http("GET", &path);
        let before = allowed(&set(&base), &echo(), &req);
        let after = allowed(&set(&(base + &extra)), &echo(), &req);
        prop_assert_eq!(before, after);
    }
}
