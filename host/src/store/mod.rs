//! Durable state: accepted workflows, every task's state changes (attempts,
//! results, errors, timestamps) and finished reports, so that a daemon killed
//! at any moment loses no finished result and no accepted workflow.
//!
//! [`Store`] is the one interface; [`sqlite::SqliteStore`] (the default, a
//! file in the data directory) and [`redis::RedisStore`] implement it and
//! pass one shared test suite. The engine never waits on a store: it hands
//! [`Record`]s to the [`journal`], which writes them in batches (group
//! commit) on its own thread and only then releases what depended on them
//! (the acknowledgement of a submission, events to clients, a finished
//! report). This module knows nothing of scheduling or providers. The
//! shared suite is `tests/store.rs`.

mod async_store;
pub mod journal;
pub mod redis;
pub mod sqlite;

pub use async_store::AsyncStore;

use crate::clock::{from_secs, to_secs};
use crate::listing::{ListQuery, Listed};
use crate::model::{TaskError, TaskStatus, Workflow, WorkflowStatus};
use crate::report::{Attempt, RunReport};
use crate::schedule::Schedule;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why the store failed; the message names the store and what it tried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {target}: {reason}")]
    Open { target: String, reason: String },
    #[error("the store {target} failed to {action}: {reason}")]
    Io { target: String, action: &'static str, reason: String },
    #[error("the store {target} holds data this version cannot read ({what}): {reason}")]
    Corrupt { target: String, what: String, reason: String },
    /// The store will never take this record, however often it is asked
    /// (too large, or refused for what it is): unlike `Io`, not retried.
    #[error("the store {target} refused to {action}: {reason}")]
    Refused { target: String, action: &'static str, reason: String },
}

/// One thing to write down.
#[derive(Debug, Clone)]
pub enum Record {
    /// A workflow as accepted, before its submitter is told so.
    Accepted { workflow: Box<Workflow>, submitted_at: SystemTime },
    /// A task's state after a change.
    Task(Box<TaskRecord>),
    /// A workflow ended; its report is final.
    Finished(Arc<RunReport>),
}

impl Record {
    /// The workflow it belongs to.
    pub fn workflow_id(&self) -> &str {
        match self {
            Record::Accepted { workflow, .. } => &workflow.id,
            Record::Task(task) => &task.workflow_id,
            Record::Finished(report) => &report.workflow_id,
        }
    }

    /// About how many bytes it writes: what a journal batch weighs.
    pub fn weight(&self) -> usize {
        use crate::model::json_bytes;
        const ROW: usize = 256;
        match self {
            Record::Accepted { workflow, .. } => workflow.document_bytes() + ROW,
            Record::Task(task) => {
                let result = task.result.as_ref().map_or(0, json_bytes);
                let params = task.params.as_deref().map_or(0, json_bytes);
                result + params + task.items.as_deref().map_or(0, |items| crate::model::list_bytes(items)) + ROW
            }
            Record::Finished(report) => report.tasks.len() * ROW,
        }
    }

    /// What to write instead of this record once the store has refused
    /// it for good (`why`): the task failed, or the report without the
    /// results, params and items that made it too large, or the workflow
    /// with no tasks. Small enough for any store; the engine is told to
    /// end the workflow.
    pub fn refused(&self, why: &StoreError) -> Record {
        let error =
            TaskError::new(crate::model::codes::WORKFLOW_LIMIT, format!("its record could not be stored: {why}"));
        match self {
            Record::Accepted { workflow, submitted_at } => Record::Accepted {
                workflow: Box::new(Workflow {
                    tasks: Vec::new(),
                    inputs: Vec::new(),
                    metadata: Value::Object(Default::default()),
                    schedule: None,
                    ..workflow.as_ref().clone()
                }),
                submitted_at: *submitted_at,
            },
            Record::Task(task) => Record::Task(Box::new(TaskRecord {
                status: TaskStatus::Failed,
                result: None,
                params: None,
                items: None,
                history: Vec::new(),
                error: Some(error),
                finished_at: task.finished_at.or_else(|| Some(SystemTime::now())),
                ..task.as_ref().clone()
            })),
            Record::Finished(report) => {
                let mut report = report.as_ref().clone();
                for task in &mut report.tasks {
                    (task.result, task.params, task.history) = (None, None, Vec::new());
                }
                report.status = WorkflowStatus::Failed;
                report.failure = Some(format!("{}; its results were dropped", error.message));
                Record::Finished(Arc::new(report))
            }
        }
    }
}

/// A task's last known state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub workflow_id: String,
    pub task_id: String,
    pub status: TaskStatus,
    pub attempts: u32,
    #[serde(with = "opt_time")]
    pub started_at: Option<SystemTime>,
    #[serde(with = "opt_time")]
    pub finished_at: Option<SystemTime>,
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    /// When a task waiting to be retried is due.
    #[serde(with = "opt_time")]
    pub retry_at: Option<SystemTime>,
    /// The params of its last call, kept only once it is final and only
    /// where resolving references changed them (the document has the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Arc<Value>>,
    /// Every call made for it (records stored before this field have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// For a `for_each` task once expanded: its items, so that a restart
    /// makes the same item tasks (files or results may have changed since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Arc<Vec<Value>>>,
    /// The workflow whose run gave it its outcome (a rerun keeps the
    /// completed tasks of the run it reruns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_from: Option<String>,
}

