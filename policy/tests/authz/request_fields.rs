//! Every `to.operation` and `when` field, with its `not` form and the match kinds;
//! how sources, operations and conditions combine in a rule.

use crate::support::*;

#[test]
fn hosts_match_the_name_case_insensitively_whatever_the_port() {
    let s = set(&allow_rule(
        "to:\n- operation:\n    hosts: [\"Example.com\", \"*.internal\", \"api.local:*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").host("example.com"), true),
            (http("GET", "/").host("EXAMPLE.COM"), true),
            (http("GET", "/").host("example.com:8080"), true),
            (http("GET", "/").host("example.com."), true),
            (http("GET", "/").host("example.org"), false),
            (http("GET", "/").host("svc.internal"), true),
            (http("GET", "/").host("api.local:9000"), true),
            (http("GET", "/").host("api.local"), true),
            (http("GET", "/").host("api.localhost"), false),
        ],
    );
    let s = set(&allow_rule(
        "to:\n- operation:\n    notHosts: [\"secret.com\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").host("SECRET.com"), false),
            (http("GET", "/").host("public.com"), true),
        ],
    );
}

#[test]
fn methods_are_case_sensitive() {
    let s = set(&allow_rule(
        "to:\n- operation:\n    methods: [\"GET\", \"HEAD\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/"), true),
            (http("HEAD", "/"), true),
            (http("POST", "/"), false),
        ],
    );
    let s = set(&allow_rule("to:\n- operation:\n    methods: [\"get\"]"));
    check(&s, &[(http("GET", "/"), false)]);
    let s = set(&allow_rule(
        "to:\n- operation:\n    notMethods: [\"DELETE\"]",
    ));
    check(
        &s,
        &[(http("GET", "/"), true), (http("DELETE", "/"), false)],
    );
}

#[test]
fn paths_all_kinds_and_templates() {
    let s = set(&allow_rule(
        "to:\n- operation:\n    paths: [\"/exact\", \"/prefix/*\", \"*.png\", \"/t/{*}/x\", \"/all/{**}\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/exact"), true),
            (http("GET", "/exact/"), false),
            (http("GET", "/Exact"), false),
            (http("GET", "/prefix/a/b"), true),
            (http("GET", "/img/a.png"), true),
            (http("GET", "/t/one/x"), true),
            (http("GET", "/t/one/two/x"), false),
            (http("GET", "/all/"), true),
            (http("GET", "/all/a/b"), true),
            (http("GET", "/all"), false),
        ],
    );
    let s = set(&allow_rule("to:\n- operation:\n    paths: [\"*\"]"));
    check(&s, &[(http("GET", "/"), true)]);
    let s = set(&allow_rule(
        "to:\n- operation:\n    notPaths: [\"/admin*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/admin/x"), false),
            (http("GET", "/public"), true),
        ],
    );
}

#[test]
fn ports_and_not_ports() {
    let s = set(&allow_rule(
        "to:\n- operation:\n    ports: [\"8080\", \"9090\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").port(8080), true),
            (http("GET", "/").port(80), false),
        ],
    );
    let s = set(&allow_rule("to:\n- operation:\n    notPorts: [\"9090\"]"));
    check(
        &s,
        &[
            (http("GET", "/").port(9090), false),
            (http("GET", "/").port(8080), true),
        ],
    );
}

#[test]
fn when_headers_values_and_not_values() {
    let s = set(&allow_rule(
        "when:\n- key: request.headers[X-Version]\n  values: [\"v1\", \"v2*\"]\n  notValues: [\"v2-beta\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").header("x-version", "v1"), true),
            (http("GET", "/").header("X-VERSION", "v2.1"), true),
            (http("GET", "/").header("x-version", "v2-beta"), false),
            (http("GET", "/").header("x-version", "V1"), false),
            (http("GET", "/"), false),
        ],
    );
    // presence: any value, the empty value included
    let s = set(&allow_rule(
        "when:\n- key: request.headers[x-token]\n  values: [\"*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").header("x-token", ""), true),
            (http("GET", "/"), false),
        ],
    );
    // notValues match an absent header
    let s = set(&allow_rule(
        "when:\n- key: request.headers[x-debug]\n  notValues: [\"1\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/"), true),
            (http("GET", "/").header("x-debug", "1"), false),
        ],
    );
}

