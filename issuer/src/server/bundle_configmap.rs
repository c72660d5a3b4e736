//! The trust bundle kept in a ConfigMap, as SPIRE's k8sbundle notifier does: the
//! node daemons mount it as `agent.trust_bundle_path`, so a new node trusts the
//! issuer on first contact and a CA rotation reaches the nodes by itself. Written
//! with server-side apply (field manager `meshward-issuer`, so several issuer
//! replicas agree) whenever the housekeeping loop publishes a changed bundle; a
//! failed write is logged and retried.

use std::time::Duration;

use crate::config::BundleConfigMap;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

/// A write that takes longer is abandoned; a failed one is retried after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(10);

/// Writes every bundle `pem` publishes until the issuer stops publishing.
pub(crate) async fn run(
    client: kube::Client,
    target: BundleConfigMap,
    mut pem: watch::Receiver<String>,
) {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, &target.namespace);
    let place = format!("ConfigMap {}/{}", target.namespace, target.name);
    let params = PatchParams::apply("meshward-issuer").force();
    loop {
        let bundle = pem.borrow_and_update().clone();
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": target.name,
                "namespace": target.namespace,
                "labels": {"app.kubernetes.io/managed-by": "meshward-issuer"},
            },
            "data": {target.key.as_str(): bundle},
        });
        let patch = Patch::Apply(&object);
        let write = api.patch(&target.name, &params, &patch);
        let failure = match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer".to_owned()),
        };
        match failure {
            None => {
                tracing::info!("trust bundle written to {place}");
                if pem.changed().await.is_err() {
                    return;
                }
            }
            Some(e) => {
                tracing::warn!("writing {place}: {e} (will retry)");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
