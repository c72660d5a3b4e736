//! RequestAuthentication end to end: real tokens through the node proxies.
//! - JWT-SVIDs a pod fetches from its node's Workload API, validated with the
//!   node's SPIFFE bundle (`issuer: spiffe://<trust domain>`);
//! - tokens of an identity provider whose JWKS a host of the test cluster serves
//!   over HTTPS (`jwksUri`), in every bad-token class;
//! - keys that cannot be fetched refuse the tokens, and nothing else verifies them.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use meshward_integration::{CurlResponse, Mesh, Process, available_or_skip, wait_for_port};
use meshward_test_support::jwks::{P256Signer, unix_now};
use serde_json::{Value, json};
use support::{TD, bearer, call, curl_spire, echo_mesh, eventually, node_metric, unauthorized};

/// What the echoserver received.
fn received(r: &CurlResponse) -> Value {
    r.json()
        .unwrap_or_else(|| panic!("not the echoserver's JSON: {r:?}"))["request"]["headers"]
        .clone()
}

fn apply(mesh: &Mesh, name: &str, spec: &str) {
    let kind = if spec.contains("jwtRules") {
        "RequestAuthentication"
    } else {
        "AuthorizationPolicy"
    };
    mesh.apply_policy(
        name,
        &format!(
            "apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: echoserver}}\nspec:\n  selector: {{matchLabels: {{app: echoserver}}}}\n{spec}"
        ),
    )
    .unwrap();
}

#[test]
fn jwt_svids_from_the_workload_api_authenticate_requests() {
    let Some(()) = available_or_skip("jwt_svids_from_the_workload_api_authenticate_requests")
    else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true);
    });
    let caller = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    apply(
        &mesh,
        "jwt-svids",
        &format!("  jwtRules:\n  - issuer: spiffe://{TD}\n    audiences: [echoserver]\n"),
    );
    // the request principal of a JWT-SVID is Istio's iss/sub: spiffe://<td>/<ID>
    apply(
        &mesh,
        "require-jwt",
        &format!(
            "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"spiffe://{TD}/{caller}\"]\n"
        ),
    );
    let fetch = |audience: &str| mesh.fetch_jwt_svid("curl-spire", audience).unwrap();
    let token = fetch("echoserver");

    let r = eventually(&mesh, "the JWT-SVID is accepted", || {
        let r = call(&mesh, &bearer(&token));
        (r.status == Some(200))
            .then_some(r)
            .ok_or("not yet".to_owned())
    });
    // the pod does not receive the token (forwardOriginalToken is off)
    assert!(received(&r).get("authorization").is_none(), "{}", r.body);
    // no token: no request principal, and the policy requires one
    let r = call(&mesh, &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (Some(403), "RBAC: access denied")
    );
    // tampered: one character of the signature changed
    let mut tampered = token.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    unauthorized(&call(&mesh, &bearer(&tampered)), "Jwt verification fails").unwrap();
    // another audience
    let other = fetch("billing");
    unauthorized(
        &call(&mesh, &bearer(&other)),
        "Audiences in Jwt are not allowed",
    )
    .unwrap();
    let logs = mesh.daemon_log("node-2");
    assert!(logs.contains("JWT refused"), "{logs}");
}

/// A test CA for the identity provider's HTTPS, and the provider's signing key.
struct Provider {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    signer: P256Signer,
}

impl Provider {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test identity provider CA");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let ca = rcgen::Issuer::new(params, ca_key);
        Self {
            signer: P256Signer::new("idp-1"),
            dir,
            ca,
        }
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Serves `jwks.json` over HTTPS from a new host of the cluster; its URL.
    fn serve(&self, mesh: &mut Mesh) -> (Process, String) {
        let ip = mesh.cluster.add_host("idp").unwrap().ip();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip.into())];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let www = self.dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(self.dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(self.dir.path().join("server.key"), key.serialize_pem()).unwrap();
        let jwks = self.signer.jwks();
        std::fs::write(www.join("jwks.json"), jwks).unwrap();
        // OpenID discovery, for a rule that names only the issuer
        let base = format!("https://{ip}:8443");
        std::fs::create_dir_all(www.join(".well-known")).unwrap();
        std::fs::write(
            www.join(".well-known/openid-configuration"),
            json!({"issuer": base, "jwks_uri": format!("{base}/jwks.json")}).to_string(),
        )
        .unwrap();
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/serve_https.py");
        let ns = mesh.cluster.host("idp").unwrap().netns();
        let server = Process::spawn(
            ns,
            "idp",
            "python3",
            &[
                script,
                &www.display().to_string(),
                &path("server.pem"),
                &path("server.key"),
                &ip.to_string(),
                "8443",
            ],
            &[],
            mesh.cluster.log_dir(),
        )
        .unwrap();
        wait_for_port(ns, (ip, 8443).into(), Duration::from_secs(10)).unwrap();
        (server, format!("https://{ip}:8443/jwks.json"))
    }

    fn token(&self, claims: &Value) -> String {
        self.signer.sign(claims)
    }
}

const IDP: &str = "https://idp.example";

fn now() -> u64 {
    unix_now()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": IDP, "sub": "alice", "aud": "shop", "exp": now() + 600,
        "groups": ["admins"], "team": "payments"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// The echo mesh with curl-spire, whose daemons trust `provider`'s CA for JWKS
/// fetches; `jwks` adds settings to `authorization.jwks`.
fn provider_mesh(provider: &Provider, jwks: &str) -> (Mesh, Process) {
    let ca = provider.ca_file();
    echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  jwks:\n    ca_file: {}\n{jwks}", ca.display()));
    })
}

