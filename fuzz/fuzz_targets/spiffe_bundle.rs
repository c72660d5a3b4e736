//! SPIFFE trust bundles (spiffe/src/bundle.rs, pem.rs): the SPIFFE bundle format
//! (JSON), as federation endpoints and bundle files serve it, and PEM.
//!
//! Asserts: a parsed bundle written back out (`to_spiffe_json`, `to_pem`) parses to
//! the same bundle; every X.509 authority it holds is a certificate; the JWKS the
//! Workload API serves from it holds only its JWT keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_spiffe::{Bundle, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let td = TrustDomain::parse("example.org").expect("valid");

    if let Ok(bundle) = Bundle::from_spiffe_json(&td, text) {
        let again = Bundle::from_spiffe_json(&td, &bundle.to_spiffe_json())
            .expect("a bundle's own JSON parses");
        assert_eq!(again, bundle);
        for authority in &bundle.x509_authorities {
            assert!(x509_parser::parse_x509_certificate(authority).is_ok());
            let _ = meshward_spiffe::validate_x509_svid(authority);
        }
        let jwt_only = Bundle::from_spiffe_json(&td, &bundle.jwt_jwks()).expect("parses");
        assert!(jwt_only.x509_authorities.is_empty());
        assert_eq!(jwt_only.jwt_keys, bundle.jwt_keys);
        if !bundle.x509_authorities.is_empty() {
            let pem = Bundle::from_pem(&td, &bundle.to_pem()).expect("a bundle's own PEM parses");
            assert_eq!(pem.x509_authorities, bundle.x509_authorities);
        }
    }

    if let Ok(bundle) = Bundle::from_pem(&td, text) {
        assert!(!bundle.x509_authorities.is_empty());
        let again = Bundle::from_pem(&td, &bundle.to_pem()).expect("a bundle's own PEM parses");
        assert_eq!(again.x509_authorities, bundle.x509_authorities);
        assert_eq!(
            bundle.x509_der().len(),
            bundle
                .x509_authorities
                .iter()
                .map(|c| c.len())
                .sum::<usize>()
        );
    }
});
