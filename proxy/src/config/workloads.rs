//! The workloads file: the pods of one node, as the node daemon's agent reads them
//! when it does not watch the Kubernetes API (local runs, the integration
//! environment, `meshward demo`). The harness writes it; the agent watches it.
//!
//! ```yaml
//! node: node-1
//! workloads:
//! - name: echoserver-5d8f7c9b4-x2x9q
//!   namespace: echoserver
//!   service_account: default
//!   uid: 0b6c8d3e-2f4a-4c1e-9a7b-5e3d2c1b0a99
//!   ip: 10.40.1.2
//!   image: registry.k8s.io/e2e-test-images/echoserver:2.3
//!   netns: /var/run/netns/mwt1a2bx0-pod1   # optional
//!   labels:
//!     app: echoserver
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;
use meshward_config::parse_yaml;

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadsFile {
    /// The Kubernetes node these pods run on (`spec.nodeName`).
    pub node: String,
    #[serde(default)]
    pub workloads: Vec<PodInfo>,
}

/// One pod: the attributes selectors and policies read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    pub uid: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod's network namespace (`/var/run/netns/<name>`), when known: how the
    /// agent recognizes a Workload API caller outside Kubernetes (on a real node the
    /// caller's cgroup names the pod UID instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<std::path::PathBuf>,
}

fn default_service_account() -> String {
    "default".into()
}

impl WorkloadsFile {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(
            &meshward_config::read_file(path)?,
            &path.display().to_string(),
        )
    }

    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ConfigError> {
        let file: Self = parse_yaml(text, source)?;
        let mut seen = std::collections::HashSet::new();
        for (i, pod) in file.workloads.iter().enumerate() {
            if pod.name.is_empty() || pod.namespace.is_empty() || pod.uid.is_empty() {
                return Err(ConfigError::invalid(
                    source,
                    &format!("workloads[{i}]"),
                    "name, namespace and uid must not be empty",
                ));
            }
            if !seen.insert(pod.ip) {
                return Err(ConfigError::invalid(
                    source,
                    &format!("workloads[{i}].ip"),
                    format!("{} is used by another workload", pod.ip),
                ));
            }
        }
        Ok(file)
    }

    /// Like `from_yaml`, but a bad workload is reported and skipped while the rest
    /// is served (the agent must not drop every pod over one typo).
    pub fn from_yaml_lenient(
        text: &str,
        source: &str,
    ) -> Result<(Self, Vec<ConfigError>), ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Loose {
            node: String,
            #[serde(default)]
            workloads: Vec<serde_yaml::Value>,
        }
        let loose: Loose = parse_yaml(text, source)?;
        let mut file = Self {
            node: loose.node,
            workloads: Vec::new(),
        };
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, value) in loose.workloads.into_iter().enumerate() {
            let field = format!("workloads[{i}]");
            match serde_path_to_error::deserialize::<_, PodInfo>(value) {
                Ok(pod)
                    if pod.name.is_empty() || pod.namespace.is_empty() || pod.uid.is_empty() =>
                {
                    problems.push(ConfigError::invalid(
                        source,
                        &field,
                        "name, namespace and uid must not be empty",
                    ));
                }
                Ok(pod) if !seen.insert(pod.ip) => {
                    problems.push(ConfigError::invalid(
                        source,
                        &format!("{field}.ip"),
                        format!("{} is used by another workload", pod.ip),
                    ));
                }
                Ok(pod) => file.workloads.push(pod),
                Err(e) => {
                    let path = e.path().to_string();
                    let field = if path == "." {
                        field
                    } else {
                        format!("{field}.{path}")
                    };
                    problems.push(ConfigError::invalid(
                        source,
                        &field,
                        e.into_inner().to_string(),
                    ));
                }
            }
        }
        Ok((file, problems))
    }

    pub fn to_yaml(&self) -> String {
        // Serializing plain strings, maps and lists cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let text = "node: n1\nworkloads:\n- name: a\n  namespace: ns\n  uid: u1\n  ip: 10.0.0.2\n  labels: {app: a}\n";
        let file = WorkloadsFile::from_yaml(text, "w.yaml").unwrap();
        assert_eq!(file.workloads[0].service_account, "default");
        assert_eq!(
            WorkloadsFile::from_yaml(&file.to_yaml(), "again").unwrap(),
            file
        );
    }

    #[test]
    fn lenient_loading_skips_only_the_bad_workload() {
        let text = "node: n1\nworkloads:\n- {name: a, namespace: ns, uid: u1, ip: 10.0.0.2}\n- {name: b, namespace: ns, uid: u2, ip: nope}\n- {name: c, namespace: ns, uid: u3, ip: 10.0.0.4}\n";
        let (file, problems) = WorkloadsFile::from_yaml_lenient(text, "w.yaml").unwrap();
        let names: Vec<&str> = file.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("w.yaml: workloads[1].ip: invalid IP address"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let dup = "node: n1\nworkloads:\n- {name: a, namespace: ns, uid: u1, ip: 10.0.0.2}\n- {name: b, namespace: ns, uid: u2, ip: 10.0.0.2}\n";
        let e = WorkloadsFile::from_yaml(dup, "w.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "w.yaml: workloads[1].ip: 10.0.0.2 is used by another workload"
        );
        let bad_ip = "node: n1\nworkloads:\n- {name: a, namespace: ns, uid: u1, ip: 10.0.0}\n";
        let e = WorkloadsFile::from_yaml(bad_ip, "w.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("w.yaml: workloads[0].ip: invalid IP address"),
            "{e}"
        );
        let unknown =
            "node: n1\nworkloads:\n- {name: a, namespace: ns, uid: u1, ip: 10.0.0.1, sa: x}\n";
        let e = WorkloadsFile::from_yaml(unknown, "w.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("w.yaml: workloads[0].sa: unknown field `sa`"),
            "{e}"
        );
    }
}
