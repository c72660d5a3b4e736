//! Where tokens are (headers with a prefix, query parameters, cookies) and the
//! request the pod receives once they are verified: a token removed unless its
//! rule forwards it, the payload and claims written where the rule says, and
//! those output headers never taken from the client.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, header};
use meshward_policy::{JwtClaims, JwtRule, TokenLocation};
use serde_json::Value;

use crate::failure::JwtFailure;

/// A token, where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) token: String,
    pub(crate) location: TokenLocation,
}

/// Every token at a location some rule reads, in rule order, each location once.
///
/// What counts as a token is read tolerantly where the pod's own parser would be
/// tolerant, and a value that looks like a token but is not in a form this proxy
/// reads is refused ([`JwtFailure::Malformed`]) rather than passed on unverified:
/// - a header with a prefix (`Bearer `): a value whose first word is the prefix's
///   (any case, after spaces) is a token attempt; it must be the prefix, one or
///   more spaces when the prefix ends with one, then one token of visible ASCII
///   (RFC 9110 §11.4, RFC 6750 §2.1). `Bearer:t`, `Bearer\tt`, `bearer,t`,
///   `Bearer t u` or a bare `Bearer` are refused; `Basic ...` is no token;
/// - a header without a prefix: the whole value, one token;
/// - a query parameter: its name in any case (ASP.NET reads them so), pairs
///   separated by `&` or `;` (older Python and Java parsers split on both),
///   names and values percent-decoded;
/// - a cookie: spaces around its name and double quotes around its value are
///   ignored, as Python's and Go's cookie parsers ignore them.
pub(crate) fn find(
    rules: &[Arc<JwtRule>],
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Vec<Found>, JwtFailure> {
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
                    if let Some(token) = header_token(value.as_bytes(), prefix)? {
                        add(token);
                    }
                }
            }
            TokenLocation::Param(name) => {
                for pair in query.unwrap_or("").split(['&', ';']) {
                    for (key, value) in form_urlencoded::parse(pair.as_bytes()) {
                        if key.eq_ignore_ascii_case(name) {
                            add(&value);
                        }
                    }
                }
            }
            TokenLocation::Cookie(name) => {
                for value in headers.get_all(header::COOKIE) {
                    let Ok(value) = value.to_str() else { continue };
                    for pair in value.split(';') {
                        if let Some((key, value)) = pair.split_once('=') {
                            if key.trim() == name {
                                let value = value.trim();
                                add(value
                                    .strip_prefix('"')
                                    .and_then(|v| v.strip_suffix('"'))
                                    .unwrap_or(value));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The token in one value of a header location, `None` when the value is not a
/// token at all (another scheme, empty), `Malformed` when it is an attempt at one
/// in a form this proxy does not read (see [`find`]).
fn header_token<'a>(value: &'a [u8], prefix: &str) -> Result<Option<&'a str>, JwtFailure> {
    let value = value.trim_ascii();
    let expected = prefix.trim();
    let rest = if expected.is_empty() {
        if value.is_empty() {
            return Ok(None);
        }
        value
    } else {
        let word = expected
            .split_ascii_whitespace()
            .next()
            .unwrap_or(expected)
            .as_bytes();
        let attempt = value
            .get(..word.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(word))
            && !(word.last().is_some_and(u8::is_ascii_alphanumeric)
                && value.get(word.len()).is_some_and(u8::is_ascii_alphanumeric));
        if !attempt {
            return Ok(None);
        }
        let rest = value
            .get(..expected.len())
            .filter(|head| head.eq_ignore_ascii_case(expected.as_bytes()))
            .map(|_| &value[expected.len()..])
            .ok_or(JwtFailure::Malformed)?;
        let spaced = without_leading_spaces(rest);
        if prefix.len() > prefix.trim_end().len() && spaced.len() == rest.len() {
            // `Bearer` then no space: `Bearer:t`, `Bearer,t`, `Bearer\tt`, `Bearer`
            return Err(JwtFailure::Malformed);
        }
        spaced
    };
    if rest.is_empty() || !rest.iter().all(|b| b.is_ascii_graphic()) {
        return Err(JwtFailure::Malformed);
    }
    std::str::from_utf8(rest)
        .map(Some)
        .map_err(|_| JwtFailure::Malformed)
}

/// Leading spaces (SP only: RFC 9110's `1*SP` after an auth-scheme) removed.
fn without_leading_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
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
        // `request.headers[name]` reads every comma-separated element of a value
        // and the pod trims spaces: a claim the header would read as other
        // values than the claim (`guest, admin`, ` admin`) is not copied, so a
        // header condition means what the claim condition means
        if !meshward_policy::reads_as_one_header_value(text.as_bytes()) {
            tracing::warn!(header = %name, claim = %path.join("."), "claim not copied to a header: a header would read it as other values than the claim");
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(name.clone(), value);
        }
    }
}
