use std::time::{Duration, SystemTime};

use tempfile::tempdir;

use meshward_test_support::{check_x509_svid, p256_csr};

use super::*;
use crate::datastore::{Entry, EntryFilter, SqlStore};
use crate::service::{Caller, MAX_SVID_ADDRESSES, SvidRequest, SvidTarget};
use meshward_spiffe::Selector;

pub(super) fn td(name: &str) -> meshward_spiffe::TrustDomain {
    meshward_spiffe::TrustDomain::parse(name).unwrap()
}

/// `AttestAgent` with a join token.
pub(super) async fn attest_join_token(
    issuer: &Issuer<SqlStore>,
    token: &str,
    csr: &[u8],
) -> Result<crate::X509Svid> {
    issuer
        .attest_agent(meshward_api::attestation::JOIN_TOKEN, token.as_bytes(), csr)
        .await
}

fn request(target: SvidTarget, csr: Vec<u8>) -> SvidRequest {
    SvidRequest {
        target,
        csr,
        addresses: Vec::new(),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

pub(super) async fn issuer(dir: &std::path::Path) -> Issuer<SqlStore> {
    replica(dir, dir, "issuer-0").await
}

/// An issuer whose CA lives in `ca_dir`, on the datastore in `store_dir` (shared by
/// replicas), named `instance`.
async fn replica(
    ca_dir: &std::path::Path,
    store_dir: &std::path::Path,
    instance: &str,
) -> Issuer<SqlStore> {
    let store = SqlStore::connect(&format!("sqlite://{}/db.sqlite3", store_dir.display()))
        .await
        .unwrap();
    let authority =
        Authority::load_or_init(ca_dir, &td("td"), HOUR * 24, None, SystemTime::now()).unwrap();
    let settings = Settings {
        trust_domain: td("td"),
        instance: instance.into(),
        default_x509_svid_ttl: HOUR,
        default_jwt_svid_ttl: Duration::from_secs(300),
        jwt_issuer: None,
        agent_svid_ttl: HOUR,
        join_token_ttl: Duration::from_secs(600),
        bundle_refresh_hint: Duration::from_secs(300),
    };
    Issuer::new(settings, authority, store).await.unwrap()
}

pub(super) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub(super) fn entry(spiffe_id: &str, parent: &SpiffeId, selectors: &[&str]) -> Entry {
    Entry {
        id: String::new(),
        spiffe_id: id(spiffe_id),
        parent_id: parent.clone(),
        selectors: selectors
            .iter()
            .map(|s| s.parse::<Selector>().unwrap())
            .collect(),
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: vec![],
        federates_with: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        created_at: 0,
        revision: 0,
    }
}

async fn attested(issuer: &Issuer<SqlStore>) -> Caller {
    let token = issuer.generate_join_token(None, 0).await.unwrap();
    let svid = attest_join_token(issuer, &token.token, &p256_csr().1)
        .await
        .unwrap();
    Caller {
        id: svid.spiffe_id,
        serial: svid.serial,
    }
}

#[tokio::test]
async fn attest_agent_refuses_a_type_it_does_not_accept_and_a_payload_not_of_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    // k8s_psat is not configured here; aws_iid is not known at all
    for kind in ["k8s_psat", "aws_iid", ""] {
        match issuer.attest_agent(kind, b"{}", &p256_csr().1).await {
            Err(ServiceError::PermissionDenied(why)) => {
                assert!(why.contains("it accepts: join_token"), "{why}");
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
    let not_utf8 = issuer
        .attest_agent(
            meshward_api::attestation::JOIN_TOKEN,
            &[0xff, 0xfe],
            &p256_csr().1,
        )
        .await;
    assert!(
        matches!(not_utf8, Err(ServiceError::InvalidArgument(_))),
        "{not_utf8:?}"
    );
}

#[tokio::test]
async fn join_token_attestation_gives_a_node_svid_once() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let token = issuer.generate_join_token(None, 0).await.unwrap();
    assert_eq!(
        token.spiffe_id.as_str(),
        format!("spiffe://td/spire/agent/join_token/{}", token.token)
    );
    let svid = attest_join_token(&issuer, &token.token, &p256_csr().1)
        .await
        .unwrap();
    let bundle = issuer.bundle().await.unwrap();
    check_x509_svid(
        &svid.chain,
        &bundle.x509_authorities,
        token.spiffe_id.as_str(),
        SystemTime::now(),
    )
    .unwrap();
    let again = attest_join_token(&issuer, &token.token, &p256_csr().1).await;
    assert!(
        matches!(again, Err(ServiceError::PermissionDenied(_))),
        "{again:?}"
    );
    let node = issuer.show_agent(&token.spiffe_id).await.unwrap();
    assert_eq!(
        (node.attestation_type.as_str(), node.serial.as_str()),
        ("join_token", svid.serial.as_str())
    );
    let bad_csr = attest_join_token(
        &issuer,
        &issuer.generate_join_token(None, 0).await.unwrap().token,
        b"junk",
    )
    .await;
    assert!(
        matches!(bad_csr, Err(ServiceError::InvalidArgument(_))),
        "{bad_csr:?}"
    );
}

#[tokio::test]
async fn banned_nodes_cannot_renew_or_attest_and_evicted_nodes_must_reattest() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let caller = attested(&issuer).await;
    let renewed = issuer.renew_agent(&caller, &p256_csr().1).await.unwrap();
    assert_ne!(renewed.serial, caller.serial);
    // the old SVID is no longer good
    assert!(matches!(
        issuer.renew_agent(&caller, &p256_csr().1).await,
        Err(ServiceError::PermissionDenied(_))
    ));
    let caller = Caller {
        id: caller.id,
        serial: renewed.serial,
    };

    issuer.ban_agent(&caller.id).await.unwrap();
    let denied = issuer.renew_agent(&caller, &p256_csr().1).await;
    let want = format!("node {} is banned", caller.id);
    assert!(
        matches!(&denied, Err(ServiceError::PermissionDenied(m)) if *m == want),
        "{denied:?}"
    );
    let alias_token = issuer
        .generate_join_token(Some(caller.id.clone()), 60)
        .await
        .unwrap();
    let denied = attest_join_token(&issuer, &alias_token.token, &p256_csr().1).await;
    assert!(
        matches!(denied, Err(ServiceError::PermissionDenied(_))),
        "{denied:?}"
    );

    issuer.evict_agent(&caller.id).await.unwrap();
    let gone = issuer.authorized_entries(&caller).await;
    assert!(matches!(gone, Err(ServiceError::PermissionDenied(m)) if m.contains("not attested")));
    let token = issuer
        .generate_join_token(Some(caller.id.clone()), 60)
        .await
        .unwrap();
    attest_join_token(&issuer, &token.token, &p256_csr().1)
        .await
        .unwrap();
}

#[tokio::test]
async fn nodes_get_only_their_entries_and_signing_is_limited_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let node = attested(&issuer).await;
    let other = attested(&issuer).await;
    let mine = issuer
        .create_entry(entry(
            "spiffe://td/ns/default/sa/curl-spire",
            &node.id,
            &["k8s:ns:default", "k8s:sa:curl-spire"],
        ))
        .await
        .unwrap();
    let theirs = issuer
        .create_entry(entry(
            "spiffe://td/ns/echo/sa/default",
            &other.id,
            &["k8s:ns:echo"],
        ))
        .await
        .unwrap();
    let listed: Vec<String> = issuer
        .authorized_entries(&node)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&mine.id));

    let pod_ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let results = issuer
        .batch_new_x509_svid(
            &node,
            vec![
                SvidRequest {
                    addresses: vec![pod_ip],
                    ..request(SvidTarget::Entry(mine.id.clone()), p256_csr().1)
                },
                request(SvidTarget::Entry(theirs.id.clone()), p256_csr().1),
                request(SvidTarget::Entry(mine.id.clone()), b"x".to_vec()),
                SvidRequest {
                    addresses: vec![pod_ip; MAX_SVID_ADDRESSES + 1],
                    ..request(SvidTarget::Entry(mine.id.clone()), p256_csr().1)
                },
            ],
        )
        .await
        .unwrap();
    let bundle = issuer.bundle().await.unwrap();
    let svid = results[0].1.as_ref().unwrap();
    check_x509_svid(
        &svid.chain,
        &bundle.x509_authorities,
        mine.spiffe_id.as_str(),
        SystemTime::now(),
    )
    .unwrap();
    // the node's word for where its pod answers, signed as an IP SAN
    assert_eq!(meshward_tls::ip_addresses_of(&svid.chain[0]), [pod_ip]);
    assert!(matches!(
        &results[3].1,
        Err(ServiceError::InvalidArgument(_))
    ));
    assert!(matches!(
        &results[1].1,
        Err(ServiceError::PermissionDenied(_))
    ));
    assert!(matches!(
        &results[2].1,
        Err(ServiceError::InvalidArgument(_))
    ));

    let (jwt, expires) = issuer
        .new_jwt_svid(
            &node,
            &SvidTarget::Entry(mine.id.clone()),
            &["payments".into()],
        )
        .await
        .unwrap();
    assert_eq!(jwt.split('.').count(), 3);
    assert!(expires <= SystemTime::now() + Duration::from_secs(300));
    assert!(matches!(
        issuer
            .new_jwt_svid(&node, &SvidTarget::Entry(theirs.id.clone()), &["x".into()])
            .await,
        Err(ServiceError::PermissionDenied(_))
    ));
}

