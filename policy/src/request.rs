//! What a decision is made about: the destination workload and one connection or
//! HTTP request, with every attribute policies can name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use meshward_spiffe::SpiffeId;

use crate::normalize::{InvalidTarget, NormalizedTarget, PathNormalization, normalize_target};

/// The workload a request is for: what policy selection looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// One TCP connection, or one HTTP request on it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The verified mTLS peer; `None` for plaintext.
    pub source: Option<SpiffeId>,
    /// Overrides the namespace taken from `source` (tests and tools only).
    pub source_namespace: Option<String>,
    /// The direct peer address (`ipBlocks`, `source.ip`).
    pub source_ip: IpAddr,
    /// The original client (`remoteIpBlocks`, `remote.ip`); equals `source_ip` when no
    /// proxy in front is trusted.
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    /// The workload (container) port, never a Service port (ISTIO-SECURITY-2021-002).
    pub destination_port: u16,
    pub sni: Option<String>,
    /// `None` for a TCP connection. Boxed: a TCP connection's request is kept
    /// for its whole life (to judge it again when policies change), and the
    /// HTTP part is two thirds of the request's size.
    pub http: Option<Box<HttpRequest>>,
}

impl Request {
    pub fn source_namespace(&self) -> Option<&str> {
        match &self.source {
            Some(id) => self.source_namespace.as_deref().or_else(|| id.namespace()),
            None => None,
        }
    }
}

/// Why an HTTP request is rejected before any policy runs: the request gets `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error(transparent)]
    Target(#[from] InvalidTarget),
    #[error("method {0:?} is not an upper-case HTTP token")]
    Method(String),
    #[error("host {0:?} is not a valid authority (host[:port], no user info)")]
    Host(String),
}

/// The HTTP attributes of a request, validated and normalized once.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: String,
    target: NormalizedTarget,
    /// The authority as the backend gets it: lower case, no trailing dot.
    host: Authority,
    headers: HeaderMap,
    jwt: Option<JwtClaims>,
    /// `iss/sub` of `jwt`, built once.
    jwt_principal: Option<String>,
}

/// Whether a header line holding `value` is read by [`HttpRequest::header_values`]
/// (and by the pod, which trims spaces) as exactly `value`, one value: no comma,
/// no leading or trailing whitespace. A JWT claim copied to a header must be, or
/// a header condition would not mean what the claim condition means.
pub fn reads_as_one_header_value(value: &[u8]) -> bool {
    !value.contains(&b',') && value.trim_ascii() == value
}

impl HttpRequest {
    /// Validates the method, normalizes the request-target and the host
    /// ([`Authority::parse`]). `host` is `:authority` or `Host`, port included.
    pub fn new(
        method: &str,
        target: &str,
        host: &str,
        headers: HeaderMap,
        normalization: PathNormalization,
    ) -> Result<Self, BadRequest> {
        let host = Authority::parse(host)?;
        Self::with_authority(method, target, host, headers, normalization)
    }

    /// [`HttpRequest::new`] with its authority already normalized (a connection
    /// whose requests all name the same one normalizes it once).
    pub fn with_authority(
        method: &str,
        target: &str,
        host: Authority,
        headers: HeaderMap,
        normalization: PathNormalization,
    ) -> Result<Self, BadRequest> {
        let is_token =
            |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
        if method.is_empty() || !method.bytes().all(is_token) {
            return Err(BadRequest::Method(method.to_owned()));
        }
        Ok(Self {
            method: method.to_owned(),
            target: normalize_target(target, normalization)?,
            host,
            headers,
            jwt: None,
            jwt_principal: None,
        })
    }

    /// The headers, for an external authorizer's changes (CUSTOM): method,
    /// target, authority and token stay as judged.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The headers, leaving none: for forwarding a request once it is judged,
    /// without a copy.
    pub fn take_headers(&mut self) -> HeaderMap {
        std::mem::take(&mut self.headers)
    }

