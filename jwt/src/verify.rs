//! One token against one rule: the signature with the rule's keys, then the
//! claims. JWT-SVID rules (keys from a SPIFFE bundle) add the JWT-SVID rules:
//! `sub` a SPIFFE ID of that trust domain, `aud` and `exp` present, `typ` JWT or
//! JOSE when set.

use std::collections::HashSet;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use meshward_policy::{JwtClaims, JwtRule, KeySource};
use meshward_spiffe::SpiffeId;
use serde_json::{Map, Value};

use crate::failure::JwtFailure;
use crate::keys::{KeySet, allowed};

/// Envoy's default allowance for clock skew on `exp` and `nbf`.
const CLOCK_SKEW_SECONDS: u64 = 60;

/// What a token says before it is verified: only for choosing the rule that
/// verifies it, never for a decision.
pub(crate) struct Unverified {
    pub(crate) issuer: Option<String>,
    pub(crate) subject: Option<String>,
}

pub(crate) fn peek(token: &str) -> Result<Unverified, JwtFailure> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtFailure::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwtFailure::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| JwtFailure::Malformed)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(Unverified {
        issuer: text("iss"),
        subject: text("sub"),
    })
}

/// Whether `rule` is the one that judges a token with this `iss` (and `sub`): its
/// issuer, or, for a JWT-SVID without `iss`, the rule of its subject's trust domain.
pub(crate) fn judges(rule: &JwtRule, token: &Unverified) -> bool {
    match (&token.issuer, &rule.keys) {
        (Some(issuer), _) => *issuer == rule.issuer,
        (None, KeySource::TrustBundle(td)) => token
            .subject
            .as_deref()
            .and_then(|s| SpiffeId::parse(s).ok())
            .is_some_and(|id| id.is_member_of(td)),
        (None, _) => false,
    }
}

/// Verifies `token` under `rule` with `keys`; the claims policy reads.
pub(crate) fn verify(token: &str, rule: &JwtRule, keys: &KeySet) -> Result<JwtClaims, JwtFailure> {
    // a header naming an algorithm jsonwebtoken does not know (`none`) does not
    // parse; it is refused as an algorithm, not as a malformed token
    let header = decode_header(token).map_err(|_| match header_alg(token) {
        Some(alg) => JwtFailure::UnsupportedAlgorithm(alg),
        None => JwtFailure::Malformed,
    })?;
    if !allowed(header.alg) {
        return Err(JwtFailure::UnsupportedAlgorithm(format!(
            "{:?}",
            header.alg
        )));
    }
    let svid = matches!(rule.keys, KeySource::TrustBundle(_));
    if svid
        && header
            .typ
            .as_deref()
            .is_some_and(|t| t != "JWT" && t != "JOSE")
    {
        return Err(JwtFailure::Claims(format!(
            "a JWT-SVID's typ is JWT or JOSE, not {:?}",
            header.typ
        )));
    }
    let validation = validation(header.alg, svid);
    let mut last = JwtFailure::NoMatchingKey;
    for key in keys.candidates(header.kid.as_deref(), header.alg) {
        match decode::<Map<String, Value>>(token, key, &validation) {
            Ok(data) => return claims(data.claims, rule),
            Err(e) => {
                last = failure(e.kind());
                // another key of the set may have signed it; any other failure
                // is the token's own
                if last != JwtFailure::Signature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

/// The `alg` of a token's header, read without any other check.
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

fn validation(alg: Algorithm, svid: bool) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = CLOCK_SKEW_SECONDS;
    v.validate_exp = true;
    v.validate_nbf = true;
    // audiences and issuer are checked below, with the rule's semantics
    v.validate_aud = false;
    v.required_spec_claims = if svid {
        HashSet::from(["exp".into(), "sub".into(), "aud".into()])
    } else {
        HashSet::new()
    };
    v
}

fn failure(kind: &ErrorKind) -> JwtFailure {
    match kind {
        ErrorKind::InvalidSignature => JwtFailure::Signature,
        ErrorKind::ExpiredSignature => JwtFailure::Expired,
        ErrorKind::ImmatureSignature => JwtFailure::NotYetValid,
        ErrorKind::InvalidAlgorithm => JwtFailure::NoMatchingKey,
        ErrorKind::MissingRequiredClaim(c) => JwtFailure::Claims(format!("no {c} claim")),
        ErrorKind::InvalidClaimFormat(c) => JwtFailure::Claims(format!("malformed {c} claim")),
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => JwtFailure::Malformed,
        other => JwtFailure::Claims(format!("{other:?}")),
    }
}

/// The verified claims, checked against the rule: issuer, audiences, and for a
/// JWT-SVID its subject's trust domain.
fn claims(claims: Map<String, Value>, rule: &JwtRule) -> Result<JwtClaims, JwtFailure> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let issuer = text("iss");
    if issuer.as_ref().is_some_and(|iss| *iss != rule.issuer) {
        return Err(JwtFailure::UnknownIssuer);
    }
    let subject = text("sub").unwrap_or_default();
    if let KeySource::TrustBundle(td) = &rule.keys {
        // a workload's ID: the trust domain alone (`spiffe://td`) names none
        let member =
            SpiffeId::parse(&subject).is_ok_and(|id| id.is_member_of(td) && !id.path().is_empty());
        if !member {
            return Err(JwtFailure::Claims(format!(
                "a JWT-SVID's sub must be a SPIFFE ID of {td} with a path"
            )));
        }
    }
    // the JWT-SVID spec makes the audience check mandatory; admission refuses
    // such a rule, and a rule that got here anyway accepts no JWT-SVID
    if rule.audiences.is_empty()
        && (matches!(rule.keys, KeySource::TrustBundle(_)) || rule.issuer.starts_with("spiffe://"))
    {
        return Err(JwtFailure::Audience);
    }
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    if !rule.audiences.is_empty() && !audiences.iter().any(|a| rule.audiences.contains(a)) {
        return Err(JwtFailure::Audience);
    }
    Ok(JwtClaims {
        // a JWT-SVID without `iss` is its trust domain's: `spiffe://<td>`
        issuer: issuer.unwrap_or_else(|| rule.issuer.clone()),
        subject,
        audiences,
        presenter: text("azp"),
        claims,
    })
}
