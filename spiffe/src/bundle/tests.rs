use std::time::Duration;

use super::*;
use crate::SpiffeId;

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

fn ca_certificate() -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().der().clone()
}

fn sample() -> Bundle {
    Bundle {
        x509_authorities: vec![ca_certificate()],
        jwt_keys: vec![JwtPublicKey::p256(
            "k1",
            "Zwxvpx7CAIwseV9zZkAMO0nhhkLdKkPgrybbl4IC9G4",
            "Oe7hihJc83PqzQzIlkJf1dMzYsIPnJh5r1f4OVZZxG0",
        )],
        sequence: 7,
        refresh_hint: Duration::from_secs(120),
        ..Bundle::new(td("math.example.com"))
    }
}

#[test]
fn spiffe_json_and_pem_round_trip() {
    let bundle = sample();
    let json: serde_json::Value = serde_json::from_str(&bundle.to_spiffe_json()).unwrap();
    assert_eq!(json["spiffe_sequence"], 7);
    assert_eq!(json["spiffe_refresh_hint"], 120);
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys[0]["use"], "x509-svid");
    assert!(keys[0].get("kid").is_none(), "x509-svid keys carry no kid");
    assert_eq!(keys[0]["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&keys[1]["use"], &keys[1]["kid"]),
        (&"jwt-svid".into(), &"k1".into())
    );
    let parsed = Bundle::from_spiffe_json(&bundle.trust_domain, &bundle.to_spiffe_json());
    assert_eq!(parsed.unwrap(), bundle);
    let pem = bundle.to_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    let from_pem = Bundle::from_pem(&bundle.trust_domain, &pem).unwrap();
    assert_eq!(from_pem.x509_authorities, bundle.x509_authorities);
    assert_eq!(from_pem.refresh_hint, DEFAULT_REFRESH_HINT);
    assert!(Bundle::from_pem(&bundle.trust_domain, "no blocks").is_err());
    // the Workload API's JWKS carries the JWT keys only
    let jwks = Bundle::from_spiffe_json(&bundle.trust_domain, &bundle.jwt_jwks()).unwrap();
    assert_eq!((jwks.x509_authorities.len(), jwks.jwt_keys.len()), (0, 1));
}

