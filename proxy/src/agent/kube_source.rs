//! Workloads from the Kubernetes API: a watch on the pods whose `spec.nodeName`
//! is this node (kube-rs watcher: list, then watch, re-listing when needed).
//! Pods without an IP yet and host-network pods (they share the node's IP, so no
//! pod identity can be told apart by address) are left out.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use meshward_config::{KubernetesSource, PodInfo};
use tokio::sync::watch;

use super::AgentError;
use super::workloads::{NodeWorkloads, WorkloadSource};

pub(crate) struct KubeSource {
    updates: watch::Receiver<Option<NodeWorkloads>>,
}

impl KubeSource {
    /// Starts the watch on its own task.
    pub(crate) fn start(config: &KubernetesSource) -> Result<Self, AgentError> {
        let client = meshward_kubernetes::client(&meshward_kubernetes::ApiEndpoint {
            api_server: config.api_server.clone(),
            api_ca_path: config.api_ca_path.clone(),
            api_token_path: config.api_token_path.clone(),
        })?;
        let (tx, updates) = watch::channel(None);
        // one ConfigMap serves every node of a DaemonSet: the name comes from the
        // downward API when the file leaves it empty
        let node = match config.node_name.as_str() {
            "" => std::env::var("NODE_NAME").map_err(|_| {
                AgentError::Config(
                    "agent.workloads.kubernetes.node_name is empty and NODE_NAME is not set (set it from spec.nodeName)".into(),
                )
            })?,
            name => name.to_owned(),
        };
        tokio::spawn(async move {
            let pods: kube::Api<Pod> = kube::Api::all(client);
            let selector = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
            let mut stream = watcher::watcher(pods, selector).boxed();
            let mut current: BTreeMap<String, PodInfo> = BTreeMap::new();
            let mut pending: Option<BTreeMap<String, PodInfo>> = None;
            while let Some(event) = stream.next().await {
                let publish = match event {
                    Ok(Event::Init) => {
                        pending = Some(BTreeMap::new());
                        false
                    }
                    Ok(Event::InitApply(pod)) => {
                        if let (Some(p), Some(info)) = (pending.as_mut(), pod_info(&pod)) {
                            p.insert(info.uid.clone(), info);
                        }
                        false
                    }
                    Ok(Event::InitDone) => {
                        current = pending.take().unwrap_or_default();
                        true
                    }
                    Ok(Event::Apply(pod)) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        match pod_info(&pod) {
                            Some(info) => current.insert(uid, info),
                            None => current.remove(&uid),
                        };
                        true
                    }
                    Ok(Event::Delete(pod)) => {
                        current.remove(&pod.metadata.uid.clone().unwrap_or_default());
                        true
                    }
                    Err(e) => {
                        // the watcher retries by itself (with backoff); keep the last pods
                        eprintln!("meshward agent: Kubernetes pod watch: {e}");
                        false
                    }
                };
                if publish {
                    tx.send_replace(Some(NodeWorkloads {
                        node: node.clone(),
                        pods: current.values().cloned().collect(),
                    }));
                }
            }
        });
        Ok(Self { updates })
    }
}

impl WorkloadSource for KubeSource {
    fn poll(&mut self) -> Option<NodeWorkloads> {
        if !self.updates.has_changed().unwrap_or(false) {
            return None;
        }
        self.updates.borrow_and_update().clone()
    }
}

/// The attributes selectors read; `None` for pods that cannot have an identity yet.
fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    Some(PodInfo {
        name: pod.metadata.name.clone()?,
        namespace: pod.metadata.namespace.clone()?,
        service_account: spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        uid: pod.metadata.uid.clone()?,
        ip,
        image: spec
            .containers
            .first()
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        netns: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_info_from_a_recorded_pod() {
        let pod: Pod = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"curl-7d9","namespace":"default","uid":"0b6c8d3e-2f4a-4c1e-9a7b-5e3d2c1b0a99","labels":{"app":"curl"}},
                "spec":{"nodeName":"ip-10-0-1-23.ec2.internal","serviceAccountName":"curl-spire","containers":[{"name":"curl","image":"curlimages/curl:8.5.0"}]},
                "status":{"phase":"Running","podIP":"10.0.1.57"}}"#,
        )
        .unwrap();
        let info = pod_info(&pod).unwrap();
        assert_eq!(
            (info.name.as_str(), info.service_account.as_str()),
            ("curl-7d9", "curl-spire")
        );
        assert_eq!(info.ip.to_string(), "10.0.1.57");
        assert_eq!(info.image, "curlimages/curl:8.5.0");
        assert_eq!(info.labels["app"], "curl");

        let mut pending = pod.clone();
        pending.status.as_mut().unwrap().pod_ip = None;
        assert!(pod_info(&pending).is_none(), "no IP yet");
        let mut host = pod;
        host.spec.as_mut().unwrap().host_network = Some(true);
        assert!(pod_info(&host).is_none(), "host network");
    }
}