#[test]
fn when_connection_and_identity_keys() {
    let cases = [
        (
            "source.ip",
            "10.0.0.0/8",
            http("GET", "/").source_ip("10.1.1.1"),
            http("GET", "/").source_ip("11.1.1.1"),
        ),
        (
            "remote.ip",
            "1.2.3.4",
            http("GET", "/").remote_ip("1.2.3.4"),
            http("GET", "/").remote_ip("1.2.3.5"),
        ),
        (
            "source.namespace",
            "foo",
            http("GET", "/").from(FOO),
            http("GET", "/").from(OTHER),
        ),
        (
            "source.principal",
            "cluster.local/ns/foo/sa/bar",
            http("GET", "/").from(FOO),
            http("GET", "/").from(OTHER),
        ),
        (
            "source.serviceAccount",
            "foo/bar",
            http("GET", "/").from(FOO),
            http("GET", "/").from(OTHER),
        ),
        (
            "source.trustDomain",
            "cluster.local",
            http("GET", "/").from(FOO),
            http("GET", "/").from("x.td/ns/foo/sa/bar"),
        ),
        (
            "destination.ip",
            "10.0.1.0/24",
            http("GET", "/"),
            http("GET", "/").destination_ip("10.0.2.1"),
        ),
        (
            "destination.port",
            "8080",
            http("GET", "/"),
            http("GET", "/").port(8081),
        ),
        (
            "connection.sni",
            "*.mesh",
            http("GET", "/").sni("a.mesh"),
            http("GET", "/").sni("a.web"),
        ),
    ];
    for (key, value, yes, no) in cases {
        let s = set(&allow_rule(&format!(
            "when:\n- key: {key}\n  values: [\"{value}\"]"
        )));
        assert!(allowed(&s, &echo(), &yes), "{key} should match");
        assert!(!allowed(&s, &echo(), &no), "{key} should not match");
        let s = set(&allow_rule(&format!(
            "when:\n- key: {key}\n  notValues: [\"{value}\"]"
        )));
        assert!(!allowed(&s, &echo(), &yes), "not {key} should not match");
        assert!(allowed(&s, &echo(), &no), "not {key} should match");
    }
}

#[test]
fn when_jwt_keys() {
    let with = http("GET", "/").jwt(jwt("https://issuer.example", "alice"));
    let cases = [
        (
            "request.auth.principal",
            "https://issuer.example/alice",
            true,
        ),
        (
            "request.auth.principal",
            "https://issuer.example/bob",
            false,
        ),
        ("request.auth.audiences", "web", true),
        ("request.auth.audiences", "mobile", false),
        ("request.auth.presenter", "front*", true),
        ("request.auth.presenter", "back*", false),
        ("request.auth.claims[groups]", "ops", true),
        ("request.auth.claims[groups]", "sales", false),
        ("request.auth.claims[role]", "admin", true),
        ("request.auth.claims[org][team]", "pay", true),
        ("request.auth.claims[org][team]", "ship", false),
        ("request.auth.claims[missing]", "*", false),
    ];
    for (key, value, want) in cases {
        let s = set(&allow_rule(&format!(
            "when:\n- key: \"{key}\"\n  values: [\"{value}\"]"
        )));
        assert_eq!(allowed(&s, &echo(), &with), want, "{key} = {value}");
        assert!(
            !allowed(&s, &echo(), &http("GET", "/")),
            "{key} without a JWT"
        );
    }
}

#[test]
fn envoy_metadata_keys_never_match() {
    let s = set(&allow_rule(
        "when:\n- key: experimental.envoy.filters.network.mysql_proxy[db.table]\n  values: [\"[update]\"]",
    ));
    check(&s, &[(http("GET", "/"), false)]);
    let s = set(&allow_rule(
        "when:\n- key: experimental.envoy.filters.network.mysql_proxy[db.table]\n  notValues: [\"[update]\"]",
    ));
    check(&s, &[(http("GET", "/"), true)]);
}

#[test]
fn one_source_ands_its_fields_and_sources_are_ored() {
    let s = set(&allow_rule(
        "from:\n- source:\n    namespaces: [\"foo\"]\n    ipBlocks: [\"10.0.0.0/24\"]\n- source:\n    principals: [\"cluster.local/ns/other/sa/x\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO), true),
            (http("GET", "/").from(FOO).source_ip("10.9.9.9"), false),
            (http("GET", "/").from(OTHER).source_ip("10.9.9.9"), true),
        ],
    );
}

#[test]
fn rule_ands_from_to_and_when() {
    let s = set(&allow_rule(
        "from:\n- source:\n    namespaces: [\"foo\"]\nto:\n- operation:\n    methods: [\"GET\"]\nwhen:\n- key: request.headers[x-a]\n  values: [\"1\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO).header("x-a", "1"), true),
            (http("POST", "/").from(FOO).header("x-a", "1"), false),
            (http("GET", "/").from(OTHER).header("x-a", "1"), false),
            (http("GET", "/").from(FOO), false),
        ],
    );
}

#[test]
fn positive_and_negative_lists_in_one_field_are_anded() {
    let s = set(&allow_rule(
        "to:\n- operation:\n    paths: [\"/api/*\"]\n    notPaths: [\"/api/private*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/api/x"), true),
            (http("GET", "/api/private/x"), false),
        ],
    );
}
