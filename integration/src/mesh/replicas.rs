//! The first cluster's issuer replicas (`MeshSpec::replicated_issuer`): losing one,
//! bringing it back, asking each whether it is ready.

use super::Mesh;
use super::issuer::ClusterIssuer;
use crate::error::{HarnessError, Result};

impl Mesh {
    /// SIGKILLs replica `replica` of the first cluster's issuer (0: the first).
    pub fn kill_issuer(&mut self, replica: usize) -> Result<String> {
        Ok(self.replica_mut(replica)?.kill())
    }

    /// Starts replica `replica` again with its configuration and data, and waits
    /// until it is healthy.
    pub fn restart_issuer(&mut self, replica: usize) -> Result<()> {
        let bin = self.bin.clone();
        let (issuers, replicas, cluster) = (&mut self.issuers, &mut self.replicas, &self.cluster);
        let issuer = match replica {
            0 => issuers.first_mut(),
            n => replicas.get_mut(n - 1),
        }
        .ok_or_else(|| HarnessError::Invalid(format!("no issuer replica {replica}")))?;
        issuer.restart(cluster, &bin)
    }

    /// Whether replica `replica` says it is ready (`/ready` on its health port:
    /// the datastore answers and a CA is active); `None` when it does not answer.
    pub fn issuer_ready(&self, replica: usize) -> Result<Option<bool>> {
        let issuer = self.replica(replica)?;
        let ns = self.cluster.host(issuer.name())?.netns();
        let status = super::http_status(ns, "http://127.0.0.1:8080/ready")?;
        Ok(status.map(|code| code == 200))
    }

    /// Replica `replica`'s log so far (its current run).
    pub fn issuer_replica_log(&self, replica: usize) -> Result<String> {
        Ok(self.replica(replica)?.log())
    }

    fn replica(&self, replica: usize) -> Result<&ClusterIssuer> {
        match replica {
            0 => self.issuers.first(),
            n => self.replicas.get(n - 1),
        }
        .ok_or_else(|| HarnessError::Invalid(format!("no issuer replica {replica}")))
    }

    fn replica_mut(&mut self, replica: usize) -> Result<&mut ClusterIssuer> {
        match replica {
            0 => self.issuers.first_mut(),
            n => self.replicas.get_mut(n - 1),
        }
        .ok_or_else(|| HarnessError::Invalid(format!("no issuer replica {replica}")))
    }
}
