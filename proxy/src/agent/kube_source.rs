//! Workloads from the Kubernetes API: the pods whose `spec.nodeName` is this node,
//! followed by `meshward_kubernetes::watched`.
//! Pods without an IP yet and host-network pods (they share the node's IP, so no
//! pod identity can be told apart by address) are left out.

use crate::config::{KubernetesSource, PodInfo};
use k8s_openapi::api::core::v1::Pod;
use meshward_kubernetes::watched::{self, Followed};

use super::AgentError;
use super::workloads::{NodeWorkloads, WorkloadSource};

pub(crate) struct KubeSource {
    node: String,
    pods: Followed<Pod>,
}

impl KubeSource {
    /// Starts the watch on its own task.
    pub(crate) fn start(config: &KubernetesSource) -> Result<Self, AgentError> {
        let endpoint = meshward_kubernetes::ApiEndpoint {
            api_server: config.api_server.clone(),
            api_ca_path: config.api_ca_path.clone(),
            api_token_path: config.api_token_path.clone(),
            watch_timeout_seconds: config.watch_timeout_seconds,
        };
        let client = meshward_kubernetes::client(&endpoint)?;
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
        let pods: kube::Api<Pod> = kube::Api::all(client);
        let selector = endpoint.watcher().fields(&format!("spec.nodeName={node}"));
        let pods = watched::follow(pods, selector, "Pod");
        Ok(Self { node, pods })
    }
}

impl WorkloadSource for KubeSource {
    fn poll(&mut self) -> Option<NodeWorkloads> {
        if !self.pods.has_changed().unwrap_or(false) {
            return None;
        }
        let pods = self.pods.borrow_and_update().clone()?;
        Some(NodeWorkloads {
            node: self.node.clone(),
            pods: pods.values().filter_map(|pod| pod_info(pod)).collect(),
        })
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
