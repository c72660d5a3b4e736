//! Shared helpers for the policy engine's tests: build policy sets from YAML and
//! requests with a few chained calls.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use meshward_policy::{
    Effect, EngineOptions, HttpRequest, JwtClaims, PathNormalization, PolicySet, Request, SpiffeId,
    Workload, load_str,
};

pub fn options() -> EngineOptions {
    EngineOptions::default()
}

/// Compiles YAML under default options; panics listing the errors.
pub fn set(yaml: &str) -> PolicySet {
    set_with(yaml, options())
}

pub fn set_with(yaml: &str, options: EngineOptions) -> PolicySet {
    load_str(yaml, "test.yaml", &options)
        .into_policy_set(&options)
        .unwrap_or_else(|errors| panic!("policies should compile: {errors:#?}"))
}

/// The errors a YAML text produces, as lines.
pub fn errors(yaml: &str) -> Vec<String> {
    let report = load_str(yaml, "test.yaml", &options());
    report.errors.iter().map(ToString::to_string).collect()
}

pub fn workload(namespace: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        namespace: namespace.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The default target of the tests: `app=echo` in `echoserver`.
pub fn echo() -> Workload {
    workload("echoserver", &[("app", "echo")])
}

#[derive(Clone)]
pub struct Req {
    principal: Option<String>,
    source_ip: IpAddr,
    remote_ip: Option<IpAddr>,
    destination_ip: IpAddr,
    port: u16,
    sni: Option<String>,
    http: Option<(String, String, String)>,
    headers: Vec<(String, String)>,
    jwt: Option<JwtClaims>,
    normalization: PathNormalization,
}

/// An HTTP request from plaintext 10.0.0.5 to 10.0.1.7:8080, host `echo`.
pub fn http(method: &str, path: &str) -> Req {
    Req {
        principal: None,
        source_ip: "10.0.0.5".parse().unwrap(),
        remote_ip: None,
        destination_ip: "10.0.1.7".parse().unwrap(),
        port: 8080,
        sni: None,
        http: Some((method.into(), path.into(), "echo".into())),
        headers: Vec::new(),
        jwt: None,
        normalization: PathNormalization::default(),
    }
}

/// A TCP connection from plaintext 10.0.0.5 to 10.0.1.7:8080.
pub fn tcp() -> Req {
    Req {
        http: None,
        ..http("GET", "/")
    }
}

impl Req {
    pub fn from(mut self, principal: &str) -> Self {
        self.principal = Some(principal.into());
        self
    }
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.source_ip = ip.parse().unwrap();
        self
    }
    pub fn remote_ip(mut self, ip: &str) -> Self {
        self.remote_ip = Some(ip.parse().unwrap());
        self
    }
    pub fn destination_ip(mut self, ip: &str) -> Self {
        self.destination_ip = ip.parse().unwrap();
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    pub fn sni(mut self, sni: &str) -> Self {
        self.sni = Some(sni.into());
        self
    }
    pub fn host(mut self, host: &str) -> Self {
        if let Some(h) = self.http.as_mut() {
            h.2 = host.into();
        }
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn jwt(mut self, jwt: JwtClaims) -> Self {
        self.jwt = Some(jwt);
        self
    }
    pub fn normalization(mut self, n: PathNormalization) -> Self {
        self.normalization = n;
        self
    }

    pub fn build(&self) -> Request {
        let http = self.http.as_ref().map(|(method, path, host)| {
            let mut headers = HeaderMap::new();
            for (name, value) in &self.headers {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            let request =
                HttpRequest::new(method, path, host, headers, self.normalization).unwrap();
            match &self.jwt {
                Some(jwt) => request.with_jwt(jwt.clone()),
                None => request,
            }
        });
        Request {
            source: self
                .principal
                .as_deref()
                .map(|p| SpiffeId::parse_principal(p).unwrap()),
            source_namespace: None,
            source_ip: self.source_ip,
            remote_ip: self.remote_ip.unwrap_or(self.source_ip),
            destination_ip: self.destination_ip,
            destination_port: self.port,
            sni: self.sni.clone(),
            http: http.map(Box::new),
        }
    }
}

pub fn allowed(set: &PolicySet, workload: &Workload, request: &Req) -> bool {
    set.evaluate(workload, &request.build()).effect == Effect::Allow
}

/// Asserts the verdict of each `(request, allowed?)` case against `echo()`.
#[track_caller]
pub fn check(set: &PolicySet, cases: &[(Req, bool)]) {
    let wl = echo();
    for (i, (req, want)) in cases.iter().enumerate() {
        let request = req.build();
        let decision = set.evaluate(&wl, &request);
        assert_eq!(
            decision.effect == Effect::Allow,
            *want,
            "case {i}: {request:?}\n{}",
            set.explain(&wl, &request)
        );
    }
}

/// Wraps `spec` (indented YAML) in an AuthorizationPolicy in namespace `echoserver`.
pub fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: echoserver\nspec:\n{spec}\n---\n"
    )
}

/// An ALLOW policy with one rule whose body is `rule` (YAML at rule indentation).
pub fn allow_rule(rule: &str) -> String {
    policy("allow", &format!("  rules:\n  - {}", indent_rule(rule)))
}

pub fn deny_rule(rule: &str) -> String {
    policy(
        "deny",
        &format!("  action: DENY\n  rules:\n  - {}", indent_rule(rule)),
    )
}

fn indent_rule(rule: &str) -> String {
    rule.trim().lines().collect::<Vec<_>>().join("\n    ")
}

/// Claims of a JWT from `iss` for `sub`, with audiences, presenter and nested claims.
pub fn jwt(iss: &str, sub: &str) -> JwtClaims {
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

/// Peers most tests use: `foo` is the one a policy names, `other` never is.
pub const FOO: &str = "cluster.local/ns/foo/sa/bar";
pub const OTHER: &str = "cluster.local/ns/other/sa/x";