    /// Claims of a JWT that was already validated (`requestPrincipals`, `request.auth.*`).
    pub fn with_jwt(mut self, jwt: JwtClaims) -> Self {
        self.jwt_principal = jwt.principal();
        self.jwt = Some(jwt);
        self
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The normalized target: what `paths` matches and what the backend should get.
    pub fn target(&self) -> &NormalizedTarget {
        &self.target
    }

    /// The normalized authority, port included: what the backend receives.
    pub fn host(&self) -> &str {
        self.host.as_str()
    }

    /// The host without its port: what `hosts` matches. The port of `Host` is the
    /// client's to choose and decides nothing about where the request goes
    /// (`ports` judges the real destination port).
    pub fn host_name(&self) -> &str {
        self.host.name()
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The values `request.headers[name]` is matched against, each on its own (the
    /// fix for CVE-2026-26308): every line as sent, every comma-separated element
    /// of a line (RFC 9110 §5.6.1), and, for a repeated header, its lines combined
    /// as RFC 9110 §5.3 says (`a, b`). `x-role: guest, admin` on one line and on two
    /// lines thus give the same values, and the same decision.
    pub fn header_values(&self, name: &HeaderName) -> Vec<Cow<'_, [u8]>> {
        let lines: Vec<&[u8]> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let mut values: Vec<Cow<'_, [u8]>> = Vec::with_capacity(lines.len() * 2);
        for line in &lines {
            values.push(Cow::Borrowed(line));
            if line.contains(&b',') {
                values.extend(
                    line.split(|b| *b == b',')
                        .map(|e| Cow::Borrowed(e.trim_ascii())),
                );
            }
        }
        if lines.len() > 1 {
            values.push(Cow::Owned(lines.join(&b", "[..])));
        }
        values
    }

    /// What Envoy's header matchers see for a pseudo-header: the method, the
    /// authority and the path (with its query) as the backend receives them.
    pub(crate) fn pseudo_header(&self, pseudo: PseudoHeader) -> Cow<'_, str> {
        match pseudo {
            PseudoHeader::Method => Cow::Borrowed(&self.method),
            PseudoHeader::Authority => Cow::Borrowed(self.host.as_str()),
            PseudoHeader::Path => Cow::Owned(self.target.to_request_target()),
        }
    }

    pub fn jwt(&self) -> Option<&JwtClaims> {
        self.jwt.as_ref()
    }

    pub(crate) fn jwt_principal(&self) -> Option<&str> {
        self.jwt_principal.as_deref()
    }
}

/// An authority in the one form policy judges and the backend receives: ASCII
/// lower case (RFC 4343), the trailing dot of a fully qualified name removed, the
/// port kept. An empty one (HTTP/1.0 without `Host`) stays empty; user info, or
/// anything that is not `host[:port]`, is a bad request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    text: String,
    /// The length of the host part, before any `:port`.
    name_len: usize,
}

impl Authority {
    /// Validates and normalizes `raw` (`:authority` or `Host`, port included).
    pub fn parse(raw: &str) -> Result<Self, BadRequest> {
        let (text, name_len) = normalize_host(raw)?;
        Ok(Self { text, name_len })
    }

    /// The whole authority, port included (empty for HTTP/1.0 without `Host`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host without its port: what `hosts` matches.
    pub fn name(&self) -> &str {
        &self.text[..self.name_len]
    }
}

/// [`Authority::parse`]: the normalized text, and the length of its host part.
fn normalize_host(raw: &str) -> Result<(String, usize), BadRequest> {
    let bad = || BadRequest::Host(raw.to_owned());
    if raw.is_empty() {
        return Ok((String::new(), 0));
    }
    let authority: http::uri::Authority = raw.parse().map_err(|_| bad())?;
    if raw.contains('@') {
        return Err(bad());
    }
    let port = raw[authority.host().len()..].strip_prefix(':');
    if !raw.starts_with(authority.host())
        || port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit()))
        || (port.is_none() && raw.len() != authority.host().len())
    {
        return Err(bad());
    }
    let name = authority.host().trim_end_matches('.');
    if name.is_empty() || name.contains(['/', '?', '#', '\\']) {
        return Err(bad());
    }
    let port = port.filter(|p| !p.is_empty());
    // one allocation of the final length: the host, then the port
    let mut host = String::with_capacity(name.len() + port.map_or(0, |p| p.len() + 1));
    host.push_str(name);
    host.make_ascii_lowercase();
    if let Some(port) = port {
        host.push(':');
        host.push_str(port);
    }
    Ok((host, name.len()))
}

