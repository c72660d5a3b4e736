//! What a decision is made about: the destination workload and one connection or
//! HTTP request, with every attribute policies can name.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::HeaderMap;

use crate::identity::Identity;
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
    pub source: Option<Identity>,
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
    /// `None` for a TCP connection.
    pub http: Option<HttpRequest>,
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
}

/// The HTTP attributes of a request, validated and normalized once.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: String,
    target: NormalizedTarget,
    host: String,
    headers: HeaderMap,
    jwt: Option<JwtClaims>,
    /// `iss/sub` of `jwt`, built once.
    jwt_principal: Option<String>,
}

impl HttpRequest {
    /// Validates the method, normalizes the request-target, lower-cases the host.
    /// `host` is `:authority` or `Host`, port included.
    pub fn new(
        method: &str,
        target: &str,
        host: &str,
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
            host: host.to_ascii_lowercase(),
            headers,
            jwt: None,
            jwt_principal: None,
        })
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

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn jwt(&self) -> Option<&JwtClaims> {
        self.jwt.as_ref()
    }

    pub(crate) fn jwt_principal(&self) -> Option<&str> {
        self.jwt_principal.as_deref()
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
