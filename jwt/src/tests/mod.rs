#![allow(clippy::unwrap_used)]

use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use meshward_policy::{DEFAULT_JWKS_TIMEOUT, KeySource, TokenLocation, TrustDomain};
use serde_json::{Value, json};

use meshward_test_support::jwks::{P256Signer, unix_now};

use super::*;

const ISSUER: &str = "https://issuer.example";

type Signer = P256Signer;

fn now() -> u64 {
    unix_now()
}

fn claims(extra: Value) -> Value {
    let mut base = json!({"iss": ISSUER, "sub": "alice", "aud": "api", "exp": now() + 300,
        "org": {"team": "payments"}, "groups": ["a", "b"]});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn rule(issuer: &str, keys: KeySource) -> Arc<JwtRule> {
    Arc::new(JwtRule {
        issuer: issuer.into(),
        audiences: vec!["api".into()],
        keys,
        locations: TokenLocation::defaults(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        timeout: DEFAULT_JWKS_TIMEOUT,
    })
}

/// Keys by rule issuer; a missing one is unavailable (as a failed fetch).
struct Keys(Vec<(String, Arc<KeySet>)>);

impl KeyProvider for Keys {
    async fn keys(&self, rule: &JwtRule) -> Result<Arc<KeySet>, JwtFailure> {
        self.0
            .iter()
            .find(|(issuer, _)| *issuer == rule.issuer)
            .map(|(_, set)| set.clone())
            .ok_or_else(|| JwtFailure::KeysUnavailable("not fetched".into()))
    }
}

fn keys(signer: &Signer, issuer: &str) -> Keys {
    Keys(vec![(
        issuer.into(),
        Arc::new(KeySet::from_jwks(&signer.jwks()).unwrap()),
    )])
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn run(
    rules: &[Arc<JwtRule>],
    headers: &mut HeaderMap,
    query: Option<&str>,
    keys: &Keys,
) -> Result<Option<JwtClaims>, JwtFailure> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(authenticate(rules, headers, query, keys))
}

#[test]
fn a_valid_token_gives_its_principal_and_leaves_the_request() {
    let signer = Signer::new("k1");
    let mut r = (*rule(ISSUER, KeySource::Uri("https://issuer.example/keys".into()))).clone();
    r.output_claim_to_headers = vec![
        (
            HeaderName::from_static("x-team"),
            vec!["org".into(), "team".into()],
        ),
        (HeaderName::from_static("x-groups"), vec!["groups".into()]),
    ];
    r.output_payload_to_header = Some(HeaderName::from_static("x-jwt-payload"));
    let rules = [Arc::new(r)];
    let token = signer.sign(&claims(json!({})));
    let mut headers = bearer(&token);
    // a client cannot set what only a verified token writes
    headers.insert("x-groups", HeaderValue::from_static("admins"));
    let got = run(&rules, &mut headers, None, &keys(&signer, ISSUER))
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.issuer.as_str(), got.subject.as_str()),
        (ISSUER, "alice")
    );
    assert_eq!(got.audiences, ["api"]);
    assert!(
        headers.get(http::header::AUTHORIZATION).is_none(),
        "token forwarded"
    );
    assert_eq!(headers["x-team"], "payments");
    assert!(
        headers.get("x-groups").is_none(),
        "a list claim writes no header"
    );
    assert_eq!(headers["x-jwt-payload"], token.split('.').nth(1).unwrap());

    // with forwardOriginalToken the pod gets it
    let mut forwarding = (*rules[0]).clone();
    forwarding.forward_original_token = true;
    let mut headers = bearer(&token);
    run(
        &[Arc::new(forwarding)],
        &mut headers,
        None,
        &keys(&signer, ISSUER),
    )
    .unwrap();
    assert!(headers.get(http::header::AUTHORIZATION).is_some());
}

#[test]
fn no_token_passes_without_principal_and_forged_outputs_are_removed() {
    let mut r = (*rule(ISSUER, KeySource::Uri("https://k/".into()))).clone();
    r.output_claim_to_headers = vec![(HeaderName::from_static("x-user"), vec!["sub".into()])];
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("admin"));
    let got = run(&[Arc::new(r)], &mut headers, None, &Keys(Vec::new())).unwrap();
    assert!(got.is_none());
    assert!(headers.get("x-user").is_none());
    // a token at a place no rule reads is no token
    let mut headers = HeaderMap::new();
    headers.insert("x-token", HeaderValue::from_static("a.b.c"));
    let rules = [rule(ISSUER, KeySource::Uri("https://k/".into()))];
    assert!(
        run(&rules, &mut headers, None, &Keys(Vec::new()))
            .unwrap()
            .is_none()
    );
}

