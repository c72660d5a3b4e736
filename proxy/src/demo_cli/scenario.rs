//! The scenario of the AWS re:Inforce 2025 zero-trust talk, step by step: the
//! command, the policy applied, the response, and whether it is what the talk shows.

use std::time::{Duration, Instant};

use meshward_integration::{CurlResponse, Mesh};

/// The talk's policies, the files a user would `kubectl apply`, unchanged.
const DEFAULT_DENY: (&str, &str) = (
    "01-default-deny",
    include_str!("../../../docker/examples/policies/01-default-deny.yaml"),
);
const ALLOW_CURL_SPIRE: (&str, &str) = (
    "02-allow-curl-spire",
    include_str!("../../../docker/examples/policies/02-allow-curl-spire.yaml"),
);
const ALLOW_PAYMENT_ONLY: (&str, &str) = (
    "03-allow-payment-only",
    include_str!("../../../docker/examples/policies/03-allow-payment-only.yaml"),
);
/// The trust domain the policy files name.
pub(crate) const TALK_TRUST_DOMAIN: &str = "math.example.com";
/// A policy change reaches the daemons within about a second; give it a few.
const SETTLE: Duration = Duration::from_secs(10);

/// What a step must show.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// No HTTP answer at all: the connection is refused.
    Refused,
    /// This status; with `xfcc`, the echoserver saw an XFCC naming the caller.
    Status { code: u16, xfcc: bool },
}

struct Request {
    pod: &'static str,
    method: &'static str,
    path: &'static str,
    expect: Expect,
}

struct Step {
    title: &'static str,
    remove: Option<&'static str>,
    apply: Option<(&'static str, &'static str)>,
    requests: Vec<Request>,
}

fn steps() -> Vec<Step> {
    let get = |pod, path, expect| Request {
        pod,
        method: "GET",
        path,
        expect,
    };
    vec![
        Step {
            title: "a pod without identity is refused",
            remove: None,
            apply: None,
            requests: vec![get("curl", "/", Expect::Refused)],
        },
        Step {
            title: "a pod with identity gets 200, and the echoserver sees who called",
            remove: None,
            apply: None,
            requests: vec![get(
                "curl-spire",
                "/",
                Expect::Status {
                    code: 200,
                    xfcc: true,
                },
            )],
        },
        Step {
            title: "default deny for the echoserver namespace",
            remove: None,
            apply: Some(DEFAULT_DENY),
            requests: vec![get(
                "curl-spire",
                "/",
                Expect::Status {
                    code: 403,
                    xfcc: false,
                },
            )],
        },
        Step {
            title: "ALLOW the caller's SPIFFE identity",
            remove: None,
            apply: Some(ALLOW_CURL_SPIRE),
            requests: vec![get(
                "curl-spire",
                "/",
                Expect::Status {
                    code: 200,
                    xfcc: true,
                },
            )],
        },
        Step {
            title: "ALLOW only POST /api/payment",
            remove: Some(ALLOW_CURL_SPIRE.0),
            apply: Some(ALLOW_PAYMENT_ONLY),
            requests: vec![
                Request {
                    pod: "curl-spire",
                    method: "POST",
                    path: "/api/payment",
                    expect: Expect::Status {
                        code: 200,
                        xfcc: true,
                    },
                },
                get(
                    "curl-spire",
                    "/list",
                    Expect::Status {
                        code: 403,
                        xfcc: false,
                    },
                ),
            ],
        },
    ]
}

/// Runs every step; returns how many showed something else than expected.
/// `stop` is polled between steps (Ctrl-C).
pub(crate) fn run(mesh: &Mesh, echo_url: &str, stop: &dyn Fn() -> bool) -> usize {
    let td = mesh.trust_domain().to_owned();
    let mut failures = 0;
    for (n, step) in steps().into_iter().enumerate() {
        if stop() {
            break;
        }
        println!("\n== Step {}: {}", n + 1, step.title);
        if let Some(name) = step.remove {
            println!("$ kubectl delete -f docker/examples/policies/{name}.yaml");
            if let Err(e) = mesh.delete_policy(name) {
                println!("   could not remove it: {e}");
            }
        }
        if let Some((name, yaml)) = step.apply {
            println!("$ kubectl apply -f docker/examples/policies/{name}.yaml");
            for line in yaml.lines().filter(|l| !l.starts_with('#')) {
                println!("   | {line}");
            }
            // the files name the talk's trust domain; another one is substituted
            let yaml = yaml.replace(TALK_TRUST_DOMAIN, &td);
            if let Err(e) = mesh.apply_policy(name, &yaml) {
                println!("   could not apply it: {e}");
                failures += 1;
                continue;
            }
        }
        for request in &step.requests {
            if !perform(mesh, echo_url, request, &td) {
                failures += 1;
            }
        }
    }
    failures
}