#[test]
fn unknown_keys_are_ignored_and_incomplete_ones_refused() {
    let odd = r#"{"keys":[{"kty":"EC","use":"other"},{"kty":"OKP","use":"jwt-svid","kid":"k"},{"kty":"EC","crv":"P-192","use":"jwt-svid","kid":"k","x":"AA","y":"AA"}]}"#;
    let bundle = Bundle::from_spiffe_json(&td("td"), odd).unwrap();
    assert_eq!(bundle.jwt_keys.len(), 0);
    assert_eq!(bundle.refresh_hint, DEFAULT_REFRESH_HINT);
    for (bad, why) in [
        (
            r#"{"keys":[{"kty":"EC","crv":"P-256","use":"jwt-svid","x":"Zwxvpx7CAIwseV9zZkAMO0nhhkLdKkPgrybbl4IC9G4","y":"Oe7hihJc83PqzQzIlkJf1dMzYsIPnJh5r1f4OVZZxG0"}]}"#,
            "needs a kid",
        ),
        (
            r#"{"keys":[{"kty":"EC","crv":"P-256","use":"jwt-svid","kid":"k","x":"AA"}]}"#,
            "needs y",
        ),
        (
            r#"{"keys":[{"kty":"RSA","use":"jwt-svid","kid":"k","e":"AQAB"}]}"#,
            "needs n",
        ),
        (
            r#"{"keys":[{"kty":"EC","use":"x509-svid","x5c":["AAAA"]}]}"#,
            "not a certificate",
        ),
        (
            r#"{"keys":[{"kty":"EC","use":"x509-svid","x5c":["%"]}]}"#,
            "x5c[0]",
        ),
        ("[]", "invalid bundle for td"),
    ] {
        let e = Bundle::from_spiffe_json(&td("td"), bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn a_set_holds_one_bundle_per_trust_domain() {
    let mut set: BundleSet = [sample(), Bundle::new(td("payments.example.org"))]
        .into_iter()
        .collect();
    assert_eq!(set.len(), 2);
    let newer = Bundle {
        sequence: 8,
        ..sample()
    };
    set.insert(newer);
    assert_eq!(set.len(), 2, "replaced, not added");
    let id = SpiffeId::parse("spiffe://math.example.com/ns/a/sa/b").unwrap();
    assert_eq!(set.for_id(&id).map(|b| b.sequence), Some(8));
    let foreign = SpiffeId::parse("spiffe://other.example/x").unwrap();
    assert!(set.for_id(&foreign).is_none());
    let names: Vec<&str> = set.iter().map(|b| b.trust_domain.as_str()).collect();
    assert_eq!(names, ["math.example.com", "payments.example.org"]);
}

/// A self-signed CA certificate on a key of `alg`.
fn ca_on(alg: &'static rcgen::SignatureAlgorithm) -> (CertificateDer<'static>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (params.self_signed(&key).unwrap().der().clone(), key)
}

/// An `x509-svid` entry repeats its certificate's own key (RFC 7517 §4.7: the
/// key in `x5c[0]` MUST match): go-jose, and so SPIRE, refuses a whole bundle in
/// which an upstream root on P-384 or RSA is published as a P-256 key.
#[test]
fn authorities_are_published_with_their_own_key_parameters() {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let (p256, p256_key) = ca_on(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (p384, p384_key) = ca_on(&rcgen::PKCS_ECDSA_P384_SHA384);
    let (rsa, rsa_key) = ca_on(&rcgen::PKCS_RSA_SHA256);
    let bundle = Bundle {
        x509_authorities: vec![p256, p384, rsa],
        ..Bundle::new(td("math.example.com"))
    };
    let json: serde_json::Value = serde_json::from_str(&bundle.to_spiffe_json()).unwrap();
    let keys = json["keys"].as_array().unwrap();
    let point = p256_key.public_key_raw();
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[0]["x"], b64(&point[1..33]));
    assert_eq!(keys[0]["y"], b64(&point[33..]));
    let point = p384_key.public_key_raw();
    assert_eq!(keys[1]["kty"], "EC");
    assert_eq!(keys[1]["crv"], "P-384");
    assert_eq!(keys[1]["x"], b64(&point[1..49]));
    assert_eq!(keys[1]["y"], b64(&point[49..]));
    assert_eq!(keys[2]["kty"], "RSA");
    assert!(keys[2].get("crv").is_none() && keys[2].get("x").is_none());
    assert_eq!(keys[2]["e"], "AQAB");
    // n: the modulus, big-endian without a leading zero
    let n = URL_SAFE_NO_PAD
        .decode(keys[2]["n"].as_str().unwrap())
        .unwrap();
    assert_eq!(n.len(), 256, "a 2048-bit modulus");
    assert!(
        rsa_key
            .public_key_raw()
            .windows(n.len())
            .any(|w| w == n.as_slice()),
        "n is not the certificate's modulus"
    );
    for key in keys {
        assert_eq!(key["use"], "x509-svid");
        assert_eq!(key["x5c"].as_array().unwrap().len(), 1);
    }
    let parsed = Bundle::from_spiffe_json(&bundle.trust_domain, &bundle.to_spiffe_json());
    assert_eq!(parsed.unwrap(), bundle);
}

/// SPIRE's `jwt_key_type` may be `rsa-2048`, `rsa-4096` (what AWS's OIDC
/// federation asks for) or `ec-p384`: such JWT keys are read, kept and carried
/// on as they came, not dropped or turned into P-256 keys.
#[test]
fn jwt_keys_of_every_spire_key_type_are_kept() {
    let (p384, _) = ca_on(&rcgen::PKCS_ECDSA_P384_SHA384);
    let (rsa, _) = ca_on(&rcgen::PKCS_RSA_SHA256);
    let jwk = |cert: &CertificateDer<'_>, kid: &str| {
        let mut jwk: serde_json::Value = match PublicJwk::of_certificate(cert).unwrap() {
            PublicJwk::Ec { crv, x, y } => {
                serde_json::json!({"kty": "EC", "crv": crv, "x": x, "y": y})
            }
            PublicJwk::Rsa { n, e } => serde_json::json!({"kty": "RSA", "n": n, "e": e}),
            PublicJwk::Okp { .. } => unreachable!(),
        };
        jwk["use"] = "jwt-svid".into();
        jwk["kid"] = kid.into();
        jwk
    };
    // as SPIRE's bundle endpoint serves them
    let json = serde_json::json!({
        "keys": [jwk(&rsa, "rsa-key"), jwk(&p384, "p384-key"),
                 {"kty": "oct", "use": "jwt-svid", "kid": "secret", "k": "AAAA"}],
        "spiffe_sequence": 3,
        "spiffe_refresh_hint": 60,
    })
    .to_string();
    let bundle = Bundle::from_spiffe_json(&td("spire.test"), &json).unwrap();
    let kinds: Vec<(&str, &str)> = bundle
        .jwt_keys
        .iter()
        .map(|k| match &k.key {
            PublicJwk::Ec { crv, .. } => (k.kid.as_str(), crv.as_str()),
            PublicJwk::Rsa { .. } => (k.kid.as_str(), "RSA"),
            PublicJwk::Okp { crv, .. } => (k.kid.as_str(), crv.as_str()),
        })
        .collect();
    assert_eq!(kinds, [("rsa-key", "RSA"), ("p384-key", "P-384")]);
    // carried on unchanged: stored, sent to agents, handed to workloads
    let again = Bundle::from_spiffe_json(&bundle.trust_domain, &bundle.to_spiffe_json()).unwrap();
    assert_eq!(again, bundle);
    let jwks: serde_json::Value = serde_json::from_str(&bundle.jwt_jwks()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(jwks["keys"][0], expected["keys"][0]);
    assert_eq!(jwks["keys"][1], expected["keys"][1]);
    // a key whose numbers do not fit its curve is no key of it
    let short =
        r#"{"keys":[{"kty":"EC","crv":"P-384","use":"jwt-svid","kid":"k","x":"AAAA","y":"AAAA"}]}"#;
    let e = Bundle::from_spiffe_json(&td("spire.test"), short).unwrap_err();
    assert!(e.to_string().contains("P-384"), "{e}");
}

/// An authority whose key no JWK names (here a P-256 certificate whose curve
/// reads P-192) is ignored when read, as a key of unknown type: what is read is
/// what the bundle can write back.
#[test]
fn an_authority_whose_key_no_jwk_names_is_ignored() {
    let (cert, _) = ca_on(&rcgen::PKCS_ECDSA_P256_SHA256);
    let prime256v1 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut der = cert.as_ref().to_vec();
    let at = der
        .windows(prime256v1.len())
        .position(|w| w == prime256v1)
        .unwrap();
    der[at + prime256v1.len() - 1] = 0x01; // prime192v1
    let odd = CertificateDer::from(der);
    assert!(PublicJwk::of_certificate(&odd).is_none());
    let json = format!(
        r#"{{"keys":[{{"kty":"EC","use":"x509-svid","x5c":["{}"]}},{{"kty":"EC","use":"x509-svid","x5c":["{}"]}}]}}"#,
        STANDARD.encode(odd.as_ref()),
        STANDARD.encode(cert.as_ref())
    );
    let bundle = Bundle::from_spiffe_json(&td("td"), &json).unwrap();
    assert_eq!(bundle.x509_authorities, vec![cert]);
    let again = Bundle::from_spiffe_json(&td("td"), &bundle.to_spiffe_json()).unwrap();
    assert_eq!(again, bundle);
}
