//! A JWT-SVID on its own, as the Workload API's ValidateJWTSVID judges one (and
//! go-spiffe's `jwtsvid.ParseAndValidate`): the keys are those of the bundle of
//! its subject's trust domain, so a domain's keys vouch only for that domain's
//! workloads; `audience` must be among its `aud`; the JWT-SVID rules of
//! `verify.rs` apply (algorithm, `typ`, `exp`, `sub` with a path). It is the code
//! that judges a `spiffe://` RequestAuthentication rule, with the token's own `iss`
//! (SPIRE sets it only when configured) taken as it is.

use std::sync::Arc;
use std::time::Duration;

use meshward_policy::{JwtClaims, JwtRule, KeySource};
use meshward_spiffe::{SpiffeId, TrustDomain};

use crate::failure::JwtFailure;
use crate::keys::KeySet;
use crate::verify;

/// Validates `token` for `audience`. `keys_of` gives the JWT keys of a trust
/// domain the caller trusts (`None`: it trusts no such domain, and the token is
/// refused with [`JwtFailure::KeysUnavailable`]).
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    keys_of: impl Fn(&TrustDomain) -> Option<Arc<KeySet>>,
) -> Result<(SpiffeId, JwtClaims), JwtFailure> {
    let unverified = verify::peek(token)?;
    let subject = unverified
        .subject
        .as_deref()
        .and_then(|s| SpiffeId::parse(s).ok())
        .ok_or_else(|| JwtFailure::Claims("a JWT-SVID's sub must be a SPIFFE ID".into()))?;
    let td = subject.trust_domain();
    let keys = keys_of(&td).ok_or_else(|| {
        JwtFailure::KeysUnavailable(format!("no JWT keys of {td} for this workload"))
    })?;
    let rule = JwtRule {
        issuer: unverified
            .issuer
            .unwrap_or_else(|| format!("spiffe://{td}")),
        audiences: vec![audience.to_owned()],
        keys: KeySource::TrustBundle(td),
        locations: Vec::new(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        timeout: Duration::ZERO,
    };
    let claims = verify::verify(token, &rule, &keys)?;
    Ok((subject, claims))
}