/// An unfinished workflow as the store has it, to resume after a restart.
#[derive(Debug, Clone)]
pub struct Saved {
    /// With its `owner`, which the store keeps beside the document.
    pub workflow: Workflow,
    pub submitted_at: SystemTime,
    /// The tasks that changed state at least once.
    pub tasks: Vec<TaskRecord>,
    /// Whether a client asked (on another host of a cluster) to cancel it.
    pub cancel_requested: bool,
}

/// What the store holds unfinished: workflows to resume, and those whose
/// stored state cannot be read (a corrupt row, a layout this version does
/// not know), which are set aside rather than stopping the start.
#[derive(Debug, Default)]
pub struct Unfinished {
    pub saved: Vec<Saved>,
    pub unreadable: Vec<Unreadable>,
}

/// An unfinished workflow whose stored state cannot be read.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub workflow_id: String,
    pub name: String,
    pub error: StoreError,
}

impl Unreadable {
    /// The report that closes it: failed, no task run, saying why.
    pub fn report(&self) -> RunReport {
        let mut report =
            RunReport::new(self.workflow_id.clone(), self.name.clone(), SystemTime::now(), Duration::ZERO, Vec::new());
        report.status = WorkflowStatus::Failed;
        report.failure = Some(format!(
            "set aside when the host started: {}; the stored row is kept for inspection until retention prunes it",
            self.error
        ));
        report
    }
}

/// Most rows a store looks at for one page when it filters outside its
/// index (Redis, by name or status).
pub const LIST_SCAN_LIMIT: usize = 10_000;

