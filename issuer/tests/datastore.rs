//! The datastore contract, run on SQLite and on PostgreSQL alike.
#![allow(clippy::unwrap_used)]

use meshward_issuer::datastore::{
    AttestedNode, CaRecord, Datastore, DatastoreError, Entry, EntryFilter, JoinToken, SqlStore,
};
use meshward_spiffe::{Selector, SpiffeId, TrustDomain};

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}
use meshward_test_support::postgres::TestDatabase;

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn sel(s: &str) -> Selector {
    s.parse().unwrap()
}

fn entry(spiffe_id: &str, selectors: &[&str]) -> Entry {
    Entry {
        id: String::new(),
        spiffe_id: id(spiffe_id),
        parent_id: id("spiffe://td/spire/agent/join_token/t1"),
        selectors: selectors.iter().map(|s| sel(s)).collect(),
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: vec!["echo.svc".into()],
        federates_with: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        created_at: 1000,
        revision: 0,
    }
}

fn node(spiffe_id: &str) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(spiffe_id),
        attestation_type: "join_token".into(),
        selectors: vec![],
        serial: "01".into(),
        expires_at: 5000,
        banned: false,
        can_reattest: false,
        created_at: 1000,
    }
}

/// Runs `suite` on a fresh SQLite file and a fresh PostgreSQL database.
macro_rules! on_both_backends {
    ($name:ident, $suite:ident) => {
        #[tokio::test]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let sqlite = SqlStore::connect(&format!("sqlite://{}/issuer.db", dir.path().display()))
                .await
                .unwrap();
            $suite(&sqlite).await;
            if let Some(db) = TestDatabase::create(stringify!($name)).await {
                let postgres = SqlStore::connect(db.url()).await.unwrap();
                $suite(&postgres).await;
            }
        }
    };
}

on_both_backends!(entries, entries_suite);
on_both_backends!(join_tokens, join_tokens_suite);
on_both_backends!(nodes, nodes_suite);
on_both_backends!(federated_bundles, federated_bundles_suite);
on_both_backends!(federation_relationships, federation_relationships_suite);
on_both_backends!(ca_journal, ca_journal_suite);
on_both_backends!(leases, leases_suite);
on_both_backends!(concurrent_writers, concurrent_writers_suite);

