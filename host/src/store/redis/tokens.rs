//! The tokens the hosts of a cluster share: `gleitzeit token create
//! --store redis://…` adds one to the `tokens` hash (name → the token's
//! entry: role, protocols and the SHA-256 of its secret, never the secret),
//! and every host reads the hash each beat of its lease, so a token made
//! or revoked anywhere holds on every host within a beat.

use super::{RedisStore, key};
use crate::auth::TokenEntry;
use crate::store::StoreError;

fn tokens() -> String {
    key(&["tokens"])
}

/// The cluster's tokens in a store.
pub struct SharedTokens {
    store: RedisStore,
}

impl SharedTokens {
    /// The tokens of the cluster using the Redis at `url`; a store no
    /// cluster uses is refused (a single host's tokens are in its data
    /// directory).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let store = RedisStore::open_unlocked(url)?;
        let layout: Option<String> =
            store.with("read the cluster layout", |c| redis::Commands::get(c, key(&["cluster"])))?;
        if layout.is_none() {
            return Err(StoreError::Open {
                target: url.to_owned(),
                reason: "no cluster uses it (a single host's tokens are in its data directory: drop --store)".into(),
            });
        }
        Ok(Self { store })
    }

    /// Every shared token.
    pub fn list(&self) -> Result<Vec<TokenEntry>, StoreError> {
        read(&self.store)
    }
}

/// Every shared token in `store`; one that cannot be read is left out,
/// saying so.
pub(super) fn read(store: &RedisStore) -> Result<Vec<TokenEntry>, StoreError> {
    let stored: std::collections::HashMap<String, String> =
        store.read("read the shared tokens", |c| redis::Commands::hgetall(c, tokens()))?;
    let mut entries: Vec<TokenEntry> = stored
        .into_iter()
        .filter_map(|(name, text)| match serde_json::from_str(&text) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(token = %name, "a shared token cannot be read: {e}");
                None
            }
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

impl SharedTokens {
    /// Add `entry`; false if a token of its name exists.
    pub fn add(&self, entry: &TokenEntry) -> Result<bool, StoreError> {
        let text = serde_json::to_string(entry).unwrap_or_default();
        self.store.with("add a shared token", |c| redis::Commands::hset_nx(c, tokens(), &entry.name, text))
    }

    /// Remove the token `name`; false if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        self.store.with("revoke a shared token", |c| redis::Commands::hdel(c, tokens(), name))
    }
}
