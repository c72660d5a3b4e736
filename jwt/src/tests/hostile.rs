//! Several tokens, token attempts in other forms, JWKS keys we cannot use,
//! JWT-SVIDs without audiences, claims a header would read otherwise.

use super::*;

fn with_header(name: &'static str, value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.append(name, HeaderValue::from_bytes(value).unwrap());
    headers
}

#[test]
fn several_distinct_tokens_are_refused_and_one_repeated_counts_once() {
    let signer = Signer::new("k1");
    let mut r = (*rule(ISSUER, KeySource::Uri("https://k/".into()))).clone();
    r.output_claim_to_headers = vec![(HeaderName::from_static("x-user"), vec!["sub".into()])];
    let rules = [Arc::new(r)];
    let keys = keys(&signer, ISSUER);
    let alice = signer.sign(&claims(json!({})));
    let mallory = signer.sign(&claims(json!({"sub": "mallory"})));
    // policy would judge alice while the pod reads mallory in x-user
    let query = format!("access_token={mallory}");
    let mut headers = bearer(&alice);
    assert_eq!(
        run(&rules, &mut headers, Some(&query), &keys),
        Err(JwtFailure::MultipleTokens)
    );
    // two Authorization lines
    let mut headers = bearer(&alice);
    headers.append(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {mallory}")).unwrap(),
    );
    assert_eq!(
        run(&rules, &mut headers, None, &keys),
        Err(JwtFailure::MultipleTokens)
    );
    // two parameters
    let query = format!("access_token={alice}&access_token={mallory}");
    assert_eq!(
        run(&rules, &mut HeaderMap::new(), Some(&query), &keys),
        Err(JwtFailure::MultipleTokens)
    );
    // tokens of two issuers, each with its rule
    let other = Signer::new("k2");
    let both = Keys(vec![
        (
            ISSUER.into(),
            Arc::new(KeySet::from_jwks(&signer.jwks()).unwrap()),
        ),
        (
            "https://other.example".into(),
            Arc::new(KeySet::from_jwks(&other.jwks()).unwrap()),
        ),
    ]);
    let two_rules = [
        rules[0].clone(),
        rule("https://other.example", KeySource::Uri("https://o/".into())),
    ];
    let foreign = other.sign(&claims(
        json!({"iss": "https://other.example", "sub": "bob"}),
    ));
    let query = format!("access_token={foreign}");
    assert_eq!(
        run(&two_rules, &mut bearer(&alice), Some(&query), &both),
        Err(JwtFailure::MultipleTokens)
    );
    // the same token at two locations is one token: one identity judged and shaped
    let query = format!("access_token={alice}");
    let mut headers = bearer(&alice);
    headers.append(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer  {alice}")).unwrap(),
    );
    let got = run(&rules, &mut headers, Some(&query), &keys)
        .unwrap()
        .unwrap();
    assert_eq!(got.subject, "alice");
    assert_eq!(headers["x-user"], "alice");
    assert!(headers.get(http::header::AUTHORIZATION).is_none());
}

#[test]
fn values_of_the_token_scheme_are_verified_or_refused_never_passed() {
    let signer = Signer::new("k1");
    let rules = [rule(ISSUER, KeySource::Uri("https://k/".into()))];
    let keys = keys(&signer, ISSUER);
    let good = signer.sign(&claims(json!({})));
    let forged = Signer::new("k1").sign(&claims(json!({"sub": "admin"})));
    // RFC 6750 / 9110: the scheme in any case, one or more spaces, spaces around
    for value in [
        format!("Bearer {good}"),
        format!("bearer {good}"),
        format!("BEARER   {good}"),
        format!("  Bearer {good}  "),
    ] {
        let mut headers = with_header("authorization", value.as_bytes());
        let got = run(&rules, &mut headers, None, &keys);
        assert!(matches!(got, Ok(Some(_))), "{value:?}: {got:?}");
        assert!(headers.get("authorization").is_none(), "{value:?}");
    }
    // the scheme's word, then not the form: a token attempt the proxy did not
    // read as one must not reach the pod, whether its token is good or forged
    for token in [&good, &forged] {
        for value in [
            format!("Bearer\t{token}"),
            format!("Bearer:{token}"),
            format!("bearer,{token}"),
            format!("Bearer {token} extra"),
            format!("Bearer {token},"),
            format!("Bearer, Bearer {token}"),
            "Bearer".to_owned(),
            format!("Bearer \t{token}"),
        ] {
            let got = run(
                &rules,
                &mut with_header("authorization", value.as_bytes()),
                None,
                &keys,
            );
            assert_eq!(got, Err(JwtFailure::Malformed), "{value:?}");
        }
    }
    let mut obs_text = format!("Bearer {forged}").into_bytes();
    obs_text.push(0xff);
    assert_eq!(
        run(
            &rules,
            &mut with_header("authorization", &obs_text),
            None,
            &keys
        ),
        Err(JwtFailure::Malformed)
    );
    // another scheme is no token and passes untouched
    for value in ["Basic YWxpY2U6c2VjcmV0", "Bearerish abc", "Digest a=b"] {
        let mut headers = with_header("authorization", value.as_bytes());
        assert_eq!(run(&rules, &mut headers, None, &keys), Ok(None), "{value}");
        assert_eq!(headers["authorization"], value);
    }
    // parameters: the name in another case, after a `;`, percent-encoded
    for query in [
        format!("ACCESS_TOKEN={forged}"),
        format!("a=1;access_token={forged}"),
        format!("%61ccess_token={forged}"),
    ] {
        assert_eq!(
            run(&rules, &mut HeaderMap::new(), Some(&query), &keys),
            Err(JwtFailure::Signature),
            "{query}"
        );
    }
    // a header without a prefix: the whole value is the token
    let mut r = (*rules[0]).clone();
    r.locations = vec![
        TokenLocation::Header {
            name: HeaderName::from_static("x-token"),
            prefix: String::new(),
        },
        TokenLocation::Cookie("session".into()),
    ];
    let custom = [Arc::new(r)];
    assert!(matches!(
        run(
            &custom,
            &mut with_header("x-token", format!(" {good} ").as_bytes()),
            None,
            &keys
        ),
        Ok(Some(_))
    ));
    assert_eq!(
        run(
            &custom,
            &mut with_header("x-token", format!("{good} x").as_bytes()),
            None,
            &keys
        ),
        Err(JwtFailure::Malformed)
    );
    // a cookie name with spaces around it, as Python's http.cookies reads it
    let cookie = format!("theme=dark; session ={forged}");
    assert_eq!(
        run(
            &custom,
            &mut with_header("cookie", cookie.as_bytes()),
            None,
            &keys
        ),
        Err(JwtFailure::Signature)
    );
}

