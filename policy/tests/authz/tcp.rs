//! TCP semantics of HTTP-only fields (reference §5) and plaintext semantics of
//! mTLS-only fields (reference §6).

use meshward_policy::{DefaultMode, EngineOptions};

use crate::support::*;

#[test]
fn allow_rule_with_http_fields_is_dropped_for_tcp() {
    let s = set(&allow_rule("to:\n- operation:\n    methods: [\"GET\"]"));
    check(&s, &[(http("GET", "/"), true), (tcp(), false)]);
    // negative HTTP fields too: the rule is dropped as a whole
    let s = set(&allow_rule(
        "from:\n- source:\n    principals: [\"*\"]\nto:\n- operation:\n    notPaths: [\"/admin\"]",
    ));
    check(&s, &[(tcp().from(FOO), false)]);
    // other rules of the same policy still work
    let s = set(&policy(
        "two",
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/x\"]\n  - to:\n    - operation:\n        ports: [\"8080\"]",
    ));
    check(&s, &[(tcp().port(8080), true), (tcp().port(9090), false)]);
}

#[test]
fn dropped_allow_rules_still_make_an_allow_policy() {
    let options = EngineOptions {
        default_mode: DefaultMode::AllowIfNoPolicy,
        ..EngineOptions::default()
    };
    let s = set_with(
        &allow_rule("to:\n- operation:\n    methods: [\"GET\"]"),
        options,
    );
    check(&s, &[(tcp(), false)]);
}

#[test]
fn deny_rule_http_fields_match_anything_on_tcp() {
    let all = policy("all", "  rules:\n  - {}");
    // only HTTP fields: denies every TCP connection
    let s = set(&(all.clone() + &deny_rule("to:\n- operation:\n    methods: [\"DELETE\"]")));
    check(
        &s,
        &[
            (tcp(), false),
            (http("GET", "/"), true),
            (http("DELETE", "/"), false),
        ],
    );
    // with ports: every TCP connection on those ports
    let s = set(&(all.clone()
        + &deny_rule("to:\n- operation:\n    ports: [\"9090\"]\n    paths: [\"/admin\"]")));
    check(&s, &[(tcp().port(9090), false), (tcp().port(8080), true)]);
    // negative HTTP fields are dropped as well
    let s = set(&(all + &deny_rule("to:\n- operation:\n    notMethods: [\"GET\"]")));
    check(&s, &[(tcp(), false)]);
}

#[test]
fn tcp_capable_fields_work_on_tcp() {
    let s = set(&allow_rule(
        "from:\n- source:\n    principals: [\"cluster.local/ns/foo/*\"]\n    ipBlocks: [\"10.0.0.0/8\"]\nto:\n- operation:\n    ports: [\"8080\"]\nwhen:\n- key: connection.sni\n  values: [\"echo.mesh\"]",
    ));
    check(
        &s,
        &[
            (tcp().from(FOO).sni("echo.mesh"), true),
            (tcp().from(FOO), false),
            (tcp().sni("echo.mesh"), false),
        ],
    );
}

#[test]
fn plaintext_never_matches_positive_identity_fields() {
    for field in [
        "principals: [\"*\"]",
        "namespaces: [\"*\"]",
        "serviceAccounts: [\"foo/bar\"]",
        "trustDomains: [\"*\"]",
    ] {
        let s = set(&allow_rule(&format!("from:\n- source:\n    {field}")));
        check(
            &s,
            &[
                (http("GET", "/"), false),
                (tcp(), false),
                (http("GET", "/").from(FOO), true),
            ],
        );
    }
}

#[test]
fn advisory_2021_004_plaintext_from_a_denied_namespace() {
    // ALLOW notNamespaces: ["foo"] admits plaintext (documented)
    let s = set(&allow_rule(
        "from:\n- source:\n    notNamespaces: [\"foo\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/"), true),
            (http("GET", "/").from(FOO), false),
        ],
    );
    // DENY namespaces: ["foo"] does not stop plaintext (documented)...
    let all = policy("all", "  rules:\n  - {}");
    let s = set(&(all.clone() + &deny_rule("from:\n- source:\n    namespaces: [\"foo\"]")));
    check(
        &s,
        &[
            (http("GET", "/"), true),
            (http("GET", "/").from(FOO), false),
        ],
    );
    // ...and the documented fix, DENY notPrincipals: ["*"], rejects all plaintext
    let s = set(&(all + &deny_rule("from:\n- source:\n    notPrincipals: [\"*\"]")));
    check(
        &s,
        &[
            (http("GET", "/"), false),
            (tcp(), false),
            (http("GET", "/").from(FOO), true),
        ],
    );
}
