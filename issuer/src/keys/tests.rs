use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward_test_support::softhsm::{self, SoftHsm};

use super::files::FileKeys;
use super::pkcs11::Pkcs11Keys;
use super::*;
use crate::ca::Authority;
use crate::config::Pkcs11Config;

/// The round trip every key manager must pass: raw `r || s` verifies with the
/// public key, the DER form with the X.509 (ASN.1) verifier, a changed message
/// does not.
fn assert_signs(key: &dyn CaKey) {
    let message = b"tbsCertificate bytes";
    let raw = key.sign(message).unwrap();
    assert!(verify(key, message, &raw), "raw r||s verifies");
    assert!(
        !verify(key, b"another message", &raw),
        "and only for its message"
    );
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        key.public_key(),
    )
    .verify(message, &der_signature(&raw))
    .expect("the DER form verifies as X.509 carries it");
}

#[test]
fn der_signature_pads_high_bits_and_strips_leading_zeros() {
    let mut raw = [0u8; 64];
    raw[0] = 0x80; // r needs a 0x00 pad
    raw[31] = 1;
    raw[63] = 7; // s is a single byte after stripping
    let der = der_signature(&raw);
    assert_eq!(&der[..5], &[0x30, 33 + 2 + 1 + 2, 0x02, 33, 0x00]);
    assert_eq!(&der[der.len() - 3..], &[0x02, 1, 7]);
}

#[test]
fn files_sign_find_after_restart_and_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let keys = FileKeys::new(dir.path());
    let ca = keys.generate("g1", KeyRole::Ca).unwrap();
    let jwt = keys.generate("g1", KeyRole::Jwt).unwrap();
    assert_signs(ca.as_ref());
    assert_signs(jwt.as_ref());
    assert_ne!(ca.public_key(), jwt.public_key());
    for file in ["ca.key", "jwt.key"] {
        let mode = std::fs::metadata(dir.path().join("g1").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // still what rcgen reads (the integration tests mint leaves with ca.key)
    let pem = std::fs::read_to_string(dir.path().join("g1/ca.key")).unwrap();
    let read_back = rcgen::KeyPair::from_pem(&pem).unwrap();
    assert_eq!(rcgen::PublicKeyData::der_bytes(&read_back), ca.public_key());

    let restarted = FileKeys::new(dir.path());
    let found = restarted.find("g1", KeyRole::Ca).unwrap();
    assert_eq!(found.public_key(), ca.public_key());
    assert_signs(found.as_ref());

    restarted.destroy("g1").unwrap();
    assert!(matches!(
        restarted.find("g1", KeyRole::Jwt),
        Err(KeyError::NotFound { .. })
    ));
    restarted.destroy("g1").unwrap(); // already gone: fine
}

#[test]
fn files_read_the_keys_existing_data_dirs_hold() {
    // before key managers, ca.key was rcgen's PEM and jwt.key aws-lc's PKCS#8
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("g0")).unwrap();
    let old = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("g0/ca.key"), old.serialize_pem()).unwrap();
    let found = FileKeys::new(dir.path()).find("g0", KeyRole::Ca).unwrap();
    assert_eq!(found.public_key(), rcgen::PublicKeyData::der_bytes(&old));
    assert_signs(found.as_ref());

    std::fs::write(dir.path().join("g0/jwt.key"), "not a key").unwrap();
    let e = FileKeys::new(dir.path())
        .find("g0", KeyRole::Jwt)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("jwt.key"), "{e}");
}

fn pkcs11_config(hsm: &SoftHsm, prefix: &str) -> Pkcs11Config {
    Pkcs11Config {
        library_path: hsm.library.clone(),
        token_label: hsm.token_label.clone(),
        pin_file: Some(hsm.pin_file.clone()),
        pin_env: None,
        key_label_prefix: prefix.into(),
    }
}

#[test]
fn pkcs11_keys_sign_in_the_token_and_cannot_leave_it() {
    let Some(hsm) =
        softhsm::in_own_process("keys::tests::pkcs11_keys_sign_in_the_token_and_cannot_leave_it")
    else {
        return;
    };
    let keys = Pkcs11Keys::open(&pkcs11_config(&hsm, "meshward")).unwrap();
    let ca = keys.generate("g1", KeyRole::Ca).unwrap();
    let jwt = keys.generate("g1", KeyRole::Jwt).unwrap();
    assert_signs(ca.as_ref());
    assert_signs(jwt.as_ref());
    assert_ne!(ca.public_key(), jwt.public_key());

    // what the token says about the keys: made there, sensitive, never extractable;
    // C_GetAttributeValue(CKA_VALUE) is refused
    let audit = keys.audit().unwrap();
    let labels: Vec<&str> = audit.iter().map(|a| a.label.as_str()).collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels.contains(&"meshward/g1/ca") && labels.contains(&"meshward/g1/jwt"));
    for key in &audit {
        assert!(key.token && key.private && key.sensitive, "{key:?}");
        assert!(!key.extractable && key.never_extractable, "{key:?}");
        assert!(key.value_refused, "CKA_VALUE must be refused: {key:?}");
    }

    // signers on many threads share the pool: every signature verifies, and no
    // more sessions open than the pool allows
    let signer = ca.clone();
    std::thread::scope(|scope| {
        for _ in 0..32 {
            let signer = signer.clone();
            scope.spawn(move || {
                for _ in 0..10 {
                    assert_signs(signer.as_ref());
                }
            });
        }
    });
    assert!(
        (1..=16).contains(&keys.open_sessions()),
        "{} sessions",
        keys.open_sessions()
    );

    // a name is made once
    assert!(matches!(
        keys.generate("g1", KeyRole::Ca),
        Err(KeyError::Exists { .. })
    ));

    // another opening (a restarted issuer) finds the same keys, and they sign
    let again = Pkcs11Keys::open(&pkcs11_config(&hsm, "meshward")).unwrap();
    let found = again.find("g1", KeyRole::Ca).unwrap();
    assert_eq!(found.public_key(), ca.public_key());
    assert_signs(found.as_ref());

    // another prefix sees none of them; destroying one generation leaves the rest
    let other = Pkcs11Keys::open(&pkcs11_config(&hsm, "other")).unwrap();
    assert!(other.audit().unwrap().is_empty());
    other.generate("g2", KeyRole::Ca).unwrap();
    keys.generate("g3", KeyRole::Ca).unwrap();
    keys.destroy("g1").unwrap();
    assert!(matches!(
        again.find("g1", KeyRole::Ca),
        Err(KeyError::NotFound { .. })
    ));
    let left: Vec<String> = keys.audit().unwrap().into_iter().map(|a| a.label).collect();
    assert_eq!(left, ["meshward/g3/ca"]);
    assert!(other.find("g2", KeyRole::Ca).is_ok());
    assert!(matches!(
        other.find("g2", KeyRole::Jwt),
        Err(KeyError::NotFound { .. })
    ));
}

