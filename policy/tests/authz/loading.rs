//! Loading: documents, kinds, files and directories, and every admission check,
//! with errors that name file, document, field and reason.

use meshward_policy::{EngineOptions, TrustDomain, load_paths, load_str};

use crate::support::*;

fn one_error(yaml: &str) -> String {
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn multi_document_files_and_other_kinds() {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n---\n{}{}---\n",
        allow_rule("to:\n- operation:\n    paths: [\"/a\"]"),
        policy("second", "  action: DENY\n  rules:\n  - {}"),
    );
    let report = load_str(&yaml, "mixed.yaml", &options());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.policy_count(), 2);
    let notices: Vec<String> = report.notices.iter().map(ToString::to_string).collect();
    assert_eq!(
        notices,
        [
            "mixed.yaml: document 1: skipped: kind Service (apiVersion v1) is neither a security.istio.io AuthorizationPolicy nor a RequestAuthentication"
        ]
    );
}

#[test]
fn both_api_versions_load_and_foreign_groups_are_skipped() {
    for version in ["security.istio.io/v1", "security.istio.io/v1beta1"] {
        let yaml = format!(
            "apiVersion: {version}\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec: {{}}\n"
        );
        assert_eq!(load_str(&yaml, "f", &options()).policy_count(), 1);
    }
    let linkerd = "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec: {}\n";
    let report = load_str(linkerd, "f", &options());
    assert_eq!((report.policy_count(), report.notices.len()), (0, 1));
}

#[test]
fn kubectl_lists_and_server_fields_are_accepted() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata:\n    name: a\n    namespace: echoserver\n    uid: 1234\n    resourceVersion: \"5\"\n    creationTimestamp: \"2026-01-01T00:00:00Z\"\n  spec:\n    rules:\n    - {}\n  status: {}\n";
    let s = set(yaml);
    assert!(allowed(&s, &echo(), &http("GET", "/")));
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let e = one_error(&allow_rule("to:\n- operation:\n    notPath: [\"/admin\"]"));
    assert!(
        e.starts_with(
            "test.yaml: document 1: spec.rules[0].to[0].operation.notPath: unknown field `notPath`"
        ),
        "{e}"
    );
    let e = one_error(&policy("x", "  rule: []"));
    assert!(e.contains("spec.rule: unknown field `rule`"), "{e}");
}

