//! The full listing (`GET /api/some_models/` without paging), kept as the bytes last sent for
//! as long as the table has not changed: PostgreSQL notifies every committed change (see
//! `db::changes`), whoever makes it. Listings over [`MAX_CACHED_BYTES`] are never kept.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;

use crate::db::changes::TableVersion;

/// Largest listing kept in memory; larger ones are streamed from PostgreSQL every time.
pub const MAX_CACHED_BYTES: usize = 4 * 1024 * 1024;

/// The last full listing and the table generation it was read at.
pub struct ListingCache {
    version: Arc<TableVersion>,
    cached: Mutex<Option<(u64, Bytes)>>,
    /// Whether a response is copying its body for the cache: one at a time, so a burst of
    /// requests after a change holds one extra copy in memory, not one each.
    filling: AtomicBool,
}

/// The right to fill the cache, held by one response at a time; released when dropped.
pub struct FillPermit(Arc<ListingCache>);

impl FillPermit {
    /// Keeps `body`, read at `generation` (taken before the query started), unless the table
    /// has changed since.
    pub fn store(self, generation: u64, body: Bytes) {
        self.0.store(generation, body);
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        self.0.filling.store(false, Ordering::Release);
    }
}

impl ListingCache {
    pub fn new(version: Arc<TableVersion>) -> Self {
        Self {
            version,
            cached: Mutex::new(None),
            filling: AtomicBool::new(false),
        }
    }

    /// The right to fill the cache, unless another response holds it.
    pub fn try_fill(self: &Arc<Self>) -> Option<FillPermit> {
        self.filling
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then(|| FillPermit(Arc::clone(self)))
    }

    /// The table generation now, counting every change committed before this call; `None`
    /// while changes cannot be heard.
    pub async fn generation(&self, timeout: Duration) -> Option<u64> {
        self.version.synced(timeout).await
    }

    /// The cached listing, if it was read at `generation` (from [`generation`](Self::generation)).
    pub fn get(&self, generation: u64) -> Option<Bytes> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((at, body)) if *at == generation => Some(body.clone()),
            _ => None,
        }
    }

    fn store(&self, generation: u64, body: Bytes) {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if self.version.current() == Some(generation) {
            *cached = Some((generation, body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_response_at_a_time_fills_the_cache() {
        let cache = Arc::new(ListingCache::new(Arc::new(TableVersion::default())));
        let first = cache.try_fill().expect("the first asker gets the permit");
        assert!(
            cache.try_fill().is_none(),
            "a second one streams without copying"
        );
        drop(first);
        assert!(
            cache.try_fill().is_some(),
            "the permit is back once released"
        );
    }

    #[test]
    fn nothing_is_served_while_changes_cannot_be_heard() {
        // A version whose listener never connected: no generation, so nothing is current.
        let version = Arc::new(TableVersion::default());
        assert_eq!(version.current(), None);
        let cache = Arc::new(ListingCache::new(version));
        cache
            .try_fill()
            .unwrap()
            .store(0, Bytes::from_static(b"[]"));
        assert_eq!(cache.get(0), None, "not stored without a live listener");
    }
}
