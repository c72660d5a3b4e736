//! SVIDs as a relying party sees them: the whole X509-SVID profile, the CSR
//! refusals, JWT-SVIDs verified with the published bundle keys.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use meshward_issuer::{Authority, SigningError, SvidTemplate, mint_jwt_svid, sign_x509_svid};
use meshward_spiffe::{Bundle, SpiffeId, TrustDomain};
use meshward_test_support::{check_x509_svid, csr_with, p256_csr};

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

fn authority(dir: &std::path::Path) -> Authority {
    Authority::load_or_init(
        dir,
        &TrustDomain::parse("math.example.com").unwrap(),
        DAY,
        None,
        SystemTime::now(),
    )
    .unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

#[test]
fn x509_svid_meets_the_whole_profile() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let now = SystemTime::now();
    let spiffe_id = id("spiffe://math.example.com/ns/default/sa/curl-spire");
    let (_, csr) = p256_csr();
    let dns = vec!["curl.default.svc".to_owned()];
    let template = SvidTemplate {
        spiffe_id: &spiffe_id,
        dns_names: &dns,
        ip_addresses: &[],
        ttl: HOUR,
    };
    let svid = sign_x509_svid(ca.active(now).unwrap(), &csr, &template, now).unwrap();
    check_x509_svid(&svid.chain, &ca.x509_authorities(), spiffe_id.as_str(), now).unwrap();
    assert_eq!(svid.chain.len(), 1, "self-signed mode: the leaf alone");
    let lifetime = svid.expires_at.duration_since(now).unwrap();
    assert!(
        lifetime <= HOUR && lifetime > HOUR - Duration::from_secs(5),
        "{lifetime:?}"
    );
    assert_eq!(svid.serial.len(), 32);
    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names.len(), 2, "the URI and the DNS name");
}

#[test]
fn ttl_is_capped_by_the_ca_life() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let now = SystemTime::now();
    let spiffe_id = id("spiffe://math.example.com/w");
    let (_, csr) = p256_csr();
    let template = SvidTemplate {
        spiffe_id: &spiffe_id,
        dns_names: &[],
        ip_addresses: &[],
        ttl: DAY * 30,
    };
    let active = ca.active(now).unwrap();
    let svid = sign_x509_svid(active, &csr, &template, now).unwrap();
    assert_eq!(svid.expires_at, active.not_after());
}

#[test]
fn csrs_that_ask_for_more_or_do_not_verify_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let now = SystemTime::now();
    let active = ca.active(now).unwrap();
    let spiffe_id = id("spiffe://math.example.com/w");
    let template = SvidTemplate {
        spiffe_id: &spiffe_id,
        dns_names: &[],
        ip_addresses: &[],
        ttl: HOUR,
    };
    let p256 = || rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let empty = || {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p
    };
    // rcgen will not put basic constraints in a CSR itself: add the raw extension (cA TRUE)
    let mut ca_req = empty();
    ca_req.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[2, 5, 29, 19],
        vec![0x30, 0x03, 0x01, 0x01, 0xff],
    )];
    let mut other_uri = empty();
    other_uri.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://math.example.com/admin".try_into().unwrap(),
    )];
    let mut key_cert_sign = empty();
    key_cert_sign.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let with_subject = rcgen::CertificateParams::default();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut tampered = csr_with(empty(), &p256());
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not a csr".to_vec(), "not a DER PKCS#10"),
        (tampered, "signature does not verify"),
        (csr_with(empty(), &p384), "wrong key type"),
        (
            csr_with(ca_req, &p256()),
            "extension the issuer does not grant",
        ),
        (csr_with(other_uri, &p256()), "subject alternative name"),
        (csr_with(key_cert_sign, &p256()), "key usages"),
        (csr_with(with_subject, &p256()), "the subject must be empty"),
    ];
    for (csr, want) in cases {
        match sign_x509_svid(active, &csr, &template, now) {
            Err(SigningError::InvalidCsr(reason)) => {
                assert!(reason.contains(want), "want {want:?}, got {reason:?}")
            }
            other => panic!("want InvalidCsr({want:?}), got {other:?}"),
        }
    }
    // asking for exactly what would be granted is fine
    let mut same_uri = empty();
    same_uri.subject_alt_names = vec![rcgen::SanType::URI(spiffe_id.as_str().try_into().unwrap())];
    assert!(sign_x509_svid(active, &csr_with(same_uri, &p256()), &template, now).is_ok());
    // a leaf needs a path
    let td = id("spiffe://math.example.com");
    let bad = SvidTemplate {
        spiffe_id: &td,
        dns_names: &[],
        ip_addresses: &[],
        ttl: HOUR,
    };
    assert!(matches!(
        sign_x509_svid(active, &p256_csr().1, &bad, now),
        Err(SigningError::InvalidRequest(_))
    ));
}

