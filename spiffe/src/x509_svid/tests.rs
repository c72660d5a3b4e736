#![allow(clippy::unwrap_used)]

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};

use super::*;

/// A self-signed leaf with these URI SANs, CA flag and key usages.
fn leaf(uris: &[&str], is_ca: IsCa, usages: &[KeyUsagePurpose]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.is_ca = is_ca;
    params.key_usages = usages.to_vec();
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

const ID: &str = "spiffe://math.example.com/ns/default/sa/curl";

#[test]
fn a_leaf_as_the_issuer_signs_it() {
    let der = leaf(
        &[ID],
        IsCa::ExplicitNoCa,
        &[KeyUsagePurpose::DigitalSignature],
    );
    assert_eq!(validate_x509_svid(&der).unwrap().as_str(), ID);
    // basicConstraints may be absent; key agreement may come along
    let der = leaf(
        &[ID],
        IsCa::NoCa,
        &[
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ],
    );
    assert!(validate_x509_svid(&der).is_ok());
}

#[test]
fn every_rule_refuses_its_case() {
    let sign = [KeyUsagePurpose::DigitalSignature];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (leaf(&[], IsCa::NoCa, &sign), "no URI SAN"),
        (
            leaf(&[ID, "spiffe://math.example.com/x"], IsCa::NoCa, &sign),
            "2 URI SANs",
        ),
        // outside the SPIFFE ID grammar: what would reach XFCC and policy
        (
            leaf(&["spiffe://math.example.com/a,b=c"], IsCa::NoCa, &sign),
            "path segment characters",
        ),
        (
            leaf(&["spiffe://math.example.com/a;URI=x"], IsCa::NoCa, &sign),
            "path segment characters",
        ),
        (
            leaf(&["spiffe://Math.example.com/a"], IsCa::NoCa, &sign),
            "lowercase",
        ),
        (
            leaf(&["https://math.example.com/a"], IsCa::NoCa, &sign),
            "scheme",
        ),
        (
            leaf(&["spiffe://math.example.com"], IsCa::NoCa, &sign),
            "has no path",
        ),
        (
            leaf(&[ID], IsCa::Ca(BasicConstraints::Unconstrained), &sign),
            "must not be a CA",
        ),
        (
            leaf(
                &[ID],
                IsCa::NoCa,
                &[
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyCertSign,
                ],
            ),
            "keyCertSign",
        ),
        (
            leaf(
                &[ID],
                IsCa::NoCa,
                &[KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
            ),
            "cRLSign",
        ),
        (leaf(&[ID], IsCa::NoCa, &[]), "digitalSignature"),
        (
            leaf(&[ID], IsCa::NoCa, &[KeyUsagePurpose::KeyEncipherment]),
            "digitalSignature",
        ),
        (b"not a certificate".to_vec(), "unparsable"),
    ];
    for (der, want) in cases {
        let error = validate_x509_svid(&der).unwrap_err().to_string();
        assert!(error.contains(want), "want {want:?}, got {error:?}");
    }
}
