//! JWT request authentication (jwt/: locate, peek, verify, shape) with a fixed key
//! set (one P-256 key, fuzz/make_seeds.py) and fixed rules: an `https://` issuer
//! read from `Authorization: Bearer`, `?access_token=` and the `session` cookie,
//! writing its payload and claims to headers; a JWT-SVID rule read from `x-jwt`.
//!
//! Input: the query string, then `name: value` header lines.
//!
//! Asserts: a refused token leaves the request exactly as it came, and without a
//! token only the rules' output headers are removed (a client never sets them); an
//! accepted one was signed ES256 (the only algorithm the key allows) by a rule's
//! issuer, for a rule's audience, and what is written to `x-jwt-payload` is the
//! payload of a token the request carried, never a value the client set; the
//! token itself is removed.
#![no_main]

use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use meshward_jwt::{JwtFailure, KeyProvider, KeySet};
use meshward_policy::{DEFAULT_JWKS_TIMEOUT, JwtRule, KeySource, TokenLocation, TrustDomain};

const ISSUER: &str = "https://issuer.example";
/// The headers the rules write.
const OUTPUTS: [&str; 3] = ["x-jwt-payload", "x-sub", "x-team"];
const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "fuzz", "alg": "ES256", "use": "sig", "x": "HtdTYrAhHMpxsM-owGyQ2pxGAYHBuArZkUiuPn38OrE", "y": "K4nfNByBqWKFMGweDWHUXhElKpX1eEmSGwcFIdMYcL8"}]}"#;

struct Fixed(Arc<KeySet>);

impl KeyProvider for Fixed {
    async fn keys(&self, _rule: &JwtRule) -> Result<Arc<KeySet>, JwtFailure> {
        Ok(self.0.clone())
    }
}

static KEYS: LazyLock<Fixed> =
    LazyLock::new(|| Fixed(Arc::new(KeySet::from_jwks(JWKS).expect("the fixed JWKS"))));
static RULES: LazyLock<Vec<Arc<JwtRule>>> = LazyLock::new(|| {
    let payload = HeaderName::from_static("x-jwt-payload");
    vec![
        Arc::new(JwtRule {
            issuer: ISSUER.into(),
            audiences: vec!["api".into()],
            keys: KeySource::Inline(JWKS.into()),
            locations: vec![
                TokenLocation::Header {
                    name: http::header::AUTHORIZATION,
                    prefix: "Bearer ".into(),
                },
                TokenLocation::Param("access_token".into()),
                TokenLocation::Cookie("session".into()),
            ],
            forward_original_token: false,
            output_payload_to_header: Some(payload),
            output_claim_to_headers: vec![
                (HeaderName::from_static("x-sub"), vec!["sub".into()]),
                (
                    HeaderName::from_static("x-team"),
                    vec!["org".into(), "team".into()],
                ),
            ],
            timeout: DEFAULT_JWKS_TIMEOUT,
        }),
        Arc::new(JwtRule {
            issuer: "spiffe://example.org".into(),
            audiences: vec!["api".into()],
            keys: KeySource::TrustBundle(TrustDomain::parse("example.org").expect("valid")),
            locations: vec![TokenLocation::Header {
                name: HeaderName::from_static("x-jwt"),
                prefix: String::new(),
            }],
            forward_original_token: false,
            output_payload_to_header: None,
            output_claim_to_headers: Vec::new(),
            timeout: DEFAULT_JWKS_TIMEOUT,
        }),
    ]
});
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let query = lines.next().filter(|q| !q.is_empty());
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let before = headers.clone();

    let outcome = RUNTIME.block_on(meshward_jwt::authenticate(
        &RULES,
        &mut headers,
        query,
        &*KEYS,
    ));
    let claims = match outcome {
        Ok(Some(claims)) => claims,
        Ok(None) => {
            // no token: only the headers a verified token writes are removed
            let mut expected = before;
            for name in OUTPUTS {
                expected.remove(name);
            }
            assert_eq!(headers, expected, "a request without a token was changed");
            return;
        }
        Err(_) => {
            assert_eq!(headers, before, "a refused request was changed");
            return;
        }
    };
    assert!(
        claims.issuer == ISSUER || claims.issuer == "spiffe://example.org",
        "{}",
        claims.issuer
    );
    assert!(claims.audiences.iter().any(|a| a == "api"));
    // some token in the request was signed with ES256, and its payload is what
    // the pod is told
    let mut haystack = text.to_owned();
    for (_, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        haystack.push('\n');
        haystack.push_str(&value);
    }
    let tokens: Vec<&str> = haystack
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .filter(|t| t.matches('.').count() == 2)
        .collect();
    let es256 = |token: &&str| {
        let header = token.split('.').next().unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .is_some_and(|h| h["alg"] == "ES256")
    };
    assert!(tokens.iter().any(es256), "accepted without an ES256 token");
    for payload in headers.get_all("x-jwt-payload") {
        let payload = payload.to_str().expect("text");
        assert!(
            tokens.iter().any(|t| t.split('.').nth(1) == Some(payload)),
            "x-jwt-payload {payload:?} is no token's"
        );
    }
    for value in headers.get_all(http::header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        let bearer = value
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "));
        assert!(
            !bearer || value[7..].trim().is_empty(),
            "the bearer token was forwarded"
        );
    }
});