/// Durable storage of workflows and task states.
///
/// Implementations are synchronous: the journal calls `write` from its own
/// thread, readers call the rest from blocking tasks.
pub trait Store: Send + Sync + 'static {
    /// Where the data lives, for messages (`sqlite:/path`, `redis://host`).
    fn target(&self) -> String;

    /// Write `records` in order, all or nothing.
    fn write(&self, records: &[Record]) -> Result<(), StoreError>;

    /// Every accepted workflow that has not finished, with its tasks' states.
    fn unfinished(&self) -> Result<Unfinished, StoreError>;

    /// Whether the store holds a workflow with this id, finished or not.
    fn has(&self, workflow_id: &str) -> Result<bool, StoreError>;

    /// The unfinished workflow `workflow_id` as stored, with its tasks'
    /// states: what a host of a cluster reads of a workflow another host
    /// drives. None if the store has no such workflow unfinished.
    fn unfinished_one(&self, workflow_id: &str) -> Result<Option<Saved>, StoreError> {
        Ok(self.unfinished()?.saved.into_iter().find(|saved| saved.workflow.id == workflow_id))
    }

    /// Claim `workflow_id` for a workflow about to be accepted, in one
    /// step: granted unless the store holds a workflow under it or another
    /// claim does. This is the one answer to "is this id taken": the
    /// engine accepts only under a granted claim, and a schedule's due
    /// time is claimed by claiming its run's id (`schedule::run_id`). A
    /// claim ends when its workflow is accepted ([`Record::Accepted`]) or
    /// given back ([`Store::release`]); one left by a host that died
    /// between the two lapses (SQLite: when the store opens; Redis: after
    /// [`CLAIM_TTL`]). Leases and epochs for several hosts build on this.
    fn claim(&self, workflow_id: &str) -> Result<Claim, StoreError>;

    /// [`Store::claim`], within `quota`: refused ([`Claim::Busy`]) while
    /// the quota's owner has as many workflows running (or claimed) as it
    /// allows. A store several hosts share counts them here, across the
    /// hosts; a single host's engine counts its own, and this is `claim`.
    fn claim_within(&self, workflow_id: &str, quota: Option<Quota<'_>>) -> Result<Claim, StoreError> {
        let _ = quota;
        self.claim(workflow_id)
    }

    /// Give back the claim of `workflow_id`, whose workflow was not
    /// accepted after all (refused by a quota, the engine stopped).
    fn release(&self, workflow_id: &str) -> Result<(), StoreError>;

    /// A finished workflow's report.
    fn report(&self, workflow_id: &str) -> Result<Option<RunReport>, StoreError>;

    /// The document of workflow `workflow_id` as it was accepted, with its
    /// owner, finished or not (what a rerun starts from).
    fn document(&self, workflow_id: &str) -> Result<Option<Workflow>, StoreError>;

    /// The stored workflows (running and finished) that `query` asks for,
    /// in listing order (see `listing`). A store whose index cannot filter
    /// may return fewer than `query.limit` matches after looking at
    /// [`LIST_SCAN_LIMIT`] rows; the listing then continues after the last.
    fn list(&self, query: &ListQuery) -> Result<Listed, StoreError>;

    /// Forget workflows that finished before `before`; returns how many.
    fn prune(&self, before: SystemTime) -> Result<usize, StoreError>;

    /// Every schedule, and those whose stored form cannot be read.
    fn schedules(&self) -> Result<SavedSchedules, StoreError>;

    /// A number that changes whenever a schedule is added, replaced or
    /// removed (not when a due time is written down), for the hosts of a
    /// cluster to read the schedules again only then; none where the
    /// store keeps no such number.
    fn schedules_version(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Keep `schedule`, replacing one of the same id.
    fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError>;

    /// [`Store::put_schedule`], unless it is new and the quota's owner
    /// keeps `max` schedules already (false). A store several hosts share
    /// counts them in the same step as the write, so that two hosts adding
    /// at once cannot both pass; a single host counts its own, and this
    /// is `put_schedule`.
    fn put_schedule_within(&self, schedule: &Schedule, quota: Option<Quota<'_>>) -> Result<bool, StoreError> {
        let _ = quota;
        self.put_schedule(schedule).map(|()| true)
    }

    /// Write down `schedule` as it is after a due time was handled, only
    /// if a schedule of its id is still stored (another host of a cluster
    /// may have removed it meanwhile); false if none is.
    fn update_schedule(&self, schedule: &Schedule) -> Result<bool, StoreError>;

    /// Forget the schedule `id`; false if there was none.
    fn remove_schedule(&self, id: &str) -> Result<bool, StoreError>;

    /// The result cached under `key` (JSON), if one is kept and has not
    /// expired (see [`ResultCache`]).
    fn cached(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Keep `result` (JSON) under `key` until `expires`, within
    /// [`MAX_CACHED_RESULTS`] (the entries that expire first make room; a
    /// store may check the bound every so many results rather than at each).
    fn cache(&self, key: &str, result: &str, expires: SystemTime) -> Result<(), StoreError>;
}

/// Most results a store or a host's memory keeps cached.
pub const MAX_CACHED_RESULTS: usize = 100_000;
/// The largest result kept cached (as JSON); larger ones are not.
pub const MAX_CACHED_RESULT_BYTES: usize = 1024 * 1024;

/// Where the results of `cache: {ttl}` tasks are kept, by key (the engine
/// makes the key from the call): the store's, or without a store the
/// host's memory ([`MemoryCache`]).
pub trait ResultCache: Send + Sync {
    /// The result cached under `key`, if any is kept and unexpired.
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError>;
    /// Keep `result` under `key` until `expires`.
    fn put(&self, key: &str, result: &Value, expires: SystemTime) -> Result<(), StoreError>;
}

/// A store's cache: the results are in its `cached`/`cache`.
pub struct StoredResults(pub Arc<dyn Store>);

impl ResultCache for StoredResults {
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        Ok(decode_cached(self.0.cached(key)?))
    }

    fn put(&self, key: &str, result: &Value, expires: SystemTime) -> Result<(), StoreError> {
        let Some(text) = encode_cached(result) else { return Ok(()) };
        self.0.cache(key, &text, expires)
    }
}

