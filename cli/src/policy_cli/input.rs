//! The `policy eval` line protocol (a stable interface: see README) and the
//! `policy explain` flags, both turned into one policy-engine request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue};
use meshward_policy::{
    BadRequest, Decision, Effect, HttpRequest, JwtClaims, PathNormalization, PolicySet, Request,
    SpiffeId, Workload,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// === wire form ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireInput {
    workload: WireWorkload,
    request: WireRequest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireWorkload {
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Http,
    Tcp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    protocol: Protocol,
    #[serde(default)]
    source_principal: Option<String>,
    #[serde(default)]
    source_namespace: Option<String>,
    source_ip: IpAddr,
    #[serde(default)]
    remote_ip: Option<IpAddr>,
    destination_ip: IpAddr,
    destination_port: u16,
    #[serde(default)]
    sni: Option<String>,
    // HTTP only
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    jwt: Option<WireJwt>,
    #[serde(default)]
    http_version: Option<HttpVersion>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
enum HttpVersion {
    #[serde(rename = "1.1")]
    Http11,
    #[serde(rename = "2")]
    Http2,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireJwt {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
}

// === domain form ===

/// One input line, validated.
pub(super) struct EvalInput {
    pub(super) workload: Workload,
    pub(super) request: Outcome,
}

/// A request the engine can decide, or one that is a `400` before any policy runs.
pub(super) enum Outcome {
    Ready(Box<Request>),
    BadRequest(String),
}

/// What `eval` prints for one line; fields in the documented order.
#[derive(Serialize)]
pub(super) struct DecisionLine {
    decision: &'static str,
    status: Option<u16>,
    policy: Option<String>,
    action: Option<&'static str>,
    rule: Option<usize>,
    reason: String,
}

impl EvalInput {
    pub(super) fn from_json(line: &str, normalization: PathNormalization) -> anyhow::Result<Self> {
        let wire: WireInput = serde_json::from_str(line)?;
        Self::from_wire(wire, normalization)
    }

    fn from_wire(wire: WireInput, normalization: PathNormalization) -> anyhow::Result<Self> {
        let r = wire.request;
        let source = r
            .source_principal
            .as_deref()
            .map(SpiffeId::parse_principal)
            .transpose()
            .context("request.source_principal")?;
        if source.is_none() && r.source_namespace.is_some() {
            bail!(
                "request.source_namespace needs request.source_principal: namespaces come only from an mTLS identity"
            );
        }
        let http_fields = [
            ("host", r.host.is_some()),
            ("method", r.method.is_some()),
            ("path", r.path.is_some()),
            ("headers", r.headers.is_some()),
            ("jwt", r.jwt.is_some()),
            ("http_version", r.http_version.is_some()),
        ];
        let mut request = Request {
            source,
            source_namespace: r.source_namespace,
            source_ip: r.source_ip,
            remote_ip: r.remote_ip.unwrap_or(r.source_ip),
            destination_ip: r.destination_ip,
            destination_port: r.destination_port,
            sni: r.sni,
            http: None,
        };
        if r.protocol == Protocol::Tcp {
            if let Some((name, _)) = http_fields.iter().find(|(_, set)| *set) {
                bail!("request.{name} is an HTTP field; protocol is tcp");
            }
            return Ok(Self {
                workload: workload(wire.workload),
                request: Outcome::Ready(Box::new(request)),
            });
        }
        let method = r
            .method
            .context("request.method is required for protocol http")?;
        let path = r
            .path
            .context("request.path is required for protocol http")?;
        let host = r
            .host
            .context("request.host is required for protocol http")?;
        let headers = r.headers.unwrap_or_default();
        let outcome = match http_request(&method, &path, &host, headers, normalization) {
            Ok(http) => {
                request.http = Some(Box::new(match r.jwt {
                    Some(jwt) => http.with_jwt(jwt_claims(jwt)),
                    None => http,
                }));
                Outcome::Ready(Box::new(request))
            }
            Err(reason) => Outcome::BadRequest(reason),
        };
        Ok(Self {
            workload: workload(wire.workload),
            request: outcome,
        })
    }

    pub(super) fn decide(&self, set: &PolicySet) -> DecisionLine {
        match &self.request {
            Outcome::BadRequest(reason) => DecisionLine {
                decision: "deny",
                status: Some(400),
                policy: None,
                action: None,
                rule: None,
                reason: format!("bad request: {reason}"),
            },
            Outcome::Ready(request) => {
                let decision = set.evaluate(&self.workload, request);
                DecisionLine::new(&decision, request.http.is_some())
            }
        }
    }
}

impl DecisionLine {
    fn new(decision: &Decision<'_>, is_http: bool) -> Self {
        let allowed = decision.effect == Effect::Allow;
        Self {
            decision: if allowed { "allow" } else { "deny" },
            status: is_http.then_some(if allowed { 200 } else { 403 }),
            policy: decision.policy.map(|p| p.id.to_string()),
            action: decision.policy.map(|p| p.action.as_str()),
            rule: decision.rule,
            reason: decision.to_string(),
        }
    }
}

fn workload(w: WireWorkload) -> Workload {
    Workload {
        namespace: w.namespace,
        labels: w.labels,
    }
}

/// Header names and values that HTTP forbids (whitespace in a name, NUL in a value)
/// are a `400`, like the bad targets and methods `HttpRequest::new` rejects.
fn http_request(
    method: &str,
    path: &str,
    host: &str,
    headers: BTreeMap<String, OneOrMany>,
    normalization: PathNormalization,
) -> Result<HttpRequest, String> {
    let mut map = HeaderMap::new();
    for (name, values) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        for value in values.into_vec() {
            let v = HeaderValue::from_str(&value)
                .map_err(|_| format!("invalid value for header {name:?}"))?;
            map.append(header.clone(), v);
        }
    }
    HttpRequest::new(method, path, host, map, normalization).map_err(|e: BadRequest| e.to_string())
}

/// `iss`, `sub`, `aud`, `azp` are claims too (`request.auth.claims[iss]`).
fn jwt_claims(jwt: WireJwt) -> JwtClaims {
    let audiences = jwt.aud.map(OneOrMany::into_vec).unwrap_or_default();
    let mut claims = jwt.claims;
    claims.entry("iss").or_insert_with(|| json!(jwt.iss));
    claims.entry("sub").or_insert_with(|| json!(jwt.sub));
    if !audiences.is_empty() {
        claims.entry("aud").or_insert_with(|| json!(audiences));
    }
    if let Some(azp) = &jwt.azp {
        claims.entry("azp").or_insert_with(|| json!(azp));
    }
    JwtClaims {
        issuer: jwt.iss,
        subject: jwt.sub,
        audiences,
        presenter: jwt.azp,
        claims,
    }
}

/// One line about the request, for `explain`.
pub(super) fn describe(request: &Request) -> String {
    let from = request
        .source
        .as_ref()
        .map_or_else(|| "plaintext (no identity)".to_owned(), |id| id.to_string());
    let what = match &request.http {
        Some(h) => format!("{} {} host {:?}", h.method(), h.target().path(), h.host()),
        None => "TCP connection".to_owned(),
    };
    format!(
        "request: {what} from {from} ({}) to {}:{}",
        request.source_ip, request.destination_ip, request.destination_port
    )
}

// === explain flags ===

#[derive(Args)]
pub(crate) struct RequestArgs {
    /// The request as one JSON object in the `eval` format (`-` = stdin); the flags below are then not used.
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// Destination workload namespace.
    #[arg(long, default_value = "default", value_name = "NS")]
    namespace: String,
    /// Destination workload label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_pair::<'='>)]
    labels: Vec<(String, String)>,
    /// Source principal (`td/ns/x/sa/y` or a SPIFFE ID); absent = plaintext.
    #[arg(long = "from", value_name = "PRINCIPAL")]
    source_principal: Option<String>,
    #[arg(long, default_value = "10.0.0.5", value_name = "IP")]
    source_ip: IpAddr,
    #[arg(long, default_value = "10.0.1.7", value_name = "IP")]
    destination_ip: IpAddr,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// A TCP connection instead of an HTTP request.
    #[arg(long, conflicts_with_all = ["method", "path", "host", "headers"])]
    tcp: bool,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request target, query and fragment included.
    #[arg(long, default_value = "/")]
    path: String,
    /// Host / :authority [default: the destination IP and port]
    #[arg(long)]
    host: Option<String>,
    /// Request header (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_pair::<':'>)]
    headers: Vec<(String, String)>,
}

fn parse_pair<const SEP: char>(s: &str) -> Result<(String, String), String> {
    s.split_once(SEP)
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected NAME{SEP}VALUE, got {s:?}"))
}

impl RequestArgs {
    pub(super) fn to_input(&self, normalization: PathNormalization) -> anyhow::Result<EvalInput> {
        if let Some(path) = &self.request {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?
            };
            return EvalInput::from_json(&text, normalization)
                .with_context(|| format!("{}", path.display()));
        }
        let mut headers: BTreeMap<String, OneOrMany> = BTreeMap::new();
        for (name, value) in &self.headers {
            match headers
                .entry(name.clone())
                .or_insert_with(|| OneOrMany::Many(Vec::new()))
            {
                OneOrMany::Many(values) => values.push(value.clone()),
                OneOrMany::One(_) => {}
            }
        }
        let http = !self.tcp;
        let wire = WireInput {
            workload: WireWorkload {
                namespace: self.namespace.clone(),
                labels: self.labels.iter().cloned().collect(),
            },
            request: WireRequest {
                protocol: if http { Protocol::Http } else { Protocol::Tcp },
                source_principal: self.source_principal.clone(),
                source_namespace: None,
                source_ip: self.source_ip,
                remote_ip: None,
                destination_ip: self.destination_ip,
                destination_port: self.port,
                sni: None,
                host: http.then(|| {
                    self.host
                        .clone()
                        .unwrap_or_else(|| format!("{}:{}", self.destination_ip, self.port))
                }),
                method: http.then(|| self.method.clone()),
                path: http.then(|| self.path.clone()),
                headers: http.then_some(headers),
                jwt: None,
                http_version: None,
            },
        };
        EvalInput::from_wire(wire, normalization)
    }
}

#[cfg(test)]
mod tests;
