use super::*;
use PathNormalization::*;

fn norm(target: &str, option: PathNormalization) -> String {
    normalize_target(target, option).unwrap().path().to_owned()
}

#[test]
fn table() {
    // (input, NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES)
    let cases: &[(&str, [&str; 4])] = &[
        ("/a/b", ["/a/b", "/a/b", "/a/b", "/a/b"]),
        (
            "/public/../admin",
            ["/public/../admin", "/admin", "/admin", "/admin"],
        ),
        ("/a/./b/.", ["/a/./b/.", "/a/b/", "/a/b/", "/a/b/"]),
        ("/../../x", ["/../../x", "/x", "/x", "/x"]),
        ("//admin", ["//admin", "//admin", "/admin", "/admin"]),
        // path parameters go under every option (Tomcat's `;` routing)
        ("/admin;x=1", ["/admin", "/admin", "/admin", "/admin"]),
        (
            "/public/..;x/admin;a=b/c;d",
            ["/public/../admin/c", "/admin/c", "/admin/c", "/admin/c"],
        ),
        // dot-segments first, then slashes merged (Envoy's order); the result is
        // what the backend receives, so no later merge can make it another path
        ("/a//../b", ["/a//../b", "/a/b", "/a/b", "/a/b"]),
        ("/a/%2F/../b", ["/a/%2F/../b", "/a/b", "/a/b", "/a/b"]),
        ("/a//b///c", ["/a//b///c", "/a//b///c", "/a/b/c", "/a/b/c"]),
        (
            "/admin%2Fx",
            ["/admin%2Fx", "/admin%2Fx", "/admin%2Fx", "/admin/x"],
        ),
        (
            "/admin%2fx",
            ["/admin%2fx", "/admin%2fx", "/admin%2fx", "/admin/x"],
        ),
        ("/a%5Cb", ["/a%5Cb", "/a%5Cb", "/a%5Cb", "/a/b"]),
        (
            "/some\\data",
            ["/some\\data", "/some/data", "/some/data", "/some/data"],
        ),
        ("/%61dmin", ["/%61dmin", "/admin", "/admin", "/admin"]),
        (
            "/%2e%2e/admin",
            ["/%2e%2e/admin", "/admin", "/admin", "/admin"],
        ),
        (
            "/x/%2E%2E/admin",
            ["/x/%2E%2E/admin", "/admin", "/admin", "/admin"],
        ),
        ("/a%20b", ["/a%20b", "/a%20b", "/a%20b", "/a%20b"]),
        ("/a%252e", ["/a%252e", "/a%252e", "/a%252e", "/a%252e"]),
        (
            "/x%2F..%2Fadmin",
            [
                "/x%2F..%2Fadmin",
                "/x%2F..%2Fadmin",
                "/x%2F..%2Fadmin",
                "/admin",
            ],
        ),
    ];
    for (input, expected) in cases {
        for (option, want) in PathNormalization::ALL.iter().zip(expected) {
            assert_eq!(norm(input, *option), *want, "{input} under {option}");
        }
    }
}

#[test]
fn query_and_fragment_never_reach_the_path() {
    for option in PathNormalization::ALL {
        let t = normalize_target("/user/profile?x=1#section1", option).unwrap();
        assert_eq!(t.path(), "/user/profile");
        assert_eq!(t.query(), Some("x=1"));
        let t = normalize_target("/user/profile#section1", option).unwrap();
        assert_eq!(t.path(), "/user/profile");
        assert_eq!(t.query(), Option::<&str>::None);
        let t = normalize_target("/path?", option).unwrap();
        assert_eq!(t.path(), "/path");
    }
}

#[test]
fn bad_targets_are_rejected_under_every_option() {
    for option in PathNormalization::ALL {
        assert_eq!(
            normalize_target("/a%00b", option),
            Err(InvalidTarget::EncodedNul)
        );
        assert_eq!(
            normalize_target("/a%zz", option),
            Err(InvalidTarget::MalformedEscape(2))
        );
        assert_eq!(
            normalize_target("/a%", option),
            Err(InvalidTarget::MalformedEscape(2))
        );
        assert_eq!(
            normalize_target("/%%32e", option),
            Err(InvalidTarget::MalformedEscape(1))
        );
        assert_eq!(
            normalize_target("/a\0b", option),
            Err(InvalidTarget::ControlCharacter)
        );
        assert_eq!(
            normalize_target("relative", option),
            Err(InvalidTarget::NotAPath)
        );
    }
}

#[test]
fn absolute_form_and_asterisk() {
    assert_eq!(norm("http://example.com/a/../b?q", Base), "/b");
    assert_eq!(norm("https://example.com", Base), "/");
    assert_eq!(norm("*", Base), "*");
}

#[test]
fn request_target_keeps_query() {
    let t = normalize_target("//a/../b?x=%2F", DecodeAndMergeSlashes).unwrap();
    assert_eq!(t.to_request_target(), "/b?x=%2F");
}

#[test]
fn option_names_round_trip() {
    for option in PathNormalization::ALL {
        assert_eq!(
            option.as_str().parse::<PathNormalization>().unwrap(),
            option
        );
    }
    assert!("SOMETHING".parse::<PathNormalization>().is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn path_strategy() -> impl Strategy<Value = String> {
        // Paths built from the pieces that matter to normalization.
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("//".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2F".to_owned()),
            Just("%5c".to_owned()),
            Just("%41".to_owned()),
            Just("%25".to_owned()),
            Just("\\".to_owned()),
            Just(";".to_owned()),
            Just(";x=1".to_owned()),
            "[a-z]{1,3}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| format!("/{}", p.concat()))
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(path in path_strategy()) {
            for option in PathNormalization::ALL {
                let once = normalize_target(&path, option).unwrap();
                let twice = normalize_target(once.path(), option).unwrap();
                prop_assert_eq!(once.path(), twice.path(), "option {}", option);
            }
        }

        #[test]
        fn normalized_paths_are_absolute_and_clean(path in path_strategy()) {
            let out = normalize_path(&path, DecodeAndMergeSlashes);
            prop_assert!(out.starts_with('/'));
            prop_assert!(!out.contains("//"));
            prop_assert!(!out.split('/').any(|s| s == "." || s == ".."));
            prop_assert!(!out.contains('\\'));
            prop_assert!(!out.contains(';'));
        }
    }
}