/// A result as a store keeps it: JSON, none past
/// [`MAX_CACHED_RESULT_BYTES`] (it is not kept).
pub(crate) fn encode_cached(result: &Value) -> Option<String> {
    let text = result.to_string();
    (text.len() <= MAX_CACHED_RESULT_BYTES).then_some(text)
}

/// A kept result read back; one that does not parse is a miss (the call's
/// result replaces it).
pub(crate) fn decode_cached(text: Option<String>) -> Option<Value> {
    serde_json::from_str(&text?).ok()
}

/// Results cached in the host's memory (a host without a store), at most
/// [`MAX_CACHED_RESULTS`]; the entries that expire first make room.
#[derive(Default)]
pub struct MemoryCache {
    entries: std::sync::Mutex<HashMap<String, (Arc<Value>, SystemTime)>>,
}

impl ResultCache for MemoryCache {
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let entries = crate::locks::lock(&self.entries);
        let now = SystemTime::now();
        Ok(entries.get(key).filter(|(_, expires)| *expires > now).map(|(result, _)| Value::clone(result)))
    }

    fn put(&self, key: &str, result: &Value, expires: SystemTime) -> Result<(), StoreError> {
        if crate::model::json_bytes(result) > MAX_CACHED_RESULT_BYTES {
            return Ok(());
        }
        let mut entries = crate::locks::lock(&self.entries);
        if entries.len() >= MAX_CACHED_RESULTS && !entries.contains_key(key) {
            let now = SystemTime::now();
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_CACHED_RESULTS {
                let first = entries.iter().min_by_key(|(_, (_, expires))| *expires).map(|(k, _)| k.clone());
                if let Some(first) = first {
                    entries.remove(&first);
                }
            }
        }
        entries.insert(key.to_owned(), (Arc::new(result.clone()), expires));
        Ok(())
    }
}

/// What a claim of a workflow id came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id is the claimant's, until its workflow is accepted or the
    /// claim given back.
    Granted,
    /// A workflow runs under it, or another claimant is about to accept
    /// one.
    Running,
    /// A finished workflow keeps it (until retention prunes it).
    Finished,
    /// The owner has this many workflows running, its quota.
    Busy(usize),
}

/// At most `max` of something of `owner`: workflows running at once,
/// schedules kept.
#[derive(Debug, Clone, Copy)]
pub struct Quota<'o> {
    pub owner: &'o str,
    pub max: usize,
}

/// How long a claim lasts in a store shared over the network (Redis)
/// without its workflow being accepted: a host that died between the two
/// leaves the id free again after this.
pub const CLAIM_TTL: Duration = Duration::from_secs(600);

