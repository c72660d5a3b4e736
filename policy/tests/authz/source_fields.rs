//! Every `from.source` field, with its `not` form and the exact / prefix / suffix /
//! presence kinds.

use meshward_policy::{EngineOptions, TrustDomain};

use crate::support::*;

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

/// Federation: a foreign principal matches exactly; the trust-domain rewrite of
/// `cluster.local` and aliases stays within the mesh's own domain.
#[test]
fn foreign_principals_match_exactly() {
    let options = || EngineOptions {
        trust_domain: TrustDomain::parse("new.td").unwrap(),
        trust_domain_aliases: vec![TrustDomain::parse("old.td").unwrap()],
        ..EngineOptions::default()
    };
    const FOREIGN: &str = "payments.example.org/ns/x/sa/y";
    let s = set_with(
        &allow_rule("from:\n- source:\n    principals: [\"payments.example.org/ns/x/sa/y\"]"),
        options(),
    );
    check(
        &s,
        &[
            (http("GET", "/").from(FOREIGN), true),
            (http("GET", "/").from("new.td/ns/x/sa/y"), false),
            (
                http("GET", "/").from("payments.example.org/ns/x/sa/z"),
                false,
            ),
        ],
    );
    let s = set_with(
        &allow_rule("from:\n- source:\n    principals: [\"cluster.local/ns/x/sa/y\"]"),
        options(),
    );
    check(
        &s,
        &[
            (http("GET", "/").from("new.td/ns/x/sa/y"), true),
            (http("GET", "/").from("old.td/ns/x/sa/y"), true),
            (http("GET", "/").from(FOREIGN), false),
        ],
    );
    let s = set_with(
        &allow_rule(
            "when:\n- key: source.principal\n  values: [\"payments.example.org/ns/x/sa/y\"]",
        ),
        options(),
    );
    check(
        &s,
        &[
            (http("GET", "/").from(FOREIGN), true),
            (http("GET", "/").from("new.td/ns/x/sa/y"), false),
        ],
    );
}

#[test]
fn mesh_trust_domain_aliases_expand_to_each_other() {
    let options = EngineOptions {
        trust_domain: TrustDomain::parse("new.td").unwrap(),
        trust_domain_aliases: vec![TrustDomain::parse("old.td").unwrap()],
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
