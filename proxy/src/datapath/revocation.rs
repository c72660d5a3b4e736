//! Connections judged once (TCP; an upgraded WebSocket) that a later change
//! closes: a policy change that no longer allows them, or a trust change (a
//! federation ended, `federatesWith` changed) that no longer trusts their peer,
//! as ztunnel closes connections a new policy denies.
//!
//! One watcher per node walks the live connections on each change, as ztunnel's
//! connection manager does. A watcher per connection (two watch subscriptions and
//! the request, in a future that lived as long as the connection) cost 3.2 KB of
//! each idle inbound connection's 8.4 (benches/README.md); an entry here is the
//! request and two pointers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use meshward_policy::{PolicySet, Request};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::admit::{self, Held};
use super::policies::Policies;
use super::refusal::Refusal;
use super::state::{LocalPod, MeshState};
use super::stream::{CustomApproval, InboundStream, Peer};
use crate::metrics;

pub(crate) struct Revocations {
    /// Boxed: a table sized for a peak of entries keeps its slots, and a slot
    /// holding the request itself was 550 bytes.
    live: Mutex<HashMap<u64, Box<Watched>>>,
    next_id: AtomicU64,
    policies: Policies,
    state: watch::Receiver<Arc<MeshState>>,
}

/// One live connection, as it was judged.
struct Watched {
    pod: Arc<LocalPod>,
    peer: Option<Arc<Peer>>,
    request: Request,
    /// The CUSTOM policy whose provider allowed it when it opened.
    approved_by: Option<CustomApproval>,
    close: oneshot::Sender<Refusal>,
}

impl Watched {
    /// Why the connection must close under `set` and `state`, if it must: the
    /// admission step's rules, the provider's answer at opening standing for it.
    fn judge(&self, set: &PolicySet, state: &MeshState) -> Option<Refusal> {
        let held = Held {
            workload: &self.pod.workload,
            peer: self.peer.as_deref(),
            request: &self.request,
            approved_by: self.approved_by.as_ref(),
        };
        admit::rejudge(set, state, &held).err()
    }
}

impl Revocations {
    /// Starts the node's watcher, which lives as long as the returned handle.
    pub(crate) fn start(policies: Policies, state: watch::Receiver<Arc<MeshState>>) -> Arc<Self> {
        let revocations = Arc::new(Self {
            live: Mutex::default(),
            next_id: AtomicU64::new(0),
            policies: policies.clone(),
            state: state.clone(),
        });
        tokio::spawn(follow(Arc::downgrade(&revocations), policies, state));
        revocations
    }

    /// Watches the connection of `stream` that `request` opened, allowed by the
    /// provider of `approved_by` if a CUSTOM policy matched. Judged once more now,
    /// so a change between its authorization and this call is not missed.
    pub(crate) fn watch(
        self: &Arc<Self>,
        stream: &InboundStream,
        request: Request,
        approved_by: Option<CustomApproval>,
    ) -> Revoked {
        let (close, reason) = oneshot::channel();
        let watched = Box::new(Watched {
            pod: stream.pod.clone(),
            peer: stream.peer.clone(),
            request,
            approved_by,
            close,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let set = self.policies.borrow().clone();
        let state = self.state.borrow().clone();
        match watched.judge(&set, &state) {
            Some(why) => {
                metrics::connection_revoked();
                let _ = watched.close.send(why);
            }
            None => {
                self.live.lock().insert(id, watched);
            }
        }
        Revoked {
            id,
            revocations: Arc::downgrade(self),
            reason: Some(reason),
        }
    }

    fn judge_all(&self, set: &PolicySet, state: &MeshState) {
        let mut live = self.live.lock();
        let closing: Vec<(u64, Refusal)> = live
            .iter()
            .filter_map(|(id, watched)| Some((*id, watched.judge(set, state)?)))
            .collect();
        for (id, why) in closing {
            if let Some(watched) = live.remove(&id) {
                metrics::connection_revoked();
                let _ = watched.close.send(why);
            }
        }
    }
}

/// Judges every live connection again on each policy or trust change.
async fn follow(
    revocations: Weak<Revocations>,
    mut policies: Policies,
    mut state: watch::Receiver<Arc<MeshState>>,
) {
    // a source gone with the data path changes nothing any more
    let (mut policies_open, mut state_open) = (true, true);
    while policies_open || state_open {
        tokio::select! {
            changed = policies.changed(), if policies_open => policies_open = changed.is_ok(),
            changed = state.changed(), if state_open => state_open = changed.is_ok(),
        }
        let Some(revocations) = revocations.upgrade() else {
            return;
        };
        let set = policies.borrow_and_update().clone();
        let now = state.borrow_and_update().clone();
        revocations.judge_all(&set, &now);
    }
}

/// Resolves, with the reason, once a change closes the connection; never
/// otherwise. Dropped, the connection is no longer watched.
pub(crate) struct Revoked {
    id: u64,
    revocations: Weak<Revocations>,
    /// `None` once the watcher is gone (never polled again).
    reason: Option<oneshot::Receiver<Refusal>>,
}

impl Future for Revoked {
    type Output = Refusal;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Refusal> {
        let Some(reason) = self.reason.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(reason).poll(cx) {
            Poll::Ready(Ok(why)) => Poll::Ready(why),
            Poll::Ready(Err(_)) => {
                // the watcher is gone with the data path: nothing closes it now
                self.reason = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Revoked {
    fn drop(&mut self) {
        if let Some(revocations) = self.revocations.upgrade() {
            let mut live = revocations.live.lock();
            live.remove(&self.id);
            release_slack(&mut live);
        }
    }
}

/// Below this many slots the table of live connections is not shrunk.
const MIN_CAPACITY: usize = 64;

/// A table grown by a burst of connections gives its memory back once most are
/// gone (10,000 held connections left megabytes of empty slots): shrunk to
/// twice its entries at a quarter full, so each removal costs constant time on
/// average.
fn release_slack<K: std::hash::Hash + Eq, V>(table: &mut HashMap<K, V>) {
    if table.capacity() > MIN_CAPACITY && table.len() * 4 < table.capacity() {
        table.shrink_to((table.len() * 2).max(MIN_CAPACITY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_emptied_after_a_burst_gives_its_slots_back() {
        let mut table: HashMap<u64, [u8; 256]> = (0..10_000).map(|id| (id, [0; 256])).collect();
        let grown = table.capacity();
        for id in 0..10_000 {
            table.remove(&id);
            release_slack(&mut table);
        }
        assert!(grown >= 10_000);
        assert!(table.capacity() <= 2 * MIN_CAPACITY, "{}", table.capacity());
        // and a table at work is left alone (compared after the removal: a
        // removal that leaves a tombstone takes one from `capacity()` itself,
        // as the per-process hash seed decides)
        let mut table: HashMap<u64, u8> = (0..1_000).map(|id| (id, 0)).collect();
        table.remove(&0);
        let capacity = table.capacity();
        release_slack(&mut table);
        assert_eq!(table.capacity(), capacity);
    }
}