#[test]
fn pkcs11_open_errors_say_what_is_wrong() {
    let Some(hsm) = softhsm::in_own_process("keys::tests::pkcs11_open_errors_say_what_is_wrong")
    else {
        return;
    };
    let mut config = pkcs11_config(&hsm, "meshward");
    config.token_label = "elsewhere".into();
    let e = Pkcs11Keys::open(&config).err().unwrap().to_string();
    assert!(
        e.contains("no token labelled \"elsewhere\"") && e.contains("meshward-test"),
        "{e}"
    );

    let wrong_pin = hsm.pin_file.with_file_name("wrong-pin");
    std::fs::write(&wrong_pin, "0000\n").unwrap();
    let mut config = pkcs11_config(&hsm, "meshward");
    config.pin_file = Some(wrong_pin);
    let e = Pkcs11Keys::open(&config).err().unwrap().to_string();
    assert!(
        e.contains("logging in with the user PIN") && e.contains("PIN is incorrect"),
        "{e}"
    );

    let mut config = pkcs11_config(&hsm, "meshward");
    config.pin_file = None;
    config.pin_env = Some("MESHWARD_TEST_UNSET_PIN".into());
    let e = Pkcs11Keys::open(&config).err().unwrap().to_string();
    assert!(e.contains("MESHWARD_TEST_UNSET_PIN"), "{e}");
}

#[test]
fn pkcs11_authority_rotates_and_destroys_expired_keys_in_the_token() {
    let Some(hsm) = softhsm::in_own_process(
        "keys::tests::pkcs11_authority_rotates_and_destroys_expired_keys_in_the_token",
    ) else {
        return;
    };
    const DAY: Duration = Duration::from_secs(86_400);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let td = meshward_spiffe::TrustDomain::parse("td").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Arc<dyn KeyManager> {
        Arc::new(Pkcs11Keys::open(&pkcs11_config(&hsm, "meshward")).unwrap())
    };
    let keys = Pkcs11Keys::open(&pkcs11_config(&hsm, "meshward")).unwrap();

    let mut ca = Authority::load_or_init_with(dir.path(), &td, DAY, None, open(), t0).unwrap();
    let first = ca.active(t0).unwrap().id().to_owned();
    assert_eq!(keys.audit().unwrap().len(), 2, "the CA and JWT keys");
    assert_no_key_files(dir.path());

    // the certificate verifies with the token's key (self-signed in the token)
    let (_, cert) =
        x509_parser::parse_x509_certificate(ca.active(t0).unwrap().certificate()).unwrap();
    cert.verify_signature(None)
        .expect("self-signature by the token key");

    let half = t0 + DAY / 2;
    let second = ca.rotate(half).unwrap().prepared.expect("prepared at 1/2");
    assert_eq!(keys.audit().unwrap().len(), 4);

    // a restart (a new process would open the token again) finds both generations
    let again = Authority::load_or_init_with(dir.path(), &td, DAY, None, open(), half).unwrap();
    assert_eq!(again.generations().len(), 2);
    assert_eq!(
        again.active(half).unwrap().certificate(),
        ca.active(half).unwrap().certificate()
    );
    drop(again);

    // at expiry the first generation's keys are destroyed in the token
    let rotation = ca.rotate(t0 + DAY).unwrap();
    assert_eq!(rotation.removed, std::slice::from_ref(&first));
    let labels: Vec<String> = keys.audit().unwrap().into_iter().map(|a| a.label).collect();
    assert!(!labels.iter().any(|l| l.contains(&first)), "{labels:?}");
    assert!(
        labels.contains(&format!("meshward/{second}/ca")),
        "{labels:?}"
    );
    assert_no_key_files(dir.path());
}

fn assert_no_key_files(dir: &std::path::Path) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    name == "ca.pem" || name == "jwt.kid",
                    "only the certificate and the key ID are on disk: {}",
                    path.display()
                );
            }
        }
    }
}
