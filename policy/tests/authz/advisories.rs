//! Every authorization-relevant advisory of the reference's CVE table (§8): the
//! bypass input must not get through.

use http::HeaderMap;
use meshward_policy::{BadRequest, HttpRequest, InvalidTarget, PathNormalization, PolicySet};

use crate::support::*;

/// Allows everything except what the DENY `operation` (YAML) matches.
fn deny_only(operation: &str) -> PolicySet {
    set(&(policy("all", "  rules:\n  - {}")
        + &deny_rule(&format!("to:\n- operation:\n    {operation}"))))
}

#[test]
fn cve_2019_9901_dot_segments_are_resolved_before_matching() {
    let s = set(&allow_rule("to:\n- operation:\n    paths: [\"/public*\"]"));
    for option in [
        PathNormalization::Base,
        PathNormalization::DecodeAndMergeSlashes,
    ] {
        check(
            &s,
            &[
                (http("GET", "/public/x").normalization(option), true),
                (http("GET", "/public/../admin").normalization(option), false),
                (
                    http("GET", "/public/%2e%2e/admin").normalization(option),
                    false,
                ),
            ],
        );
    }
}

#[test]
fn cve_2019_9900_encoded_nul_is_a_bad_request() {
    for option in PathNormalization::ALL {
        let r = HttpRequest::new("GET", "/admin%00.png", "h", HeaderMap::new(), option);
        assert_eq!(
            r.unwrap_err(),
            BadRequest::Target(InvalidTarget::EncodedNul)
        );
    }
}

#[test]
fn cve_2019_12243_tcp_is_authorized_too() {
    assert!(!allowed(&set(""), &echo(), &tcp()));
    let s = deny_only("ports: [\"8080\"]");
    check(&s, &[(tcp().port(8080), false), (tcp().port(9000), true)]);
}

#[test]
fn cve_2020_8595_query_and_fragment_do_not_defeat_exact_paths() {
    let s = deny_only("paths: [\"/admin\"]");
    for target in [
        "/admin",
        "/admin?",
        "/admin#",
        "/admin?x=1",
        "/admin#frag",
        "/admin?a#b",
    ] {
        check(&s, &[(http("GET", target), false)]);
    }
}

#[test]
fn cve_2020_16844_suffix_principal_works_for_tcp() {
    let s = set(&(policy("all", "  rules:\n  - {}")
        + &deny_rule("from:\n- source:\n    principals: [\"*/ns/ns1/sa/foo\"]")));
    check(
        &s,
        &[
            (tcp().from("cluster.local/ns/ns1/sa/foo"), false),
            (http("GET", "/").from("cluster.local/ns/ns1/sa/foo"), false),
            (tcp().from("cluster.local/ns/ns1/sa/other"), true),
        ],
    );
}

#[test]
fn cve_2020_25017_and_cve_2026_26308_every_header_value_counts() {
    let s = set(&(policy("all", "  rules:\n  - {}")
        + &deny_rule("when:\n- key: request.headers[x-role]\n  values: [\"admin\"]")));
    check(
        &s,
        &[
            (
                http("GET", "/")
                    .header("x-role", "user")
                    .header("x-role", "admin"),
                false,
            ),
            (
                http("GET", "/")
                    .header("x-role", "admin")
                    .header("x-role", "user"),
                false,
            ),
            (http("GET", "/").header("x-role", "user"), true),
            // one line or two: the same values, the same decision
            (http("GET", "/").header("x-role", "guest, admin"), false),
            (http("GET", "/").header("x-role", "guest,admin"), false),
            (
                http("GET", "/").header("x-role", "guest, administrator"),
                true,
            ),
        ],
    );
    // the whole line still matches as written, and so do repeated lines combined
    let s = set(&(policy("all", "  rules:\n  - {}")
        + &deny_rule("when:\n- key: request.headers[x-role]\n  values: [\"a, b\"]")));
    check(
        &s,
        &[
            (http("GET", "/").header("x-role", "a, b"), false),
            (
                http("GET", "/").header("x-role", "a").header("x-role", "b"),
                false,
            ),
            (http("GET", "/").header("x-role", "a"), true),
        ],
    );
}

/// `/admin;x=1` is `/admin` to Tomcat and others: parameters never hide a path.
#[test]
fn path_parameters_never_hide_a_path() {
    let s = deny_only("paths: [\"/admin\"]");
    for path in ["/admin;x=1", "/admin;", "/public/..;/admin", "/;x/admin"] {
        check(&s, &[(http("GET", path), false)]);
    }
}

/// Istio admits `request.headers[:method]` and friends; Envoy matches them.
#[test]
fn pseudo_headers_in_conditions() {
    let s = set(&(policy("all", "  rules:\n  - {}")
        + &deny_rule(
            "when:\n- key: request.headers[:method]\n  values: [\"DELETE\"]\n- key: request.headers[:authority]\n  values: [\"Admin.example*\"]\n- key: request.headers[:path]\n  values: [\"/x?debug*\"]",
        )));
    check(
        &s,
        &[
            (http("DELETE", "/x?debug=1").host("admin.example:80"), false),
            (http("GET", "/x?debug=1").host("admin.example:80"), true),
            (http("DELETE", "/x").host("admin.example"), true),
            (http("DELETE", "/x?debug").host("other.example"), true),
        ],
    );
    assert!(
        errors(&deny_rule(
            "when:\n- key: request.headers[:scheme]\n  values: [\"http\"]"
        ))
        .iter()
        .any(|e| e.contains(":method, :authority and :path")),
    );
}