/// The schedules a store holds.
#[derive(Debug, Default)]
pub struct SavedSchedules {
    pub readable: Vec<Schedule>,
    /// Ids of schedules that cannot be read, and why.
    pub unreadable: Vec<(String, StoreError)>,
}

impl SavedSchedules {
    /// Sort rows of (id, stored text) into the readable and the rest.
    fn of(target: &str, rows: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut saved = Self::default();
        for (id, text) in rows {
            match schedule_from_json(target, &id, &text) {
                Ok(schedule) => saved.readable.push(schedule),
                Err(e) => saved.unreadable.push((id, e)),
            }
        }
        saved.readable.sort_by(|a, b| a.id().cmp(b.id()));
        saved
    }
}

/// A schedule as stored: its workflow as a document (with its `schedule`
/// block, read back through the parser) beside what the host adds.
#[derive(Serialize, Deserialize)]
struct StoredSchedule {
    owner: Option<String>,
    created_at: f64,
    last_due: Option<f64>,
    last_run: Option<String>,
    /// Absent in schedules stored before run keys: their runs keep ids
    /// without one.
    #[serde(default)]
    run_key: String,
    workflow: Value,
}

/// Whose a stored schedule is, read without the rest of it.
#[derive(Deserialize)]
pub(crate) struct ScheduleOwner {
    pub owner: Option<String>,
}

pub(crate) fn schedule_json(target: &str, schedule: &Schedule) -> Result<String, StoreError> {
    let encode = |e: serde_json::Error| StoreError::Io {
        target: target.to_owned(),
        action: "encode a schedule",
        reason: e.to_string(),
    };
    let stored = StoredSchedule {
        owner: schedule.workflow.owner.clone(),
        created_at: to_secs(schedule.created_at),
        last_due: schedule.last_due.map(to_secs),
        last_run: schedule.last_run.clone(),
        run_key: schedule.run_key.clone(),
        workflow: serde_json::to_value(schedule.document()).map_err(encode)?,
    };
    serde_json::to_string(&stored).map_err(encode)
}

fn schedule_from_json(target: &str, id: &str, text: &str) -> Result<Schedule, StoreError> {
    let what = || format!("schedule {id}");
    let mut stored: StoredSchedule = serde_json::from_str(text).map_err(|e| corrupt(target, what(), e))?;
    if let Some(block_id) = stored.workflow.get_mut("schedule").and_then(|block| block.get_mut("id")) {
        given(block_id, id);
    }
    let workflow = crate::workflow::from_value(&what(), stored.workflow).map_err(|e| corrupt(target, what(), e))?;
    let workflow = Workflow { owner: stored.owner, ..workflow };
    let mut schedule = Schedule::new(workflow, from_secs(stored.created_at))
        .ok_or_else(|| corrupt(target, what(), "its workflow has no schedule block"))?;
    if crate::ids::given_id(id) == schedule.id() {
        schedule.spec.id = id.to_owned();
    }
    if schedule.id() != id {
        return Err(corrupt(target, what(), format!("it is stored under '{id}' but names '{}'", schedule.id())));
    }
    Ok(Schedule {
        last_due: stored.last_due.map(from_secs),
        last_run: stored.last_run,
        run_key: stored.run_key,
        ..schedule
    })
}

/// A finished report as the stores keep it ([`RunReport::to_stored_json`]).
pub(crate) fn report_json(target: &str, report: &RunReport) -> Result<String, StoreError> {
    report.to_stored_json().map_err(|e| StoreError::Refused {
        target: target.to_owned(),
        action: "encode a report",
        reason: e.to_string(),
    })
}

