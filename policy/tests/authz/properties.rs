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

/// DECODE_AND_MERGE_SLASHES as docs/security.md states it, written apart from the
/// engine: decode `%2e` and `%2F`, remove dot-segments (an empty segment is a
/// segment), then merge slashes; a path ending in `.`, `..` or `/` keeps a slash.
fn model_path(raw: &str) -> String {
    let decoded = raw.replace("%2e", ".").replace("%2F", "/");
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded.trim_start_matches('/').split('/') {
        match segment {
            "." => trailing = true,
            ".." => {
                kept.pop();
                trailing = true;
            }
            other => {
                kept.push(other);
                trailing = other.is_empty();
            }
        }
    }
    let named: Vec<&str> = kept.into_iter().filter(|s| !s.is_empty()).collect();
    let mut out = format!("/{}", named.join("/"));
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    out
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 1..6).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// An ALLOW for an exact path allows exactly the requests whose path is that
    /// path by the documented rule (an independent model below, not the engine's
    /// normalizer); the generated requests reach it, by detours, often enough.
    #[test]
    fn exact_path_allow_allows_exactly_that_path(
        allowed_path in "/[a-z]{1,4}(/[a-z]{1,4}){0,2}",
        noise in path(),
        detour in 0..4u8,
    ) {
        let other = match detour {
            0 => noise,
            1 => allowed_path.clone(),
            2 => format!("{noise}/..{allowed_path}"),
            _ => format!("/zz/%2e%2e/.{allowed_path}"),
        };
        let s = set(&allow_rule(&format!("to:\n- operation:\n    paths: [\"{allowed_path}\"]")));
        let decision = s.evaluate(&echo(), &http("GET", &other).build());
        prop_assert_eq!(decision.is_allowed(), model_path(&other) == allowed_path, "{}", other);
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
