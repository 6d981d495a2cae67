//! The CRI views of the records of one store snapshot, encoded once and sent by every list
//! until the snapshot changes.
//!
//! kubelet lists every pod and container every second, and the records rarely change between
//! two lists. Building each item's view (copying its strings and label maps), encoding it and
//! dropping it again was most of what ListPodSandbox and ListContainers cost corrald at 500
//! pods. [`corral_store::Store::list_shared`] hands out the same snapshot (`Arc`) until the next
//! write, so the views are keyed by that `Arc`: any write makes a new snapshot, and the next
//! list encodes every view again (a write per second is far rarer than the lists it saves).
//! The list responses carry the bytes as pre-encoded items (`cri_proto::lists`), so each list
//! only bumps their reference counts.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::ids::lock;

/// A store snapshot: every record of a table, in key order.
pub type Snapshot<R> = Arc<Vec<(String, R)>>;

/// The views of one snapshot's records, in the snapshot's order.
#[derive(Debug)]
pub struct Views<R, V> {
    snapshot: Snapshot<R>,
    views: Vec<V>,
}

impl<R, V> Views<R, V> {
    /// The view of the snapshot's `index`th record.
    pub fn get(&self, index: usize) -> Option<&V> {
        self.views.get(index)
    }
}

/// The views of the latest snapshot seen.
#[derive(Debug)]
pub struct ViewCache<R, V> {
    current: Mutex<Option<Arc<Views<R, V>>>>,
}

impl<R, V> Default for ViewCache<R, V> {
    fn default() -> Self {
        ViewCache {
            current: Mutex::new(None),
        }
    }
}

impl<R, V> ViewCache<R, V> {
    /// The views of `snapshot`: the cached ones when they were made from this very snapshot,
    /// else made now with `view` (under the cache's lock, so that lists racing on a new
    /// snapshot make them once) and kept.
    pub fn views(&self, snapshot: &Snapshot<R>, view: impl Fn(&R) -> V) -> Arc<Views<R, V>> {
        let mut current = lock(&self.current);
        if let Some(views) = current.as_ref() {
            if Arc::ptr_eq(&views.snapshot, snapshot) {
                return views.clone();
            }
        }
        let views = Arc::new(Views {
            snapshot: snapshot.clone(),
            views: snapshot.iter().map(|(_, record)| view(record)).collect(),
        });
        *current = Some(views.clone());
        views
    }
}

/// A message's wire bytes, as a list response's pre-encoded item.
pub fn encode(message: &impl prost::Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_made_once_per_snapshot() {
        let cache = ViewCache::default();
        let made = std::cell::Cell::new(0);
        let view = |r: &u32| {
            made.set(made.get() + 1);
            r * 10
        };
        let first: Snapshot<u32> = Arc::new(vec![("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(cache.views(&first, view).get(1), Some(&20));
        assert_eq!(cache.views(&first, view).get(0), Some(&10));
        assert_eq!(made.get(), 2, "the second list reused the views");
        // Equal content, but a new snapshot (after a write): made again.
        let second: Snapshot<u32> = Arc::new(vec![("a".into(), 1), ("b".into(), 3)]);
        assert_eq!(cache.views(&second, view).get(1), Some(&30));
        assert_eq!(made.get(), 4);
        assert_eq!(cache.views(&second, view).get(2), None);
    }
}