/// A stored report, whole again: one written without its tasks' results,
/// params, calls and items ([`RunReport::to_stored_json`]) gets them back
/// from `records` (the tasks' last states, as stored) and, for params a
/// call took unchanged from the document, from `document`. One stored whole
/// (by an earlier version) is read as it is; `records` is only asked for
/// the others.
pub(crate) fn read_report(
    target: &str,
    workflow_id: &str,
    text: &str,
    records: impl FnOnce() -> Result<(Option<String>, Vec<String>), StoreError>,
) -> Result<RunReport, StoreError> {
    let what = || format!("the report of {workflow_id}");
    let mut report: RunReport = serde_json::from_str(text).map_err(|e| corrupt(target, what(), e))?;
    if !RunReport::is_stored_apart(text) {
        return Ok(report);
    }
    let (document, states) = records()?;
    let records: std::collections::HashMap<String, TaskRecord> = states
        .iter()
        .filter_map(|state| serde_json::from_str::<TaskRecord>(state).ok())
        .map(|record| (record.task_id.clone(), record))
        .collect();
    let document = document.and_then(|text| workflow_from_json(target, workflow_id, &text).ok());
    // By id: a report of 10,000 tasks looked each up in a list of 10,000.
    let by_id: std::collections::HashMap<&str, &crate::model::Task> =
        document.iter().flat_map(|d| d.tasks.iter()).map(|t| (t.id.as_str(), t)).collect();
    let documented = |id: &str| by_id.get(id).map(|t| t.params.clone());
    for task in &mut report.tasks {
        let record = records.get(&task.id);
        task.result = record.and_then(|r| r.result.clone());
        task.history = record.map(|r| r.history.clone()).unwrap_or_default();
        let own = record.and_then(|r| r.params.clone());
        let called = !task.history.is_empty();
        task.params = own.or_else(|| called.then(|| documented(task.parent.as_deref().unwrap_or(&task.id))).flatten());
        if let Some(parent) = &task.parent {
            let index = task.id.strip_prefix(parent.as_str()).and_then(|i| i.strip_prefix('[')?.strip_suffix(']'));
            let items = records.get(parent).and_then(|r| r.items.as_ref());
            task.item = index.and_then(|i| i.parse::<usize>().ok()).and_then(|i| items?.get(i).cloned());
        }
    }
    Ok(report)
}

/// Which store `--store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// No store: state lives and dies with the process.
    Memory,
    Sqlite(std::path::PathBuf),
    Redis(String),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "memory" {
            Ok(StoreSpec::Memory)
        } else if text.starts_with("redis://") || text.starts_with("rediss://") {
            Ok(StoreSpec::Redis(text.to_owned()))
        } else if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("sqlite: needs a file, e.g. sqlite:/var/lib/gleitzeit/gleitzeit.db".into());
            }
            Ok(StoreSpec::Sqlite(path.into()))
        } else {
            Err(format!("'{text}' is not a store: use memory, sqlite:PATH or redis://HOST[:PORT][/DB]"))
        }
    }
}

impl StoreSpec {
    /// Open the store, creating an empty one if there is none. A store that
    /// exists but cannot be read is an error, never replaced. `data_dir`
    /// holds this host's identity for stores shared over the network.
    pub fn open(&self, data_dir: &std::path::Path) -> Result<Option<Arc<dyn Store>>, StoreError> {
        Ok(match self {
            StoreSpec::Memory => None,
            StoreSpec::Sqlite(path) => Some(Arc::new(sqlite::SqliteStore::open(path)?)),
            StoreSpec::Redis(url) => Some(Arc::new(redis::RedisStore::open(url, HostId::claim(data_dir)?)?)),
        })
    }

    /// Open a Redis store as one host of a cluster (`--cluster`), with a
    /// lease of `lease`; other stores cannot be shared and are refused.
    pub fn open_cluster(
        &self,
        data_dir: &std::path::Path,
        lease: Duration,
    ) -> Result<redis::cluster::Cluster, StoreError> {
        match self {
            StoreSpec::Redis(url) => redis::RedisStore::open_cluster(url, HostId::claim(data_dir)?, lease),
            StoreSpec::Memory | StoreSpec::Sqlite(_) => Err(StoreError::Open {
                target: format!("{self:?}"),
                reason: "--cluster needs a store the hosts share: --store redis://HOST[:PORT][/DB]".into(),
            }),
        }
    }
}

