//! Where tokens are (headers with a prefix, query parameters, cookies) and the
//! request the pod receives once they are verified: a token removed unless its
//! rule forwards it, the payload and claims written where the rule says, and
//! those output headers never taken from the client.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, header};
use meshward_policy::{JwtClaims, JwtRule, TokenLocation};
use serde_json::Value;

/// A token, where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) token: String,
    pub(crate) location: TokenLocation,
}

/// Every token at a location some rule reads, in rule order, each location once.
pub(crate) fn find(rules: &[Arc<JwtRule>], headers: &HeaderMap, query: Option<&str>) -> Vec<Found> {
    let mut locations: Vec<&TokenLocation> = Vec::new();
    for location in rules.iter().flat_map(|r| &r.locations) {
        if !locations.contains(&location) {
            locations.push(location);
        }
    }
    let mut found = Vec::new();
    for location in locations {
        let mut add = |token: &str| {
            let token = token.trim();
            if !token.is_empty() {
                found.push(Found {
                    token: token.to_owned(),
                    location: location.clone(),
                });
            }
        };
        match location {
            TokenLocation::Header { name, prefix } => {
                for value in headers.get_all(name) {
                    let Ok(value) = value.to_str() else { continue };
                    if let Some(token) = strip_prefix_ignore_case(value, prefix) {
                        add(token);
                    }
                }
            }
            TokenLocation::Param(name) => {
                for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                    if key == name.as_str() {
                        add(&value);
                    }
                }
            }
            TokenLocation::Cookie(name) => {
                for value in headers.get_all(header::COOKIE) {
                    let Ok(value) = value.to_str() else { continue };
                    for pair in value.split(';') {
                        if let Some((key, value)) = pair.trim().split_once('=') {
                            if key == name {
                                add(value);
                            }
                        }
                    }
                }
            }
        }
    }
    found
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// Removes every header a rule writes: only a verified token may set them.
pub(crate) fn strip_outputs(rules: &[Arc<JwtRule>], headers: &mut HeaderMap) {
    for rule in rules {
        if let Some(name) = &rule.output_payload_to_header {
            headers.remove(name);
        }
        for (name, _) in &rule.output_claim_to_headers {
            headers.remove(name);
        }
    }
}

/// The request after `token`, found at `location`, was verified under `rule`.
pub(crate) fn shape(headers: &mut HeaderMap, found: &Found, rule: &JwtRule, claims: &JwtClaims) {
    if !rule.forward_original_token {
        if let TokenLocation::Header { name, .. } = &found.location {
            headers.remove(name);
        }
    }
    if let Some(name) = &rule.output_payload_to_header {
        // Envoy writes the payload as it came, base64url
        let payload = found.token.split('.').nth(1).unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(payload) {
            headers.insert(name.clone(), value);
        }
    }
    for (name, path) in &rule.output_claim_to_headers {
        let mut value = path.first().and_then(|first| claims.claims.get(first));
        for key in path.iter().skip(1) {
            value = value.and_then(|v| v.get(key));
        }
        let text = match value {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            // objects, lists and absent claims: no header (Istio's behaviour)
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(name.clone(), value);
        }
    }
}