#[test]
fn wrong_types_and_unknown_actions_are_errors() {
    let e = one_error(&allow_rule("to:\n- operation:\n    ports: [8080]"));
    assert!(e.contains("spec.rules[0].to[0].operation.ports[0]"), "{e}");
    let e = one_error(&policy("x", "  action: REJECT"));
    assert!(e.contains("spec.action") && e.contains("REJECT"), "{e}");
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let e = one_error(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: [unclosed\n",
    );
    assert!(
        e.starts_with("test.yaml: document 1: invalid YAML at line "),
        "{e}"
    );
    assert!(e.contains("column"), "{e}");
}

#[test]
fn admission_checks() {
    let cases: &[(&str, &str)] = &[
        (
            &policy("x", "  action: DENY"),
            "spec.rules: a DENY policy needs at least one rule",
        ),
        (
            &policy("x", "  action: DENY\n  rules: []"),
            "spec.rules: a DENY policy needs at least one rule",
        ),
        (
            &policy("x", "  action: CUSTOM\n  rules:\n  - {}"),
            "spec.provider: is required for action CUSTOM",
        ),
        (
            &policy("x", "  provider:\n    name: opa\n  rules:\n  - {}"),
            "spec.provider: is only allowed with action CUSTOM",
        ),
        (
            &policy(
                "x",
                "  selector:\n    matchLabels:\n      app: a\n  targetRef:\n    kind: Gateway\n    name: g",
            ),
            "spec: only one of selector, targetRef and targetRefs",
        ),
        (
            &allow_rule("from: []"),
            "spec.rules[0].from: must not be empty",
        ),
        (
            &allow_rule("from:\n- {}"),
            "spec.rules[0].from[0].source: is required",
        ),
        (
            &allow_rule("from:\n- source: {}"),
            "spec.rules[0].from[0].source: must set at least one field",
        ),
        (
            &allow_rule("to:\n- operation: {}"),
            "spec.rules[0].to[0].operation: must set at least one field",
        ),
        (
            &allow_rule("from:\n- source:\n    principals: [\"\"]"),
            "source.principals[0]: empty value",
        ),
        (
            &allow_rule("from:\n- source:\n    principals: [\"a*b\"]"),
            "source.principals[0]",
        ),
        (
            &allow_rule("from:\n- source:\n    ipBlocks: [\"10.0.0.300\"]"),
            "source.ipBlocks[0]: \"10.0.0.300\" is not an IP",
        ),
        (
            &allow_rule("to:\n- operation:\n    ports: [\"http\"]"),
            "operation.ports[0]: \"http\" is not a port",
        ),
        (
            &allow_rule("to:\n- operation:\n    ports: [\"80*\"]"),
            "operation.ports[0]",
        ),
        (
            &allow_rule("to:\n- operation:\n    paths: [\"/a/{**}/b/{*}\"]"),
            "`{**}` must be the last operator",
        ),
        (
            &allow_rule("from:\n- source:\n    serviceAccounts: [\"ns/*\"]"),
            "wildcards are not allowed in serviceAccounts",
        ),
        (
            &allow_rule(
                "from:\n- source:\n    serviceAccounts: [\"ns/a\"]\n    principals: [\"*\"]",
            ),
            "serviceAccounts cannot be combined with principals or namespaces",
        ),
        (
            &allow_rule("when:\n- key: request.headers[x]"),
            "at least one of values and notValues",
        ),
        (
            &allow_rule("when:\n- key: source.user\n  values: [\"a\"]"),
            "when[0].key: unknown key \"source.user\"",
        ),
        (
            &allow_rule("when:\n- key: destination.port\n  values: [\"x\"]"),
            "when[0].values[0]",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  namespace: a\nspec: {}\n",
            "metadata.name: is required",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\n  annotations:\n    istio.io/dry-run: \"maybe\"\nspec: {}\n",
            "metadata.annotations[istio.io/dry-run]: \"maybe\" is not a boolean",
        ),
    ];
    for (yaml, want) in cases {
        let e = one_error(yaml);
        assert!(e.contains(want), "want {want:?} in {e:?}");
        assert!(e.starts_with("test.yaml: document 1"), "{e}");
    }
}

#[test]
fn every_error_of_a_policy_is_reported_and_the_policy_is_rejected_whole() {
    let yaml = allow_rule(
        "from:\n- source:\n    ipBlocks: [\"10.0.0.0/8\", \"bad\"]\n    principals: [\"a*b\"]",
    );
    let report = load_str(&yaml, "test.yaml", &options());
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert_eq!(report.policy_count(), 0);
    assert!(report.into_policy_set(&options()).is_err());
}

#[test]
fn duplicate_policies_are_errors() {
    let yaml = policy("same", "  rules:\n  - {}") + &policy("same", "  rules:\n  - {}");
    let e = one_error(&yaml);
    assert_eq!(
        e,
        "test.yaml: document 2: policy echoserver/same is defined twice; the first is in test.yaml: document 1"
    );
}

#[test]
fn files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        allow_rule("to:\n- operation:\n    paths: [\"/a\"]"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        policy("b", "  action: DENY\n  rules:\n  - {}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not yaml: [").unwrap();
    let report = load_paths(&[dir.path()], &options());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.policy_count(), 2);

    let missing = dir.path().join("missing.yaml");
    let report = load_paths(&[&missing], &options());
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0]
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );
}

#[test]
fn trust_domain_rewrite_of_principals() {
    let options = EngineOptions {
        trust_domain: TrustDomain::parse("math.example.com").unwrap(),
        trust_domain_aliases: vec![TrustDomain::parse("old.example.com").unwrap()],
        ..EngineOptions::default()
    };
    // cluster.local points to the mesh trust domain and its aliases
    let s = set_with(
        &allow_rule("from:\n- source:\n    principals: [\"cluster.local/ns/default/sa/curl\"]"),
        options.clone(),
    );
    assert!(allowed(
        &s,
        &echo(),
        &http("GET", "/").from("math.example.com/ns/default/sa/curl")
    ));
    assert!(allowed(
        &s,
        &echo(),
        &http("GET", "/").from("old.example.com/ns/default/sa/curl")
    ));
    assert!(!allowed(
        &s,
        &echo(),
        &http("GET", "/").from("cluster.local/ns/default/sa/curl")
    ));
    assert!(!allowed(
        &s,
        &echo(),
        &http("GET", "/").from("evil.example.com/ns/default/sa/curl")
    ));
    // foreign trust domains are kept as written; non-5-part principals are not rewritten
    let s = set_with(
        &allow_rule(
            "from:\n- source:\n    principals: [\"partner.io/ns/a/sa/b\", \"cluster.local/ns/x/*\"]",
        ),
        options,
    );
    assert!(allowed(
        &s,
        &echo(),
        &http("GET", "/").from("partner.io/ns/a/sa/b")
    ));
    assert!(!allowed(
        &s,
        &echo(),
        &http("GET", "/").from("math.example.com/ns/x/sa/y")
    ));
    assert!(allowed(
        &s,
        &echo(),
        &http("GET", "/").from("cluster.local/ns/x/sa/y")
    ));
}

