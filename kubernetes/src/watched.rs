//! The one way meshward follows a kind of Kubernetes object. kube's runtime
//! watcher lists, then watches, and lists again (with backoff) whenever a watch
//! ends, fails or meets `410 Gone` after a compaction; here its objects are kept by
//! `namespace/name` and published whole after each change, once the first list is
//! complete. A new list replaces the set only once complete, so a reader never
//! sees half a list, and whatever changed while the watch was away shows in the
//! next set. Readers that keep state elsewhere (the issuer's datastore) compare
//! two sets with [`changes`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt as _;
use kube::Resource;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Every object of a kind, by `namespace/name` (`/name` for cluster-scoped kinds).
pub type Objects<K> = Arc<BTreeMap<String, Arc<K>>>;

/// The objects of one kind as they change: `None` until the first list is complete.
pub type Followed<K> = watch::Receiver<Option<Objects<K>>>;

/// Follows the objects `api` and `config` select until every receiver is dropped.
/// A failed watch is logged (`what` names the kind) and retried; the last complete
/// set stays in force meanwhile.
pub fn follow<K>(api: kube::Api<K>, config: watcher::Config, what: &'static str) -> Followed<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut cache = ObjectCache::default();
        loop {
            let changed = tokio::select! {
                () = tx.closed() => return,
                event = events.next() => match event {
                    Some(Ok(event)) => cache.apply(event),
                    Some(Err(e)) => {
                        tracing::warn!("{what} watch: {e}; retrying");
                        false
                    }
                    None => return,
                },
            };
            if changed {
                tx.send_replace(cache.current.clone());
            }
        }
    });
    rx
}

/// What differs between two sets of the same kind.
#[derive(Debug)]
pub struct Changes<'a, K> {
    /// Objects new in `now`, or changed (another `resourceVersion`).
    pub applied: Vec<&'a K>,
    /// Objects of `before` that `now` no longer has, as last seen.
    pub gone: Vec<&'a K>,
}

/// The changes from `before` to `now`; with no `before`, every object is applied.
pub fn changes<'a, K: Resource>(
    before: Option<&'a Objects<K>>,
    now: &'a Objects<K>,
) -> Changes<'a, K> {
    let version = |object: &K| object.meta().resource_version.clone();
    let unchanged = |key: &String, object: &K| {
        before
            .and_then(|b| b.get(key))
            .is_some_and(|old| version(object).is_some() && version(old) == version(object))
    };
    let applied = now
        .iter()
        .filter(|(key, object)| !unchanged(key, object))
        .map(|(_, object)| object.as_ref())
        .collect();
    let gone = before
        .into_iter()
        .flat_map(|b| b.iter())
        .filter(|(key, _)| !now.contains_key(*key))
        .map(|(_, object)| object.as_ref())
        .collect();
    Changes { applied, gone }
}

/// The watcher's events folded into the set in force.
struct ObjectCache<K> {
    /// The objects in force; `None` until the first list is complete.
    current: Option<Objects<K>>,
    /// A list in progress.
    listing: Option<BTreeMap<String, Arc<K>>>,
}

impl<K> Default for ObjectCache<K> {
    fn default() -> Self {
        Self {
            current: None,
            listing: None,
        }
    }
}

impl<K: Resource> ObjectCache<K> {
    /// Applies one event; `true` when the objects in force changed.
    fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                if let Some(list) = self.listing.as_mut() {
                    list.insert(key(&object), Arc::new(object));
                }
                false
            }
            Event::InitDone => match self.listing.take() {
                Some(list) => {
                    self.current = Some(Arc::new(list));
                    true
                }
                None => false,
            },
            Event::Apply(object) => match self.current.as_mut() {
                Some(current) => {
                    Arc::make_mut(current).insert(key(&object), Arc::new(object));
                    true
                }
                None => false,
            },
            Event::Delete(object) => self
                .current
                .as_mut()
                .is_some_and(|current| Arc::make_mut(current).remove(&key(&object)).is_some()),
        }
    }
}

fn key<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn object(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn names<'a>(objects: impl IntoIterator<Item = &'a ConfigMap>) -> Vec<String> {
        objects
            .into_iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect()
    }

    fn current(cache: &ObjectCache<ConfigMap>) -> Option<Vec<String>> {
        let current = cache.current.as_ref()?;
        Some(names(current.values().map(AsRef::as_ref)))
    }

    #[test]
    fn a_list_is_in_force_only_once_complete() {
        let mut cache = ObjectCache::default();
        assert!(
            !cache.apply(Event::Apply(object("early", "1"))),
            "before any list"
        );
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(object("a", "1")));
        assert_eq!(current(&cache), None);
        assert!(cache.apply(Event::InitDone));
        assert_eq!(current(&cache).unwrap(), ["a"]);

        assert!(cache.apply(Event::Apply(object("b", "2"))));
        assert!(cache.apply(Event::Delete(object("a", "1"))));
        assert!(
            !cache.apply(Event::Delete(object("a", "1"))),
            "already gone"
        );
        // a new list keeps the old set until it is complete, then replaces it
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(object("c", "3")));
        assert_eq!(current(&cache).unwrap(), ["b"]);
        cache.apply(Event::InitDone);
        assert_eq!(current(&cache).unwrap(), ["c"]);
    }

    #[test]
    fn changes_name_what_is_new_changed_or_gone() {
        let set = |objects: &[ConfigMap]| -> Objects<ConfigMap> {
            Arc::new(
                objects
                    .iter()
                    .map(|o| (key(o), Arc::new(o.clone())))
                    .collect(),
            )
        };
        let before = set(&[
            object("kept", "1"),
            object("edited", "1"),
            object("deleted", "1"),
        ]);
        let now = set(&[
            object("kept", "1"),
            object("edited", "2"),
            object("new", "3"),
        ]);
        let first = changes(None, &before);
        assert_eq!(names(first.applied), ["deleted", "edited", "kept"]);
        assert!(first.gone.is_empty());
        let next = changes(Some(&before), &now);
        assert_eq!(names(next.applied), ["edited", "new"]);
        assert_eq!(names(next.gone), ["deleted"]);
    }
}
