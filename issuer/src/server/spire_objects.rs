//! ClusterSPIFFEID and ClusterFederatedTrustDomain objects, mirrored into the
//! datastore: cluster-scoped `spire.spiffe.io/v1alpha1` kinds, as
//! spire-controller-manager defines them, followed by
//! `meshward_kubernetes::watched`. Each kind says how to store one object and
//! remove what it made ([`Mirror`]); the loop here says when.

use std::collections::BTreeSet;
use std::future::Future;

use kube::api::{ApiResource, DynamicObject};
use meshward_kubernetes::watched;

/// What the datastore keeps of one kind of object.
pub(crate) trait Mirror {
    /// The object as the datastore keeps it, created or replaced (a refusal is
    /// reported, never fatal: the other objects still apply).
    fn store(&self, object: &DynamicObject) -> impl Future<Output = ()> + Send;
    /// What `object` had made goes (it was deleted).
    fn remove(&self, object: &DynamicObject) -> impl Future<Output = ()> + Send;
    /// What objects had made goes, except for the objects `names` (after the first
    /// complete list: objects deleted while the issuer was away).
    fn keep_only(&self, names: &BTreeSet<String>) -> impl Future<Output = ()> + Send;
}

/// Mirrors the objects of `kind` (`plural` in URLs) until the process ends.
pub(crate) async fn mirror(
    api: meshward_kubernetes::Connection,
    kind: &'static str,
    plural: &str,
    mirror: impl Mirror,
) {
    let resource = ApiResource {
        group: "spire.spiffe.io".into(),
        version: "v1alpha1".into(),
        api_version: "spire.spiffe.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let objects: kube::Api<DynamicObject> = kube::Api::all_with(api.client, &resource);
    let mut sets = watched::follow(objects, api.watcher, kind);
    let mut before = None;
    while sets.changed().await.is_ok() {
        let Some(now) = sets.borrow_and_update().clone() else {
            continue;
        };
        let changes = watched::changes(before.as_ref(), &now);
        for object in changes.applied {
            mirror.store(object).await;
        }
        for object in changes.gone {
            mirror.remove(object).await;
        }
        if before.is_none() {
            let names = now.values().filter_map(|o| o.metadata.name.clone());
            mirror.keep_only(&names.collect()).await;
        }
        before = Some(now);
    }
}