#[test]
fn tokens_of_an_https_jwks_are_validated_in_every_bad_class() {
    let Some(()) = available_or_skip("tokens_of_an_https_jwks_are_validated_in_every_bad_class")
    else {
        return;
    };
    let provider = Provider::new();
    let (mut mesh, _echo) = provider_mesh(&provider, "");
    // first a rule whose keys cannot be fetched: its tokens are refused, and no
    // other key stands in
    let unreachable = "https://127.0.0.1:9/jwks.json";
    apply(
        &mesh,
        "idp",
        &format!("  jwtRules:\n  - issuer: {IDP}\n    jwksUri: {unreachable}\n    timeout: 1s\n"),
    );
    let good = provider.token(&claims(json!({})));
    eventually(&mesh, "a token without keys is refused", || {
        unauthorized(&call(&mesh, &bearer(&good)), "Jwks remote fetch is failed")
    });

    let (_server, jwks_uri) = provider.serve(&mut mesh);
    apply(
        &mesh,
        "idp",
        &format!(
            "  jwtRules:\n  - issuer: {IDP}\n    audiences: [shop]\n    jwksUri: {jwks_uri}\n    outputClaimToHeaders: [{{header: x-team, claim: team}}]\n"
        ),
    );
    apply(
        &mesh,
        "admins-only",
        "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"https://idp.example/*\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [admins]\n",
    );
    let r = eventually(&mesh, "the provider's token is accepted", || {
        let r = call(&mesh, &bearer(&good));
        (r.status == Some(200))
            .then_some(r)
            .ok_or("not yet".to_owned())
    });
    let headers = received(&r);
    assert_eq!(headers["x-team"], "payments", "{headers}");
    assert!(headers.get("authorization").is_none());
    // a client cannot forge what a verified claim writes
    let forged = call(&mesh, &["x-team: admins".to_owned()]);
    assert_eq!(forged.status, Some(403));
    // authenticated, but not an admin: policy refuses
    let user = provider.token(&claims(json!({"groups": ["users"]})));
    assert_eq!(call(&mesh, &bearer(&user)).status, Some(403));

    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = good.split('.').nth(1).unwrap();
    // another key under the provider's kid
    let other_key = P256Signer::new("idp-1").sign(&claims(json!({})));
    let hs256 = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(provider.signer.public_raw()),
    )
    .unwrap();
    for (token, body) in [
        (other_key, "Jwt verification fails"),
        (hs256, "Jwt verification fails"),
        (
            format!("{}.{payload}.", b64(&json!({"alg": "none"}))),
            "Jwt verification fails",
        ),
        (
            provider.token(&claims(json!({"exp": now() - 300}))),
            "Jwt is expired",
        ),
        (
            provider.token(&claims(json!({"nbf": now() + 300}))),
            "Jwt not yet valid",
        ),
        (
            provider.token(&claims(json!({"aud": "other"}))),
            "Audiences in Jwt are not allowed",
        ),
        (
            provider.token(&claims(json!({"iss": "https://evil.example"}))),
            "Jwt issuer is not configured",
        ),
        (
            "a.b".to_owned(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ] {
        let r = call(&mesh, &bearer(&token));
        if let Err(e) = unauthorized(&r, body) {
            panic!("{token}: want {body}: {e}");
        }
    }
    // OpenID discovery: a rule naming only an https:// issuer finds its keys
    // through <issuer>/.well-known/openid-configuration
    let discovered = jwks_uri.trim_end_matches("/jwks.json").to_owned();
    apply(
        &mesh,
        "discovered",
        &format!("  jwtRules:\n  - issuer: {discovered}\n"),
    );
    apply(
        &mesh,
        "admins-only",
        &format!(
            "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"https://idp.example/*\", \"{discovered}/*\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [admins]\n"
        ),
    );
    let by_discovery = provider.token(&claims(json!({"iss": discovered})));
    eventually(
        &mesh,
        "a token of the discovered issuer is accepted",
        || {
            let r = call(&mesh, &bearer(&by_discovery));
            (r.status == Some(200))
                .then_some(())
                .ok_or(format!("{:?} {}", r.status, r.body))
        },
    );
    let fetched = |result: &str| {
        node_metric(
            &mesh,
            "node-2",
            "meshward_jwks_fetches_total",
            &[
                &format!("source=\"{jwks_uri}\""),
                &format!("result=\"{result}\""),
            ],
        )
    };
    assert!(fetched("ok") >= 1.0);
    let refused = |reason: &str| {
        node_metric(
            &mesh,
            "node-2",
            "meshward_jwt_refused_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(refused("expired"), 1.0);
    assert!(refused("keys_unavailable") >= 1.0);
}

/// `GET path` from curl-spire to the echoserver with `headers`.
fn get(mesh: &Mesh, path: &str, headers: &[String]) -> CurlResponse {
    let url = format!("http://{}:8080{path}", mesh.pod_ip("echoserver").unwrap());
    let mut args: Vec<&str> = Vec::new();
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    mesh.cluster.curl("curl-spire", &args).unwrap()
}

/// `check` until it holds or `seconds` pass; never panics.
fn within<T>(seconds: u64, mut check: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// 200, and what the echoserver received.
fn ok(r: &CurlResponse) -> Result<Value, String> {
    if r.status != Some(200) {
        return Err(format!("want 200: {:?} {}", r.status, r.body));
    }
    Ok(received(r))
}

// the classes of issue 25 (docs/security.md, 15a-15e)
mod hostile;
