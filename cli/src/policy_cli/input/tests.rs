use meshward_policy::{EngineOptions, load_str};

use super::*;

const N: PathNormalization = PathNormalization::DecodeAndMergeSlashes;

fn line(request: &str) -> String {
    format!(
        r#"{{"workload": {{"namespace": "echoserver", "labels": {{"app": "echo"}}}}, "request": {request}}}"#
    )
}

fn http_line(extra: &str) -> String {
    line(&format!(
        r#"{{"protocol": "http", "source_ip": "10.0.0.5", "destination_ip": "10.0.1.7", "destination_port": 8080, "host": "echo", "method": "GET", "path": "/"{extra}}}"#
    ))
}

fn allow_all() -> PolicySet {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: all\n  namespace: echoserver\nspec:\n  rules:\n  - when:\n    - key: request.headers[x-role]\n      notValues: [admin]\n";
    let options = EngineOptions::default();
    load_str(yaml, "t", &options)
        .into_policy_set(&options)
        .unwrap()
}

fn decide(json: &str) -> serde_json::Value {
    let input = EvalInput::from_json(json, N).unwrap();
    serde_json::to_value(input.decide(&allow_all())).unwrap()
}

fn error(json: &str) -> String {
    match EvalInput::from_json(json, N) {
        Ok(_) => panic!("{json} should be rejected"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn decision_line_fields() {
    let out = decide(&http_line(""));
    assert_eq!(
        out,
        json!({"decision": "allow", "status": 200, "policy": "echoserver/all", "action": "ALLOW", "rule": 0,
               "reason": "allowed by ALLOW policy echoserver/all rule 0"})
    );
    let out = decide(&http_line(r#", "headers": {"x-role": ["user", "admin"]}"#));
    assert_eq!(
        (out["decision"].as_str(), out["status"].as_u64()),
        (Some("deny"), Some(403))
    );
}

#[test]
fn tcp_has_no_status() {
    let out = decide(&line(
        r#"{"protocol": "tcp", "source_ip": "10.0.0.5", "destination_ip": "10.0.1.7", "destination_port": 8080}"#,
    ));
    assert_eq!(out["status"], Value::Null);
}

#[test]
fn bad_requests_are_400_decisions() {
    let request = |method: &str, path: &str, headers: &str| {
        line(&format!(
            r#"{{"protocol": "http", "source_ip": "10.0.0.5", "destination_ip": "10.0.1.7", "destination_port": 8080, "host": "echo", "method": "{method}", "path": "{path}", "headers": {headers}}}"#
        ))
    };
    for (json, why) in [
        (request("GET", "/a%00", "{}"), "encoded NUL"),
        (request("GET", "/a%zz", "{}"), "malformed escape"),
        (request("get", "/", "{}"), "lower-case method"),
        (
            request("GET", "/", r#"{"bad name": "x"}"#),
            "whitespace in a header name",
        ),
        (
            request("GET", "/", r#"{"x": "a\u0000b"}"#),
            "NUL in a header value",
        ),
    ] {
        let out = decide(&json);
        assert_eq!(out["status"], 400, "{why}: {json} -> {out}");
        assert_eq!(out["decision"], "deny", "{why}");
        assert!(
            out["reason"].as_str().unwrap().starts_with("bad request: "),
            "{why}: {out}"
        );
    }
}

#[test]
fn malformed_lines_are_errors() {
    let tcp_with_method = line(
        r#"{"protocol": "tcp", "method": "GET", "source_ip": "10.0.0.5", "destination_ip": "10.0.1.7", "destination_port": 1}"#,
    );
    assert!(error(&tcp_with_method).contains("request.method is an HTTP field; protocol is tcp"));
    let no_method = line(
        r#"{"protocol": "http", "source_ip": "10.0.0.5", "destination_ip": "10.0.1.7", "destination_port": 1, "host": "h", "path": "/"}"#,
    );
    assert!(error(&no_method).contains("request.method is required"));
    let ns_without_principal = http_line(r#", "source_namespace": "foo""#);
    assert!(
        error(&ns_without_principal).contains("source_namespace needs request.source_principal")
    );
    assert!(
        error(&http_line(r#", "source_principal": "Not A Principal""#))
            .contains("source_principal")
    );
    assert!(error(&http_line(r#", "colour": "blue""#)).contains("unknown field `colour`"));
    assert!(error("{not json").contains("key must be a string"));
    assert!(error(&http_line("").replace("10.0.0.5", "10.0.0")).contains("invalid IP address"));
}

#[test]
fn jwt_fields_become_claims() {
    let input = EvalInput::from_json(
        &http_line(r#", "jwt": {"iss": "https://i", "sub": "alice", "aud": "api", "claims": {"groups": ["a"]}}"#),
        N,
    )
    .unwrap();
    let Outcome::Ready(request) = input.request else {
        panic!("not ready")
    };
    let jwt = request.http.unwrap().jwt().cloned().unwrap();
    assert_eq!(jwt.audiences, ["api"]);
    assert_eq!(jwt.claims["iss"], "https://i");
    assert_eq!(jwt.claims["groups"], json!(["a"]));
}

#[test]
fn source_namespace_overrides_the_principal() {
    let input = EvalInput::from_json(
        &http_line(r#", "source_principal": "spiffe://td/ns/a/sa/b", "source_namespace": "c""#),
        N,
    )
    .unwrap();
    let Outcome::Ready(request) = input.request else {
        panic!("not ready")
    };
    assert_eq!(request.source_namespace(), Some("c"));
    assert_eq!(request.source.unwrap().principal(), "td/ns/a/sa/b");
}