/// A JWK of an RSA public key with modulus `n` (base64url).
fn rsa_jwk(kid: &str, n: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"})
}

#[test]
fn keys_we_cannot_use_are_skipped_and_the_rest_apply() {
    let signer = Signer::new("good");
    let mut set: Value = serde_json::from_str(&signer.jwks()).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let unusable = [
        json!({"kty": "EC", "crv": "P-521", "kid": "p521",
            "x": b64(&[1; 66]), "y": b64(&[2; 66])}),
        json!({"kty": "EC", "crv": "secp256k1", "kid": "k1curve",
            "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
        json!({"kty": "XYZ", "kid": "unknown"}),
        rsa_jwk("bad-base64", "!!not base64!!"),
        rsa_jwk("short", &b64(&[0xc5; 64])),
        json!({"kty": "OKP", "crv": "X25519", "kid": "ecdh", "x": b64(&[3; 32])}),
        json!({"kty": "oct", "kid": "secret", "k": "c2VjcmV0"}),
        json!({"kty": "EC", "crv": "P-256", "kid": "enc", "alg": "RSA-OAEP",
            "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
    ];
    for key in &unusable {
        set["keys"].as_array_mut().unwrap().push(key.clone());
    }
    let keys = KeySet::from_jwks(&set.to_string()).unwrap();
    assert_eq!(keys.kids(), [Some("good")]);
    let rules = [rule(ISSUER, KeySource::Uri("https://k/".into()))];
    let provider = Keys(vec![(ISSUER.into(), Arc::new(keys))]);
    let token = signer.sign(&claims(json!({})));
    assert!(matches!(
        run(&rules, &mut bearer(&token), None, &provider),
        Ok(Some(_))
    ));
    // only keys we cannot use: still an error, naming them
    let only_bad = json!({"keys": unusable}).to_string();
    let err = KeySet::from_jwks(&only_bad).unwrap_err();
    assert!(err.0.contains("p521") && err.0.contains("short"), "{err}");
}

#[test]
fn jwt_svids_need_audiences_and_a_subject_with_a_path() {
    let signer = Signer::new("svid-key");
    let td = TrustDomain::parse("math.example.com").unwrap();
    let issuer = "spiffe://math.example.com";
    let keys = keys(&signer, issuer);
    let svid =
        |sub: &str, aud: &str| signer.sign(&json!({"sub": sub, "aud": [aud], "exp": now() + 300}));
    let caller = "spiffe://math.example.com/ns/default/sa/curl-spire";
    // a rule without audiences would take a JWT-SVID minted for any service
    let mut open = (*rule(issuer, KeySource::TrustBundle(td.clone()))).clone();
    open.audiences = Vec::new();
    assert_eq!(
        run(
            &[Arc::new(open)],
            &mut bearer(&svid(caller, "billing")),
            None,
            &keys
        ),
        Err(JwtFailure::Audience)
    );
    let mut r = (*rule(issuer, KeySource::TrustBundle(td))).clone();
    r.audiences = vec!["echoserver".into()];
    let rules = [Arc::new(r)];
    assert!(
        run(
            &rules,
            &mut bearer(&svid(caller, "echoserver")),
            None,
            &keys
        )
        .is_ok()
    );
    // the trust domain itself is no workload
    assert!(matches!(
        run(
            &rules,
            &mut bearer(&svid(issuer, "echoserver")),
            None,
            &keys
        ),
        Err(JwtFailure::Claims(_))
    ));
}

#[test]
fn a_claim_a_header_would_read_as_other_values_is_not_copied() {
    let signer = Signer::new("k1");
    let mut r = (*rule(ISSUER, KeySource::Uri("https://k/".into()))).clone();
    r.output_claim_to_headers = vec![
        (HeaderName::from_static("x-role"), vec!["role".into()]),
        (HeaderName::from_static("x-level"), vec!["level".into()]),
    ];
    let rules = [Arc::new(r)];
    let keys = keys(&signer, ISSUER);
    let shaped = |role: Value| {
        let token = signer.sign(&claims(json!({"role": role, "level": 3})));
        let mut headers = bearer(&token);
        headers.insert("x-role", HeaderValue::from_static("forged"));
        let got = run(&rules, &mut headers, None, &keys).unwrap().unwrap();
        assert_eq!(got.claims["role"], role);
        assert_eq!(headers["x-level"], "3");
        headers
            .get("x-role")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(shaped(json!("admin")), Some("admin".into()));
    // `request.headers[x-role]` would read `admin` in these, the claim is not `admin`
    for role in ["guest, admin", "guest,admin", " admin", "admin ", "\tadmin"] {
        assert_eq!(shaped(json!(role)), None, "{role:?}");
    }
}
