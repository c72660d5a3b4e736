//! The scenario of the AWS re:Inforce 2025 zero-trust talk, step by step: the
//! command, the policy applied, the response, and whether it is what the talk shows.

use std::time::{Duration, Instant};

use meshward_integration::{CurlResponse, Mesh};

use super::kube::KubeDemo;
use super::steps::{
    Change, Expect, PARTNER_TRUST_DOMAIN, Request, SETTLE, TALK_TRUST_DOMAIN, Token, steps,
};

/// Where the steps' policies go.
pub(crate) enum Policies<'a> {
    /// The directory every daemon reads (`authorization.policy_paths`).
    Directory,
    /// The real API server every daemon watches (`--kube`).
    Kube(&'a KubeDemo),
}

/// Runs every step; returns how many showed something else than expected.
/// `stop` is polled between steps (Ctrl-C).
pub(crate) fn run(mesh: &Mesh, policies: &Policies<'_>, stop: &dyn Fn() -> bool) -> usize {
    let td = mesh.trust_domain().to_owned();
    let mut failures = 0;
    for (n, step) in steps().into_iter().enumerate() {
        if stop() {
            break;
        }
        println!("\n== Step {}: {}", n + 1, step.title);
        for change in &step.changes {
            if let Err(e) = make(mesh, policies, change, &td) {
                println!("   could not do it: {e:#}");
                failures += 1;
            }
        }
        for request in &step.requests {
            if !perform(mesh, request) {
                failures += 1;
            }
        }
    }
    failures
}

/// Makes one change and prints what it really does.
fn make(mesh: &Mesh, policies: &Policies<'_>, change: &Change, td: &str) -> anyhow::Result<()> {
    match (change, policies) {
        (Change::Federate, _) => federate(mesh, td)?,
        // the files name the talk's trust domain; another one is substituted
        (Change::Apply((name, yaml)), Policies::Kube(kube)) => {
            kube.apply(name, &yaml.replace(TALK_TRUST_DOMAIN, td))?;
        }
        (Change::Remove((name, yaml)), Policies::Kube(kube)) => {
            kube.delete(name, &yaml.replace(TALK_TRUST_DOMAIN, td))?;
        }
        (Change::Apply((name, yaml)), Policies::Directory) => {
            copy_policy(mesh, name, yaml, td)?;
        }
        (Change::Remove((name, _)), Policies::Directory) => {
            let dir = mesh.policy_dir().display();
            println!("$ rm {dir}/{name}.yaml");
            println!("   (in a cluster: kubectl delete -f docker/examples/policies/{name}.yaml)");
            mesh.delete_policy(name)?;
        }
    }
    Ok(())
}

/// The demo's daemons read their policies from a directory too: a policy is a
/// file written there (what `kubectl apply` of the same file does in a cluster,
/// where the daemons watch the API; `--kube` does that).
fn copy_policy(mesh: &Mesh, name: &str, yaml: &str, td: &str) -> anyhow::Result<()> {
    let dir = mesh.policy_dir().display();
    println!("$ cp docker/examples/policies/{name}.yaml {dir}/");
    println!("   (in a cluster: kubectl apply -f docker/examples/policies/{name}.yaml)");
    if td != TALK_TRUST_DOMAIN {
        println!("   with {TALK_TRUST_DOMAIN} replaced by this mesh's {td}:");
    }
    for line in yaml.lines().filter(|l| !l.starts_with('#')) {
        println!("   | {line}");
    }
    mesh.apply_policy(name, &yaml.replace(TALK_TRUST_DOMAIN, td))?;
    Ok(())
}

/// Each cluster's issuer federates with the other, with the issuer's CLI.
fn federate(mesh: &Mesh, td: &str) -> anyhow::Result<()> {
    let commands = [
        mesh.federate(td, PARTNER_TRUST_DOMAIN)?,
        mesh.federate(PARTNER_TRUST_DOMAIN, td)?,
        vec![mesh.federate_pod("echoserver", &[PARTNER_TRUST_DOMAIN])?],
        vec![mesh.federate_pod("payments", &[td])?],
    ];
    for command in commands.iter().flatten() {
        println!("$ {command}");
    }
    Ok(())
}

