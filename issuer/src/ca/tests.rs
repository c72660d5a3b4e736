use std::time::{Duration, SystemTime};

use super::*;
use rcgen::PKCS_ECDSA_P256_SHA256;

fn td(name: &str) -> meshward_spiffe::TrustDomain {
    meshward_spiffe::TrustDomain::parse(name).unwrap()
}

const DAY: Duration = Duration::from_secs(24 * 3600);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

#[test]
fn first_start_creates_one_self_signed_generation_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::load_or_init(dir.path(), &td("td"), DAY, None, t0()).unwrap();
    assert_eq!(ca.generations().len(), 1);
    let g = ca.active(t0()).unwrap();
    assert_eq!(g.not_after(), t0() + DAY);
    let gen_dir = dir.path().join("ca").join(g.id());
    for (file, mode) in [("ca.key", 0o600), ("jwt.key", 0o600), ("ca.pem", 0o644)] {
        let meta = std::fs::metadata(gen_dir.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    let (_, cert) = x509_parser::parse_x509_certificate(g.certificate()).unwrap();
    assert!(cert.is_ca());
    assert_eq!(cert.subject(), cert.issuer());
    assert_eq!(ca.x509_authorities().len(), 1);
}

#[test]
fn restart_keeps_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authority::load_or_init(dir.path(), &td("td"), DAY, None, t0()).unwrap();
    let later = t0() + Duration::from_secs(3600);
    let again = Authority::load_or_init(dir.path(), &td("td"), DAY, None, later).unwrap();
    assert_eq!(again.generations().len(), 1);
    let (a, b) = (first.active(t0()).unwrap(), again.active(later).unwrap());
    assert_eq!(a.certificate(), b.certificate());
    assert_eq!(a.jwt_key().public(), b.jwt_key().public());
}

#[test]
fn rotation_prepares_at_half_activates_at_five_sixths_keeps_until_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = Authority::load_or_init(dir.path(), &td("td"), DAY, None, t0()).unwrap();
    let first = ca.active(t0()).unwrap().id().to_owned();

    let before_half = t0() + DAY / 2 - Duration::from_secs(60);
    assert!(!ca.rotate(before_half).unwrap().changed());

    let half = t0() + DAY / 2;
    let rotation = ca.rotate(half).unwrap();
    let second = rotation.prepared.expect("prepared at 1/2");
    assert_eq!(
        ca.x509_authorities().len(),
        2,
        "the prepared CA is published at once"
    );
    assert_eq!(ca.active(half).unwrap().id(), first, "but not active yet");

    let five_sixths = t0() - BACKDATE + (DAY + BACKDATE) * 5 / 6;
    assert_eq!(
        ca.active(five_sixths - Duration::from_secs(1))
            .unwrap()
            .id(),
        first
    );
    assert_eq!(ca.active(five_sixths).unwrap().id(), second);

    // the old CA stays in the bundle until it expires, then goes (also from disk)
    let expiry = t0() + DAY;
    let rotation = ca.rotate(expiry).unwrap();
    assert_eq!(rotation.removed, std::slice::from_ref(&first));
    // ...by then the second is past half its life, so a third is prepared
    assert!(rotation.prepared.is_some());
    let published: Vec<&str> = ca.generations().iter().map(|g| g.id()).collect();
    assert_eq!(published.len(), 2);
    assert!(!published.contains(&first.as_str()));
    assert!(!dir.path().join("ca").join(&first).exists());

    // a restart derives the same active generation from the files alone
    let again = Authority::load_or_init(dir.path(), &td("td"), DAY, None, expiry).unwrap();
    assert_eq!(again.active(expiry).unwrap().id(), second);
}

#[test]
fn expired_state_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    Authority::load_or_init(dir.path(), &td("td"), DAY, None, t0()).unwrap();
    let much_later = t0() + DAY * 3;
    let ca = Authority::load_or_init(dir.path(), &td("td"), DAY, None, much_later).unwrap();
    assert_eq!(ca.generations().len(), 1);
    assert!(ca.active(much_later).is_ok());
}

/// An "enterprise" root and its key, written as files.
fn upstream_files(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Example Corp Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = to_offset(t0() - DAY);
    params.not_after = to_offset(t0() + DAY * 365);
    let cert = params.self_signed(&key).unwrap();
    let (chain, key_path) = (dir.join("upstream.pem"), dir.join("upstream.key"));
    std::fs::write(&chain, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (chain, key_path, cert.der().clone())
}

#[test]
fn upstream_mode_signs_an_intermediate_and_publishes_the_upstream_root() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, root) = upstream_files(dir.path());
    let upstream = UpstreamCa::from_files(&chain, &key).unwrap();
    let ca = Authority::load_or_init(
        &dir.path().join("data"),
        &td("td"),
        DAY,
        Some(upstream),
        t0(),
    )
    .unwrap();
    assert_eq!(ca.x509_authorities(), [root]);
    let g = ca.active(t0()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(g.certificate()).unwrap();
    assert_eq!(cert.issuer().to_string(), "CN=Example Corp Root");
    assert_eq!(
        g.chain_tail().len(),
        1,
        "SVID chains carry the intermediate"
    );
}

#[test]
fn upstream_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, _, _) = upstream_files(dir.path());
    let other_key = dir.path().join("other.key");
    std::fs::write(
        &other_key,
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem(),
    )
    .unwrap();
    let e = UpstreamCa::from_files(&chain, &other_key)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("the key does not belong to the first certificate"),
        "{e}"
    );
    let e = UpstreamCa::from_files(&dir.path().join("missing.pem"), &other_key)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");
}

#[test]
fn a_generation_without_its_keys_stops_the_start_unless_it_has_expired() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::load_or_init(dir.path(), &td("td"), DAY, None, t0()).unwrap();
    let id = ca.active(t0()).unwrap().id().to_owned();
    std::fs::remove_file(dir.path().join("ca").join(&id).join("ca.key")).unwrap();
    // live: refused, naming the generation and the key manager
    let e = Authority::load_or_init(dir.path(), &td("td"), DAY, None, t0())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&id) && e.contains("no ca key") && e.contains("key files under"),
        "{e}"
    );
    // expired: dropped (with its directory), a new generation made
    let later = t0() + DAY * 2;
    let ca = Authority::load_or_init(dir.path(), &td("td"), DAY, None, later).unwrap();
    assert_ne!(ca.active(later).unwrap().id(), id);
    assert!(!dir.path().join("ca").join(&id).exists());
}
