//! A JWT-SVID checked as a relying party would check it, apart from the product's
//! own validator: the header's `kid` names an ES256 key of the SPIFFE bundle's
//! JWKS, the signature verifies, it has not expired, the audience and subject are
//! the expected ones (JWT-SVID.md §3-§4).

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

/// The claims, or why the token is not a valid JWT-SVID for `audience` and `subject`.
pub fn verify_jwt_svid(
    token: &str,
    jwks: &str,
    audience: &str,
    subject: &str,
) -> Result<Value, String> {
    let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
    if header.alg != Algorithm::ES256 {
        return Err(format!("alg {:?}, not ES256", header.alg));
    }
    let kid = header.kid.ok_or("no kid")?;
    let jwks: Value = serde_json::from_str(jwks).map_err(|e| format!("bundle: {e}"))?;
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == kid.as_str() && k["use"] == "jwt-svid")
        .ok_or_else(|| format!("kid {kid:?} is not a JWT key of the bundle"))?;
    let (x, y) = (
        key["x"].as_str().unwrap_or(""),
        key["y"].as_str().unwrap_or(""),
    );
    let key = DecodingKey::from_ec_components(x, y).map_err(|e| format!("key: {e}"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("token: {e}"))?
        .claims;
    if claims["sub"] != subject {
        return Err(format!("sub {}, not {subject}", claims["sub"]));
    }
    Ok(claims)
}