/// The CRD in docker/k8s/base/crds.yaml admits these fixtures and refuses the
/// invalid ones (the real API server: test-support/tests/control_plane.rs); the
/// engine must agree on both, so `kubectl apply` and the daemon never disagree.
#[test]
fn the_crd_fixtures_load_as_the_crd_admits_them() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/k8s/tests");
    let valid = fixtures.join("valid/authorization-policy-every-field.yaml");
    let report = load_paths(&[&valid], &options());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.policy_count(), 4);
    let valid = fixtures.join("valid/request-authentication-every-field.yaml");
    let report = load_paths(&[&valid], &options());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.authentication_count(), 2);

    let mut refused = 0;
    for entry in std::fs::read_dir(fixtures.join("invalid")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("kind: AuthorizationPolicy")
            && !text.contains("kind: RequestAuthentication")
        {
            continue;
        }
        let report = load_paths(&[&path], &options());
        assert_eq!(
            report.errors.len(),
            1,
            "{}: {:?}",
            path.display(),
            report.errors
        );
        // refused for the reason the fixture names: the field its `# expect:` line
        // (the API server's message: `<path>: <reason>`) names appears in the
        // engine's error
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let field_path = expect.split(": ").next().unwrap();
        let field = field_path.rsplit('.').next().unwrap();
        let culprit = field.split('[').next().unwrap();
        let error = report.errors[0].to_string();
        assert!(
            error.contains(culprit),
            "{}: want {culprit:?} in {error}",
            path.display()
        );
        refused += 1;
    }
    assert_eq!(
        refused, 6,
        "every invalid AuthorizationPolicy and RequestAuthentication fixture was read"
    );
}

#[test]
fn oversized_values_and_sources_are_refused_by_name() {
    let long = format!("/{}", "a".repeat(64 * 1024));
    let error = one_error(&allow_rule(&format!(
        "to:\n- operation:\n    paths: [\"/ok\", \"{long}\"]"
    )));
    assert!(
        error.contains("spec.rules[0].to[0].operation.paths[1]")
            && error.contains(&format!(
                "a value holds at most {}",
                meshward_policy::MAX_VALUE_BYTES
            )),
        "{error}"
    );
    let principal = "p".repeat(meshward_policy::MAX_VALUE_BYTES + 1);
    let error = one_error(&allow_rule(&format!(
        "from:\n- source:\n    principals: [\"{principal}\"]"
    )));
    assert!(error.contains("source.principals[0]"), "{error}");
    // a value at the bound is fine
    let at_bound = format!("/{}", "a".repeat(meshward_policy::MAX_VALUE_BYTES - 1));
    assert!(
        errors(&allow_rule(&format!(
            "to:\n- operation:\n    paths: [\"{at_bound}\"]"
        )))
        .is_empty()
    );

    // a whole source past the bound is not even parsed, from text or from a file
    let padding = format!("# {}\n", "x".repeat(meshward_policy::MAX_SOURCE_BYTES));
    let big = padding + &allow_rule("{}");
    let report = load_str(&big, "big.yaml", &options());
    assert_eq!(report.policy_count(), 0);
    assert!(
        report.errors[0].to_string().starts_with("big.yaml: "),
        "{:?}",
        report.errors
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yaml"), &big).unwrap();
    let report = load_paths(&[dir.path()], &options());
    let error = report.errors[0].to_string();
    assert!(
        error.contains("big.yaml")
            && error.contains(&format!("at most {}", meshward_policy::MAX_SOURCE_BYTES)),
        "{error}"
    );
}

#[test]
fn http_rules_on_a_port_declared_tcp_are_reported_as_never_matching() {
    let options = EngineOptions {
        tcp_ports: vec![5432],
        ..options()
    };
    let yaml = allow_rule("to:\n- operation:\n    ports: [\"5432\"]\n    paths: [\"/x\"]")
        + "---\n"
        + &policy(
            "tcp-only",
            "  rules:\n  - to:\n    - operation:\n        ports: [\"5432\"]",
        );
    let report = load_str(&yaml, "p.yaml", &options);
    let notices: Vec<String> = report.notices.iter().map(ToString::to_string).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains(
            "targets port 5432, which inbound.ports declares tcp: it never matches there"
        ),
        "{notices:?}"
    );
    // a host value with a port: the port is ignored, and said so
    let report = load_str(
        &allow_rule("to:\n- operation:\n    hosts: [\"a.example:8080\", \"b.example:*\"]"),
        "h.yaml",
        &options,
    );
    let notices: Vec<String> = report.notices.iter().map(ToString::to_string).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("port 8080 is ignored"), "{notices:?}");
}
