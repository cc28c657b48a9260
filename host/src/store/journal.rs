//! The journal: the engine's outcomes on their way out, written down first.
//!
//! The engine pushes [`Item`]s in the order things happen: records to store,
//! and what depends on them (events for clients, the acknowledgement of a
//! submission, a finished report), each in its workflow's lane. A writer
//! thread takes what is queued, writes the records in one batch (group
//! commit: the busier the engine, the bigger the batches), and only then
//! releases the rest, in each lane's order. So nothing is acknowledged or
//! reported before it is stored, and the engine itself never waits on the
//! disk or the network. Each batch takes a slice of every lane in turn, so
//! a workflow with hundreds of megabytes to write does not hold up the
//! others' acknowledgements: they go in the next batch beside its slice.
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
use std::collections::{HashMap, VecDeque};
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
    items: mpsc::UnboundedSender<(Option<String>, Item<E>)>,
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

    /// Hand `item` over in `lane` (a workflow's id): it is written, or
    /// released, after what was pushed before it in that lane. Without a
    /// lane, after everything pushed before it.
    pub fn push(&self, lane: Option<String>, item: Item<E>) {
        // The writer only stops when every sender is gone.
        let _ = self.items.send((lane, item));
    }
}

fn write_loop<E>(
    writer: &Writer,
    mut queue: mpsc::UnboundedReceiver<(Option<String>, Item<E>)>,
    observer: Option<mpsc::UnboundedSender<E>>,
    commits: &Mutex<Commits>,
) {
    let mut backlog = Backlog::default();
    loop {
        if backlog.is_empty() {
            match queue.blocking_recv() {
                Some((lane, item)) => backlog.push(lane, item),
                None => return,
            }
        }
        while let Ok((lane, item)) = queue.try_recv() {
            backlog.push(lane, item);
        }
        let Batch { records, then } = backlog.next_batch();
        if !records.is_empty() {
            let started = std::time::Instant::now();
            let failures = writer.write_until_stored(&records, true);
            let mut commits = lock(commits);
            commits.seconds.observe(started.elapsed().as_secs_f64());
            commits.records.observe(records.len() as f64);
            commits.failures += u64::from(failures);
        }
        for item in then.into_iter().chain(backlog.released()) {
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

/// Most bytes (roughly, as JSON) one workflow's records add to a batch,
/// unless its next record alone is larger: a workflow writing hundreds of
/// megabytes takes its turn in slices, and the others' records go in
/// every batch beside them.
const LANE_BYTES: usize = 4 << 20;

/// What waits to be written and released: one lane per workflow, in the
/// order pushed, and the items that wait for everything pushed before
/// them (`None` lane: a listing's answer).
struct Backlog<E> {
    /// Each item with its order and, for a record, its weight.
    lanes: HashMap<String, VecDeque<(u64, usize, Item<E>)>>,
    /// Lanes with items, in turn order.
    turns: VecDeque<String>,
    barriers: VecDeque<(u64, Item<E>)>,
    next: u64,
}

impl<E> Default for Backlog<E> {
    fn default() -> Self {
        Self { lanes: HashMap::new(), turns: VecDeque::new(), barriers: VecDeque::new(), next: 0 }
    }
}

/// One batch: the records to write together, and what is released once
/// they are stored.
struct Batch<E> {
    records: Vec<Record>,
    then: Vec<Item<E>>,
}

impl<E> Backlog<E> {
    fn is_empty(&self) -> bool {
        self.turns.is_empty() && self.barriers.is_empty()
    }

    fn push(&mut self, lane: Option<String>, item: Item<E>) {
        let seq = self.next;
        self.next += 1;
        match lane {
            None => self.barriers.push_back((seq, item)),
            Some(lane) => {
                let weight = match &item {
                    Item::Record(record) => record.weight().max(1),
                    _ => 0,
                };
                // A lane with items has its turn already; a new one gets one.
                match self.lanes.get_mut(&lane) {
                    Some(queued) => queued.push_back((seq, weight, item)),
                    None => {
                        self.turns.push_back(lane.clone());
                        self.lanes.insert(lane, VecDeque::from([(seq, weight, item)]));
                    }
                }
            }
        }
    }

    /// Take each lane's next slice, in turn: its items in order, up to
    /// [`LANE_BYTES`] of records (at least one), at most [`MAX_BATCH`]
    /// records in all.
    fn next_batch(&mut self) -> Batch<E> {
        let mut batch = Batch { records: Vec::new(), then: Vec::new() };
        for _ in 0..self.turns.len() {
            if batch.records.len() >= MAX_BATCH {
                break;
            }
            let Some(lane) = self.turns.pop_front() else { break };
            let Some(queued) = self.lanes.get_mut(&lane) else { continue };
            let mut bytes = 0;
            while let Some(&(_, weight, _)) = queued.front() {
                if weight > 0 && bytes > 0 && (bytes + weight > LANE_BYTES || batch.records.len() >= MAX_BATCH) {
                    break;
                }
                bytes += weight;
                match queued.pop_front() {
                    Some((_, _, Item::Record(record))) => batch.records.push(record),
                    Some((_, _, other)) => batch.then.push(other),
                    None => break,
                }
            }
            if queued.is_empty() {
                self.lanes.remove(&lane);
            } else {
                self.turns.push_back(lane);
            }
        }
        batch
    }

    /// The barrier items everything before which has been released.
    fn released(&mut self) -> Vec<Item<E>> {
        let oldest = self.lanes.values().filter_map(|queued| queued.front().map(|(seq, _, _)| *seq)).min();
        let mut released = Vec::new();
        while self.barriers.front().is_some_and(|(seq, _)| oldest.is_none_or(|oldest| *seq < oldest)) {
            released.extend(self.barriers.pop_front().map(|(_, item)| item));
        }
        released
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskStatus;
    use crate::store::TaskRecord;

    fn record(workflow_id: &str, bytes: usize) -> Item<&'static str> {
        Item::Record(Record::Task(Box::new(TaskRecord {
            workflow_id: workflow_id.into(),
            task_id: "t".into(),
            status: TaskStatus::Completed,
            attempts: 1,
            started_at: None,
            finished_at: None,
            result: Some(serde_json::Value::String("x".repeat(bytes))),
            error: None,
            retry_at: None,
            params: None,
            history: Vec::new(),
            items: None,
            taken_from: None,
        })))
    }

    fn events(items: Vec<Item<&'static str>>) -> Vec<&'static str> {
        items.into_iter().filter_map(|item| if let Item::Event(e) = item { Some(e) } else { None }).collect()
    }

    /// A workflow with 25 MB to write, then another's small record and
    /// its acknowledgement: the acknowledgement goes out after the first
    /// batch, beside a 4 MB slice of the large one. A listing's answer
    /// (no lane) waits for everything pushed before it.
    #[test]
    fn each_workflow_takes_its_turn_and_a_barrier_waits_for_all() {
        let mut backlog = Backlog::default();
        for _ in 0..100 {
            backlog.push(Some("big".into()), record("big", 256 << 10));
        }
        backlog.push(Some("big".into()), Item::Event("big done"));
        backlog.push(Some("small".into()), record("small", 10));
        backlog.push(Some("small".into()), Item::Event("small acknowledged"));
        backlog.push(None, Item::Event("listed"));
        let first = backlog.next_batch();
        assert!(first.records.len() <= 17, "{} records", first.records.len());
        assert_eq!(events(first.then), ["small acknowledged"]);
        assert!(backlog.released().is_empty(), "the listing waits for the large workflow");
        let mut later = Vec::new();
        let mut batches = 1;
        while !backlog.is_empty() {
            later.extend(events(backlog.next_batch().then));
            later.extend(events(backlog.released()));
            batches += 1;
        }
        assert_eq!(later, ["big done", "listed"]);
        assert!(batches >= 6, "the large workflow is written in slices ({batches} batches)");
    }
}