#[test]
fn every_bad_token_class_is_refused() {
    let signer = Signer::new("k1");
    let rules = [rule(
        ISSUER,
        KeySource::Uri("https://issuer.example/keys".into()),
    )];
    let keys = keys(&signer, ISSUER);
    let good = signer.sign(&claims(json!({})));
    let (head, payload, signature) = {
        let parts: Vec<&str> = good.split('.').collect();
        (parts[0], parts[1], parts[2])
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let other_payload = b64(&claims(json!({"sub": "admin"})));
    // the classic: HS256 "signed" with the public key as the secret
    let hs256 = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(signer.jwks().as_bytes()),
    )
    .unwrap();
    let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    let other_kid = Signer::new("k2").sign(&claims(json!({})));
    let cases: Vec<(String, JwtFailure)> = vec![
        (
            format!("{head}.{other_payload}.{signature}"),
            JwtFailure::Signature,
        ),
        (
            Signer::new("k1").sign(&claims(json!({}))),
            JwtFailure::Signature,
        ),
        (hs256, JwtFailure::UnsupportedAlgorithm("HS256".into())),
        (other_kid, JwtFailure::NoMatchingKey),
        (
            signer.sign(&claims(json!({"exp": now() - 120}))),
            JwtFailure::Expired,
        ),
        (
            signer.sign(&claims(json!({"nbf": now() + 120}))),
            JwtFailure::NotYetValid,
        ),
        (
            signer.sign(&claims(json!({"aud": ["web", "ops"]}))),
            JwtFailure::Audience,
        ),
        (
            signer.sign(&claims(json!({"aud": null}))),
            JwtFailure::Audience,
        ),
        (
            signer.sign(&claims(json!({"iss": "https://evil.example"}))),
            JwtFailure::UnknownIssuer,
        ),
        (
            signer.sign(&claims(json!({"exp": "tomorrow"}))),
            JwtFailure::Claims("malformed exp claim".into()),
        ),
        ("not-a-jwt".into(), JwtFailure::Malformed),
        (format!("{head}.{payload}"), JwtFailure::Malformed),
    ];
    for (token, want) in cases {
        let got = run(&rules, &mut bearer(&token), None, &keys);
        match (&got, &want) {
            (Err(JwtFailure::UnsupportedAlgorithm(_)), JwtFailure::UnsupportedAlgorithm(_)) => {}
            _ => assert_eq!(got, Err(want.clone()), "{token}"),
        }
    }
    // `alg: none` cannot even be read as a header of an allowed algorithm
    let got = run(&rules, &mut bearer(&none), None, &keys).unwrap_err();
    assert!(
        matches!(
            got,
            JwtFailure::UnsupportedAlgorithm(_) | JwtFailure::Malformed
        ),
        "{got:?}"
    );
    // within the clock skew, an expired token still passes (Envoy's 60 s)
    let fresh = signer.sign(&claims(json!({"exp": now() - 20})));
    assert!(run(&rules, &mut bearer(&fresh), None, &keys).is_ok());
    // keys that cannot be had refuse the token: never another key
    let got = run(&rules, &mut bearer(&good), None, &Keys(Vec::new()));
    assert_eq!(got, Err(JwtFailure::KeysUnavailable("not fetched".into())));
    // one good token does not carry a bad one: two tokens are refused whole
    let mut two = bearer(&good);
    let query = format!(
        "access_token={}",
        signer.sign(&claims(json!({"aud": "web"})))
    );
    assert_eq!(
        run(&rules, &mut two, Some(&query), &keys),
        Err(JwtFailure::MultipleTokens)
    );
}

#[test]
fn tokens_are_found_in_params_cookies_and_custom_headers() {
    let signer = Signer::new("k1");
    let mut r = (*rule(ISSUER, KeySource::Uri("https://k/".into()))).clone();
    r.locations = vec![
        TokenLocation::Header {
            name: HeaderName::from_static("x-token"),
            prefix: String::new(),
        },
        TokenLocation::Param("tok".into()),
        TokenLocation::Cookie("session".into()),
    ];
    let rules = [Arc::new(r)];
    let keys = keys(&signer, ISSUER);
    let token = signer.sign(&claims(json!({})));
    let mut headers = HeaderMap::new();
    headers.insert("x-token", HeaderValue::from_str(&token).unwrap());
    assert!(run(&rules, &mut headers, None, &keys).unwrap().is_some());
    assert!(headers.get("x-token").is_none());
    let query = format!("a=1&tok={token}");
    assert!(
        run(&rules, &mut HeaderMap::new(), Some(&query), &keys)
            .unwrap()
            .is_some()
    );
    let mut headers = HeaderMap::new();
    let cookie = format!("theme=dark; session={token}");
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&cookie).unwrap(),
    );
    assert!(run(&rules, &mut headers, None, &keys).unwrap().is_some());
    // the default `Authorization: Bearer` is not read by this rule
    assert!(
        run(&rules, &mut bearer(&token), None, &keys)
            .unwrap()
            .is_none()
    );
}

