//! ClusterFederatedTrustDomain objects (`spire.spiffe.io/v1alpha1`, the shape
//! spire-controller-manager uses) from the Kubernetes API, kept as federation
//! relationships managed by `k8s/<object name>`: created and replaced as objects
//! change, removed when they go. Relationships an operator made (CLI,
//! issuer.yaml) are never touched; an object naming one of their trust domains is
//! refused and reported, as is an invalid object; the others still apply.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::DynamicObject;
use meshward_spiffe::{Bundle, SpiffeId, TrustDomain};
use serde_json::Value;

use crate::datastore::{Datastore, EndpointProfile, FederationRelationship};
use crate::service::Issuer;

use super::spire_objects::Mirror;

const PREFIX: &str = "k8s/";

/// Follows the objects until the process ends.
pub(crate) async fn run<D: Datastore + 'static>(
    api: meshward_kubernetes::Connection,
    issuer: Arc<Issuer<D>>,
) {
    let kind = (
        "ClusterFederatedTrustDomain",
        "clusterfederatedtrustdomains",
    );
    super::spire_objects::mirror(api, kind.0, kind.1, Relationships(issuer)).await;
}

struct Relationships<D>(Arc<Issuer<D>>);

impl<D: Datastore + 'static> Mirror for Relationships<D> {
    async fn store(&self, object: &DynamicObject) {
        store(&self.0, object).await;
    }

    async fn remove(&self, object: &DynamicObject) {
        let manager = manager_of(object);
        for r in managed(&self.0)
            .await
            .iter()
            .filter(|r| r.managed_by.as_deref() == Some(manager.as_str()))
        {
            remove(&self.0, r).await;
        }
    }

    async fn keep_only(&self, names: &BTreeSet<String>) {
        let keep = names.iter().map(|n| format!("{PREFIX}{n}")).collect();
        remove_all_but(&self.0, &keep).await;
    }
}

fn manager_of(object: &DynamicObject) -> String {
    format!(
        "{PREFIX}{}",
        object.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The object's relationship and bootstrap bundle; why not, when it is refused.
fn relationship(
    object: &DynamicObject,
) -> Result<(FederationRelationship, Option<Bundle>), String> {
    let spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
    let text = |field: &str| spec.get(field).and_then(Value::as_str);
    let trust_domain =
        TrustDomain::parse(text("trustDomain").ok_or("spec.trustDomain is required")?)
            .map_err(|e| format!("spec.trustDomain: {e}"))?;
    let url = text("bundleEndpointURL").ok_or("spec.bundleEndpointURL is required")?;
    let profile = spec.get("bundleEndpointProfile").unwrap_or(&Value::Null);
    let kind = profile
        .get("type")
        .and_then(Value::as_str)
        .ok_or("spec.bundleEndpointProfile.type is required")?;
    let endpoint_id = profile
        .get("endpointSPIFFEID")
        .and_then(Value::as_str)
        .map(|id| {
            SpiffeId::parse(id)
                .map_err(|e| format!("spec.bundleEndpointProfile.endpointSPIFFEID: {e}"))
        })
        .transpose()?;
    let profile = EndpointProfile::parse(kind, endpoint_id)
        .map_err(|e| format!("spec.bundleEndpointProfile: {e}"))?;
    let bundle = text("trustDomainBundle")
        .map(|json| {
            Bundle::from_spiffe_json(&trust_domain, json)
                .map_err(|e| format!("spec.trustDomainBundle: {e}"))
        })
        .transpose()?;
    Ok((
        FederationRelationship {
            trust_domain,
            bundle_endpoint_url: url.to_owned(),
            profile,
            managed_by: Some(manager_of(object)),
        },
        bundle,
    ))
}

async fn store<D: Datastore>(issuer: &Issuer<D>, object: &DynamicObject) {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let stored = match relationship(object) {
        Ok((r, bundle)) => {
            let replace = issuer
                .federation_relationship(&r.trust_domain)
                .await
                .ok()
                .flatten()
                .is_some();
            issuer
                .put_federation_relationship(&r, bundle.as_ref(), replace)
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        tracing::warn!("ClusterFederatedTrustDomain {name} refused: {e}");
    }
}

async fn managed<D: Datastore>(issuer: &Issuer<D>) -> Vec<FederationRelationship> {
    issuer
        .federation_relationships()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            r.managed_by
                .as_deref()
                .is_some_and(|m| m.starts_with(PREFIX))
        })
        .collect()
}

async fn remove<D: Datastore>(issuer: &Issuer<D>, r: &FederationRelationship) {
    if let Err(e) = issuer
        .delete_federation_relationship(&r.trust_domain, r.managed_by.as_deref())
        .await
    {
        tracing::warn!("removing the federation with {}: {e}", r.trust_domain);
    }
}

/// After a full list: relationships of objects that no longer exist go.
async fn remove_all_but<D: Datastore>(issuer: &Issuer<D>, keep: &BTreeSet<String>) {
    for r in managed(issuer).await {
        if !r.managed_by.as_ref().is_some_and(|m| keep.contains(m)) {
            remove(issuer, &r).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_fixture_reads_as_the_crd_admits_it() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docker/k8s/tests/valid/cluster-federated-trust-domain-every-field.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let object: DynamicObject = serde_yaml::from_str(&text).unwrap();
        let (r, bundle) = relationship(&object).unwrap();
        assert_eq!(r.trust_domain, "payments.example.org");
        assert_eq!(
            r.bundle_endpoint_url,
            "https://bundles.payments.example.org:8443"
        );
        assert_eq!(r.managed_by.as_deref(), Some("k8s/payments"));
        assert_eq!(
            r.profile,
            EndpointProfile::HttpsSpiffe {
                endpoint_id: SpiffeId::parse("spiffe://payments.example.org/spire/server").unwrap()
            }
        );
        assert!(bundle.is_some_and(|b| b.trust_domain == "payments.example.org"));
        // what the schema cannot say, the issuer refuses by name
        let mut object = object;
        object.data["spec"]["bundleEndpointProfile"] = serde_json::json!({"type": "https_spiffe"});
        let e = relationship(&object).unwrap_err();
        assert!(
            e.contains("endpoint_spiffe_id is required by https_spiffe"),
            "{e}"
        );
    }
}
