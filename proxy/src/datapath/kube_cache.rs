//! The objects of one kube-rs watcher stream, kept by `namespace/name`. The
//! watcher lists, then watches, and re-lists after errors; a re-list replaces the
//! set only once complete, so readers never see half a list.

use std::collections::BTreeMap;

use kube::Resource;
use kube::runtime::watcher::Event;

pub(super) struct ObjectCache<K> {
    /// The objects in force; `None` until the first list is complete.
    current: Option<BTreeMap<String, K>>,
    /// A list in progress.
    listing: Option<BTreeMap<String, K>>,
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
    pub(super) fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                if let Some(list) = self.listing.as_mut() {
                    list.insert(key(&object), object);
                }
                false
            }
            Event::InitDone => match self.listing.take() {
                Some(list) => {
                    self.current = Some(list);
                    true
                }
                None => false,
            },
            Event::Apply(object) => match self.current.as_mut() {
                Some(current) => {
                    current.insert(key(&object), object);
                    true
                }
                None => false,
            },
            Event::Delete(object) => self
                .current
                .as_mut()
                .is_some_and(|current| current.remove(&key(&object)).is_some()),
        }
    }

    /// The objects in force, once the first list is complete.
    pub(super) fn objects(&self) -> Option<impl Iterator<Item = &K>> {
        self.current.as_ref().map(BTreeMap::values)
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

    fn object(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn names(cache: &ObjectCache<ConfigMap>) -> Option<Vec<String>> {
        cache
            .objects()
            .map(|all| all.filter_map(|o| o.metadata.name.clone()).collect())
    }

    #[test]
    fn a_list_is_in_force_only_once_complete() {
        let mut cache = ObjectCache::default();
        assert!(
            !cache.apply(Event::Apply(object("early"))),
            "before any list"
        );
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(object("a")));
        assert_eq!(names(&cache), None);
        assert!(cache.apply(Event::InitDone));
        assert_eq!(names(&cache).unwrap(), ["a"]);

        assert!(cache.apply(Event::Apply(object("b"))));
        assert!(cache.apply(Event::Delete(object("a"))));
        assert!(!cache.apply(Event::Delete(object("a"))), "already gone");
        // a re-list keeps the old set until it is complete, then replaces it
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(object("c")));
        assert_eq!(names(&cache).unwrap(), ["b"]);
        cache.apply(Event::InitDone);
        assert_eq!(names(&cache).unwrap(), ["c"]);
    }
}
