//! What a backend reports about its own work (group commit, the change feed) to whoever
//! watches it, e.g. the metrics module, without depending on it.

use std::sync::{Arc, OnceLock};

/// Receives a backend's internal events. Calls come from the backend's own threads and must
/// be quick (no I/O, no locks held long).
pub trait StoreObserver: Send + Sync + 'static {
    /// One flush to disk (fsync) finished after `seconds`, making `writes` writes durable at
    /// once (the group-commit batch).
    fn flushed(&self, writes: u64, seconds: f64);
    /// A watcher fell behind the change feed's buffer and was ended, missing `changes`
    /// changes.
    fn watcher_lagged(&self, changes: u64);
}

/// The observer of one store, set once (after the store is opened), shared by the parts of
/// the backend that report.
#[derive(Clone, Default)]
pub struct ObserverSlot(Arc<OnceLock<Arc<dyn StoreObserver>>>);

impl ObserverSlot {
    /// Sets the observer; false when one was already set (the first one stays).
    pub fn set(&self, observer: Arc<dyn StoreObserver>) -> bool {
        self.0.set(observer).is_ok()
    }

    pub fn get(&self) -> Option<&Arc<dyn StoreObserver>> {
        self.0.get()
    }
}
