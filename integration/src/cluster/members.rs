//! What a cluster is made of: pod specs, and the nodes, pods and hosts it created.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use meshward_proxy::config::PodInfo;

use crate::netns::Netns;

/// What a pod is, in Kubernetes terms.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
}

impl PodSpec {
    /// A pod in namespace `default`, service account `default`, label `app=<name>`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: "default".into(),
            service_account: "default".into(),
            labels: [("app".to_owned(), name.to_owned())].into(),
            image: format!("example.com/{name}:latest"),
        }
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.namespace);
        self
    }

    pub fn service_account(mut self, service_account: &str) -> Self {
        service_account.clone_into(&mut self.service_account);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        image.clone_into(&mut self.image);
        self
    }
}

#[derive(Debug)]
pub struct Node {
    pub(super) name: String,
    pub(super) index: u8,
    pub(super) ns: Netns,
    pub(super) underlay_ip: Ipv4Addr,
    pub(super) workloads_file: PathBuf,
    pub(super) pod_cidr: String,
    pub(super) next_pod: u8,
}

impl Node {
    /// The Kubernetes node name, e.g. `node-1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    /// The addresses its pods get, e.g. `10.40.1.0/24`.
    pub fn pod_cidr(&self) -> &str {
        &self.pod_cidr
    }

    /// The workloads file of this node (see `meshward_proxy::config::WorkloadsFile`).
    pub fn workloads_file(&self) -> &Path {
        &self.workloads_file
    }
}

#[derive(Debug)]
pub struct Pod {
    pub(super) info: PodInfo,
    pub(super) node: String,
    pub(super) ns: Netns,
}

impl Pod {
    pub fn info(&self) -> &PodInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn ip(&self) -> IpAddr {
        self.info.ip
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }
}

/// A namespace on the underlay that is not a node, e.g. the issuer.
#[derive(Debug)]
pub struct Host {
    pub(super) name: String,
    pub(super) ns: Netns,
    pub(super) ip: Ipv4Addr,
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}
