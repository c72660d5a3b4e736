//! Which issuer replica the agent talks to: every configured address, each name
//! resolved to all of its addresses, tried in turn until one answers.
//!
//! The replica that answered last is tried first (a connection's worth of state
//! the issuer may cache is kept); one that failed a round goes to the back. The
//! others are tried in an order of this agent's own, so the nodes of a cluster
//! spread over the replicas instead of all falling onto the second one.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::Duration;

/// How long resolving one configured name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub(crate) struct Issuers {
    configured: Vec<String>,
    /// The address that answered last, tried first while it keeps answering.
    preferred: Option<SocketAddr>,
    /// Addresses that failed since they last answered: tried last.
    failed: Vec<SocketAddr>,
    /// This agent's order among equals.
    order: RandomState,
}

impl Issuers {
    pub(crate) fn new(configured: Vec<String>) -> Self {
        Self {
            configured,
            preferred: None,
            failed: Vec::new(),
            order: RandomState::new(),
        }
    }

    /// Every address to try this round, best first: the one that answered last,
    /// then the others in this agent's order, then the ones that failed lately.
    /// Names that do not resolve are left out (and logged).
    pub(crate) async fn candidates(&self) -> Vec<SocketAddr> {
        let mut all = Vec::new();
        for name in &self.configured {
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name)).await {
                Ok(Ok(addrs)) => all.extend(addrs),
                Ok(Err(e)) => tracing::warn!("agent: cannot resolve issuer {name}: {e}"),
                Err(_) => tracing::warn!("agent: resolving issuer {name} timed out"),
            }
        }
        self.rank(all)
    }

    fn rank(&self, mut all: Vec<SocketAddr>) -> Vec<SocketAddr> {
        all.sort();
        all.dedup();
        all.sort_by_key(|addr| {
            let class = if Some(*addr) == self.preferred {
                0
            } else if self.failed.contains(addr) {
                2
            } else {
                1
            };
            (class, self.order.hash_one(addr))
        });
        all
    }

    /// `addr` answered: keep using it.
    pub(crate) fn answered(&mut self, addr: SocketAddr) {
        self.preferred = Some(addr);
        self.failed.retain(|a| *a != addr);
    }

    /// `addr` could not be reached or stopped answering: try the others first.
    pub(crate) fn failed(&mut self, addr: SocketAddr) {
        if self.preferred == Some(addr) {
            self.preferred = None;
        }
        if !self.failed.contains(&addr) {
            self.failed.push(addr);
        }
    }

    /// The round failed after a connection was made (an RPC timed out or the
    /// replica went away mid-round): the next round starts elsewhere.
    pub(crate) fn round_failed(&mut self) {
        if let Some(addr) = self.preferred {
            self.failed(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_replica_that_answered_is_first_and_one_that_failed_is_last() {
        let (a, b, c) = (
            addr("10.0.0.1:8081"),
            addr("10.0.0.2:8081"),
            addr("10.0.0.3:8081"),
        );
        let mut issuers = Issuers::new(Vec::new());
        let ranked = issuers.rank(vec![a, b, c, a]);
        assert_eq!(ranked.len(), 3, "duplicates are tried once");
        issuers.answered(b);
        assert_eq!(issuers.rank(vec![a, b, c])[0], b);
        issuers.failed(b);
        assert_eq!(issuers.rank(vec![a, b, c])[2], b);
        issuers.answered(c);
        issuers.round_failed();
        let ranked = issuers.rank(vec![a, b, c]);
        assert_eq!(ranked[0], a, "the only one not failed lately");
        issuers.answered(b);
        assert_eq!(issuers.rank(vec![a, b, c]), [b, a, c]);
    }

    #[test]
    fn agents_spread_over_equal_replicas() {
        let replicas: Vec<SocketAddr> =
            (1..=3).map(|i| addr(&format!("10.0.0.{i}:8081"))).collect();
        let firsts: std::collections::BTreeSet<SocketAddr> = (0..64)
            .map(|_| Issuers::new(Vec::new()).rank(replicas.clone())[0])
            .collect();
        assert_eq!(firsts.len(), 3, "64 agents all started on {firsts:?}");
    }

    #[tokio::test]
    async fn every_configured_name_is_resolved() {
        // names from /etc/hosts only: a test sends nothing past loopback
        let issuers = Issuers::new(vec!["127.0.0.1:8081".into(), "localhost:8082".into()]);
        let candidates = issuers.candidates().await;
        assert!(candidates.contains(&addr("127.0.0.1:8081")));
        assert!(candidates.iter().any(|a| a.port() == 8082));
        assert!(candidates.iter().all(|a| a.ip().is_loopback()));
    }
}
