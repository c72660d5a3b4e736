//! Arbitrary request targets: normalization never panics, is idempotent, and its
//! strictest option leaves no `//`, dot segment or backslash for a policy to miss.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_policy::{PathNormalization, normalize_target};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    for option in PathNormalization::ALL {
        let Ok(once) = normalize_target(target, option) else {
            continue;
        };
        let twice =
            normalize_target(once.path(), option).expect("a normalized path is a valid target");
        assert_eq!(
            once.path(),
            twice.path(),
            "{option} is not idempotent on {target:?}"
        );
        if option == PathNormalization::DecodeAndMergeSlashes && once.path() != "*" {
            let path = once.path();
            assert!(path.starts_with('/'));
            assert!(!path.contains("//") && !path.contains('\\'));
            assert!(!path.split('/').any(|s| s == "." || s == ".."));
        }
    }
});
