//! The issuer with its CA keys in a PKCS#11 token (SoftHSM2, through the library
//! path an operator sets for a cloud HSM): SVIDs and JWT-SVIDs signed in the
//! token verify against the bundle, rotation makes and destroys keys there, the
//! data directory holds no key, and two replicas on one token and one PostgreSQL
//! each keep their own generations' keys, both trusted by the shared bundle.
//!
//! Each test runs in a child process of its own (`softhsm::in_own_process`): the
//! test itself opens the token to audit it, and SoftHSM2 reads `SOFTHSM2_CONF`
//! at initialisation; the issuers it starts inherit the variable.

use meshward_api::attestation::join_token_request;
use meshward_issuer::config::Pkcs11Config;
use meshward_issuer::keys::pkcs11::{KeyAudit, Pkcs11Keys};
use meshward_test_support::softhsm::{self, SoftHsm};

use super::*;

/// An attested node with one workload entry, talking to one issuer.
struct Node {
    client: meshward_api::proto::agent_api_client::AgentApiClient<tonic::transport::Channel>,
    entry_id: String,
    workload: String,
}

async fn enrol(issuer: &Issuer, workload: &str) -> Node {
    let token = issuer.cli_json(&["token", "generate", "-ttl", "60"]);
    let token = token["value"].as_str().unwrap().to_owned();
    let identity = CertStore::new();
    let (node_key, csr) = p256_csr();
    let attested: Attested = connect(issuer, &identity)
        .await
        .attest_agent(join_token_request(&token, csr))
        .await
        .unwrap()
        .into_inner()
        .into();
    identity.set(attested.chain, &node_key).unwrap();
    let workload = format!("spiffe://{TD}/ns/default/sa/{workload}");
    let created = issuer.cli_json(&[
        "entry",
        "create",
        "-spiffeID",
        &workload,
        "-parentID",
        &format!("spiffe://{TD}/spire/agent/join_token/{token}"),
        "-selector",
        "k8s:ns:default",
    ]);
    Node {
        client: connect(issuer, &identity).await,
        entry_id: created["entries"][0]["id"].as_str().unwrap().to_owned(),
        workload,
    }
}

/// The own bundle as the node receives it: X.509 authorities and the JWKS.
async fn bundle(node: &mut Node) -> (Vec<rustls_pki_types::CertificateDer<'static>>, String) {
    try_bundle(node).await.unwrap()
}

/// [`bundle`], or the issuer's refusal (the node's SVID has expired).
async fn try_bundle(
    node: &mut Node,
) -> Result<(Vec<rustls_pki_types::CertificateDer<'static>>, String), tonic::Status> {
    let own = node
        .client
        .get_bundles(proto::GetBundlesRequest {})
        .await?
        .into_inner()
        .own
        .unwrap();
    Ok((
        own.x509_authorities.into_iter().map(Into::into).collect(),
        own.jwks,
    ))
}