#[test]
fn advisory_2021_002_ports_are_workload_ports() {
    let s = set(&allow_rule("to:\n- operation:\n    ports: [\"8080\"]"));
    // a Service port 80 forwarding to container port 8080 is seen as 8080
    check(
        &s,
        &[
            (http("GET", "/").port(8080), true),
            (http("GET", "/").port(80), false),
        ],
    );
}

#[test]
fn cve_2021_31920_slashes_and_escaped_slashes_under_the_default() {
    let s = deny_only("paths: [\"/admin\", \"/admin/*\"]");
    for target in [
        "//admin",
        "/admin%2Fx",
        "/admin%2fx",
        "/%5Cadmin",
        "/%5cadmin/x",
        "/x/..//admin",
        "///admin//x",
    ] {
        check(&s, &[(http("GET", target), false)]);
    }
    let s = set(&allow_rule(
        "to:\n- operation:\n    notPaths: [\"/admin*\"]",
    ));
    for target in ["//admin", "/x%2F..%2Fadmin", "/\\admin"] {
        check(&s, &[(http("GET", target), false)]);
    }
}

#[test]
fn cve_2021_39156_fragment_is_stripped() {
    let s = deny_only("paths: [\"/user/profile\"]");
    check(&s, &[(http("GET", "/user/profile#section1"), false)]);
}

#[test]
fn cve_2021_39155_hosts_are_case_insensitive() {
    let s = deny_only("hosts: [\"secret.com\"]");
    for host in ["Secret.com", "SECRET.COM", "secret.com"] {
        check(&s, &[(http("GET", "/").host(host), false)]);
    }
}

/// Istio's hosts compare `host:port` as a whole, so DENY `httpbin.foo` let
/// `Host: httpbin.foo:8000` through (ISTIO-SECURITY-2021-008 told users to add
/// `httpbin.foo:*`). meshward matches the name only: the port of `Host` is the
/// client's to choose, and a trailing dot or upper case names the same host.
#[test]
fn advisory_2021_008_no_host_form_escapes_a_deny() {
    for rule in [
        "hosts: [\"httpbin.foo\"]",
        "hosts: [\"httpbin.foo\", \"httpbin.foo:*\"]",
    ] {
        let s = deny_only(rule);
        for host in [
            "httpbin.foo:8000",
            "httpbin.foo",
            "HTTPBIN.foo.",
            "httpbin.foo.:80",
        ] {
            check(&s, &[(http("GET", "/").host(host), false)]);
        }
        check(&s, &[(http("GET", "/").host("other.foo:8000"), true)]);
    }
}

#[test]
fn cve_2022_21679_hosts_are_really_compared() {
    let s = set(&allow_rule("to:\n- operation:\n    hosts: [\"a.com\"]"));
    check(
        &s,
        &[
            (http("GET", "/").host("a.com"), true),
            (http("GET", "/").host("b.com"), false),
        ],
    );
    let s = set(&allow_rule("to:\n- operation:\n    notHosts: [\"a.com\"]"));
    check(
        &s,
        &[
            (http("GET", "/").host("a.com"), false),
            (http("GET", "/").host("b.com"), true),
        ],
    );
}

#[test]
fn cve_2026_39350_service_account_dots_are_literal() {
    let s = set(&allow_rule(
        "from:\n- source:\n    serviceAccounts: [\"cert-manager/cert-manager.io\"]",
    ));
    check(
        &s,
        &[
            (
                http("GET", "/").from("cluster.local/ns/cert-manager/sa/cert-manager.io"),
                true,
            ),
            (
                http("GET", "/").from("cluster.local/ns/cert-manager/sa/cert-manager-io"),
                false,
            ),
            (
                http("GET", "/").from("cluster.local/ns/cert-manager/sa/cert-managerXio"),
                false,
            ),
        ],
    );
}

/// Istio 2026: an HTTP/2 method that differs from a DENY's only in case. Methods
/// are compared exactly, so the request side must be refused, not folded: one in
/// another case is a bad request whatever the protocol (the data path's
/// `8 HTTP/2 method` case sends the frames).
#[test]
fn advisory_2026_methods_differing_only_in_case_are_bad_requests() {
    for method in ["delete", "Delete", "dELETE", "get"] {
        let r = HttpRequest::new(
            method,
            "/admin",
            "h",
            HeaderMap::new(),
            PathNormalization::Base,
        );
        assert_eq!(r.unwrap_err(), BadRequest::Method(method.to_owned()));
    }
    let s = deny_only("methods: [\"DELETE\"]");
    check(
        &s,
        &[
            (http("DELETE", "/admin"), false),
            (http("GET", "/admin"), true),
        ],
    );
}

/// Istio 2026 (after CVE-2026-39350): service-account values holding regular
/// expression metacharacters match only themselves, in the namespace and the name.
/// SPIFFE IDs hold no metacharacter but `.`, so a value with another one matches
/// nothing at all.
#[test]
fn advisory_2026_service_account_metacharacters_are_literal() {
    let s = set(&allow_rule(
        "from:\n- source:\n    serviceAccounts: [\"a.b/c_d\", \"a.b/sa.+\", \"x/s[a-z]\", \"y/(a|b)\", \"z/^a$\"]",
    ));
    let from =
        |ns: &str, sa: &str| http("GET", "/").from(&format!("cluster.local/ns/{ns}/sa/{sa}"));
    check(
        &s,
        &[
            (from("a.b", "c_d"), true),
            (from("aXb", "c_d"), false),
            (from("a-b", "c_d"), false),
            (from("a.b", "saa"), false),
            (from("a.b", "sa.xyz"), false),
            (from("a.b", "sa-x"), false),
            (from("x", "sa"), false),
            (from("y", "a"), false),
            (from("y", "b"), false),
            (from("z", "a"), false),
        ],
    );
}
