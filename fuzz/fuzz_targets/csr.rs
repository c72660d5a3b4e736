//! Certificate signing requests (issuer/src/x509.rs, `sign_x509_svid`): what an
//! attested agent sends for each workload SVID, signed by a fixed CA under a fixed
//! template (`spiffe://example.org/ns/default/sa/client`, DNS
//! `client.default.svc`, IP 10.0.0.1).
//!
//! Asserts: a CSR is signed only if it is a P-256 request with an empty subject
//! whose signature verifies; the SVID carries the CSR's public key and nothing
//! else of it: its SPIFFE ID is the template's, every SAN one the template grants,
//! and it passes the X509-SVID rules.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use meshward_issuer::{Authority, SvidTemplate, sign_x509_svid};
use meshward_spiffe::{SpiffeId, TrustDomain};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

static NOW: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);
static CA: LazyLock<Authority> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("meshward-fuzz-csr-{}", std::process::id()));
    let td = TrustDomain::parse("example.org").expect("valid");
    let ca =
        Authority::load_or_init(&dir, &td, Duration::from_secs(86400), None, *NOW).expect("a CA");
    let _ = std::fs::remove_dir_all(&dir);
    ca
});
static ID: LazyLock<SpiffeId> =
    LazyLock::new(|| SpiffeId::parse("spiffe://example.org/ns/default/sa/client").expect("valid"));

fuzz_target!(|data: &[u8]| {
    let dns = ["client.default.svc".to_owned()];
    let ips = ["10.0.0.1".parse().expect("valid")];
    let template = SvidTemplate {
        spiffe_id: &ID,
        dns_names: &dns,
        ip_addresses: &ips,
        ttl: Duration::from_secs(3600),
    };
    let ca = CA.active(*NOW).expect("an active CA");
    let Ok(svid) = sign_x509_svid(ca, data, &template, *NOW) else {
        return;
    };

    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(data)
        .expect("a signed CSR parses");
    assert!(
        csr.certification_request_info
            .subject
            .iter()
            .next()
            .is_none()
    );
    csr.verify_signature()
        .expect("a signed CSR's signature verifies");
    let leaf = &svid.chain[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("the SVID parses");
    assert_eq!(
        cert.public_key().raw,
        csr.certification_request_info.subject_pki.raw,
        "the SVID's key is not the CSR's"
    );
    assert_eq!(meshward_spiffe::validate_x509_svid(leaf).as_ref(), Ok(&*ID));
    assert_eq!(svid.spiffe_id, *ID);
    let san = cert
        .subject_alternative_name()
        .expect("parses")
        .expect("present");
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(uri) => assert_eq!(*uri, ID.as_str()),
            GeneralName::DNSName(name) => assert_eq!(*name, "client.default.svc"),
            GeneralName::IPAddress(ip) => assert_eq!(*ip, [10, 0, 0, 1]),
            other => panic!("a SAN the template does not grant: {other:?}"),
        }
    }
});
