//! RequestAuthentication YAML (policy/src/authn/), as files or the Kubernetes API
//! deliver it: arbitrary text loaded and compiled.
//!
//! Asserts: every compiled rule has an issuer and at least one place to look for
//! tokens; it never writes a header the proxy sets (XFCC, `host`,
//! `authorization`); its keys come from the document's `jwks`, an `https://`
//! `jwksUri`, OpenID discovery of an `https://` issuer, or the SPIFFE bundle of a
//! `spiffe://` issuer's trust domain, and from nowhere else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_policy::{EngineOptions, KeySource, Workload, load_str};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = EngineOptions::default();
    let Ok(set) = load_str(text, "fuzz", &options).into_policy_set(&options) else {
        return;
    };
    for authentication in set.authentications() {
        for rule in &authentication.rules {
            assert!(!rule.issuer.is_empty());
            assert!(!rule.locations.is_empty());
            assert!(rule.audiences.iter().all(|a| !a.is_empty()));
            let outputs = rule
                .output_payload_to_header
                .iter()
                .chain(rule.output_claim_to_headers.iter().map(|(h, _)| h));
            for header in outputs {
                assert!(
                    !["x-forwarded-client-cert", "host", "authorization"]
                        .contains(&header.as_str()),
                    "{header}"
                );
            }
            match &rule.keys {
                KeySource::Inline(jwks) => assert!(!jwks.is_empty()),
                KeySource::Uri(uri) => assert!(https(uri), "{uri}"),
                KeySource::Discovery(issuer) => {
                    assert!(https(issuer) && *issuer == rule.issuer, "{issuer}")
                }
                KeySource::TrustBundle(td) => assert_eq!(rule.issuer, format!("spiffe://{td}")),
            }
        }
    }
    for namespace in ["default", "istio-system", "foo"] {
        let workload = Workload {
            namespace: namespace.into(),
            labels: [("app".to_owned(), "a".to_owned())].into(),
        };
        for rule in set.jwt_rules(&workload) {
            assert!(
                set.authentications()
                    .iter()
                    .any(|a| a.rules.contains(&rule))
            );
        }
    }
});

fn https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}
