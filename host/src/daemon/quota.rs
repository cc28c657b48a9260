//! Each token's share of what the host holds for all of them: event
//! streams open, and requests that build a report at once. What one token
//! holds is counted per token name, so that one client cannot take all of
//! a capacity the others need. This module counts and refuses; the routes
//! decide what a refusal answers.

use crate::auth::Caller;
use crate::locks::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Event streams one client token may have open at once (`max_streams_per_token`).
pub const DEFAULT_STREAMS_PER_TOKEN: usize = 100;
/// Workflows one client token may have running (`max_workflows_per_token`;
/// the engine counts them).
pub const DEFAULT_WORKFLOWS_PER_TOKEN: usize = 1000;

/// Requests that build an answer at once (a report from the store, say),
/// of one Socket.IO socket or of one token over HTTP; the rest wait their
/// turn. Without it, 400 queued requests for a 10 MB report built 400
/// reports side by side.
pub const REQUESTS_AT_ONCE: usize = 4;

/// How many of something each token holds, up to a quota; admins are
/// held to the host's own limit only.
pub struct Shares {
    /// What is shared, for messages ("event streams").
    what: &'static str,
    /// The setting that sets the quota.
    setting: &'static str,
    quota: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One share, given back when dropped.
pub struct Share {
    held: Arc<Mutex<HashMap<String, usize>>>,
    token: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.token);
            }
        }
    }
}

impl Shares {
    pub fn new(what: &'static str, setting: &'static str, quota: usize) -> Self {
        Self { what, setting, quota, held: Arc::default() }
    }

    /// One more share for `caller` (none is needed by an admin), or why not.
    pub fn take(&self, caller: &Caller) -> Result<Option<Share>, String> {
        if caller.sees_all() {
            return Ok(None);
        }
        let token = caller.name().to_owned();
        let mut held = lock(&self.held);
        let count = held.entry(token.clone()).or_default();
        if *count >= self.quota {
            return Err(format!(
                "token '{token}' has {} {} open, its quota ({}); close one first",
                self.quota, self.what, self.setting
            ));
        }
        *count += 1;
        Ok(Some(Share { held: self.held.clone(), token }))
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