/// Which host holds a store: an id kept in the data directory and locked
/// while the process runs. A host restarted on the same directory is the
/// same host (it takes its store back at once); a second process on that
/// directory is refused.
#[derive(Debug)]
pub struct HostId {
    pub id: String,
    /// Holds the lock until the process ends (the OS drops it on a crash).
    _file: std::fs::File,
}

impl HostId {
    pub fn claim(data_dir: &std::path::Path) -> Result<Self, StoreError> {
        let path = data_dir.join("host-id");
        let failed = |reason: String| StoreError::Open { target: path.display().to_string(), reason };
        std::fs::create_dir_all(data_dir).map_err(|e| failed(e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| failed(e.to_string()))?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => {
                failed("another process (another gleitzeit host?) is using this data directory".into())
            }
            std::fs::TryLockError::Error(e) => failed(e.to_string()),
        })?;
        let mut id = String::new();
        std::io::Read::read_to_string(&mut file, &mut id).map_err(|e| failed(e.to_string()))?;
        let id = id.trim().to_owned();
        if !id.is_empty() {
            return Ok(Self { id, _file: file });
        }
        let id = uuid::Uuid::new_v4().to_string();
        std::io::Write::write_all(&mut file, id.as_bytes()).map_err(|e| failed(e.to_string()))?;
        Ok(Self { id, _file: file })
    }
}

/// `Option<SystemTime>` as seconds since the epoch.
mod opt_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(t) => s.serialize_some(&crate::clock::to_secs(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(crate::clock::from_secs))
    }
}

/// The workflow as stored: its JSON form, read back through the parser.
pub(crate) fn workflow_json(target: &str, workflow: &Workflow) -> Result<String, StoreError> {
    serde_json::to_string(workflow).map_err(|e| StoreError::Refused {
        target: target.to_owned(),
        action: "encode a workflow",
        reason: e.to_string(),
    })
}

pub(crate) fn workflow_from_json(target: &str, id: &str, text: &str) -> Result<Workflow, StoreError> {
    let what = || format!("workflow {id}");
    let mut tree: Value = serde_json::from_str(text).map_err(|e| corrupt(target, what(), e))?;
    if let Some(document_id) = tree.get_mut("id") {
        given(document_id, id);
    }
    let workflow =
        crate::workflow::from_value(&format!("stored workflow {id}"), tree).map_err(|e| corrupt(target, what(), e))?;
    Ok(Workflow { id: id.to_owned(), ..workflow })
}

/// A client token's workflow or schedule is kept under its scoped id
/// (`TOKEN:ID`); its document is read back with the id it was given, and
/// the scoped id put back after.
fn given(document_id: &mut Value, host_id: &str) {
    if document_id.as_str() == Some(host_id) {
        *document_id = Value::String(crate::ids::given_id(host_id).to_owned());
    }
}

/// An unfinished workflow from its stored parts: the document as accepted,
/// its owner, when it was submitted, and its tasks' last states (JSON).
pub(crate) fn saved(
    target: &str,
    id: &str,
    document: &str,
    owner: Option<String>,
    submitted_at: SystemTime,
    states: &[String],
) -> Result<Saved, StoreError> {
    let workflow = Workflow { owner, ..workflow_from_json(target, id, document)? };
    let tasks = states
        .iter()
        .map(|state| serde_json::from_str(state).map_err(|e| corrupt(target, format!("a task of {id}"), e)))
        .collect::<Result<Vec<TaskRecord>, _>>()?;
    Ok(Saved { workflow, submitted_at, tasks, cancel_requested: false })
}

pub(crate) fn corrupt(target: &str, what: String, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { target: target.to_owned(), what, reason: reason.to_string() }
}