#[tokio::test]
async fn node_alias_entries_extend_what_a_node_may_serve() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let node = attested(&issuer).await;
    // an alias matching nothing the node has: no effect
    let alias_id = id("spiffe://td/cluster/eks");
    let mut alias = entry(
        alias_id.as_str(),
        &issuer.server_id().unwrap(),
        &["k8s_psat:cluster:eks"],
    );
    issuer.create_entry(alias.clone()).await.unwrap();
    let under_alias = issuer
        .create_entry(entry("spiffe://td/ns/x/sa/y", &alias_id, &["k8s:ns:x"]))
        .await
        .unwrap();
    assert!(issuer.authorized_entries(&node).await.unwrap().is_empty());
    // the node record carries the alias's selectors (as a PSAT attestation would)
    let mut record = issuer.show_agent(&node.id).await.unwrap();
    record.selectors = vec!["k8s_psat:cluster:eks".parse().unwrap()];
    issuer.store().upsert_node(&record).await.unwrap();
    let listed: Vec<String> = issuer
        .authorized_entries(&node)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, [under_alias.id]);
    alias.selectors.clear();
    assert!(issuer.create_entry(alias).await.is_err());
}

#[tokio::test]
async fn entry_validation_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let parent = id("spiffe://td/spire/agent/join_token/x");
    let mut cases = vec![
        (
            entry("spiffe://other/w", &parent, &["a:b"]),
            "spiffe_id: spiffe://other/w is not in trust domain td",
        ),
        (
            entry("spiffe://td", &parent, &["a:b"]),
            "spiffe_id: spiffe://td has no path",
        ),
        (
            entry("spiffe://td/w", &id("spiffe://x/y"), &["a:b"]),
            "parent_id: spiffe://x/y is not in trust domain td",
        ),
        (
            entry("spiffe://td/w", &parent, &[]),
            "selectors: at least one selector is required",
        ),
    ];
    let mut bad_dns = entry("spiffe://td/w", &parent, &["a:b"]);
    bad_dns.dns_names = vec!["a..b".into()];
    cases.push((bad_dns, "dns_names[0]: \"a..b\" is not a DNS name"));
    let mut own_fed = entry("spiffe://td/w", &parent, &["a:b"]);
    own_fed.federates_with = vec![TrustDomain::parse("td").unwrap()];
    cases.push((
        own_fed,
        "federates_with[0]: an entry cannot federate with its own trust domain",
    ));
    for (e, want) in cases {
        let created = issuer.create_entry(e).await;
        assert!(
            matches!(&created, Err(ServiceError::InvalidArgument(m)) if m == want),
            "{created:?}"
        );
    }
    issuer
        .create_entry(entry("spiffe://td/w", &parent, &["a:b"]))
        .await
        .unwrap();
    let dup = issuer
        .create_entry(entry("spiffe://td/w", &parent, &["a:b"]))
        .await;
    assert!(
        matches!(dup, Err(ServiceError::AlreadyExists(_))),
        "{dup:?}"
    );
    assert_eq!(
        issuer
            .list_entries(&EntryFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn bundle_tracks_rotation_and_federation() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let first = issuer.bundle().await.unwrap();
    assert_eq!((first.x509_authorities.len(), first.jwt_keys.len()), (1, 1));
    assert!(first.sequence >= 1);
    let changed = issuer.rotate(SystemTime::now() + HOUR * 13).await.unwrap();
    assert!(changed);
    let second = issuer.bundle().await.unwrap();
    assert_eq!(second.x509_authorities.len(), 2);
    assert!(second.sequence > first.sequence);

    let mut partner = first.clone();
    partner.trust_domain = td("partner.io");
    issuer.set_federated_bundle(&partner).await.unwrap();
    assert_eq!(
        issuer.federated_bundles().await.unwrap()[0].trust_domain,
        "partner.io"
    );
    let mut own = first;
    own.trust_domain = td("td");
    assert!(matches!(
        issuer.set_federated_bundle(&own).await,
        Err(ServiceError::InvalidArgument(_))
    ));
    assert_eq!(issuer.health().await, (true, true));
}

#[tokio::test]
async fn every_replica_rotates_its_own_ca_while_another_holds_the_lease() {
    let (store, a_dir, b_dir) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    let a = replica(a_dir.path(), store.path(), "issuer-a").await;
    let b = replica(b_dir.path(), store.path(), "issuer-b").await;
    let start = SystemTime::now();
    // a takes the singleton lease first and keeps renewing it, as its ticks do
    for hours in [13, 21, 25, 30] {
        let now = start + HOUR * hours;
        a.rotate(now).await.unwrap();
        b.rotate(now).await.unwrap();
        // past the first CA's life (24 h) each replica still signs, with a CA of its own
        for replica in [&a, &b] {
            assert!(
                replica.read_authority().unwrap().active(now).is_ok(),
                "{} has no active CA {hours} h in",
                replica.settings().instance
            );
        }
    }
    // both replicas' current CAs are in the one bundle
    let bundle = a.bundle().await.unwrap();
    for replica in [&a, &b] {
        let authority = replica.read_authority().unwrap();
        let active = authority.active(start + HOUR * 30).unwrap();
        assert!(bundle.x509_authorities.contains(active.certificate()));
    }
}

#[tokio::test]
async fn a_generation_the_journal_did_not_record_never_signs() {
    let dir = tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let start = SystemTime::now();
    let db = format!("sqlite://{}/db.sqlite3", dir.path().display());
    let mut sql = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    // the datastore refuses the journal's write while the next generation is prepared
    sqlx::query(&rename("ca_journal", "ca_journal_away"))
        .execute(&mut sql)
        .await
        .unwrap();
    assert!(issuer.rotate(start + HOUR * 13).await.is_err());
    // past the first generation's 5/6 the second would sign by the clock alone,
    // but no verifier has it: the first goes on signing
    let later = start + HOUR * 21;
    {
        let authority = issuer.read_authority().unwrap();
        let [first, second] = authority.generations() else {
            panic!("{} generations", authority.generations().len())
        };
        assert_eq!(authority.active(later).unwrap().id(), second.id());
        assert_eq!(
            issuer.signing_ca(&authority, later).unwrap().id(),
            first.id()
        );
    }
    // once the journal has it, it signs
    sqlx::query(&rename("ca_journal_away", "ca_journal"))
        .execute(&mut sql)
        .await
        .unwrap();
    issuer.rotate(later).await.unwrap();
    let second = {
        let authority = issuer.read_authority().unwrap();
        let second = &authority.generations()[1];
        let signing = issuer.signing_ca(&authority, later).unwrap();
        assert_eq!(signing.id(), second.id());
        second.certificate().clone()
    };
    let bundle = issuer.bundle().await.unwrap();
    assert!(bundle.x509_authorities.contains(&second));
}

#[tokio::test]
async fn a_restarted_issuer_lists_its_ca_once() {
    let dir = tempdir().unwrap();
    // the instance name changes with each process (host and PID), the CA does not
    let before = replica(dir.path(), dir.path(), "host-100").await;
    drop(before);
    let after = replica(dir.path(), dir.path(), "host-200").await;
    let bundle = after.bundle().await.unwrap();
    assert_eq!(
        (bundle.x509_authorities.len(), bundle.jwt_keys.len()),
        (1, 1),
        "{bundle:?}"
    );
}

/// The agent keeps its connection between syncs, and TLS checks the client
/// certificate only when a connection opens: each call checks that the node
/// SVID it was opened with has not expired since.
#[tokio::test]
async fn a_node_svid_past_its_expiry_is_refused_on_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let caller = attested(&issuer).await;
    issuer.authenticate_node(&caller).await.unwrap();
    let mut node = issuer.store.get_node(&caller.id).await.unwrap();
    node.expires_at = unix(SystemTime::now()) - 1;
    issuer.store.upsert_node(&node).await.unwrap();
    let refused = issuer.authenticate_node(&caller).await;
    let want = format!("node {}'s SVID has expired: attest again", caller.id);
    assert!(
        matches!(&refused, Err(ServiceError::PermissionDenied(m)) if *m == want),
        "{refused:?}"
    );
}
