//! SPIFFE IDs, trust domains and selectors (spiffe/src/id.rs, trust_domain.rs,
//! selector.rs) from arbitrary text.
//!
//! Asserts: a parsed ID prints as the text it came from, and that text, its
//! principal form and its serde form parse to the same ID; its parts rebuild it
//! (trust domain + path, `from_segments`); its trust domain parses on its own;
//! what go-spiffe forbids never parses (upper case, empty or dot segments,
//! characters outside the allowed set). The same for trust domains and selectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_spiffe::{Selector, SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.as_str(), text);
        assert_eq!(id.to_string(), text);
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
        assert_eq!(SpiffeId::parse_principal(id.principal()).as_ref(), Ok(&id));
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(
            serde_json::from_str::<SpiffeId>(&json).expect("deserializes"),
            id
        );
        let td = TrustDomain::parse(id.trust_domain_name()).expect("an ID's trust domain is valid");
        assert_eq!(td, id.trust_domain());
        assert!(id.is_member_of(&td));
        assert_eq!(format!("spiffe://{td}{}", id.path()), text);
        let segments: Vec<&str> = id.segments().collect();
        if segments.is_empty() {
            assert_eq!(td.id(), id);
        } else {
            assert_eq!(SpiffeId::from_segments(&td, &segments).as_ref(), Ok(&id));
        }
        assert!(text.len() <= 2048);
        assert!(
            id.trust_domain_name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        );
        for segment in segments {
            assert!(!segment.is_empty() && segment != "." && segment != "..");
            assert!(
                segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            );
        }
        if let Some(ns) = id.namespace() {
            assert!(id.path().contains(&format!("/ns/{ns}")));
        }
    } else {
        assert!(
            serde_json::from_value::<SpiffeId>(serde_json::Value::String(text.to_owned())).is_err()
        );
    }

    if let Ok(principal) = SpiffeId::parse_principal(text) {
        assert!(principal.as_str() == text || principal.principal() == text);
    }

    match TrustDomain::parse(text) {
        Ok(td) => {
            assert_eq!(td.as_str(), text);
            assert_eq!(td.id().trust_domain(), td);
            assert_eq!(SpiffeId::parse(td.id().as_str()).as_ref(), Ok(&td.id()));
        }
        Err(_) => {
            assert!(SpiffeId::parse(&format!("spiffe://{text}")).is_err() || text.contains('/'))
        }
    }

    if let Ok(selector) = text.parse::<Selector>() {
        assert_eq!(selector.to_string(), text);
        assert!(
            !selector.kind.is_empty() && !selector.value.is_empty() && !selector.kind.contains(':')
        );
    }
});
