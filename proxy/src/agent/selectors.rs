//! A pod's selectors, as SPIRE's k8s workload attestor names them.

use crate::config::PodInfo;
use meshward_api::template::PodAttributes;
use meshward_spiffe::Selector;

fn k8s(value: String) -> Selector {
    Selector {
        kind: "k8s".into(),
        value,
    }
}

/// `k8s:ns`, `k8s:sa`, `k8s:pod-name`, `k8s:pod-uid`, `k8s:node-name`,
/// `k8s:pod-label:<k>:<v>`, `k8s:container-image` (and `k8s:pod-image`).
pub(crate) fn pod_selectors(pod: &PodInfo, node: &str) -> Vec<Selector> {
    let mut out = vec![
        k8s(format!("ns:{}", pod.namespace)),
        k8s(format!("sa:{}", pod.service_account)),
        k8s(format!("pod-name:{}", pod.name)),
        k8s(format!("pod-uid:{}", pod.uid)),
        k8s(format!("node-name:{node}")),
    ];
    for (k, v) in &pod.labels {
        out.push(k8s(format!("pod-label:{k}:{v}")));
    }
    if !pod.image.is_empty() {
        out.push(k8s(format!("container-image:{}", pod.image)));
        out.push(k8s(format!("pod-image:{}", pod.image)));
    }
    out
}

/// What identity templates are rendered over.
pub(crate) fn pod_attributes(pod: &PodInfo, node: &str) -> PodAttributes {
    PodAttributes {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        service_account: pod.service_account.clone(),
        node_name: node.to_owned(),
        labels: pod.labels.clone(),
        namespace_labels: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spire_k8s_selector_names() {
        let pod = PodInfo {
            name: "curl-1".into(),
            namespace: "default".into(),
            service_account: "curl-spire".into(),
            uid: "u1".into(),
            ip: "10.0.0.2".parse().unwrap(),
            image: "curlimages/curl:8".into(),
            labels: [("app".to_owned(), "curl".to_owned())].into(),
            netns: None,
        };
        let got: Vec<String> = pod_selectors(&pod, "node-1")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "k8s:ns:default",
                "k8s:sa:curl-spire",
                "k8s:pod-name:curl-1",
                "k8s:pod-uid:u1",
                "k8s:node-name:node-1",
                "k8s:pod-label:app:curl",
                "k8s:container-image:curlimages/curl:8",
                "k8s:pod-image:curlimages/curl:8",
            ]
        );
    }
}