async fn entries_suite(store: &SqlStore) {
    let a = store
        .create_entry(entry(
            "spiffe://td/ns/echo/sa/default",
            &["k8s:sa:default", "k8s:ns:echo"],
        ))
        .await
        .unwrap();
    assert_eq!(a.id.len(), 32);
    assert_eq!(
        a.selectors,
        [sel("k8s:ns:echo"), sel("k8s:sa:default")],
        "stored sorted"
    );
    // the same ID, parent and selectors (in another order) is a duplicate
    let dup = store
        .create_entry(entry(
            "spiffe://td/ns/echo/sa/default",
            &["k8s:ns:echo", "k8s:sa:default"],
        ))
        .await;
    assert!(
        matches!(dup, Err(DatastoreError::AlreadyExists(_))),
        "{dup:?}"
    );
    let b = store
        .create_entry(entry("spiffe://td/ns/curl/sa/curl", &["k8s:ns:curl"]))
        .await
        .unwrap();
    assert_eq!(store.get_entry(&a.id).await.unwrap(), a);

    let all = store.list_entries(&EntryFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let by_selector = EntryFilter {
        selectors: vec![sel("k8s:ns:curl")],
        ..Default::default()
    };
    assert_eq!(
        store.list_entries(&by_selector).await.unwrap(),
        std::slice::from_ref(&b)
    );
    let by_id = EntryFilter {
        spiffe_id: Some(a.spiffe_id.clone()),
        ..Default::default()
    };
    assert_eq!(
        store.list_entries(&by_id).await.unwrap(),
        std::slice::from_ref(&a)
    );

    let mut changed = a.clone();
    changed.x509_svid_ttl = 600;
    let updated = store.update_entry(changed).await.unwrap();
    assert_eq!((updated.revision, updated.x509_svid_ttl), (1, 600));
    assert_eq!(store.get_entry(&a.id).await.unwrap(), updated);

    assert_eq!(store.delete_entry(&b.id).await.unwrap().id, b.id);
    assert!(matches!(
        store.delete_entry(&b.id).await,
        Err(DatastoreError::NotFound(_))
    ));
    assert!(matches!(
        store.get_entry("nope").await,
        Err(DatastoreError::NotFound(_))
    ));
}

async fn join_tokens_suite(store: &SqlStore) {
    let token = JoinToken {
        token: "abc".into(),
        spiffe_id: id("spiffe://td/spire/agent/join_token/abc"),
        expires_at: 2000,
    };
    store.create_join_token(&token).await.unwrap();
    assert_eq!(store.consume_join_token("abc", 1000).await.unwrap(), token);
    let reused = store.consume_join_token("abc", 1000).await;
    assert!(
        matches!(&reused, Err(DatastoreError::Refused(m)) if m == "join token is unknown or already used"),
        "{reused:?}"
    );
    store
        .create_join_token(&JoinToken {
            token: "old".into(),
            expires_at: 500,
            ..token
        })
        .await
        .unwrap();
    let expired = store.consume_join_token("old", 1000).await;
    assert!(
        matches!(&expired, Err(DatastoreError::Refused(m)) if m == "join token has expired"),
        "{expired:?}"
    );
}

async fn nodes_suite(store: &SqlStore) {
    let n = store
        .upsert_node(&node("spiffe://td/spire/agent/join_token/a"))
        .await
        .unwrap();
    assert!(!n.banned);
    let banned = store.set_node_banned(&n.spiffe_id, true).await.unwrap();
    assert!(banned.banned);
    // renewing the record never lifts a ban
    let renewed = store
        .upsert_node(&AttestedNode {
            serial: "02".into(),
            ..node("spiffe://td/spire/agent/join_token/a")
        })
        .await
        .unwrap();
    assert_eq!((renewed.serial.as_str(), renewed.banned), ("02", true));
    store
        .upsert_node(&node("spiffe://td/spire/agent/join_token/b"))
        .await
        .unwrap();
    assert_eq!(store.list_nodes().await.unwrap().len(), 2);
    store.delete_node(&n.spiffe_id).await.unwrap();
    assert!(matches!(
        store.get_node(&n.spiffe_id).await,
        Err(DatastoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_node(&n.spiffe_id).await,
        Err(DatastoreError::NotFound(_))
    ));
    // a node that attests once is created, never replaced
    let once = node("spiffe://td/spire/agent/aws_iid/123456789012/us-east-1/i-0a");
    store.create_node(&once).await.unwrap();
    let again = store.create_node(&once).await;
    assert!(
        matches!(again, Err(DatastoreError::AlreadyExists(_))),
        "{again:?}"
    );
}

async fn federated_bundles_suite(store: &SqlStore) {
    store
        .set_federated_bundle(&td("partner.io"), "{\"keys\":[]}", 1)
        .await
        .unwrap();
    store
        .set_federated_bundle(&td("partner.io"), "{\"keys\":[1]}", 2)
        .await
        .unwrap();
    store
        .set_federated_bundle(&td("other.io"), "{}", 2)
        .await
        .unwrap();
    assert_eq!(
        store.get_federated_bundle(&td("partner.io")).await.unwrap(),
        "{\"keys\":[1]}"
    );
    let names: Vec<String> = store
        .list_federated_bundles()
        .await
        .unwrap()
        .into_iter()
        .map(|(td, _)| td)
        .collect();
    assert_eq!(names, ["other.io", "partner.io"]);
    store
        .delete_federated_bundle(&td("other.io"))
        .await
        .unwrap();
    assert!(matches!(
        store.get_federated_bundle(&td("other.io")).await,
        Err(DatastoreError::NotFound(_))
    ));
}

async fn federation_relationships_suite(store: &SqlStore) {
    use meshward_issuer::datastore::{EndpointProfile, FederationRelationship};
    let spiffe = FederationRelationship {
        trust_domain: td("partner.io"),
        bundle_endpoint_url: "https://bundles.partner.io".into(),
        profile: EndpointProfile::HttpsSpiffe {
            endpoint_id: id("spiffe://partner.io/spire/server"),
        },
        managed_by: Some("k8s/partner".into()),
    };
    let web = FederationRelationship {
        trust_domain: td("other.io"),
        bundle_endpoint_url: "https://other.io/bundle".into(),
        profile: EndpointProfile::HttpsWeb,
        managed_by: None,
    };
    store.put_federation_relationship(&spiffe, 1).await.unwrap();
    store.put_federation_relationship(&web, 1).await.unwrap();
    assert_eq!(
        store.list_federation_relationships().await.unwrap(),
        [web.clone(), spiffe.clone()]
    );
    // replaced by trust domain
    let moved = FederationRelationship {
        bundle_endpoint_url: "https://moved.other.io".into(),
        ..web
    };
    store.put_federation_relationship(&moved, 2).await.unwrap();
    assert_eq!(
        store.list_federation_relationships().await.unwrap(),
        [moved, spiffe.clone()]
    );
    store
        .delete_federation_relationship(&td("other.io"))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_federation_relationship(&td("other.io")).await,
        Err(DatastoreError::NotFound(_))
    ));
    assert_eq!(
        store.list_federation_relationships().await.unwrap(),
        [spiffe]
    );
}

