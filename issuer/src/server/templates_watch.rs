//! ClusterSPIFFEID objects (`spire.spiffe.io/v1alpha1`, the shape
//! spire-controller-manager uses) from the Kubernetes API, kept as identity
//! templates named `k8s/<object name>`: created and replaced as objects change,
//! removed when they go (those with the prefix only; templates made with the admin
//! CLI are never touched). An object the issuer refuses is reported and skipped;
//! the others still apply.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::StreamExt as _;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::json;

use crate::datastore::Datastore;
use crate::service::Issuer;
use meshward_api::template::{IdentityTemplate, from_cluster_spiffe_id_yaml};

const PREFIX: &str = "k8s/";

/// Follows the objects until the process ends.
pub(crate) async fn run<D: Datastore + 'static>(client: kube::Client, issuer: Arc<Issuer<D>>) {
    let mut stream = super::spire_objects::watch(client, "ClusterSPIFFEID", "clusterspiffeids");
    let mut listed: Option<BTreeSet<String>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed = Some(BTreeSet::new()),
            Ok(Event::InitApply(object)) => {
                if let Some(name) = store(&issuer, &object).await {
                    if let Some(names) = listed.as_mut() {
                        names.insert(name);
                    }
                }
            }
            Ok(Event::InitDone) => {
                if let Some(names) = listed.take() {
                    remove_all_but(&issuer, &names).await;
                }
            }
            Ok(Event::Apply(object)) => {
                store(&issuer, &object).await;
            }
            Ok(Event::Delete(object)) => {
                let name = format!(
                    "{PREFIX}{}",
                    object.metadata.name.as_deref().unwrap_or_default()
                );
                if let Err(e) = issuer.delete_template(&name).await {
                    tracing::warn!("removing template {name}: {e}");
                }
            }
            Err(e) => tracing::warn!("ClusterSPIFFEID watch: {e}; retrying"),
        }
    }
}

/// The object as a template; `None` (reported) when it is refused.
fn template(object: &DynamicObject) -> Result<IdentityTemplate, String> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let document = json!({
        "apiVersion": "spire.spiffe.io/v1alpha1",
        "kind": "ClusterSPIFFEID",
        "metadata": {"name": name},
        "spec": object.data.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    let mut templates = from_cluster_spiffe_id_yaml(&document.to_string())?;
    let mut template = templates.pop().ok_or("no template in the object")?;
    template.name = format!("{PREFIX}{name}");
    Ok(template)
}

async fn store<D: Datastore>(issuer: &Issuer<D>, object: &DynamicObject) -> Option<String> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let stored = match template(object) {
        Ok(t) => issuer
            .put_templates(std::slice::from_ref(&t))
            .await
            .map(|()| t.name)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match stored {
        Ok(name) => Some(name),
        Err(e) => {
            tracing::warn!("ClusterSPIFFEID {name} refused: {e}");
            None
        }
    }
}

/// After a full list: templates from objects that no longer exist go.
async fn remove_all_but<D: Datastore>(issuer: &Issuer<D>, keep: &BTreeSet<String>) {
    let Ok(all) = issuer.list_templates().await else {
        return;
    };
    for t in all
        .iter()
        .filter(|t| t.name.starts_with(PREFIX) && !keep.contains(&t.name))
    {
        if let Err(e) = issuer.delete_template(&t.name).await {
            tracing::warn!("removing template {}: {e}", t.name);
        }
    }
}
