//! The X509-SVID rules (spiffe/src/x509_svid.rs) on arbitrary DER: what the data
//! path applies to every mTLS peer's leaf (`meshward_tls::spiffe_id_of`) and the
//! issuer to what it signed.
//!
//! Asserts: an accepted leaf has exactly one URI SAN, which is the SPIFFE ID
//! returned, with a path; it is not a CA; its key usage has digitalSignature and
//! neither keyCertSign nor cRLSign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x509_parser::extensions::GeneralName;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = meshward_spiffe::validate_x509_svid(data) else {
        return;
    };
    let (_, cert) = x509_parser::parse_x509_certificate(data).expect("an accepted leaf parses");
    let san = cert
        .subject_alternative_name()
        .expect("parses")
        .expect("has a SAN");
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [id.as_str()]);
    assert!(!id.path().is_empty());
    assert!(
        !cert
            .basic_constraints()
            .expect("parses")
            .is_some_and(|bc| bc.value.ca)
    );
    let usage = cert
        .key_usage()
        .expect("parses")
        .expect("has a key usage")
        .value;
    assert!(usage.digital_signature() && !usage.key_cert_sign() && !usage.crl_sign());
});
