//! Wire form -> [`RequestAuthentication`], with Istio's admission checks and a few
//! of meshward's own (named where they differ). Any invalid part rejects the whole
//! object: a rule that lost its keys or its audiences would accept other tokens.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use meshward_spiffe::TrustDomain;

use super::spec::{JwtRuleSpec, RequestAuthenticationDocument};
use super::{DEFAULT_JWKS_TIMEOUT, JwtRule, KeySource, RequestAuthentication, TokenLocation};
use crate::compile::{Compiler, MAX_VALUE_BYTES};
use crate::error::{Notice, PolicyError};
use crate::model::Origin;
use crate::options::EngineOptions;

/// Headers a rule may not write: the proxy sets them itself, and a token's claim
/// must never stand in for them.
const RESERVED_OUTPUT_HEADERS: [&str; 3] = ["x-forwarded-client-cert", "host", "authorization"];

pub(crate) fn compile(
    doc: RequestAuthenticationDocument,
    origin: Origin,
    options: &EngineOptions,
    notices: &mut Vec<Notice>,
) -> Result<RequestAuthentication, Vec<PolicyError>> {
    let mut c = Compiler::new(&origin, options, notices);
    let Some(id) = c.object_id(&doc.metadata) else {
        return Err(c.errors);
    };
    let spec = doc.spec;
    let (selector, targets_gateway) = c.targets(
        spec.selector,
        spec.target_ref.is_some(),
        spec.target_refs.is_some(),
    );
    let rules = spec
        .jwt_rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| Arc::new(jwt_rule(&mut c, rule, &format!("spec.jwtRules[{i}]"))))
        .collect();
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(RequestAuthentication {
        id,
        origin: origin.clone(),
        selector,
        targets_gateway,
        rules,
    })
}

fn jwt_rule(c: &mut Compiler<'_>, rule: JwtRuleSpec, field: &str) -> JwtRule {
    if rule.issuer.is_empty() {
        c.error(format!("{field}.issuer"), "is required");
    }
    for (name, value) in std::iter::once(("issuer", &rule.issuer))
        .chain(rule.audiences.iter().map(|a| ("audiences", a)))
    {
        if value.len() > MAX_VALUE_BYTES {
            c.error(
                format!("{field}.{name}"),
                format!("longer than {MAX_VALUE_BYTES} bytes"),
            );
        }
    }
    if rule.audiences.iter().any(String::is_empty) {
        c.error(
            format!("{field}.audiences"),
            "an audience must not be empty",
        );
    }
    // JWT-SVIDs are bearer tokens minted for one audience: without the check the
    // JWT-SVID spec makes mandatory, one minted for another service replays here
    if rule.issuer.starts_with("spiffe://") && rule.audiences.is_empty() {
        c.error(
            format!("{field}.audiences"),
            "is required for a spiffe:// issuer: its tokens are JWT-SVIDs, whose audience must be checked (JWT-SVID §3), or a token minted for another service would be accepted",
        );
    }
    let keys = keys(c, &rule, field);
    let mut locations = Vec::new();
    for (i, h) in rule.from_headers.iter().enumerate() {
        if let Some(name) = header_name(c, &h.name, &format!("{field}.fromHeaders[{i}].name")) {
            locations.push(TokenLocation::Header {
                name,
                prefix: h.prefix.clone(),
            });
        }
    }
    for (list, what, make) in [
        (
            &rule.from_params,
            "fromParams",
            TokenLocation::Param as fn(String) -> TokenLocation,
        ),
        (&rule.from_cookies, "fromCookies", TokenLocation::Cookie),
    ] {
        for (i, name) in list.iter().enumerate() {
            if name.is_empty() {
                c.error(format!("{field}.{what}[{i}]"), "must not be empty");
            } else {
                locations.push(make(name.clone()));
            }
        }
    }
    if locations.is_empty() {
        locations = TokenLocation::defaults();
    }
    let output_payload_to_header = rule
        .output_payload_to_header
        .as_deref()
        .and_then(|name| output_header(c, name, &format!("{field}.outputPayloadToHeader")));
    let mut output_claim_to_headers = Vec::new();
    for (i, o) in rule.output_claim_to_headers.iter().enumerate() {
        let at = format!("{field}.outputClaimToHeaders[{i}]");
        let header = output_header(c, &o.header, &format!("{at}.header"));
        if o.claim.is_empty() || o.claim.split('.').any(str::is_empty) {
            c.error(
                format!("{at}.claim"),
                "must name a claim (nested: `a.b`, no empty part)",
            );
        } else if let Some(header) = header {
            output_claim_to_headers.push((header, o.claim.split('.').map(str::to_owned).collect()));
        }
    }
    let timeout = match rule.timeout.as_deref() {
        None => DEFAULT_JWKS_TIMEOUT,
        Some(text) => parse_timeout(text).unwrap_or_else(|| {
            c.error(
                format!("{field}.timeout"),
                format!("{text:?} is not a positive duration such as 5s or 500ms"),
            );
            DEFAULT_JWKS_TIMEOUT
        }),
    };
    JwtRule {
        issuer: rule.issuer,
        audiences: rule.audiences,
        keys,
        locations,
        forward_original_token: rule.forward_original_token,
        output_payload_to_header,
        output_claim_to_headers,
        timeout,
    }
}

