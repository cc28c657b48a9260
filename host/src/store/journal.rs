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
//! the same batch again with growing pauses; what depends on it waits, and
//! [`StoreHealth`] says so (readiness reports it). The engine goes on
//! meanwhile and its later items queue up behind.
//!
//! A record the store refuses for what it is ([`StoreError::Refused`]: too
//! large, say) would never be taken, so it is not retried: the batch is
//! written record by record, the refused one is replaced by a small record
//! saying why ([`Record::refused`]), and the engine is told ([`Refusal`])
//! so that it ends that workflow. No other workflow's writes wait on it.

use super::{Record, Store, StoreError};
use crate::locks::lock;
use crate::metrics::{Histogram, RECORDS, SECONDS};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
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
    health: StoreHealth,
}

/// The store refused a record of this workflow for good: the engine ends it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub workflow_id: String,
    /// The task whose record it was, if it was one.
    pub task_id: Option<String>,
    pub reason: String,
}

/// Whether the store is taking writes, for readiness checks; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StoreHealth(Arc<Mutex<Option<(Instant, String)>>>);

impl StoreHealth {
    /// Why writes are failing and for how long, while they are.
    pub fn failing(&self) -> Option<String> {
        let failing = lock(&self.0);
        let (since, why) = failing.as_ref()?;
        Some(format!("failing to take writes for {} s: {why}", since.elapsed().as_secs()))
    }

    fn failed(&self, error: &StoreError) {
        let mut failing = lock(&self.0);
        let since = failing.as_ref().map_or_else(Instant::now, |(since, _)| *since);
        *failing = Some((since, error.to_string()));
    }

    fn recovered(&self) {
        *lock(&self.0) = None;
    }
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
    /// Start the writer thread for `store`; released events go to
    /// `observer`, and records the store refuses for good to `refused`.
    pub fn start(
        store: Arc<dyn Store>,
        observer: Option<mpsc::UnboundedSender<E>>,
        refused: impl Fn(Refusal) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (items, queue) = mpsc::unbounded_channel();
        let observed = observer.is_some();
        let commits = Arc::new(Mutex::new(Commits {
            seconds: Histogram::new(&SECONDS),
            records: Histogram::new(&RECORDS),
            failures: 0,
        }));
        let health = StoreHealth::default();
        let writer = Writer { store, health: health.clone(), refused: Box::new(refused) };
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("store-journal".into())
            .spawn(move || write_loop(&writer, queue, observer, &counted))?;
        Ok(Self { items, observed, commits, health })
    }

    /// Whether the store is taking writes.
    pub fn health(&self) -> StoreHealth {
        self.health.clone()
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
    writer: &Writer,
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
            let failures = writer.write_until_stored(&records, true);
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

/// The writer thread's end: the store, and whom to tell how it goes.
struct Writer {
    store: Arc<dyn Store>,
    health: StoreHealth,
    refused: Box<dyn Fn(Refusal) + Send>,
}

impl Writer {
    /// Write `records`, retrying while the store fails for a while; how
    /// often it failed first. A record it refuses for good is replaced by
    /// one saying why (if `replace`; else dropped) and not retried.
    fn write_until_stored(&self, records: &[Record], replace: bool) -> u32 {
        let mut pause = RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let error = match self.store.write(records) {
                Ok(()) => break,
                Err(error) => error,
            };
            if let StoreError::Refused { .. } = error {
                match records {
                    [record] if replace => self.write_instead(record, &error),
                    [record] => {
                        tracing::error!(workflow = %record.workflow_id(), "{error}; the record is dropped")
                    }
                    // Find the refused ones: the others are written.
                    _ => {
                        for record in records {
                            failures += self.write_until_stored(std::slice::from_ref(record), replace);
                        }
                    }
                }
                break;
            }
            failures += 1;
            self.health.failed(&error);
            tracing::error!(
                "{error}; {} records wait (attempt {failures}); nothing that depends on them is reported until they are stored",
                records.len()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_MAX);
        }
        if failures > 0 {
            self.health.recovered();
            tracing::warn!(
                "the store {} took the waiting records after {failures} failed attempts",
                self.store.target()
            );
        }
        failures
    }

    /// `record` is refused for good: tell the engine, and store a small
    /// record saying why in its place.
    fn write_instead(&self, record: &Record, why: &StoreError) {
        tracing::error!(workflow = %record.workflow_id(), "{why}; the workflow ends, failed");
        let task_id = match record {
            Record::Task(task) => Some(task.task_id.clone()),
            _ => None,
        };
        (self.refused)(Refusal { workflow_id: record.workflow_id().to_owned(), task_id, reason: why.to_string() });
        self.write_until_stored(&[record.refused(why)], false);
    }
}
