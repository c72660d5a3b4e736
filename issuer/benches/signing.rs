//! SVIDs signed per second on one core, next to the raw ECDSA P-256 sign rate on
//! the same machine in the same run. Target (issue 3): signing >= 80% of raw.
//!
//! `svid/x509` is the whole request: CSR parse, CSR signature check (an ECDSA
//! verify the issuer must do), certificate build, ECDSA sign. A CSR-based SVID
//! therefore costs at least one sign plus one verify: `raw_ecdsa_p256_verify` shows
//! that floor next to the raw sign.
//!
//! Run: `cargo bench -p meshward-issuer --bench signing`.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshward_issuer::{Authority, SvidTemplate, mint_jwt_svid, sign_x509_svid};
use meshward_spiffe::{SpiffeId, TrustDomain};

fn signing(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = SystemTime::now();
    let ca = Authority::load_or_init(
        dir.path(),
        &TrustDomain::parse("bench.example").expect("a trust domain"),
        Duration::from_secs(86_400),
        None,
        now,
    )
    .expect("CA");
    let active = ca.active(now).expect("active CA");
    let id = SpiffeId::parse("spiffe://bench.example/ns/default/sa/client").expect("valid ID");
    let (_, csr) = meshward_test_support::p256_csr();
    let template = SvidTemplate {
        spiffe_id: &id,
        dns_names: &[],
        ip_addresses: &[],
        ttl: Duration::from_secs(3600),
    };
    let tbs_sized = vec![0x5au8; 320];
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let raw_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("key");

    let mut group = c.benchmark_group("svid");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_ecdsa_p256_sign", |b| {
        b.iter(|| raw_key.sign(&rng, black_box(&tbs_sized)).expect("sign"))
    });
    let signature = raw_key.sign(&rng, &tbs_sized).expect("sign");
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        aws_lc_rs::signature::KeyPair::public_key(&raw_key)
            .as_ref()
            .to_vec(),
    );
    group.bench_function("raw_ecdsa_p256_verify", |b| {
        b.iter(|| {
            public
                .verify(black_box(&tbs_sized), signature.as_ref())
                .expect("verify")
        })
    });
    group.bench_function("x509", |b| {
        b.iter(|| sign_x509_svid(active, black_box(&csr), &template, now).expect("SVID"))
    });
    group.bench_function("jwt", |b| {
        let aud = ["payments".to_owned()];
        b.iter(|| {
            mint_jwt_svid(
                active.jwt_key(),
                &id,
                None,
                black_box(&aud),
                Duration::from_secs(300),
                now,
            )
            .expect("JWT")
        })
    });
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
