//! A host's lease in a cluster: its id and epoch, and whether it was lost.
//! Taking and renewing it are the cluster's (`super::cluster`); every
//! write the host makes checks it (the fence).

use super::key;
use std::time::Duration;
use tokio::sync::watch;

/// This host's lease: its host id and epoch, and whether it was lost (for
/// good: a lost lease is never renewed).
pub struct Lease {
    pub host: String,
    pub epoch: u64,
    pub ttl: Duration,
    /// Why the lease was lost, once it was.
    lost: watch::Sender<Option<String>>,
}

impl Lease {
    pub(super) fn new(host: &str, epoch: u64, ttl: Duration) -> Self {
        Self { host: host.to_owned(), epoch, ttl, lost: watch::Sender::new(None) }
    }

    /// Why it was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Wakes once the lease is lost.
    pub fn watch(&self) -> watch::Receiver<Option<String>> {
        self.lost.subscribe()
    }

    pub(super) fn lose(&self, why: String) {
        tracing::error!("{why}");
        self.end(why);
    }

    /// No longer held, for `why`: writes are refused from now on.
    pub(super) fn end(&self, why: String) {
        self.lost.send_if_modified(|lost| lost.is_none() && lost.replace(why).is_none());
    }

    /// How often it is renewed, and the others' looked at.
    pub fn beat(&self) -> Duration {
        self.ttl / 3
    }
}

/// The key of `host`'s lease.
pub(super) fn lease_key(host: &str) -> String {
    key(&["lease", host])
}
