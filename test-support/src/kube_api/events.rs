//! The fake API's watches: each open watch with what it asked for, and a window
//! of recent events that a watch starting from an older `resourceVersion` gets
//! replayed first, like the API server (a client that lists and then watches must
//! not lose what changed in between).

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

/// Events kept for replay.
const HISTORY: usize = 256;

/// What a change is about, so it reaches only the watches that asked for it.
#[derive(Debug, Clone)]
pub(super) enum Topic {
    /// A pod, with the node it runs on (watches may filter on `spec.nodeName`).
    Pod { node: String },
    /// An object of another resource (`authorizationpolicies`, `services`, ...).
    Object { plural: String },
}

/// What one open watch asked for.
#[derive(Debug, Clone)]
pub(super) enum WatchFilter {
    Pods { node: Option<String> },
    Objects { plural: String },
}

impl WatchFilter {
    fn wants(&self, topic: &Topic) -> bool {
        match (self, topic) {
            (Self::Pods { node: filter }, Topic::Pod { node }) => {
                filter.as_ref().is_none_or(|f| f == node)
            }
            (Self::Objects { plural: watched }, Topic::Object { plural }) => watched == plural,
            _ => false,
        }
    }
}

#[derive(Default)]
pub(super) struct EventLog {
    /// The last `HISTORY` events: resourceVersion, topic, event line.
    history: VecDeque<(u64, Topic, Bytes)>,
    /// Open watches and where to send their event lines.
    watches: Vec<(WatchFilter, mpsc::Sender<Bytes>)>,
}

impl EventLog {
    /// Sends an event (at `version`) to every open watch that wants it; a watch
    /// whose client is gone or stuck is dropped.
    pub(super) fn publish(&mut self, version: u64, topic: Topic, event: &Value) {
        let line = Bytes::from(format!("{event}\n"));
        self.watches
            .retain(|(filter, tx)| !filter.wants(&topic) || tx.try_send(line.clone()).is_ok());
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((version, topic, line));
    }

    /// Opens a watch; it first replays the kept events newer than `since` (the
    /// list's resourceVersion).
    pub(super) fn open_watch(
        &mut self,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel::<Bytes>(HISTORY + 64);
        if let Some(since) = since.filter(|v| *v > 0) {
            for (_, _, line) in self
                .history
                .iter()
                .filter(|(version, topic, _)| *version > since && filter.wants(topic))
            {
                let _ = tx.try_send(line.clone());
            }
        }
        self.watches.push((filter, tx));
        rx
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policies() -> Topic {
        Topic::Object {
            plural: "authorizationpolicies".into(),
        }
    }

    /// A client lists at version N, then opens its watch: what changed in between
    /// must reach it, or watchers built on list + watch race (as one CI run showed).
    #[test]
    fn a_watch_replays_what_changed_since_its_resource_version() {
        let mut log = EventLog::default();
        log.publish(1, policies(), &json!({"name": "listed"}));
        log.publish(2, policies(), &json!({"name": "in-between"}));
        let other = Topic::Object {
            plural: "clusterspiffeids".into(),
        };
        log.publish(3, other, &json!({"name": "other-resource"}));

        let filter = WatchFilter::Objects {
            plural: "authorizationpolicies".into(),
        };
        let mut from_list = log.open_watch(filter.clone(), Some(1));
        let mut from_now = log.open_watch(filter, None);
        let line = from_list.try_recv().expect("the change after the list");
        assert!(String::from_utf8_lossy(&line).contains("in-between"));
        assert!(
            from_list.try_recv().is_err(),
            "only that change, of that resource"
        );
        assert!(from_now.try_recv().is_err());

        log.publish(4, policies(), &json!({"name": "deleted"}));
        assert!(from_list.try_recv().is_ok() && from_now.try_recv().is_ok());
    }
}