async fn ca_journal_suite(store: &SqlStore) {
    let ca = |id: &str, not_after: i64| CaRecord {
        id: id.into(),
        instance: "issuer-0".into(),
        certificate_pem: "PEM".into(),
        jwt_kid: format!("kid-{id}"),
        jwt_x: "x".into(),
        jwt_y: "y".into(),
        not_before: 0,
        not_after,
    };
    assert_eq!(store.record_ca(&td("td"), &ca("a", 100)).await.unwrap(), 1);
    assert_eq!(
        store.record_ca(&td("td"), &ca("a", 100)).await.unwrap(),
        1,
        "idempotent"
    );
    assert_eq!(store.record_ca(&td("td"), &ca("b", 200)).await.unwrap(), 2);
    assert_eq!(store.list_cas(50).await.unwrap().len(), 2);
    assert_eq!(
        store.list_cas(150).await.unwrap().len(),
        1,
        "expired ones are not listed"
    );
    assert_eq!(store.prune_cas(&td("td"), 150).await.unwrap(), 3);
    assert_eq!(
        store.prune_cas(&td("td"), 150).await.unwrap(),
        3,
        "nothing to prune: unchanged"
    );
}

async fn leases_suite(store: &SqlStore) {
    assert!(store.try_lease("ca-rotation", "a", 100, 0).await.unwrap());
    assert!(!store.try_lease("ca-rotation", "b", 100, 50).await.unwrap());
    assert!(
        store.try_lease("ca-rotation", "a", 200, 50).await.unwrap(),
        "the holder renews"
    );
    assert!(!store.try_lease("ca-rotation", "b", 300, 199).await.unwrap());
    assert!(
        store.try_lease("ca-rotation", "b", 300, 200).await.unwrap(),
        "an expired lease moves"
    );
}

async fn concurrent_writers_suite(store: &SqlStore) {
    let distinct = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_entry(entry(&format!("spiffe://td/w{i}"), &["unix:uid:0"]))
                .await
        })
    });
    for handle in distinct.collect::<Vec<_>>() {
        handle.await.unwrap().unwrap();
    }
    let same = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_entry(entry("spiffe://td/same", &["unix:uid:1"]))
                .await
        })
    });
    let mut created = 0;
    for handle in same.collect::<Vec<_>>() {
        match handle.await.unwrap() {
            Ok(_) => created += 1,
            Err(DatastoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(
        store
            .list_entries(&EntryFilter::default())
            .await
            .unwrap()
            .len(),
        21
    );
}

#[tokio::test]
async fn sqlite_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/issuer.db", dir.path().display());
    let created = {
        let store = SqlStore::connect(&url).await.unwrap();
        store
            .upsert_node(&node("spiffe://td/spire/agent/join_token/a"))
            .await
            .unwrap();
        store
            .set_node_banned(&id("spiffe://td/spire/agent/join_token/a"), true)
            .await
            .unwrap();
        store
            .create_entry(entry("spiffe://td/w", &["unix:uid:0"]))
            .await
            .unwrap()
    };
    let store = SqlStore::connect(&url).await.unwrap();
    assert_eq!(store.get_entry(&created.id).await.unwrap(), created);
    assert!(
        store
            .get_node(&id("spiffe://td/spire/agent/join_token/a"))
            .await
            .unwrap()
            .banned
    );
}

#[tokio::test]
async fn unreachable_database_is_unavailable_not_a_hang() {
    let started = std::time::Instant::now();
    let e = SqlStore::connect("postgres://nobody:pw@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(matches!(e, DatastoreError::Unavailable(_)), "{e}");
    assert!(
        e.to_string().contains("nobody:***@"),
        "the password is redacted: {e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let e = SqlStore::connect("mysql://x").await.unwrap_err();
    assert!(e.to_string().contains("unsupported datastore URL"), "{e}");
}

#[tokio::test]
async fn postgres_outage_is_unavailable_and_recovers() {
    use meshward_test_support::tcp_proxy::TcpProxy;
    let Some(db) = TestDatabase::create("postgres_outage_is_unavailable_and_recovers").await else {
        return;
    };
    // route the store through a forwarder we can cut
    let url = db.url().to_owned();
    let (head, rest) = url.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let target: std::net::SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(target).await;
    let store = SqlStore::connect(&format!("{head}@{}/{path}", proxy.address()))
        .await
        .unwrap();
    let created = store
        .create_entry(entry("spiffe://td/w", &["unix:uid:0"]))
        .await
        .unwrap();

    proxy.cut().await;
    let started = std::time::Instant::now();
    let down = store.get_entry(&created.id).await;
    assert!(
        matches!(down, Err(DatastoreError::Unavailable(_))),
        "{down:?}"
    );
    assert!(store.ping().await.is_err());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "bounded, not a hang"
    );
    let refused = store
        .create_entry(entry("spiffe://td/other", &["unix:uid:1"]))
        .await;
    assert!(
        matches!(refused, Err(DatastoreError::Unavailable(_))),
        "{refused:?}"
    );

    proxy.restore();
    assert_eq!(
        store.get_entry(&created.id).await.unwrap(),
        created,
        "recovers by itself"
    );
    // nothing half-written: the write refused during the outage is not there
    assert_eq!(
        store
            .list_entries(&EntryFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}
