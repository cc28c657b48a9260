//! Each token's share of what the host holds for all of them: event
//! streams open, and requests that build a report at once. What one token
//! holds is counted per token name, so that one client cannot take all of
//! a capacity the others need. This module counts and refuses; the routes
//! decide what a refusal answers.

use crate::auth::Caller;
use crate::locks::lock;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Event streams one client token may have open at once (`max_streams_per_token`).
pub const DEFAULT_STREAMS_PER_TOKEN: usize = 100;
/// Workflows one client token may have running (`max_workflows_per_token`;
/// the engine counts them).
pub const DEFAULT_WORKFLOWS_PER_TOKEN: usize = 1000;
/// Schedules one client token may keep (`max_schedules_per_token`).
pub const DEFAULT_SCHEDULES_PER_TOKEN: usize = 100;

/// Requests that build an answer at once (a report from the store, say),
/// of one Socket.IO socket or of one token over HTTP; the rest wait their
/// turn. Without it, 400 queued requests for a 10 MB report built 400
/// reports side by side.
pub const REQUESTS_AT_ONCE: usize = 4;

/// How many places each key (a token's name, a peer's address) holds,
/// each key at most a quota.
pub struct PerKey<K: Eq + Hash>(Arc<Mutex<HashMap<K, usize>>>);

impl<K: Eq + Hash> Default for PerKey<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

/// One place of a key, given back when dropped.
pub struct Place<K: Eq + Hash> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash> Drop for Place<K> {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl<K: Eq + Hash + Clone> PerKey<K> {
    /// One more place for `key`, unless it holds `quota` already.
    pub fn take(&self, key: &K, quota: usize) -> Option<Place<K>> {
        let mut counts = lock(&self.0);
        let count = counts.entry(key.clone()).or_default();
        if *count >= quota {
            return None;
        }
        *count += 1;
        Some(Place { counts: self.0.clone(), key: key.clone() })
    }
}

/// Where the shares of several hosts are counted together (the hosts of
/// a cluster), so that a token's quota holds across all of them rather
/// than on each.
pub trait Pool: Send + Sync {
    /// One more for `token`, unless the hosts hold `quota` for it (false);
    /// an error says why it could not be counted.
    fn take(&self, token: &str, quota: usize) -> Result<bool, String>;
    /// Give one of `token`'s back.
    fn give_back(&self, token: &str);
}

/// How many of something each token holds, up to a quota; admins are
/// held to the host's own limit only.
pub struct Shares {
    /// What is shared, for messages ("event streams").
    what: &'static str,
    /// The setting that sets the quota.
    setting: &'static str,
    quota: usize,
    held: PerKey<String>,
    /// With a cluster: where all hosts' shares are counted.
    pool: Option<Arc<dyn Pool>>,
}

/// One token's share, given back when dropped (to the pool too, if any).
pub struct Share {
    _place: Place<String>,
    pooled: Option<(Arc<dyn Pool>, String)>,
}

impl Drop for Share {
    fn drop(&mut self) {
        let Some((pool, token)) = self.pooled.take() else { return };
        // The pool is a store's: not on an async thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || pool.give_back(&token))),
            Err(_) => pool.give_back(&token),
        }
    }
}

impl Shares {
    pub fn new(what: &'static str, setting: &'static str, quota: usize, pool: Option<Arc<dyn Pool>>) -> Self {
        Self { what, setting, quota, held: PerKey::default(), pool }
    }

    /// One more share for `caller` (none is needed by an admin), or why not.
    pub async fn take(&self, caller: &Caller) -> Result<Option<Share>, String> {
        if caller.sees_all() {
            return Ok(None);
        }
        let token = caller.name().to_owned();
        let refused = |whose: &str| {
            format!(
                "token '{token}' has {} {} open{whose}, its quota ({}); close one first",
                self.quota, self.what, self.setting
            )
        };
        let Some(place) = self.held.take(&token, self.quota) else { return Err(refused("")) };
        let Some(pool) = &self.pool else { return Ok(Some(Share { _place: place, pooled: None })) };
        // The share is made where it is counted: should the request be
        // dropped meanwhile, the share is dropped there, and given back.
        let (pooled, quota) = ((pool.clone(), token.clone()), self.quota);
        let counted = tokio::task::spawn_blocking(move || match pooled.0.take(&pooled.1, quota) {
            Ok(true) => Ok(Some(Share { _place: place, pooled: Some(pooled) })),
            Ok(false) => Ok(None),
            Err(why) => Err(why),
        });
        match counted.await {
            Ok(Ok(Some(share))) => Ok(Some(share)),
            Ok(Ok(None)) => Err(refused(" on the cluster's hosts")),
            Ok(Err(why)) => Err(format!("cannot count the {} of token '{token}': {why}", self.what)),
            Err(e) => Err(format!("cannot count the {} of token '{token}': {e}", self.what)),
        }
    }
}

/// A queue per token: at most [`REQUESTS_AT_ONCE`] of its requests build
/// their answers at once, the rest wait.
#[derive(Default)]
pub struct Turns(Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>);

impl Turns {
    /// Wait for `caller`'s turn; the permit holds it until dropped.
    pub async fn wait(&self, caller: &Caller) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = lock(&self.0)
            .entry(caller.name().to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(REQUESTS_AT_ONCE)))
            .clone();
        slots.acquire_owned().await.ok()
    }
}

/// Bytes of HTTP request bodies read and parsed at once, host-wide: a
/// parsed body takes a few times its size, and eight 60 MB bodies at once
/// took 1.8 GB. Requests past it wait their turn.
pub const BODY_BYTES_AT_ONCE: usize = 128 << 20;

/// Bodies smaller than this are not counted (most requests).
const SMALL_BODY: usize = 1 << 20;

/// The host's budget of body bytes, in MiB.
pub struct BodyBytes(Arc<tokio::sync::Semaphore>);

impl Default for BodyBytes {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(BODY_BYTES_AT_ONCE >> 20)))
    }
}

impl BodyBytes {
    /// Wait until a body of `bytes` may be read; the permit holds its share.
    pub async fn hold(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if bytes < SMALL_BODY {
            return None;
        }
        let mib = u32::try_from(bytes.min(BODY_BYTES_AT_ONCE).div_ceil(1 << 20)).unwrap_or(u32::MAX);
        self.0.clone().acquire_many_owned(mib).await.ok()
    }
}
