//! `meshward policy ...` as a user runs it: the real binary, real files, exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/examples")
}

fn meshward(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshward runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("stdin accepts input");
    drop(input);
    child.wait_with_output().expect("meshward exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_example_policies() {
    let out = meshward(
        &[
            "policy",
            "check",
            examples().join("policies").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "5 policies and 1 RequestAuthentication(s) valid\n"
    );
}

#[test]
fn check_reports_one_error_per_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\n  namespace: x\nspec:\n  action: DENY\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: b\nspec:\n  rules:\n  - to:\n    - operation:\n        pahts: [\"/x\"]\n",
    )
    .unwrap();
    let out = meshward(&["policy", "check", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let file = bad.display().to_string();
    assert_eq!(
        lines[0],
        format!(
            "{file}: document 1 (policy x/a): spec.rules: a DENY policy needs at least one rule (write `rules: [{{}}]` to deny everything)"
        )
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}: document 2: spec.rules[0].to[0].operation.pahts: unknown field `pahts`"
        )),
        "{}",
        lines[1]
    );
}

#[test]
fn eval_answers_line_by_line_and_survives_malformed_lines() {
    let talk = std::fs::read_to_string(examples().join("requests/talk.jsonl")).unwrap();
    let mut lines: Vec<&str> = talk.lines().collect();
    lines.insert(1, "{\"workload\": 5}");
    let input = lines.join("\n") + "\n";
    let policies = examples().join("policies");
    let out = meshward(
        &[
            "policy",
            "eval",
            "--policies",
            policies.join("01-default-deny.yaml").to_str().unwrap(),
            "--policies",
            policies
                .join("03-allow-payment-only.yaml")
                .to_str()
                .unwrap(),
            "--trust-domain",
            "math.example.com",
            "--requests",
            "-",
        ],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), 6, "{stdout}");
    assert_eq!(
        got[0],
        r#"{"decision":"allow","status":200,"policy":"echoserver/allow-payment-only","action":"ALLOW","rule":0,"reason":"allowed by ALLOW policy echoserver/allow-payment-only rule 0"}"#
    );
    assert!(got[1].starts_with(r#"{"error":"line 2: "#), "{}", got[1]);
    let decisions: Vec<serde_json::Value> = got[2..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(&str, serde_json::Value)> = decisions
        .iter()
        .map(|d| (d["decision"].as_str().unwrap(), d["status"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("deny", 403.into()),              // GET /list
            ("deny", 403.into()),              // no identity
            ("allow", 200.into()),             // /api//x/../payment normalizes to /api/payment
            ("deny", serde_json::Value::Null), // TCP: the ALLOW rule uses HTTP fields, dropped
        ]
    );
}

#[test]
fn eval_refuses_to_run_with_an_invalid_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec:\n  actoin: DENY\n").unwrap();
    let out = meshward(
        &[
            "policy",
            "eval",
            "--policies",
            dir.path().to_str().unwrap(),
            "--requests",
            "-",
        ],
        Some(""),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("spec.actoin: unknown field `actoin`"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was evaluated"), "{stderr}");
}

#[test]
fn explain_shows_the_near_miss_and_the_decision() {
    let policies = examples().join("policies");
    let out = meshward(
        &[
            "policy",
            "explain",
            "--policies",
            policies
                .join("03-allow-payment-only.yaml")
                .to_str()
                .unwrap(),
            "--namespace",
            "echoserver",
            "--label",
            "app=echoserver",
            "--from",
            "math.example.com/ns/default/sa/curl-spire",
            "--method",
            "POST",
            "--path",
            "/api/refund",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(r#"rule 0: no match: spec.rules[0].to[0].operation.paths wants one of ["/api/payment"], request has "/api/refund""#),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("decision: denied: no ALLOW policy matched\n"),
        "{stdout}"
    );
}

#[test]
fn explain_reads_a_json_request_too() {
    let talk = std::fs::read_to_string(examples().join("requests/talk.jsonl")).unwrap();
    let first = talk.lines().next().unwrap();
    let policies = examples().join("policies");
    let out = meshward(
        &[
            "policy",
            "explain",
            "--policies",
            policies.to_str().unwrap(),
            "--request",
            "-",
        ],
        Some(first),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("decision: allowed by ALLOW policy echoserver/allow-curl-spire rule 0"),
        "{stdout}"
    );
}

/// `eval` and `explain` run the same engine through different code (a decision,
/// and every rule's near miss): on every request of the talk, under two policy
/// sets, they must agree.
#[test]
fn eval_and_explain_agree_on_every_request() {
    let talk = std::fs::read_to_string(examples().join("requests/talk.jsonl")).unwrap();
    let policies = examples().join("policies");
    let sets = [
        vec![policies.clone()],
        vec![
            policies.join("01-default-deny.yaml"),
            policies.join("03-allow-payment-only.yaml"),
        ],
    ];
    for set in &sets {
        let mut flags: Vec<&str> = Vec::new();
        for path in set {
            flags.extend(["--policies", path.to_str().unwrap()]);
        }
        let mut eval = vec!["policy", "eval"];
        eval.extend(&flags);
        eval.extend(["--trust-domain", "math.example.com", "--requests", "-"]);
        let out = meshward(&eval, Some(&talk));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let decisions = text(&out.stdout);
        let mut checked = 0;
        for (line, decision) in talk.lines().zip(decisions.lines()) {
            let decision: serde_json::Value = serde_json::from_str(decision).unwrap();
            let mut explain = vec!["policy", "explain"];
            explain.extend(&flags);
            explain.extend(["--trust-domain", "math.example.com", "--request", "-"]);
            let out = meshward(&explain, Some(line));
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let explained = text(&out.stdout);
            let want = match decision["decision"].as_str() {
                Some("allow") => "decision: allowed",
                Some("deny") => "decision: denied",
                other => panic!("{other:?}"),
            };
            assert!(
                explained.contains(want),
                "{set:?} {line}\neval: {decision}\nexplain: {explained}"
            );
            checked += 1;
        }
        assert_eq!(checked, talk.lines().count());
    }
}
