//! Every `from.source`, `to.operation` and `when` field, with its `not` form and
//! the exact / prefix / suffix / presence kinds.

use meshward_policy::{EngineOptions, JwtClaims};

use crate::support::*;

const FOO: &str = "cluster.local/ns/foo/sa/bar";
const OTHER: &str = "cluster.local/ns/other/sa/x";

#[test]
fn principals_all_match_kinds() {
    let s = set(&allow_rule(
        r#"from:
- source:
    principals: ["cluster.local/ns/foo/sa/bar", "cluster.local/ns/pre*", "*/sa/suffix"]"#,
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO), true),
            (
                http("GET", "/").from("cluster.local/ns/prefixed/sa/a"),
                true,
            ),
            (http("GET", "/").from("other.td/ns/z/sa/suffix"), true),
            (http("GET", "/").from(OTHER), false),
            (http("GET", "/"), false),
        ],
    );
}

#[test]
fn principals_presence_means_any_authenticated_peer() {
    let s = set(&allow_rule("from:\n- source:\n    principals: [\"*\"]"));
    check(
        &s,
        &[
            (http("GET", "/").from(OTHER), true),
            (http("GET", "/"), false),
        ],
    );
}

#[test]
fn not_principals() {
    let s = set(&allow_rule(
        "from:\n- source:\n    notPrincipals: [\"cluster.local/ns/foo/sa/bar\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO), false),
            (http("GET", "/").from(OTHER), true),
            // plaintext has an empty identity: a negative list always matches (§6)
            (http("GET", "/"), true),
        ],
    );
}

#[test]
fn spiffe_prefixed_principal_never_matches() {
    let s = set(&allow_rule(
        "from:\n- source:\n    principals: [\"spiffe://cluster.local/ns/foo/sa/bar\"]",
    ));
    check(&s, &[(http("GET", "/").from(FOO), false)]);
}

#[test]
fn namespaces_and_not_namespaces() {
    let s = set(&allow_rule(
        "from:\n- source:\n    namespaces: [\"foo\", \"team-*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO), true),
            (http("GET", "/").from("cluster.local/ns/team-a/sa/x"), true),
            (http("GET", "/").from(OTHER), false),
            (http("GET", "/"), false),
        ],
    );
    let s = set(&allow_rule(
        "from:\n- source:\n    notNamespaces: [\"foo\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO), false),
            (http("GET", "/").from(OTHER), true),
            (http("GET", "/"), true),
        ],
    );
}

#[test]
fn service_accounts() {
    let s = set(&allow_rule(
        "from:\n- source:\n    serviceAccounts: [\"foo/bar\", \"local-sa\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO), true),
            (http("GET", "/").from("other.td/ns/foo/sa/bar"), true),
            // `sa` alone is in the policy's namespace
            (
                http("GET", "/").from("cluster.local/ns/echoserver/sa/local-sa"),
                true,
            ),
            (http("GET", "/").from("cluster.local/ns/foo/sa/bar2"), false),
            (http("GET", "/").from("cluster.local/ns/foo2/sa/bar"), false),
            (http("GET", "/"), false),
        ],
    );
    let s = set(&allow_rule(
        "from:\n- source:\n    notServiceAccounts: [\"foo/bar\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from(FOO), false),
            (http("GET", "/").from(OTHER), true),
        ],
    );
}

#[test]
fn trust_domains() {
    let s = set(&allow_rule(
        "from:\n- source:\n    trustDomains: [\"partner.example\", \"*.corp\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from("partner.example/ns/a/sa/b"), true),
            (http("GET", "/").from("eu.corp/ns/a/sa/b"), true),
            (http("GET", "/").from(FOO), false),
        ],
    );
    let s = set(&allow_rule(
        "from:\n- source:\n    notTrustDomains: [\"partner.example\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").from("partner.example/ns/a/sa/b"), false),
            (http("GET", "/").from(FOO), true),
        ],
    );
}

#[test]
fn mesh_trust_domain_aliases_expand_to_each_other() {
    let options = EngineOptions {
        trust_domain: "new.td".into(),
        trust_domain_aliases: vec!["old.td".into()],
        ..EngineOptions::default()
    };
    let s = set_with(
        &allow_rule("from:\n- source:\n    trustDomains: [\"old.td\"]"),
        options,
    );
    check(
        &s,
        &[
            (http("GET", "/").from("new.td/ns/a/sa/b"), true),
            (http("GET", "/").from("x.td/ns/a/sa/b"), false),
        ],
    );
}