/// One request, retried while a policy change settles; prints what it saw.
fn perform(mesh: &Mesh, echo_url: &str, request: &Request, td: &str) -> bool {
    let url = format!("{echo_url}{}", request.path);
    let mut args = vec!["-X", request.method, url.as_str()];
    if request.method == "POST" {
        args.splice(2..2, ["-d", "amount=42"]);
    }
    println!(
        "$ meshward demo exec {} -- curl -sS {}",
        request.pod,
        args.join(" ")
    );
    let deadline = Instant::now() + SETTLE;
    let (response, verdict) = loop {
        let response = mesh.cluster.curl(request.pod, &args);
        let verdict = match &response {
            Ok(r) => judge(r, request.expect, request.pod, td),
            Err(e) => Err(format!("curl did not run: {e}")),
        };
        if verdict.is_ok() || Instant::now() >= deadline {
            break (response, verdict);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if let Ok(r) = &response {
        show(r);
    }
    match verdict {
        Ok(what) => {
            println!("   ok: {what}");
            true
        }
        Err(what) => {
            println!("   UNEXPECTED: {what}");
            false
        }
    }
}

fn judge(r: &CurlResponse, expect: Expect, pod: &str, td: &str) -> Result<String, String> {
    match (expect, r.status) {
        (Expect::Refused, None) => Ok(
            "refused: no identity, no mTLS, and the destination accepts only mTLS (STRICT)".into(),
        ),
        (Expect::Refused, Some(code)) => Err(format!("expected a refusal, got HTTP {code}")),
        (Expect::Status { code, .. }, got) if got != Some(code) => Err(format!(
            "expected HTTP {code}, got {}",
            got.map_or_else(|| "no answer".to_owned(), |c| c.to_string())
        )),
        (Expect::Status { code: 403, .. }, _) if r.body != "RBAC: access denied" => {
            Err(format!("403 without Envoy's body: {:?}", r.body))
        }
        (Expect::Status { code: 403, .. }, _) => Ok("403 RBAC: access denied".into()),
        (Expect::Status { code, xfcc: true }, _) => {
            let want = format!("URI=spiffe://{td}/ns/default/sa/{}", pod_account(pod));
            match xfcc_of(r) {
                Some(x) if x.ends_with(&want) => Ok(format!(
                    "{code}, and the echoserver saw the caller's identity"
                )),
                other => Err(format!("XFCC should end with {want}, got {other:?}")),
            }
        }
        (Expect::Status { code, .. }, _) => Ok(code.to_string()),
    }
}

fn pod_account(pod: &str) -> &str {
    if pod == "curl-spire" {
        "curl-spire"
    } else {
        "default"
    }
}

fn xfcc_of(r: &CurlResponse) -> Option<String> {
    let json = r.json()?;
    Some(
        json["request"]["headers"]["x-forwarded-client-cert"]
            .as_str()?
            .to_owned(),
    )
}

fn show(r: &CurlResponse) {
    match r.status {
        None => println!("   {}", r.stderr.trim()),
        Some(code) => {
            println!("   HTTP {code}");
            match xfcc_of(r) {
                Some(xfcc) => {
                    println!("   x-forwarded-client-cert, as the echoserver received it:");
                    for part in xfcc.split(';') {
                        println!("     {part}");
                    }
                }
                None if r.body.len() < 200 => println!("   {}", r.body.trim()),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: Option<u16>, body: &str) -> CurlResponse {
        CurlResponse {
            exit_code: Some(if status.is_some() { 0 } else { 56 }),
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            stderr: String::new(),
        }
    }

    const TD: &str = "math.example.com";

    #[test]
    fn a_step_passes_only_on_what_the_talk_shows() {
        let ok_200 = Expect::Status {
            code: 200,
            xfcc: true,
        };
        let xfcc = format!(
            r#"{{"request":{{"headers":{{"x-forwarded-client-cert":"By=spiffe://{TD}/ns/echoserver/sa/default;Hash=00;Subject=\"\";URI=spiffe://{TD}/ns/default/sa/curl-spire"}}}}}}"#
        );
        assert!(judge(&response(Some(200), &xfcc), ok_200, "curl-spire", TD).is_ok());
        // 200 without XFCC, or naming someone else, is not the talk
        assert!(judge(&response(Some(200), "{}"), ok_200, "curl-spire", TD).is_err());
        assert!(judge(&response(Some(200), &xfcc), ok_200, "curl", TD).is_err());
        // 403 must be Envoy's refusal
        let denied = Expect::Status {
            code: 403,
            xfcc: false,
        };
        assert!(
            judge(
                &response(Some(403), "RBAC: access denied"),
                denied,
                "curl-spire",
                TD
            )
            .is_ok()
        );
        assert!(judge(&response(Some(403), "Forbidden"), denied, "curl-spire", TD).is_err());
        // a refusal is no answer at all
        assert!(judge(&response(None, ""), Expect::Refused, "curl", TD).is_ok());
        assert!(judge(&response(Some(200), ""), Expect::Refused, "curl", TD).is_err());
        assert!(judge(&response(None, ""), denied, "curl-spire", TD).is_err());
    }
}
