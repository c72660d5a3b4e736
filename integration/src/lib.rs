//! meshward's integration environment: a Kubernetes-like cluster the kernel can
//! host. Nodes and pods are network namespaces wired as on EKS; processes run in
//! them for real; curl runs in pods for real. See `integration/README.md`.
//!
//! ```no_run
//! use meshward_integration::{Cluster, PodSpec};
//! let mut cluster = Cluster::new()?;
//! cluster.add_node("node-1")?;
//! cluster.add_pod("node-1", PodSpec::new("curl"))?;
//! let response = cluster.curl("curl", &["http://10.20.1.2:8080/"])?;
//! # Ok::<(), meshward_integration::HarnessError>(())
//! ```

mod cleanup;
mod cluster;
mod curl;
pub mod echo;
mod error;
mod forward;
pub mod hbone;
mod mesh;
mod netns;
mod process;
pub mod real_http;
mod root;

pub use cleanup::remove_by_prefix;
pub use cluster::{Cluster, Host, Node, Pod, PodSpec, TEST_PREFIX};
pub use curl::CurlResponse;
pub use error::{HarnessError, Result};
pub use forward::LoopbackForward;
pub use mesh::{
    Mesh, MeshSpec, NodeAttestation, NodeSetup, Phase, SetupFn, Upgrade, meshward_binary,
};
pub use netns::{Netns, RunExt, is_running as process_is_running, list as list_namespaces};
pub use process::{CommandOutput, Process, exec, wait_for_port};
pub use root::available_or_skip;