/// The pseudo-headers `request.headers[...]` may name, as Istio admits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PseudoHeader {
    Method,
    Authority,
    Path,
}

impl PseudoHeader {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            ":method" => Some(Self::Method),
            ":authority" => Some(Self::Authority),
            ":path" => Some(Self::Path),
            _ => None,
        }
    }
}

/// Claims of a validated JWT.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JwtClaims {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub presenter: Option<String>,
    /// Every claim, for `request.auth.claims[...]`.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl JwtClaims {
    /// `iss/sub`, what `requestPrincipals` compares with; `None` unless both are set.
    fn principal(&self) -> Option<String> {
        (!self.issuer.is_empty() && !self.subject.is_empty())
            .then(|| format!("{}/{}", self.issuer, self.subject))
    }

    /// The string values of a claim at a nested path: a string claim, or the string
    /// elements of a list claim.
    pub(crate) fn claim_values<'a>(&'a self, path: &[String]) -> Vec<&'a str> {
        let Some((first, rest)) = path.split_first() else {
            return Vec::new();
        };
        let mut value = self.claims.get(first);
        for key in rest {
            value = value.and_then(|v| v.get(key));
        }
        match value {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_must_be_upper_case_tokens() {
        let new = |m| HttpRequest::new(m, "/", "h", HeaderMap::new(), PathNormalization::Base);
        assert!(new("GET").is_ok());
        assert!(new("M-SEARCH").is_ok());
        for bad in ["get", "Get", "", "GE T"] {
            assert_eq!(new(bad).unwrap_err(), BadRequest::Method(bad.to_owned()));
        }
    }

    #[test]
    fn host_is_lower_cased() {
        let r = HttpRequest::new(
            "GET",
            "/",
            "Secret.COM:80",
            HeaderMap::new(),
            PathNormalization::Base,
        )
        .unwrap();
        assert_eq!(r.host(), "secret.com:80");
        assert_eq!(r.host_name(), "secret.com");
    }

    #[test]
    fn one_form_of_each_host() {
        let host = |raw| normalize_host(raw).map(|(h, n)| (h.clone(), h[..n].to_owned()));
        let pair = |h: &str, n: &str| Ok((h.to_owned(), n.to_owned()));
        assert_eq!(
            host("Admin.Example."),
            pair("admin.example", "admin.example")
        );
        assert_eq!(
            host("admin.example.:8080"),
            pair("admin.example:8080", "admin.example")
        );
        assert_eq!(host("[FD00::1]:80"), pair("[fd00::1]:80", "[fd00::1]"));
        assert_eq!(host("10.0.0.1"), pair("10.0.0.1", "10.0.0.1"));
        assert_eq!(host(""), pair("", ""));
        for bad in [
            "user@admin.example",
            "a b",
            "admin.example:x",
            ".",
            "a/b",
            ":80",
        ] {
            assert_eq!(host(bad), Err(BadRequest::Host(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn one_line_or_two_give_the_same_header_values() {
        let values = |lines: &[&str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append("x-role", line.parse().unwrap());
            }
            let r = HttpRequest::new("GET", "/", "h", headers, PathNormalization::Base).unwrap();
            let mut v: Vec<String> = r
                .header_values(&HeaderName::from_static("x-role"))
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(
            values(&["guest, admin"]),
            ["admin", "guest", "guest, admin"]
        );
        assert_eq!(
            values(&["guest", "admin"]),
            ["admin", "guest", "guest, admin"]
        );
        assert_eq!(values(&["admin"]), ["admin"]);
        assert!(values(&[]).is_empty());
    }

    #[test]
    fn claims_by_nested_path() {
        let claims = serde_json::json!({"groups": ["a", "b", 3], "nested": {"key": "v"}, "n": 5});
        let jwt = JwtClaims {
            claims: claims.as_object().unwrap().clone(),
            ..Default::default()
        };
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(jwt.claim_values(&path(&["groups"])), vec!["a", "b"]);
        assert_eq!(jwt.claim_values(&path(&["nested", "key"])), vec!["v"]);
        assert!(jwt.claim_values(&path(&["n"])).is_empty());
        assert!(jwt.claim_values(&path(&["missing"])).is_empty());
    }
}
