//! The trust bundle kept in a ConfigMap, as SPIRE's k8sbundle notifier does: the
//! node daemons mount it as `agent.trust_bundle_path`, so a new node trusts the
//! issuer on first contact and a CA rotation reaches the nodes by itself. Written
//! with server-side apply (field manager `meshward-issuer`, so several issuer
//! replicas agree) at start and whenever the bundle changes; a failed write is
//! logged and retried on the next check.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use meshward_config::BundleConfigMap;
use serde_json::json;

use crate::datastore::Datastore;
use crate::service::Issuer;

/// How often the bundle is compared with what was written.
const CHECK: Duration = Duration::from_secs(10);
/// A write that takes longer is abandoned and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the ConfigMap current until the process ends.
pub(crate) async fn run<D: Datastore + 'static>(
    client: kube::Client,
    issuer: Arc<Issuer<D>>,
    target: BundleConfigMap,
) {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, &target.namespace);
    let place = format!("ConfigMap {}/{}", target.namespace, target.name);
    let params = PatchParams::apply("meshward-issuer").force();
    let mut written: Option<String> = None;
    let mut tick = tokio::time::interval(CHECK);
    loop {
        tick.tick().await;
        let pem = match issuer.bundle().await {
            Ok(bundle) => bundle.to_pem(),
            Err(e) => {
                eprintln!("meshward issuer: bundle for {place}: {e} (will retry)");
                continue;
            }
        };
        if written.as_deref() == Some(pem.as_str()) {
            continue;
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": target.name,
                "namespace": target.namespace,
                "labels": {"app.kubernetes.io/managed-by": "meshward-issuer"},
            },
            "data": {target.key.as_str(): pem},
        });
        let patch = Patch::Apply(&object);
        let write = api.patch(&target.name, &params, &patch);
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(_)) => {
                eprintln!("meshward issuer: trust bundle written to {place}");
                written = Some(pem);
            }
            Ok(Err(e)) => eprintln!("meshward issuer: writing {place}: {e} (will retry)"),
            Err(_) => eprintln!("meshward issuer: writing {place}: no answer (will retry)"),
        }
    }
}