#[test]
fn svids_from_both_generations_verify_during_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let start = SystemTime::now();
    let mut ca = Authority::load_or_init(
        dir.path(),
        &TrustDomain::parse("td").unwrap(),
        DAY,
        None,
        start,
    )
    .unwrap();
    let spiffe_id = id("spiffe://td/w");
    let template = SvidTemplate {
        spiffe_id: &spiffe_id,
        dns_names: &[],
        ip_addresses: &[],
        ttl: HOUR,
    };
    let old = sign_x509_svid(ca.active(start).unwrap(), &p256_csr().1, &template, start).unwrap();
    ca.rotate(start + DAY / 2).unwrap();
    let after = start + DAY * 5 / 6 + Duration::from_secs(30);
    let new = sign_x509_svid(ca.active(after).unwrap(), &p256_csr().1, &template, after).unwrap();
    assert_ne!(old.chain[0], new.chain[0]);
    let bundle = ca.x509_authorities();
    assert_eq!(bundle.len(), 2);
    check_x509_svid(
        &old.chain,
        &bundle,
        spiffe_id.as_str(),
        start + Duration::from_secs(60),
    )
    .unwrap();
    check_x509_svid(&new.chain, &bundle, spiffe_id.as_str(), after).unwrap();
    // the new SVID does not verify against the old CA alone
    assert!(check_x509_svid(&new.chain, &bundle[..1], spiffe_id.as_str(), after).is_err());
}

#[test]
fn jwt_svid_verifies_with_the_bundle_key_and_has_the_required_shape() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let now = SystemTime::now();
    let key = ca.active(now).unwrap().jwt_key();
    let spiffe_id = id("spiffe://math.example.com/ns/default/sa/curl-spire");
    let token = mint_jwt_svid(
        key,
        &spiffe_id,
        None,
        &["payments".to_owned()],
        Duration::from_secs(300),
        now,
    )
    .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(key.kid()));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let td = TrustDomain::parse("math.example.com").unwrap();
    let bundle_json = Bundle {
        x509_authorities: ca.x509_authorities(),
        jwt_keys: vec![key.public()],
        ..Bundle::new(td.clone())
    }
    .to_spiffe_json();
    let bundle = Bundle::from_spiffe_json(&td, &bundle_json).unwrap();
    let published = &bundle.jwt_keys[0];
    let meshward_spiffe::PublicJwk::Ec { crv, x, y } = &published.key else {
        panic!("not an EC key: {published:?}");
    };
    assert_eq!(crv, "P-256");
    let decoding = DecodingKey::from_ec_components(x, y).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["payments"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
    assert_eq!(data.claims["sub"], spiffe_id.as_str());
    assert_eq!(data.claims["aud"], "payments");
    let (exp, iat) = (
        data.claims["exp"].as_u64().unwrap(),
        data.claims["iat"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300);
    // SPIRE writes no `iss` unless jwt_issuer is set
    assert!(data.claims.get("iss").is_none());
    let issuer = Some("https://oidc.math.example.com");
    let aud = ["payments".to_owned()];
    let with_iss = mint_jwt_svid(key, &spiffe_id, issuer, &aud, Duration::from_secs(300), now);
    let data =
        jsonwebtoken::decode::<serde_json::Value>(&with_iss.unwrap(), &decoding, &validation);
    assert_eq!(data.unwrap().claims["iss"], "https://oidc.math.example.com");
    // no audience: refused
    assert!(mint_jwt_svid(key, &spiffe_id, None, &[], Duration::from_secs(300), now).is_err());
}
