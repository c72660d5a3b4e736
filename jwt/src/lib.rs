//! meshward-jwt: request authentication with JWTs, as Istio's RequestAuthentication
//! (Envoy's `jwt_authn` with `allow_missing`), in the node proxy.
//!
//! [`authenticate`] takes the rules that apply to the destination workload
//! (`PolicySet::jwt_rules`) and one request's headers and query:
//! - no token at any location the rules read: `Ok(None)`, the request goes on
//!   without a request principal (AuthorizationPolicy decides);
//! - one token, at one or more locations, that verifies under the rule of its
//!   issuer at each: `Ok(Some(claims))`, and the headers are shaped for the pod
//!   ([`locate`]) from the same claims policy judges;
//! - more than one distinct token: [`JwtFailure::MultipleTokens`] (`401`), so
//!   the identity judged and the claims the pod receives cannot differ;
//! - a token that does not verify, or a value at a token location that looks
//!   like a token but is not in a form read here: [`JwtFailure`], `401`.
//!
//! [`validate_jwt_svid`] judges a JWT-SVID on its own (the Workload API's
//! ValidateJWTSVID) with the same checks.
//!
//! Keys come from a [`KeyProvider`] (the proxy's cache of JWKS fetches and SPIFFE
//! bundles); a rule whose keys cannot be had refuses its tokens, never verifies
//! them with anything else.

mod failure;
mod keys;
mod locate;
mod svid;
mod verify;

use std::future::Future;
use std::sync::Arc;

use http::HeaderMap;
use meshward_policy::{JwtClaims, JwtRule};

pub use failure::{InvalidJwks, JwtFailure};
pub use keys::KeySet;
pub use svid::validate_jwt_svid;

/// The keys of a rule.
pub trait KeyProvider {
    /// `Err` (usually [`JwtFailure::KeysUnavailable`]) refuses the rule's tokens.
    fn keys(&self, rule: &JwtRule) -> impl Future<Output = Result<Arc<KeySet>, JwtFailure>> + Send;
}

/// Authenticates one request under `rules` (see the crate's documentation).
/// `headers` are shaped for the pod only when it succeeds.
pub async fn authenticate<K: KeyProvider + Sync>(
    rules: &[Arc<JwtRule>],
    headers: &mut HeaderMap,
    query: Option<&str>,
    keys: &K,
) -> Result<Option<JwtClaims>, JwtFailure> {
    if rules.is_empty() {
        return Ok(None);
    }
    let found = locate::find(rules, headers, query)?;
    // one identity per request: with two tokens, policy would judge one while
    // the pod reads the other's claims (Istio does not support several JWTs).
    // The same token at several locations is one token.
    if found.iter().any(|f| f.token != found[0].token) {
        return Err(JwtFailure::MultipleTokens);
    }
    let mut verified: Vec<(&locate::Found, &JwtRule, JwtClaims)> = Vec::with_capacity(found.len());
    for token in &found {
        let unverified = verify::peek(&token.token)?;
        let mut outcome = Err(JwtFailure::UnknownIssuer);
        for rule in rules
            .iter()
            .filter(|r| r.locations.contains(&token.location) && verify::judges(r, &unverified))
        {
            outcome = match keys.keys(rule).await {
                Ok(set) => verify::verify(&token.token, rule, &set).map(|c| (&**rule, c)),
                Err(failure) => Err(failure),
            };
            if outcome.is_ok() {
                break;
            }
        }
        let (rule, claims) = outcome?;
        verified.push((token, rule, claims));
    }
    locate::strip_outputs(rules, headers);
    let mut first = None;
    for (token, rule, claims) in verified {
        locate::shape(headers, token, rule, &claims);
        first.get_or_insert(claims);
    }
    Ok(first)
}

#[cfg(test)]
mod tests;
