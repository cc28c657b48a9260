//! The journal: the engine's outcomes on their way out, written down first.
//!
//! The engine pushes [`Item`]s in the order things happen: records to store,
//! and what depends on them (events for clients, the acknowledgement of a
//! submission, a finished report). A writer thread takes everything queued
//! at once, writes the records in one batch (group commit: the busier the
//! engine, the bigger the batches), and only then releases the rest, in
//! order. So nothing is acknowledged or reported before it is stored, and
//! the engine itself never waits on the disk or the network.
//!
//! If a write fails (a full disk, Redis gone), the writer logs it and tries
//! the same batch again with growing pauses; what depends on it waits. The
//! engine goes on meanwhile and its later items queue up behind.

use super::{Record, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Records per write at most: bounds one transaction's size and latency.
const MAX_BATCH: usize = 8192;
/// Pauses between attempts of a failed write: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One thing the engine hands over.
pub enum Item<E> {
    Record(Record),
    /// Sent to the observer once everything before it is stored.
    Event(E),
    /// Run once everything before it is stored.
    Then(Box<dyn FnOnce() + Send>),
}

/// The engine's end of the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal<E> {
    items: mpsc::UnboundedSender<Item<E>>,
    observed: bool,
}

impl<E: Send + 'static> Journal<E> {
    /// Start the writer thread for `store`; released events go to `observer`.
    pub fn start(store: Arc<dyn Store>, observer: Option<mpsc::UnboundedSender<E>>) -> std::io::Result<Self> {
        let (items, queue) = mpsc::unbounded_channel();
        let observed = observer.is_some();
        std::thread::Builder::new()
            .name("store-journal".into())
            .spawn(move || write_loop(store.as_ref(), queue, observer))?;
        Ok(Self { items, observed })
    }

    /// Whether anyone receives events (if not, do not bother making them).
    pub fn observed(&self) -> bool {
        self.observed
    }

    pub fn push(&self, item: Item<E>) {
        // The writer only stops when every sender is gone.
        let _ = self.items.send(item);
    }
}

fn write_loop<E>(
    store: &dyn Store,
    mut queue: mpsc::UnboundedReceiver<Item<E>>,
    observer: Option<mpsc::UnboundedSender<E>>,
) {
    let mut items = Vec::with_capacity(1024);
    let mut records = Vec::with_capacity(1024);
    while let Some(first) = queue.blocking_recv() {
        // Take everything queued now (up to a batch of records).
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Record(record) => records.push(record),
                other => items.push(other),
            }
            if records.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        write_until_stored(store, &records);
        records.clear();
        for item in items.drain(..) {
            match item {
                Item::Event(event) => {
                    if let Some(observer) = &observer {
                        let _ = observer.send(event);
                    }
                }
                Item::Then(then) => then(),
                Item::Record(_) => {}
            }
        }
    }
}

/// Write `records`, retrying until the store takes them.
fn write_until_stored(store: &dyn Store, records: &[crate::store::Record]) {
    if records.is_empty() {
        return;
    }
    let mut pause = RETRY_FIRST;
    let mut failures = 0u32;
    while let Err(e) = store.write(records) {
        failures += 1;
        tracing::error!(
            "{e}; {} records wait (attempt {failures}); nothing that depends on them is reported until they are stored",
            records.len()
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
    }
    if failures > 0 {
        tracing::warn!("the store {} took the waiting records after {failures} failed attempts", store.target());
    }
}
