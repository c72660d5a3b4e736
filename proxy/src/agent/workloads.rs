//! Where the node's workloads come from, behind one trait: the workloads file,
//! polled and reloaded (a bad workload is reported and skipped), or the
//! Kubernetes API (`kube_source`: the pods with spec.nodeName = this node).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::{PodInfo, WorkloadsFile};

/// The current pods of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeWorkloads {
    pub node: String,
    pub pods: Vec<PodInfo>,
}

pub(crate) trait WorkloadSource: Send + 'static {
    /// The workloads now, or `None` when nothing changed since the last call.
    fn poll(&mut self) -> Option<NodeWorkloads>;
}

/// The workloads file, reloaded when its modification time or size changes.
pub(crate) struct FileSource {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
}

impl FileSource {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, seen: None }
    }
}

/// How often the file is looked at.
pub(crate) const FILE_POLL: Duration = Duration::from_millis(500);

impl WorkloadSource for FileSource {
    fn poll(&mut self) -> Option<NodeWorkloads> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_none() || stamp == self.seen {
            if stamp.is_none() && self.seen.is_some() {
                tracing::warn!(
                    "agent: workloads file {} disappeared; keeping the last workloads",
                    self.path.display()
                );
                self.seen = None;
            }
            return None;
        }
        self.seen = stamp;
        match std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                WorkloadsFile::from_yaml_lenient(&text, &self.path.display().to_string())
                    .map_err(|e| e.to_string())
            }) {
            Ok((file, problems)) => {
                for problem in problems {
                    tracing::warn!("agent: skipped a workload: {problem}");
                }
                Some(NodeWorkloads {
                    node: file.node,
                    pods: file.workloads,
                })
            }
            Err(e) => {
                tracing::warn!("agent: workloads file not loaded, keeping the last good one: {e}");
                None
            }
        }
    }
}
