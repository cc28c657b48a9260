//! The store as async code holds it. [`Store`] is synchronous (SQLite and
//! the Redis client block); every call from async code goes through
//! [`AsyncStore::call`], which runs it on the blocking pool and maps a pool
//! failure to a [`StoreError`] like any other, so no caller hand-rolls
//! `spawn_blocking` and its own error mapping.

use super::{Store, StoreError};
use std::sync::Arc;

/// A shared handle on one store, for async code.
#[derive(Clone)]
pub struct AsyncStore(Arc<dyn Store>);

impl AsyncStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }

    /// Where the data lives, for messages.
    pub fn target(&self) -> String {
        self.0.target()
    }

    /// The synchronous store, for the journal's own writing thread.
    pub fn sync(&self) -> &Arc<dyn Store> {
        &self.0
    }

    /// Run `call` on the store on the blocking pool; `action` names it in
    /// the error if the pool fails it (a panic, a runtime shutting down).
    pub async fn call<T: Send + 'static>(
        &self,
        action: &'static str,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || call(store.as_ref())).await.map_err(|e| StoreError::Io {
            target: self.0.target(),
            action,
            reason: e.to_string(),
        })?
    }
}