fn keys(c: &mut Compiler<'_>, rule: &JwtRuleSpec, field: &str) -> KeySource {
    match (&rule.jwks, &rule.jwks_uri) {
        (Some(_), Some(_)) => {
            c.error(field, "only one of jwks and jwksUri may be set");
            KeySource::Inline("".into())
        }
        (Some(jwks), None) => {
            if let Err(reason) = check_jwks(jwks) {
                c.error(format!("{field}.jwks"), reason);
            }
            KeySource::Inline(jwks.as_str().into())
        }
        (None, Some(uri)) => {
            // meshward: keys only over HTTPS (Istio also takes http://)
            if !is_https_url(uri) {
                c.error(
                    format!("{field}.jwksUri"),
                    format!("{uri:?} is not an https:// URL (keys are fetched over HTTPS only)"),
                );
            }
            KeySource::Uri(uri.clone())
        }
        (None, None) => {
            if let Some(domain) = rule.issuer.strip_prefix("spiffe://") {
                match TrustDomain::parse(domain) {
                    Ok(td) => return KeySource::TrustBundle(td),
                    Err(e) => c.error(format!("{field}.issuer"), e.to_string()),
                }
            } else if is_https_url(&rule.issuer) {
                return KeySource::Discovery(rule.issuer.clone());
            } else {
                c.error(
                    field,
                    "jwks or jwksUri is required: the issuer is neither an https:// URL (OpenID discovery) nor spiffe://<trust domain> (the node's SPIFFE bundle)",
                );
            }
            KeySource::Inline("".into())
        }
    }
}

/// A JWKS: a JSON object with a non-empty `keys` list of objects.
fn check_jwks(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("keys").and_then(serde_json::Value::as_array) {
        Some(keys) if !keys.is_empty() && keys.iter().all(serde_json::Value::is_object) => Ok(()),
        _ => Err("a JWKS needs a non-empty `keys` list of JWK objects".into()),
    }
}

fn is_https_url(text: &str) -> bool {
    text.parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme_str() == Some("https") && uri.authority().is_some())
}

fn header_name(c: &mut Compiler<'_>, name: &str, field: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            c.error(field, format!("{name:?} is not an HTTP header name"));
            None
        }
    }
}

fn output_header(c: &mut Compiler<'_>, name: &str, field: &str) -> Option<HeaderName> {
    let header = header_name(c, name, field)?;
    if RESERVED_OUTPUT_HEADERS.contains(&header.as_str()) {
        c.error(
            field,
            format!("{header} is set by the proxy; a token may not write it"),
        );
        return None;
    }
    Some(header)
}

/// `5s`, `1.5s`, `500ms`, `2m`: protobuf Duration's text, positive.
fn parse_timeout(text: &str) -> Option<Duration> {
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| text.split_at(i))?;
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (seconds > 0.0 && seconds <= 3600.0).then(|| Duration::from_secs_f64(seconds))
}
