//! The full listing (`GET /api/some_models/` without paging), kept as the bytes last sent for
//! as long as the table has not changed: PostgreSQL notifies every committed change (see
//! `db::changes`), whoever makes it. Listings over [`MAX_CACHED_BYTES`] are never kept.

use std::{
    sync::{Arc, Mutex},
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
}

impl ListingCache {
    pub fn new(version: Arc<TableVersion>) -> Self {
        Self {
            version,
            cached: Mutex::new(None),
        }
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

    /// Keeps `body`, read at `generation` (taken before the query started), unless the table
    /// has changed since.
    pub fn store(&self, generation: u64, body: Bytes) {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if self.version.current() == Some(generation) {
            *cached = Some((generation, body));
        }
    }
}