/// One request, retried while a change settles; prints what it saw.
fn perform(mesh: &Mesh, request: &Request) -> bool {
    let (url, caller) = match (mesh.pod_ip(request.to), mesh.pod_spiffe_id(request.pod)) {
        (Ok(ip), Ok(caller)) => (format!("http://{ip}:8080{}", request.path), caller),
        (Err(e), _) | (_, Err(e)) => {
            println!("   UNEXPECTED: {e}");
            return false;
        }
    };
    let mut args = vec!["-X", request.method, url.as_str()];
    if request.method == "POST" {
        args.splice(2..2, ["-d", "amount=42"]);
    }
    let authorization = match bearer(mesh, request) {
        Ok(header) => header,
        Err(e) => {
            println!("   UNEXPECTED: no JWT-SVID: {e}");
            return false;
        }
    };
    let mut shown = args.join(" ");
    if let Some(header) = &authorization {
        args.splice(0..0, ["-H", header.as_str()]);
        let audience = match request.token {
            Token::JwtSvid(audience) => audience,
            _ => "echoserver",
        };
        let socket = mesh
            .cluster
            .pod(request.pod)
            .map(|p| mesh.workload_api_socket(p.node()).display().to_string())
            .unwrap_or_default();
        println!(
            "$ TOKEN=$(meshward demo exec {} -- meshward api fetch jwt -audience {audience} -socketPath {socket} | sed -n 2p | tr -d '\\t'){}",
            request.pod,
            if request.token == Token::Tampered {
                "    # then one character of its signature changed"
            } else {
                ""
            }
        );
        shown = format!("-H \"authorization: Bearer $TOKEN\" {shown}");
    }
    println!("$ meshward demo exec {} -- curl -sS {shown}", request.pod);
    let deadline = Instant::now() + SETTLE;
    let (response, verdict) = loop {
        let response = mesh.cluster.curl(request.pod, &args);
        let verdict = match &response {
            Ok(r) => judge(r, request.expect, &caller),
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

/// The `authorization` header of `request`: a JWT-SVID fetched from the
/// caller's node, as `meshward api fetch jwt` gives it to the pod.
fn bearer(mesh: &Mesh, request: &Request) -> Result<Option<String>, String> {
    let audience = match request.token {
        Token::None => return Ok(None),
        Token::JwtSvid(audience) => audience,
        Token::Tampered => "echoserver",
    };
    let mut token = mesh
        .fetch_jwt_svid(request.pod, audience)
        .map_err(|e| e.to_string())?;
    if request.token == Token::Tampered {
        token = tamper(&token);
    }
    Ok(Some(format!("authorization: Bearer {token}")))
}

/// The token with one character of its signature changed.
fn tamper(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let i = bytes.len().saturating_sub(2);
    if let Some(b) = bytes.get_mut(i) {
        *b = if *b == b'A' { b'B' } else { b'A' };
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether `r` is what `expect` says; `caller` is the calling pod's SPIFFE ID.
fn judge(r: &CurlResponse, expect: Expect, caller: &str) -> Result<String, String> {
    match (expect, r.status) {
        (Expect::Refused(why), None) => Ok(why.into()),
        (Expect::Refused(_), Some(code)) => Err(format!("expected a refusal, got HTTP {code}")),
        (Expect::Unauthorized(body), Some(401))
            if r.body == body && r.header("www-authenticate").is_some() =>
        {
            Ok(format!("401 {body}"))
        }
        (Expect::Unauthorized(body), got) => Err(format!(
            "expected 401 {body:?} with www-authenticate, got {got:?} {:?}",
            r.body
        )),
        (Expect::Status { code, .. }, got) if got != Some(code) => Err(format!(
            "expected HTTP {code}, got {}",
            got.map_or_else(|| "no answer".to_owned(), |c| c.to_string())
        )),
        (Expect::Status { code: 403, .. }, _) if r.body != "RBAC: access denied" => {
            Err(format!("403 without Envoy's body: {:?}", r.body))
        }
        (Expect::Status { code: 403, .. }, _) => Ok("403 RBAC: access denied".into()),
        (Expect::Status { code, xfcc: true }, _) => {
            let want = format!("URI={caller}");
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
    use super::super::steps::NO_IDENTITY;
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
        let curl_spire = format!("spiffe://{TD}/ns/default/sa/curl-spire");
        assert!(judge(&response(Some(200), &xfcc), ok_200, &curl_spire).is_ok());
        // 200 without XFCC, or naming someone else, is not the talk
        assert!(judge(&response(Some(200), "{}"), ok_200, &curl_spire).is_err());
        let partner = "spiffe://payments.example.org/ns/default/sa/curl-spire";
        assert!(judge(&response(Some(200), &xfcc), ok_200, partner).is_err());
        // 403 must be Envoy's refusal
        let denied = Expect::Status {
            code: 403,
            xfcc: false,
        };
        assert!(
            judge(
                &response(Some(403), "RBAC: access denied"),
                denied,
                &curl_spire
            )
            .is_ok()
        );
        assert!(judge(&response(Some(403), "Forbidden"), denied, &curl_spire).is_err());
        // a refusal is no answer at all
        assert!(judge(&response(None, ""), NO_IDENTITY, "").is_ok());
        assert!(judge(&response(Some(200), ""), NO_IDENTITY, "").is_err());
        assert!(judge(&response(None, ""), denied, &curl_spire).is_err());
        // a bad token: 401 with Envoy's text and a challenge
        let bad = Expect::Unauthorized("Jwt verification fails");
        let mut challenged = response(Some(401), "Jwt verification fails");
        assert!(
            judge(&challenged, bad, &curl_spire).is_err(),
            "no www-authenticate"
        );
        challenged
            .headers
            .push(("www-authenticate".into(), "Bearer realm=\"x\"".into()));
        assert!(judge(&challenged, bad, &curl_spire).is_ok());
        assert!(
            judge(
                &response(Some(403), "Jwt verification fails"),
                bad,
                &curl_spire
            )
            .is_err()
        );
    }
}
