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
use crate::locks::lock;
use crate::metrics::{Histogram, RECORDS, SECONDS};
use std::sync::Arc;
use std::sync::Mutex;
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
    commits: Arc<Mutex<Commits>>,
}

/// How the writes went: each batch's commit time (retries included) and
/// size, for `/metrics`. Updated once per batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Commits {
    pub seconds: Histogram,
    pub records: Histogram,
    /// Writes the store refused (each retried until it took them).
    pub failures: u64,
}

impl<E: Send + 'static> Journal<E> {
    /// Start the writer thread for `store`; released events go to `observer`.
    pub fn start(store: Arc<dyn Store>, observer: Option<mpsc::UnboundedSender<E>>) -> std::io::Result<Self> {
        let (items, queue) = mpsc::unbounded_channel();
        let observed = observer.is_some();
        let commits = Arc::new(Mutex::new(Commits {
            seconds: Histogram::new(&SECONDS),
            records: Histogram::new(&RECORDS),
            failures: 0,
        }));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("store-journal".into())
            .spawn(move || write_loop(store.as_ref(), queue, observer, &counted))?;
        Ok(Self { items, observed, commits })
    }

    /// The writes so far.
    pub fn commits(&self) -> Commits {
        lock(&self.commits).clone()
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
    commits: &Mutex<Commits>,
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
        if !records.is_empty() {
            let started = std::time::Instant::now();
            let failures = write_until_stored(store, &records);
            let mut commits = lock(commits);
            commits.seconds.observe(started.elapsed().as_secs_f64());
            commits.records.observe(records.len() as f64);
            commits.failures += u64::from(failures);
        }
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

/// Write `records`, retrying until the store takes them; how often it
/// failed first.
fn write_until_stored(store: &dyn Store, records: &[crate::store::Record]) -> u32 {
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
    failures
}
