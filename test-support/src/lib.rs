//! Shared test helpers for meshward's crates.
//!
//! - [`check_x509_svid`]: the whole X509-SVID profile (X509-SVID.md) plus meshward's
//!   own stricter choices, and RFC 5280 path validation to a bundle (webpki).
//! - [`p256_csr`]: a workload key and a minimal CSR, as the agent makes them.
//! - [`verify_jwt_svid`]: a JWT-SVID checked against a bundle's JWKS, as a relying
//!   party would.
//! - [`aws_iid`]: a stand-in for AWS's instance identity signer (documents and
//!   their `rsa2048` PKCS#7), for the `aws_iid` attestor and the test IMDS.
//! - [`imds`]: a test EC2 instance metadata service (IMDSv2), well-behaved or not.
//! - [`issuer`]: the real issuer process with its admin CLI.
//! - [`daemon`]: a process on loopback, stopped on drop, with a readiness wait.
//! - [`control_plane`]: a real Kubernetes control plane: etcd and kube-apiserver on
//!   loopback, with meshward's CRDs (binaries from `scripts/peers.sh`); every test
//!   of what meshward takes from the Kubernetes API runs against it.
//! - [`k8s_psat`]: an agent pod, its projected token and the issuer's `k8s_psat`
//!   section on that control plane.
//! - [`spire`]: a real SPIRE server and agent of a trust domain of their own
//!   (binaries from `scripts/peers.sh`), the other side of federation.
//! - [`peers`]: where `scripts/peers.sh` put the real systems, and what a test
//!   does without them.
//! - [`tcp_proxy`]: a loopback forwarder that can be cut, for fault injection.
//! - [`postgres`]: a fresh database per test on the PostgreSQL server the test
//!   setup started.
//! - [`softhsm`]: a SoftHSM2 token in a private token directory, for the PKCS#11
//!   key manager.

pub mod aws_iid;
pub mod control_plane;
pub mod daemon;
pub mod ext_authz;
mod guarded;
pub mod imds;
pub mod issuer;
pub mod jwks;
mod jwt_svid;
pub mod k8s_psat;
pub mod peers;
pub mod postgres;
pub mod postgres_server;
pub mod softhsm;
pub mod spire;
pub mod tcp_proxy;

use std::time::{Duration, SystemTime};

pub use jwt_svid::verify_jwt_svid;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// A fresh P-256 key (PKCS#8 DER) and a CSR for it with an empty subject and no
/// extensions.
pub fn p256_csr() -> (Vec<u8>, Vec<u8>) {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key generation");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).expect("CSR serialization");
    (key.serialize_der(), csr.der().to_vec())
}

/// A CSR with the given parameters (for tests of what the issuer refuses).
pub fn csr_with(params: rcgen::CertificateParams, key: &rcgen::KeyPair) -> Vec<u8> {
    params
        .serialize_request(key)
        .expect("CSR serialization")
        .der()
        .to_vec()
}