/// An X509-SVID and a JWT-SVID for the node's workload; the leaf's issuer.
async fn sign_both(node: &mut Node) -> (Vec<rustls_pki_types::CertificateDer<'static>>, String) {
    let result = node
        .client
        .batch_new_x509_svid(proto::BatchNewX509SvidRequest {
            params: vec![proto::NewX509SvidParams {
                entry_id: node.entry_id.clone(),
                csr: p256_csr().1,
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results
        .remove(0);
    let chain = result
        .svid
        .unwrap_or_else(|| panic!("an SVID: {}", result.message))
        .cert_chain
        .into_iter()
        .map(Into::into)
        .collect();
    let jwt = node
        .client
        .new_jwt_svid(proto::NewJwtSvidRequest {
            entry_id: node.entry_id.clone(),
            audience: vec!["payments".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    (chain, jwt)
}

/// Both SVIDs verify against `bundle` (X.509 authorities, JWKS).
fn assert_verify(
    node: &Node,
    (chain, jwt): &(Vec<rustls_pki_types::CertificateDer<'static>>, String),
    (roots, jwks): &(Vec<rustls_pki_types::CertificateDer<'static>>, String),
) {
    check_x509_svid(chain, roots, &node.workload, SystemTime::now()).unwrap();
    verify_jwt_svid(jwt, jwks, "payments", &node.workload).unwrap();
}

/// The DER of the CA that signed `chain`'s leaf, among `roots`.
fn signer_of(
    chain: &[rustls_pki_types::CertificateDer<'static>],
    roots: &[rustls_pki_types::CertificateDer<'static>],
) -> rustls_pki_types::CertificateDer<'static> {
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    roots
        .iter()
        .find(|root| {
            let (_, ca) = x509_parser::parse_x509_certificate(root).unwrap();
            leaf.verify_signature(Some(ca.public_key())).is_ok()
        })
        .expect("a CA of the bundle signed the leaf")
        .clone()
}

fn token(hsm: &SoftHsm, prefix: &str) -> Pkcs11Keys {
    Pkcs11Keys::open(&Pkcs11Config {
        library_path: hsm.library.clone(),
        token_label: hsm.token_label.clone(),
        pin_file: Some(hsm.pin_file.clone()),
        pin_env: None,
        key_label_prefix: prefix.into(),
    })
    .unwrap()
}

/// The keys' labels; each one private, sensitive, never extractable, its
/// CKA_VALUE refused by the token.
fn audited_labels(keys: &Pkcs11Keys) -> Vec<String> {
    let audit = keys.audit().unwrap();
    for key in &audit {
        let KeyAudit {
            token,
            private,
            sensitive,
            extractable,
            never_extractable,
            value_refused,
            ..
        } = key;
        assert!(
            *token && *private && *sensitive && !*extractable && *never_extractable,
            "{key:?}"
        );
        assert!(
            *value_refused,
            "C_GetAttributeValue(CKA_VALUE) refused: {key:?}"
        );
    }
    let mut labels: Vec<String> = audit.into_iter().map(|a| a.label).collect();
    labels.sort();
    labels
}

/// Every file under `dir` but the datastore: only certificates and key IDs.
fn assert_no_key_files(dir: &Path) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else {
                assert!(
                    name == "ca.pem" || name == "jwt.kid" || name.starts_with("datastore"),
                    "no key under the data dir: {}",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_keys_sign_rotate_and_never_touch_the_disk() {
    let Some(hsm) =
        softhsm::in_own_process("pkcs11::pkcs11_keys_sign_rotate_and_never_touch_the_disk")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // a one-minute CA: the next generation is prepared at 30 s, the first expires at 60 s
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "{}ca_ttl: 1m\ndefault_x509_svid_ttl: 20s\ndefault_jwt_svid_ttl: 20s\nagent_svid_ttl: 1m\njoin_token_ttl: 1m\n",
            hsm.issuer_yaml("meshward")
        ),
    );
    assert!(
        issuer
            .log()
            .contains("CA keys: PKCS#11 token \"meshward-test\"")
    );
    let keys = token(&hsm, "meshward");
    let first = audited_labels(&keys);
    assert_eq!(
        first.len(),
        2,
        "one generation: its CA and JWT keys: {first:?}"
    );
    assert_no_key_files(&dir.path().join("data"));

    let mut node = enrol(&issuer, "payments").await;
    let signed = sign_both(&mut node).await;
    let before = bundle(&mut node).await;
    assert_eq!(before.0.len(), 1);
    assert_verify(&node, &signed, &before);
    let first_ca = signer_of(&signed.0, &before.0);

    // rotation: the next generation is made in the token and published beside the
    // first; then the first expires, leaves the bundle, and its keys are destroyed
    // in the token
    let deadline = std::time::Instant::now() + Duration::from_secs(100);
    let mut seen_two = false;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "rotation did not complete: {:?}\n{}",
            audited_labels(&keys),
            issuer.log()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        // the node's SVID ends with the first CA (a minute): then, as an agent
        // whose node SVID expired, it attests again
        let now = match try_bundle(&mut node).await {
            Ok(now) => now,
            Err(refused) => {
                assert!(refused.message().contains("has expired"), "{refused:?}");
                node = enrol(&issuer, "payments-watcher").await;
                bundle(&mut node).await
            }
        };
        let labels = audited_labels(&keys);
        seen_two |= now.0.len() >= 2 && now.0.contains(&first_ca);
        if seen_two && !now.0.contains(&first_ca) && !labels.iter().any(|l| first.contains(l)) {
            break;
        }
    }
    // a node attested now gets SVIDs of a later generation that verify against
    // the bundle, which no longer has the first CA
    let mut node = enrol(&issuer, "payments-later").await;
    let signed = sign_both(&mut node).await;
    let now = bundle(&mut node).await;
    assert_verify(&node, &signed, &now);
    assert_ne!(signer_of(&signed.0, &now.0), first_ca);
    assert_eq!(audited_labels(&keys).len(), 2 * now.0.len());
    assert_no_key_files(&dir.path().join("data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_token_and_one_postgres() {
    let Some(hsm) =
        softhsm::in_own_process("pkcs11::two_replicas_share_one_token_and_one_postgres")
    else {
        return;
    };
    let Some(db) = TestDatabase::create("two_replicas_share_one_token_and_one_postgres").await
    else {
        return;
    };
    let config = hsm.issuer_yaml("meshward");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Issuer::with_extra(meshward(), TD, dir_a.path(), db.url(), &config);
    let b = Issuer::with_extra(meshward(), TD, dir_b.path(), db.url(), &config);
    let keys = token(&hsm, "meshward");
    let both = audited_labels(&keys);
    assert_eq!(both.len(), 4, "each replica its own generation: {both:?}");

    // each replica signs; each one's SVIDs verify against the bundle the other serves
    let (mut on_a, mut on_b) = (enrol(&a, "on-a").await, enrol(&b, "on-b").await);
    let (signed_a, signed_b) = (sign_both(&mut on_a).await, sign_both(&mut on_b).await);
    let (bundle_a, bundle_b) = (bundle(&mut on_a).await, bundle(&mut on_b).await);
    assert_eq!(bundle_a.0.len(), 2, "both replicas' CAs");
    assert_verify(&on_a, &signed_a, &bundle_b);
    assert_verify(&on_b, &signed_b, &bundle_a);
    let ca_a = signer_of(&signed_a.0, &bundle_a.0);
    assert_ne!(ca_a, signer_of(&signed_b.0, &bundle_a.0));

    // a restarted replica finds its keys in the token: the same CA, no new key
    a.restart();
    let mut on_a = enrol(&a, "on-a-again").await;
    let signed = sign_both(&mut on_a).await;
    let now = bundle(&mut on_a).await;
    assert_verify(&on_a, &signed, &now);
    assert_eq!(signer_of(&signed.0, &now.0), ca_a);
    assert_eq!(audited_labels(&keys), both);

    // a new replica with an empty data dir makes its own generation, disturbing
    // neither other's keys, and is trusted by the others' bundle
    let dir_c = tempfile::tempdir().unwrap();
    let c = Issuer::with_extra(meshward(), TD, dir_c.path(), db.url(), &config);
    let mut on_c = enrol(&c, "on-c").await;
    let signed_c = sign_both(&mut on_c).await;
    let labels = audited_labels(&keys);
    assert_eq!(labels.len(), 6, "{labels:?}");
    assert!(both.iter().all(|l| labels.contains(l)), "{labels:?}");
    assert_verify(&on_c, &signed_c, &bundle(&mut on_b).await);
    let signed_b = sign_both(&mut on_b).await;
    assert_verify(&on_b, &signed_b, &bundle(&mut on_c).await);
    for dir in [&dir_a, &dir_b, &dir_c] {
        assert_no_key_files(&dir.path().join("data"));
    }
    drop((b, c));
}
