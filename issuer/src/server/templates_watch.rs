//! ClusterSPIFFEID objects (`spire.spiffe.io/v1alpha1`, the shape
//! spire-controller-manager uses) from the Kubernetes API, kept as identity
//! templates named `k8s/<object name>`: created and replaced as objects change,
//! removed when they go (those with the prefix only; templates made with the admin
//! CLI are never touched). An object the issuer refuses is reported and skipped;
//! the others still apply.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::DynamicObject;
use serde_json::json;

use super::spire_objects::Mirror;
use crate::datastore::Datastore;
use crate::service::Issuer;
use meshward_api::template::{IdentityTemplate, from_cluster_spiffe_id_yaml};

const PREFIX: &str = "k8s/";

/// Follows the objects until the process ends.
pub(crate) async fn run<D: Datastore + 'static>(
    api: meshward_kubernetes::Connection,
    issuer: Arc<Issuer<D>>,
) {
    let templates = Templates(issuer);
    super::spire_objects::mirror(api, "ClusterSPIFFEID", "clusterspiffeids", templates).await;
}

struct Templates<D>(Arc<Issuer<D>>);

impl<D: Datastore + 'static> Mirror for Templates<D> {
    async fn store(&self, object: &DynamicObject) {
        store(&self.0, object).await;
    }

    async fn remove(&self, object: &DynamicObject) {
        let name = template_name(object);
        if let Err(e) = self.0.delete_template(&name).await {
            tracing::warn!("removing template {name}: {e}");
        }
    }

    async fn keep_only(&self, names: &BTreeSet<String>) {
        let keep = names.iter().map(|n| format!("{PREFIX}{n}")).collect();
        remove_all_but(&self.0, &keep).await;
    }
}

fn template_name(object: &DynamicObject) -> String {
    format!(
        "{PREFIX}{}",
        object.metadata.name.as_deref().unwrap_or_default()
    )
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

async fn store<D: Datastore>(issuer: &Issuer<D>, object: &DynamicObject) {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let stored = match template(object) {
        Ok(t) => issuer
            .put_templates(std::slice::from_ref(&t))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        tracing::warn!("ClusterSPIFFEID {name} refused: {e}");
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
