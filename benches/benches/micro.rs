//! Per-request costs of the data path that are not the policy engine (that one is
//! `policy/benches/evaluate.rs`) or signing (`issuer/benches/signing.rs`): path
//! normalization, the XFCC element, and SPIFFE verification of a peer's chain.
//!
//! Run: `cargo bench -p meshward-benches --bench micro`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use meshward_policy::{PathNormalization, normalize_target};
use meshward_tls::{Authorizer, SpiffeServerVerifier, TrustBundles};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

fn normalization(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_target");
    for (name, target) in [
        ("plain", "/api/payment?amount=42"),
        (
            "hostile",
            "/api//v1/./x/../payment%2Fconfirm?amount=42#frag",
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| normalize_target(black_box(target), PathNormalization::DecodeAndMergeSlashes))
        });
    }
    group.finish();
}

/// A CA and a leaf SVID signed by it (DER).
fn chain() -> (CertificateDer<'static>, CertificateDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(
        "spiffe://math.example.com/ns/default/sa/curl-spire"
            .try_into()
            .unwrap(),
    )];
    let leaf_cert = leaf
        .signed_by(&KeyPair::generate().unwrap(), &issuer)
        .unwrap();
    (ca_cert.der().clone(), leaf_cert.der().clone())
}

fn xfcc(c: &mut Criterion) {
    let (_, leaf) = chain();
    let id = |text| meshward_spiffe::SpiffeId::parse(text).expect("a SPIFFE ID");
    let client = id("spiffe://math.example.com/ns/default/sa/curl-spire");
    let server = id("spiffe://math.example.com/ns/echoserver/sa/default");
    let hash = meshward_proxy::xfcc::leaf_hash(&leaf);
    let peer = meshward_proxy::xfcc::PeerCertificate {
        spiffe_id: &client,
        leaf_hash: &hash,
    };
    c.bench_function("xfcc_element", |b| {
        b.iter(|| meshward_proxy::xfcc::element(black_box(&server), black_box(&peer)))
    });
}

fn spiffe_verification(c: &mut Criterion) {
    meshward_tls::install_crypto_provider();
    let (ca, leaf) = chain();
    let bundles = TrustBundles::new();
    let td = meshward_spiffe::TrustDomain::parse("math.example.com").expect("a trust domain");
    bundles.set(&td, &[ca]).unwrap();
    let verifier = SpiffeServerVerifier::new(bundles, Authorizer::AnyTrusted);
    let name = ServerName::IpAddress(std::net::IpAddr::from([10, 0, 0, 1]).into());
    let now = UnixTime::now();
    c.bench_function("spiffe_verify_peer_chain", |b| {
        b.iter(|| {
            verifier
                .verify_server_cert(black_box(&leaf), &[], &name, &[], now)
                .unwrap()
        })
    });
}

criterion_group!(benches, normalization, xfcc, spiffe_verification);
criterion_main!(benches);