#[test]
fn ip_blocks_and_remote_ip_blocks() {
    let s = set(&allow_rule(
        "from:\n- source:\n    ipBlocks: [\"10.0.0.0/24\", \"192.168.1.1\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").source_ip("10.0.0.9"), true),
            (http("GET", "/").source_ip("192.168.1.1"), true),
            (http("GET", "/").source_ip("10.0.1.9"), false),
        ],
    );
    let s = set(&allow_rule(
        "from:\n- source:\n    notIpBlocks: [\"10.0.0.0/24\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").source_ip("10.0.0.9"), false),
            (http("GET", "/").source_ip("10.9.0.1"), true),
        ],
    );
    let s = set(&allow_rule(
        "from:\n- source:\n    remoteIpBlocks: [\"203.0.113.0/24\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").remote_ip("203.0.113.7"), true),
            // remote defaults to the direct peer
            (http("GET", "/").source_ip("203.0.113.8"), true),
            (
                http("GET", "/")
                    .source_ip("203.0.113.8")
                    .remote_ip("198.51.100.1"),
                false,
            ),
        ],
    );
    let s = set(&allow_rule(
        "from:\n- source:\n    notRemoteIpBlocks: [\"203.0.113.0/24\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").remote_ip("203.0.113.7"), false),
            (http("GET", "/"), true),
        ],
    );
}

#[test]
fn ipv6_blocks() {
    let s = set(&allow_rule(
        "from:\n- source:\n    ipBlocks: [\"fd00::/64\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").source_ip("fd00::5"), true),
            (http("GET", "/").source_ip("fd01::5"), false),
        ],
    );
}

fn jwt(iss: &str, sub: &str) -> JwtClaims {
    JwtClaims {
        issuer: iss.into(),
        subject: sub.into(),
        audiences: vec!["api".into(), "web".into()],
        presenter: Some("frontend".into()),
        claims:
            serde_json::json!({"groups": ["dev", "ops"], "role": "admin", "org": {"team": "pay"}})
                .as_object()
                .unwrap()
                .clone(),
    }
}

#[test]
fn request_principals() {
    let s = set(&allow_rule(
        "from:\n- source:\n    requestPrincipals: [\"https://issuer.example/alice\", \"*/bob\", \"https://other.example/*\"]",
    ));
    check(
        &s,
        &[
            (
                http("GET", "/").jwt(jwt("https://issuer.example", "alice")),
                true,
            ),
            (
                http("GET", "/").jwt(jwt("https://any.example", "bob")),
                true,
            ),
            (
                http("GET", "/").jwt(jwt("https://other.example", "carol")),
                true,
            ),
            (
                http("GET", "/").jwt(jwt("https://issuer.example", "carol")),
                false,
            ),
            (http("GET", "/"), false),
        ],
    );
    let s = set(&allow_rule(
        "from:\n- source:\n    requestPrincipals: [\"*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").jwt(jwt("i", "s")), true),
            (http("GET", "/").jwt(jwt("i", "")), false),
            (http("GET", "/"), false),
        ],
    );
    // notRequestPrincipals: ["*"] matches requests without a JWT
    let s = set(&allow_rule(
        "from:\n- source:\n    notRequestPrincipals: [\"*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/"), true),
            (http("GET", "/").jwt(jwt("i", "s")), false),
        ],
    );
}

#[test]
fn hosts_are_case_insensitive_and_include_the_port() {
    let s = set(&allow_rule(
        "to:\n- operation:\n    hosts: [\"Example.com\", \"*.internal\", \"api.local:*\"]",
    ));
    check(
        &s,
        &[
            (http("GET", "/").host("example.com"), true),
            (http("GET", "/").host("EXAMPLE.COM"), true),
            (http("GET", "/").host("example.com:8080"), false),
            (http("GET", "/").host("svc.internal"), true),
            (http("GET", "/").host("api.local:9000"), true),
            (http("GET", "/").host("api.local"), false),
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