#[test]
fn jwt_svids_are_judged_by_their_trust_domain() {
    let signer = Signer::new("svid-key");
    let td = TrustDomain::parse("math.example.com").unwrap();
    let issuer = "spiffe://math.example.com";
    let mut r = (*rule(issuer, KeySource::TrustBundle(td))).clone();
    r.audiences = vec!["echoserver".into()];
    let rules = [Arc::new(r)];
    let keys = keys(&signer, issuer);
    let svid = |extra: Value| {
        let mut c = json!({"sub": "spiffe://math.example.com/ns/default/sa/curl-spire",
            "aud": ["echoserver"], "exp": now() + 300, "iat": now()});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        signer.sign(&c)
    };
    // SPIRE's JWT-SVIDs carry no `iss`: the subject's trust domain decides
    let got = run(&rules, &mut bearer(&svid(json!({}))), None, &keys)
        .unwrap()
        .unwrap();
    assert_eq!(got.issuer, issuer);
    assert_eq!(
        got.subject,
        "spiffe://math.example.com/ns/default/sa/curl-spire"
    );
    // with `iss` (jwt_issuer), the same
    assert!(
        run(
            &rules,
            &mut bearer(&svid(json!({"iss": issuer}))),
            None,
            &keys
        )
        .is_ok()
    );
    // another domain's subject has no rule here; a non-SPIFFE subject is no SVID
    let foreign = svid(json!({"sub": "spiffe://other.example/ns/x/sa/y"}));
    assert_eq!(
        run(&rules, &mut bearer(&foreign), None, &keys),
        Err(JwtFailure::UnknownIssuer)
    );
    let named = svid(json!({"iss": issuer, "sub": "alice"}));
    assert!(matches!(
        run(&rules, &mut bearer(&named), None, &keys),
        Err(JwtFailure::Claims(_))
    ));
    // a JWT-SVID needs aud and exp
    let mut c = json!({"iss": issuer, "sub": "spiffe://math.example.com/x", "aud": "echoserver"});
    assert!(matches!(
        run(&rules, &mut bearer(&signer.sign(&c)), None, &keys),
        Err(JwtFailure::Claims(_))
    ));
    c["exp"] = json!(now() + 60);
    c.as_object_mut().unwrap().remove("aud");
    assert!(matches!(
        run(&rules, &mut bearer(&signer.sign(&c)), None, &keys),
        Err(JwtFailure::Claims(_))
    ));
}

#[test]
fn a_jwks_without_public_keys_is_refused() {
    assert!(KeySet::from_jwks(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
    assert!(KeySet::from_jwks("{}").is_err());
    assert!(KeySet::from_jwks(&Signer::new("k").jwks()).is_ok());
}

// the classes of issue 25 (docs/security.md, 15a-15e)
mod hostile;

#[test]
fn a_jwt_svid_alone_is_judged_with_the_keys_of_its_subjects_domain() {
    let (ours, partner) = (Signer::new("ours"), Signer::new("partner"));
    let our_td = TrustDomain::parse("math.example.com").unwrap();
    let key_sets = [
        (our_td, Arc::new(KeySet::from_jwks(&ours.jwks()).unwrap())),
        (
            TrustDomain::parse("partner.example").unwrap(),
            Arc::new(KeySet::from_jwks(&partner.jwks()).unwrap()),
        ),
    ];
    let keys_of = |td: &TrustDomain| {
        key_sets
            .iter()
            .find(|(d, _)| d == td)
            .map(|(_, k)| k.clone())
    };
    let svid = |signer: &Signer, sub: &str, aud: &str| {
        signer.sign(&json!({"sub": sub, "aud": [aud], "exp": now() + 300}))
    };
    let me = "spiffe://math.example.com/ns/default/sa/curl-spire";
    let (id, claims) = validate_jwt_svid(&svid(&ours, me, "api"), "api", keys_of).unwrap();
    assert_eq!(id.to_string(), me);
    assert_eq!(claims.issuer, "spiffe://math.example.com");
    // a partner's key vouches for the partner's workloads only
    let partners = "spiffe://partner.example/ns/x/sa/y";
    assert!(validate_jwt_svid(&svid(&partner, partners, "api"), "api", keys_of).is_ok());
    assert_eq!(
        validate_jwt_svid(&svid(&partner, me, "api"), "api", keys_of).unwrap_err(),
        JwtFailure::NoMatchingKey
    );
    // a domain the caller does not trust, another audience, no SPIFFE ID
    let stranger = svid(&ours, "spiffe://stranger.example/ns/x/sa/y", "api");
    assert!(matches!(
        validate_jwt_svid(&stranger, "api", keys_of),
        Err(JwtFailure::KeysUnavailable(_))
    ));
    assert_eq!(
        validate_jwt_svid(&svid(&ours, me, "api"), "other", keys_of).unwrap_err(),
        JwtFailure::Audience
    );
    assert!(matches!(
        validate_jwt_svid(&svid(&ours, "alice", "api"), "api", keys_of),
        Err(JwtFailure::Claims(_))
    ));
}