/// Checks an X509-SVID chain (leaf first) against the X509-SVID profile and
/// meshward's profile, and verifies it to one of `roots` at `now`. Returns every
/// violation found.
pub fn check_x509_svid(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    expected_id: &str,
    now: SystemTime,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let Some(leaf_der) = chain.first() else {
        return Err(vec!["empty chain".into()]);
    };
    let leaf = match x509_parser::parse_x509_certificate(leaf_der) {
        Ok((_, leaf)) => leaf,
        Err(e) => return Err(vec![format!("leaf does not parse: {e}")]),
    };
    check_leaf(&leaf, expected_id, now, &mut problems);
    for (i, der) in chain.iter().enumerate().skip(1) {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, ca)) => check_signing_ca(&ca, &format!("chain[{i}]"), &mut problems),
            Err(e) => problems.push(format!("chain[{i}] does not parse: {e}")),
        }
    }
    for (i, der) in roots.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, ca)) => check_signing_ca(&ca, &format!("roots[{i}]"), &mut problems),
            Err(e) => problems.push(format!("roots[{i}] does not parse: {e}")),
        }
    }
    if let Err(e) = verify_path(chain, roots, now) {
        problems.push(format!("path validation to the bundle failed: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_leaf(
    leaf: &X509Certificate<'_>,
    expected_id: &str,
    now: SystemTime,
    problems: &mut Vec<String>,
) {
    // SAN: exactly one URI, the SPIFFE ID; critical when the subject is empty.
    let mut uris = Vec::new();
    let mut san_critical = false;
    let (mut bc, mut ku, mut eku) = (None, None, None);
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                san_critical = ext.critical;
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        uris.push(uri.to_string());
                    }
                }
            }
            ParsedExtension::BasicConstraints(b) => {
                bc = Some(b.ca);
                // DER: a DEFAULT value (cA FALSE) must not be encoded; strict parsers
                // (Python's cryptography, so py-spiffe) reject the certificate
                if ext.value.windows(3).any(|w| w == [0x01, 0x01, 0x00]) {
                    problems.push(
                        "leaf: basic constraints encode the default cA FALSE (not DER)".into(),
                    );
                }
            }
            ParsedExtension::KeyUsage(k) => ku = Some((ext.critical, *k)),
            ParsedExtension::ExtendedKeyUsage(e) => eku = Some((e.server_auth, e.client_auth)),
            _ => {}
        }
    }
    let mut p = |m: &str| problems.push(format!("leaf: {m}"));
    match uris.as_slice() {
        [one] if one == expected_id => {}
        [one] => p(&format!("URI SAN is {one}, expected {expected_id}")),
        many => p(&format!("expected exactly one URI SAN, found {many:?}")),
    }
    let path = expected_id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]));
    if path.is_none_or(|p| p.len() < 2) {
        p("the SPIFFE ID of a leaf must have a non-root path");
    }
    let subject_empty = leaf.subject().iter().next().is_none();
    if subject_empty && !san_critical {
        p("the subject is empty, so the URI SAN must be critical");
    }
    match bc {
        Some(false) => {}
        Some(true) => p("basic constraints say CA=true"),
        None => p("basic constraints are missing (py-spiffe requires them)"),
    }
    match ku {
        Some((true, k)) => {
            if !k.digital_signature() {
                p("key usage lacks digitalSignature");
            }
            if k.key_cert_sign() || k.crl_sign() {
                p("key usage sets keyCertSign or cRLSign");
            }
            // meshward's profile: digitalSignature only
            if k.flags != 1 {
                p(&format!(
                    "key usage should be digitalSignature only, is {k}"
                ));
            }
        }
        Some((false, _)) => p("key usage is not critical"),
        None => p("key usage is missing"),
    }
    if eku != Some((true, true)) {
        p(&format!(
            "EKU must include serverAuth and clientAuth, is {eku:?}"
        ));
    }
    let serial = leaf.raw_serial();
    let serial = serial.strip_prefix(&[0u8][..]).unwrap_or(serial);
    if serial.len() != 16 {
        p(&format!(
            "serial should be 128 random bits, has {} bytes",
            serial.len()
        ));
    }
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    if leaf.validity().not_before.timestamp() > unix
        || leaf.validity().not_after.timestamp() <= unix
    {
        p("not valid now");
    }
    if leaf.public_key().algorithm.algorithm.to_id_string() != "1.2.840.10045.2.1" {
        p("the key is not an EC key");
    }
}

fn check_signing_ca(ca: &X509Certificate<'_>, what: &str, problems: &mut Vec<String>) {
    if !ca.is_ca() {
        problems.push(format!("{what}: a signing certificate must have CA=true"));
    }
    match ca.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        _ => problems.push(format!(
            "{what}: a signing certificate must set keyCertSign"
        )),
    }
    if let Ok(Some(san)) = ca.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                let path = uri.strip_prefix("spiffe://").and_then(|r| r.find('/'));
                if path.is_some() {
                    problems.push(format!(
                        "{what}: a signing certificate's SPIFFE ID must have no path ({uri})"
                    ));
                }
            }
        }
    }
}

fn verify_path(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), String> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad root: {e:?}"))?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| format!("{e:?}"))?;
    let time = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    );
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
            time,
            usage,
            None,
            None,
        )
        .map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}
