//! AuthorizationPolicy and RequestAuthentication objects from the Kubernetes API
//! (`security.istio.io/v1`, Istio's CRDs or those in `docker/k8s/base/crds.yaml`):
//! each kind followed by `meshward_kubernetes::watched`, both published together
//! as the YAML documents the policy loader reads.

use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject};
use meshward_kubernetes::watched::{self, Followed};
use serde_json::json;
use tokio::sync::watch;

/// The objects as documents; `None` until the first complete list.
pub(super) type Objects = watch::Receiver<Option<Arc<Vec<String>>>>;

/// The kinds the policy set is made of.
const KINDS: [(&str, &str); 2] = [
    ("AuthorizationPolicy", "authorizationpolicies"),
    ("RequestAuthentication", "requestauthentications"),
];

/// Watches both kinds; publishes their documents together once both have been
/// listed (a set missing a kind is never published).
pub(super) fn watch(api: &meshward_kubernetes::Connection) -> Objects {
    let (tx, rx) = watch::channel(None);
    let mut kinds: Vec<_> = KINDS
        .iter()
        .map(|(kind, plural)| follow_kind(api, kind, plural))
        .collect();
    tokio::spawn(async move {
        loop {
            let changes = kinds.iter_mut().map(|rx| Box::pin(rx.changed()));
            let (changed, _, _) = futures_util::future::select_all(changes).await;
            if changed.is_err() {
                return;
            }
            let sets: Option<Vec<_>> = kinds
                .iter_mut()
                .map(|rx| rx.borrow_and_update().clone())
                .collect();
            if let Some(sets) = sets {
                let documents = KINDS
                    .iter()
                    .zip(&sets)
                    .flat_map(|((kind, _), objects)| objects.values().map(|o| document(kind, o)))
                    .collect();
                if tx.send(Some(Arc::new(documents))).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn follow_kind(
    api: &meshward_kubernetes::Connection,
    kind: &'static str,
    plural: &str,
) -> Followed<DynamicObject> {
    let resource = ApiResource {
        group: "security.istio.io".into(),
        version: "v1".into(),
        api_version: "security.istio.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let objects: kube::Api<DynamicObject> = kube::Api::all_with(api.client.clone(), &resource);
    watched::follow(objects, api.watcher.clone(), kind)
}

/// The next set of documents; never returns when there is no API source.
pub(super) async fn next(objects: &mut Option<Objects>) -> Arc<Vec<String>> {
    loop {
        let Some(rx) = objects.as_mut() else {
            return std::future::pending().await;
        };
        if rx.changed().await.is_err() {
            *objects = None;
            continue;
        }
        if let Some(documents) = rx.borrow_and_update().clone() {
            return documents;
        }
    }
}

/// The object as a policy document: what the loader reads from a file, with the
/// object's name, namespace, labels and annotations (`istio.io/dry-run`).
fn document(kind: &str, object: &DynamicObject) -> String {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": {
            "name": object.metadata.name,
            "namespace": object.metadata.namespace,
            "labels": object.metadata.labels.clone().unwrap_or_default(),
            "annotations": object.metadata.annotations.clone().unwrap_or_default(),
        },
        "spec": object.data.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
    .to_string()
}
