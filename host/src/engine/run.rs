//! Run-time state of one workflow and its tasks, and the report built from it.
//!
//! A `for_each` task grows the run when it is ready: one task per item is
//! appended (`ID[0]`, `ID[1]`, …), held back until its [`Group`] lets it go
//! (the task's `max_parallel`), and the task stands for them until they have
//! all ended. Its record in the store keeps the items, so a restart makes
//! the same tasks again.

use super::budget::{Held, WorkflowLimits};
use super::conditions::ConditionCheck;
use crate::model::{
    MAX_ITEMS, RERUN_OF, Task, TaskError, TaskStatus, Workflow, WorkflowStatus, codes, json_bytes, list_bytes,
};
use crate::queue::PriorityQueue;
use crate::report::{Attempt, RunReport, TaskReport, Usage};
use crate::resolver::substitution::{self, Piece, kind, substitute};
use crate::resolver::{Dag, Root};
use crate::store::TaskRecord;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// The instant that corresponds to a wall-clock time in the past.
fn instant_of(time: SystemTime) -> Instant {
    let ago = SystemTime::now().duration_since(time).unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// Run-time state of one task.
#[derive(Debug)]
pub(super) struct TaskState {
    pub status: TaskStatus,
    /// Attempts made (a re-queued attempt whose provider vanished is not counted).
    pub attempts: u32,
    /// Times the task went back to the queue because its provider vanished.
    pub requeues: u32,
    /// Dependencies not yet completed.
    pub waiting_on: usize,
    pub started_at: Option<SystemTime>,
    pub started: Option<Instant>,
    pub finished_at: Option<SystemTime>,
    pub finished: Option<Instant>,
    /// Shared, so that a condition can read it away from the scheduler.
    pub result: Option<Arc<Value>>,
    pub error: Option<TaskError>,
    pub abort: Option<AbortHandle>,
    /// While parked with no provider for its protocol: the timer that fails
    /// the task if none comes within its timeout.
    pub provider_wait: Option<AbortHandle>,
    /// While waiting for a retry: when it is due.
    pub retry_at: Option<SystemTime>,
    /// While queued but held back (a rate limit, a concurrency key): by
    /// what, for listings.
    pub waiting_for: Option<Arc<str>>,
    /// While its call runs: the concurrency key it counts against.
    pub key: Option<Arc<str>>,
    /// Where its cache lookup is (a task with `cache`).
    pub lookup: Lookup,
    /// The workflow whose run gave it its outcome (a rerun's kept task).
    pub taken_from: Option<String>,
    /// When it last became ready (queued), for the queue-wait histogram.
    pub ready_at: Option<Instant>,
    /// The params of its last call where resolving references changed
    /// them; otherwise the document's params are the ones it got.
    pub params: Option<Arc<Value>>,
    /// Every call made for it.
    pub history: Vec<Attempt>,
    /// For a task made by a `for_each`: which item it runs for.
    pub item: Option<ItemOf>,
    /// For a task that reads a `file`: the file with its content, read just
    /// before a call that uses it and dropped after.
    pub file_read: Option<Value>,
    /// For a `for_each` task once expanded: the tasks it became.
    pub group: Option<Group>,
    /// Whether its `when` was checked (and held): retries do not ask again.
    pub condition_checked: bool,
    /// What its run holds for its resolved `params` and its `result` (and
    /// an expanded `for_each` task's items), as JSON bytes.
    pub params_bytes: usize,
    pub result_bytes: usize,
}

/// The item a task made by a `for_each` runs for.
#[derive(Debug)]
pub(super) struct ItemOf {
    /// The `for_each` task (whose group holds the items).
    pub parent: usize,
    pub index: usize,
    /// `index` as JSON, for `${item_index}`.
    pub index_value: Value,
    /// A file item with its content, read just before a call that uses it
    /// and dropped after.
    pub read: Option<Value>,
}

/// What an expanded `for_each` task keeps of the tasks it became, which
/// sit in the run from `first` on, in item order.
#[derive(Debug)]
pub(super) struct Group {
    pub items: Arc<Vec<Value>>,
    pub first: usize,
    /// Items whose tasks were let go so far (in order).
    pub released: usize,
    /// Let go and not final: what `max_parallel` counts.
    pub active: usize,
    /// Items whose tasks are final.
    pub ended: usize,
}

/// Most failed items named in the error of a `for_each` task.
const FAILED_ITEMS_NAMED: usize = 3;

/// What a report shows of a task's state beyond its status and times.
struct Shown {
    result: Option<Value>,
    error: Option<TaskError>,
    params: Option<Arc<Value>>,
    history: Vec<Attempt>,
}

impl TaskState {
    fn new(waiting_on: usize) -> Self {
        Self {
            status: TaskStatus::Pending,
            attempts: 0,
            requeues: 0,
            waiting_on,
            started_at: None,
            started: None,
            finished_at: None,
            finished: None,
            result: None,
            error: None,
            abort: None,
            provider_wait: None,
            retry_at: None,
            waiting_for: None,
            key: None,
            lookup: Lookup::NotYet,
            taken_from: None,
            ready_at: None,
            params: None,
            history: Vec::new(),
            item: None,
            file_read: None,
            group: None,
            condition_checked: false,
            params_bytes: 0,
            result_bytes: 0,
        }
    }

    fn shown(&self) -> Shown {
        Shown {
            result: self.result.as_deref().cloned(),
            error: self.error.clone(),
            params: self.params.clone(),
            history: self.history.clone(),
        }
    }

    fn take_shown(&mut self) -> Shown {
        Shown {
            result: self.result.take().map(Arc::unwrap_or_clone),
            error: self.error.take(),
            params: self.params.take(),
            history: std::mem::take(&mut self.history),
        }
    }

    /// A call starts: `attempt`, taken by `provider`.
    pub fn called(&mut self, attempt: u32, provider: &Arc<str>) {
        // Most tasks make one call: room for exactly that.
        self.history.reserve_exact(1);
        self.history.push(Attempt {
            attempt,
            provider: provider.clone(),
            started_at: SystemTime::now(),
            duration_ms: None,
            error: None,
            usage: None,
            model: None,
            cached: false,
        });
    }

    /// Attempt `attempt` was answered from the result cache, without a call.
    pub fn answered_from_cache(&mut self, attempt: u32) {
        let provider: Arc<str> = Arc::from("cache");
        self.called(attempt, &provider);
        if let Some(call) = self.history.last_mut() {
            (call.duration_ms, call.cached) = (Some(0.0), true);
        }
    }

    /// The running call ended after `took`, failing with `error` if any,
    /// having used `usage` of a model if its result said so.
    pub fn call_ended(&mut self, took: Duration, error: Option<&TaskError>, usage: Option<(Usage, Option<String>)>) {
        if let Some(call) = self.history.last_mut().filter(|call| call.duration_ms.is_none()) {
            call.duration_ms = Some(took.as_secs_f64() * 1000.0);
            call.error = error.cloned();
            (call.usage, call.model) = usage.map_or((None, None), |(usage, model)| (Some(usage), model));
        }
    }

    /// The provider of the running (or last) call.
    pub fn provider(&self) -> Option<&Arc<str>> {
        self.history.last().map(|call| &call.provider)
    }

    /// The running call will not end: it was cancelled, or the host
    /// stopped while it ran.
    pub fn call_abandoned(&mut self, error: TaskError) {
        let took = self.history.last().map(|call| call.started_at.elapsed().unwrap_or_default());
        if let Some(took) = took {
            self.call_ended(took, Some(&error), None);
        }
    }
}

/// Where a cached task's lookup is.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Lookup {
    #[default]
    NotYet,
    Running,
    /// Looked up and missed: its result is to be kept under this key (none
    /// when its call may not be cached).
    Missed(Option<String>),
}

/// Run-time state of one workflow.
pub(super) struct Run {
    pub workflow: Workflow,
    /// The workflow's owner, shared by its events.
    pub owner: Option<Arc<str>>,
    /// Each task's series in the engine's stats (see `stats`).
    pub series: Vec<usize>,
    pub tasks: Vec<TaskState>,
    /// How many of `tasks` the document lists; the rest are items' tasks.
    pub documented: usize,
    pub dependents: Vec<Vec<u32>>,
    pub index: HashMap<String, usize>,
    /// Ready tasks not yet admitted to the shared queue (`max_parallel`).
    pub ready: PriorityQueue<usize>,
    /// Tasks in the shared queue or running.
    pub admitted: usize,
    pub unfinished: usize,
    pub started_at: SystemTime,
    pub started: Instant,
    pub done: Option<oneshot::Sender<Arc<RunReport>>>,
    pub timeout: Option<AbortHandle>,
    /// Set when a client cancelled the workflow.
    pub cancelled: bool,
    /// What it holds, against its limits.
    pub held: Held,
    /// Why it ended before its tasks did (a limit), for its report.
    pub failure: Option<String>,
}

impl Run {
    pub fn new(workflow: Workflow, done: oneshot::Sender<Arc<RunReport>>) -> Self {
        let ids: Vec<&str> = workflow.tasks.iter().map(|t| t.id.as_str()).collect();
        let dag = Dag::from_ids(&ids, |t| workflow.tasks[t].dependencies.iter().map(String::as_str).collect());
        let tasks = (0..dag.len()).map(|t| TaskState::new(dag.deps(t).len())).collect();
        let index = ids.iter().enumerate().map(|(i, id)| ((*id).to_owned(), i)).collect();
        Self {
            dependents: dag.dependents(),
            documented: dag.len(),
            tasks,
            index,
            ready: PriorityQueue::default(),
            admitted: 0,
            unfinished: dag.len(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            done: Some(done),
            timeout: None,
            cancelled: false,
            held: Held::default(),
            failure: None,
            owner: workflow.owner.as_deref().map(Arc::from),
            series: Vec::new(),
            workflow,
        }
    }

    /// Hold task `t`'s resolved `params` (if resolving changed them: the
    /// document's are held already) in place of its last call's, or refuse.
    pub fn hold_params(&mut self, t: usize, params: &Arc<Value>, limits: &WorkflowLimits) -> Result<(), TaskError> {
        let state = &mut self.tasks[t];
        self.held.release(std::mem::take(&mut state.params_bytes));
        if Arc::ptr_eq(params, &self.workflow.tasks[t].params) {
            return Ok(());
        }
        let bytes = json_bytes(params.as_ref());
        let what = format!("the params of task '{}'", self.workflow.tasks[t].id);
        self.held.charge(limits, bytes, &what)?;
        self.tasks[t].params_bytes = bytes;
        Ok(())
    }

    /// Hold task `t`'s result, or refuse it (the task then fails).
    pub fn hold_result(&mut self, t: usize, result: Value, limits: &WorkflowLimits) -> Result<Value, TaskError> {
        let bytes = json_bytes(&result);
        let what = format!("the result of task '{}'", self.workflow.tasks[t].id);
        self.held.charge(limits, bytes, &what)?;
        self.tasks[t].result_bytes += bytes;
        Ok(result)
    }

    /// Hold the tasks and the items `for_each` task `t` is about to
    /// expand into, or refuse them.
    pub fn hold_items(&mut self, t: usize, items: &[Value], limits: &WorkflowLimits) -> Result<(), TaskError> {
        let id = &self.workflow.tasks[t].id;
        limits.admit_tasks(self.tasks.len(), items.len(), &format!("for_each of task '{id}'"))?;
        let bytes = list_bytes(items);
        self.held.charge(limits, bytes, &format!("the items of task '{id}'"))?;
        self.tasks[t].result_bytes += bytes;
        Ok(())
    }

    /// Which limit this run is past, if any (a workflow stored before
    /// they were lowered).
    pub fn over_limits(&self, limits: &WorkflowLimits) -> Option<TaskError> {
        let resumed = format!("resumed from the store with {} tasks", self.tasks.len());
        let tasks = limits.admit_tasks(0, self.tasks.len(), &resumed).err();
        tasks.or(limits.admit_bytes(0, self.held.bytes(), "what it held when it was resumed").err())
    }

    /// The store refused task `t`'s record: it fails without what made the
    /// record too large.
    pub fn drop_outcome(&mut self, t: usize, error: TaskError) {
        let state = &mut self.tasks[t];
        self.held.release(std::mem::take(&mut state.params_bytes) + std::mem::take(&mut state.result_bytes));
        (state.result, state.params, state.error) = (None, None, Some(error));
        if state.status == TaskStatus::Completed {
            state.status = TaskStatus::Failed;
        }
    }

    /// Tasks that can start now: pending, with every dependency completed
    /// and no retry timer running.
    pub fn ready_to_start(&self) -> Vec<usize> {
        let ready = |s: &TaskState| s.status == TaskStatus::Pending && s.waiting_on == 0 && s.retry_at.is_none();
        (0..self.tasks.len()).filter(|&t| ready(&self.tasks[t])).collect()
    }

    /// Take up the states a store recorded for this workflow: completed and
    /// other final tasks stay so; a task that was running runs again (its
    /// interrupted attempt still counts); one waiting for a retry waits for
    /// what is left of its delay, returned with the task.
    pub fn resume(&mut self, submitted_at: SystemTime, records: Vec<TaskRecord>) -> Vec<(usize, Duration)> {
        self.started_at = submitted_at;
        self.started = instant_of(submitted_at);
        // Expansions first: the records of their items name tasks that
        // exist only once the same items are expanded again.
        for record in &records {
            let Some(items) = &record.items else { continue };
            match self.index.get(&record.task_id) {
                Some(&t) if self.workflow.tasks[t].for_each.is_some() && self.tasks[t].group.is_none() => {
                    self.expand(t, items.clone())
                }
                _ => {}
            }
        }
        let mut retries = Vec::new();
        for record in records {
            let Some(&t) = self.index.get(&record.task_id) else { continue };
            let state = &mut self.tasks[t];
            state.attempts = record.attempts;
            state.started_at = record.started_at;
            state.started = record.started_at.map(instant_of);
            state.error = record.error;
            state.params_bytes = record.params.as_deref().map_or(0, json_bytes);
            let items_bytes = record.items.as_deref().map_or(0, |items| list_bytes(items));
            state.result_bytes = record.result.as_ref().map_or(0, json_bytes) + items_bytes;
            self.held.hold(state.params_bytes + state.result_bytes);
            state.params = record.params;
            state.history = record.history;
            state.taken_from = record.taken_from;
            if !record.status.is_final() {
                let stopped = "the host stopped during this call; it is made again";
                state.call_abandoned(TaskError::new(codes::SERVER_ERROR, stopped));
            }
            match record.status {
                TaskStatus::Completed => {
                    self.complete(t, record.result.unwrap_or(Value::Null));
                }
                status @ (TaskStatus::Failed | TaskStatus::Skipped | TaskStatus::Cancelled) => {
                    self.finish_task(t, status);
                }
                TaskStatus::Pending => {
                    if let Some(due) = record.retry_at {
                        state.retry_at = Some(due);
                        retries.push((t, due.duration_since(SystemTime::now()).unwrap_or_default()));
                    }
                }
                TaskStatus::Queued | TaskStatus::Running => {}
            }
            if record.status.is_final() {
                self.tasks[t].finished_at = record.finished_at;
                self.tasks[t].finished = record.finished_at.map(instant_of);
            }
        }
        for t in 0..self.tasks.len() {
            self.recount(t);
        }
        retries
    }

    /// After a restart: count what the group of `for_each` task `t` has
    /// ended and let its items' tasks go again up to its limit (the ready
    /// ones are found by `ready_to_start`).
    fn recount(&mut self, t: usize) {
        if self.tasks[t].status.is_final() {
            return;
        }
        let Some(group) = &self.tasks[t].group else { return };
        let children = group.first..group.first + group.items.len();
        let ended = self.tasks[children].iter().filter(|c| c.status.is_final()).count();
        if let Some(group) = &mut self.tasks[t].group {
            (group.released, group.active, group.ended) = (0, 0, ended);
        }
        self.release(t);
    }

    /// Expanded `for_each` tasks that are not final although all their
    /// items are (the host stopped in between).
    pub fn groups_done(&self) -> Vec<usize> {
        let done = |s: &TaskState| s.group.as_ref().is_some_and(|g| g.ended == g.items.len()) && !s.status.is_final();
        (0..self.tasks.len()).filter(|&t| done(&self.tasks[t])).collect()
    }

    /// What `root` names for task `t`: a task's result, or its item (with
    /// its file's content once read).
    pub fn value_of(&self, t: usize, root: &Root) -> Option<&Value> {
        match root {
            Root::Task(id) => self.result_of(id).map(|result| &**result),
            Root::Item => match &self.tasks[t].item {
                Some(item) => item.read.as_ref().or_else(|| self.listed_item(t)),
                None => self.tasks[t].file_read.as_ref().or_else(|| self.own_file(t)),
            },
            Root::ItemIndex => self.tasks[t].item.as_ref().map(|item| &item.index_value),
            Root::Input(name) => self.input(name).map(|value| &**value),
        }
    }

    /// The result of task `id`, if it has one.
    fn result_of(&self, id: &str) -> Option<&Arc<Value>> {
        self.index.get(id).and_then(|&i| self.tasks[i].result.as_ref())
    }

    /// The value of input `name` (bound: the one it runs with).
    fn input(&self, name: &str) -> Option<&Arc<Value>> {
        self.workflow.inputs.iter().find(|i| i.name == name).and_then(|i| i.default.as_ref())
    }

    /// Item task `t`'s item as its `for_each` task listed it.
    fn listed_item(&self, t: usize) -> Option<&Value> {
        let item = self.tasks[t].item.as_ref()?;
        self.tasks[item.parent].group.as_ref()?.items.get(item.index)
    }

    /// Task `t`'s own `file`, as `${item}` is before it is read.
    fn own_file(&self, t: usize) -> Option<&Value> {
        self.workflow.tasks[t].file.as_ref().map(|file| &file.item)
    }

    /// The files directory listing `for_each` task `t` asks for, if its
    /// items are files: the scheduler lists them off its own thread.
    pub fn files_to_list(&self, t: usize) -> Option<(String, Option<String>)> {
        let (pattern, dir) = self.workflow.tasks[t].for_each.as_ref()?.files()?;
        Some((pattern.to_owned(), dir.map(str::to_owned)))
    }

    /// The items of `for_each` task `t` that are a list (not files), with
    /// references resolved.
    pub fn items_of(&self, t: usize) -> Result<Arc<Vec<Value>>, TaskError> {
        let Some(for_each) = &self.workflow.tasks[t].for_each else { return Ok(Arc::default()) };
        let resolved = substitute(&for_each.items, |root| self.value_of(t, root))
            .map_err(|e| TaskError::new(codes::SUBSTITUTION, format!("for_each: {e}")))?;
        match Arc::unwrap_or_clone(resolved) {
            Value::Array(items) if items.len() > MAX_ITEMS => {
                Err(not_a_list(format!("{} items; the limit is {MAX_ITEMS}", items.len())))
            }
            Value::Array(items) => Ok(Arc::new(items)),
            other => Err(not_a_list(format!("'{}' gave {}, not a list of items", show(&for_each.items), kind(&other)))),
        }
    }

    /// Before task `t` (a file's item, or a task with its own `file`) is
    /// called: the file to read, if its params use `${item.text}` or
    /// `${item.base64}` and it is not read yet, as `(listed item, text,
    /// base64)`.
    pub fn file_to_read(&self, t: usize) -> Option<(Value, bool, bool)> {
        let unread = match &self.tasks[t].item {
            Some(item) if item.read.is_none() => {
                self.workflow.tasks[item.parent].for_each.as_ref()?.files()?;
                self.listed_item(t)?
            }
            Some(_) => return None,
            None if self.tasks[t].file_read.is_none() => self.own_file(t)?,
            None => return None,
        };
        let uses = |field: &str| {
            substitution::references(&self.workflow.tasks[t].params).iter().flatten().any(|r| {
                r.root == Root::Item && r.path.first() == Some(&crate::resolver::PathSegment::Key(field.into()))
            })
        };
        let (text, base64) = (uses("text"), uses("base64"));
        (text || base64).then(|| (unread.clone(), text, base64))
    }

    /// Task `t`'s file, read: `${item.…}` gives its content until the call.
    pub fn file_read(&mut self, t: usize, read: Value) {
        match &mut self.tasks[t].item {
            Some(item) => item.read = Some(read),
            None => self.tasks[t].file_read = Some(read),
        }
    }

    /// Task `t`'s params are resolved: its file's content is in them now
    /// (or the call fails), so it is not kept twice.
    pub fn drop_file_read(&mut self, t: usize) {
        if let Some(item) = &mut self.tasks[t].item {
            item.read = None;
        }
        self.tasks[t].file_read = None;
    }

    /// Turn `for_each` task `t` into one task per item, appended to the
    /// run and held back until [`Run::release`] lets them go; `t` runs
    /// (stands for them) from now on.
    pub fn expand(&mut self, t: usize, items: Arc<Vec<Value>>) {
        let first = self.tasks.len();
        let count = items.len();
        let series = self.series.get(t).copied();
        self.workflow.tasks.reserve(count);
        self.tasks.reserve(count);
        for index in 0..count {
            let task = item_task(&self.workflow.tasks[t], index);
            self.index.insert(task.id.clone(), first + index);
            self.workflow.tasks.push(task);
            let item = ItemOf { parent: t, index, index_value: json!(index), read: None };
            self.tasks.push(TaskState { item: Some(item), ..TaskState::new(1) });
            self.dependents.push(Vec::new());
            self.series.extend(series);
        }
        self.unfinished += count;
        let state = &mut self.tasks[t];
        state.status = TaskStatus::Running;
        state.started_at = Some(SystemTime::now());
        state.started = Some(Instant::now());
        state.group = Some(Group { items, first, released: 0, active: 0, ended: 0 });
    }

    /// Let the held-back item tasks of `for_each` task `t` go, in order,
    /// while its `max_parallel` allows; returns those ready to queue.
    pub fn release(&mut self, t: usize) -> Vec<usize> {
        let limit =
            (self.workflow.tasks[t].for_each.as_ref().and_then(|f| f.max_parallel)).map_or(usize::MAX, |m| m as usize);
        let Some(first) = self.tasks[t].group.as_ref().map(|g| g.first) else { return Vec::new() };
        // The group sits before its items: split so both can be changed.
        let (head, items) = self.tasks.split_at_mut(first);
        let Some(group) = head[t].group.as_mut() else { return Vec::new() };
        let mut ready = Vec::new();
        while group.active < limit && group.released < group.items.len() {
            let c = group.released;
            group.released += 1;
            let child = &mut items[c];
            if child.status.is_final() {
                continue;
            }
            group.active += 1;
            child.waiting_on = 0;
            if child.status == TaskStatus::Pending && child.retry_at.is_none() {
                ready.push(first + c);
            }
        }
        ready
    }

    /// Item task `c` is final: its `for_each` task, and whether that was
    /// the last of its items.
    pub fn item_ended(&mut self, c: usize) -> Option<(usize, bool)> {
        let parent = self.tasks[c].item.as_ref()?.parent;
        let group = self.tasks[parent].group.as_mut()?;
        group.active = group.active.saturating_sub(1);
        group.ended += 1;
        Some((parent, group.ended == group.items.len()))
    }

    /// How `for_each` task `t` ends once all its items have: their results
    /// in item order (a failed item's place says why), or a failure naming
    /// the failed items unless the task allows failures.
    pub fn group_outcome(&self, t: usize) -> Result<Value, TaskError> {
        let Some(group) = &self.tasks[t].group else { return Ok(Value::Array(Vec::new())) };
        let allowed = self.workflow.tasks[t].for_each.as_ref().is_some_and(|f| f.allow_failures);
        let children = group.first..group.first + group.items.len();
        let mut failed = Vec::new();
        let results = children
            .map(|c| match (&self.tasks[c].status, &self.tasks[c].result) {
                (TaskStatus::Completed, result) => result.as_deref().cloned().unwrap_or(Value::Null),
                (status, _) => {
                    failed.push(c);
                    json!({"failed": true, "status": status, "error": self.tasks[c].error})
                }
            })
            .collect();
        if failed.is_empty() || allowed {
            return Ok(Value::Array(results));
        }
        let named: Vec<String> = (failed.iter().take(FAILED_ITEMS_NAMED))
            .map(|&c| {
                let why = self.tasks[c].error.as_ref().map_or("no error recorded", |e| e.message.as_str());
                format!("{}: {why}", self.workflow.tasks[c].id)
            })
            .collect();
        let more = failed.len().saturating_sub(FAILED_ITEMS_NAMED);
        let more = if more > 0 { format!("; and {more} more") } else { String::new() };
        let message = format!("{} of {} items failed: {}{more}", failed.len(), group.items.len(), named.join("; "));
        Err(TaskError::new(codes::ITEMS_FAILED, message))
    }

    /// The task's state as a store keeps it.
    pub fn task_record(&self, t: usize) -> TaskRecord {
        let state = &self.tasks[t];
        TaskRecord {
            workflow_id: self.workflow.id.clone(),
            task_id: self.workflow.tasks[t].id.clone(),
            status: state.status,
            attempts: state.attempts,
            started_at: state.started_at,
            finished_at: state.finished_at,
            result: state.result.as_deref().cloned(),
            error: state.error.clone(),
            retry_at: state.retry_at,
            // Only a final state needs them: a task that was running when
            // the host stopped runs again and resolves its params again.
            // (They can be as large as the results they quote.)
            params: state.params.clone().filter(|_| state.status.is_final()),
            history: state.history.clone(),
            items: state.group.as_ref().map(|g| g.items.clone()),
            taken_from: state.taken_from.clone(),
        }
    }

    pub fn finish_task(&mut self, t: usize, status: TaskStatus) {
        let state = &mut self.tasks[t];
        state.status = status;
        state.finished_at = Some(SystemTime::now());
        state.finished = Some(Instant::now());
        self.unfinished -= 1;
    }

    /// Record a completion; returns the dependents that became ready.
    pub fn complete(&mut self, t: usize, value: Value) -> Vec<usize> {
        self.tasks[t].result = Some(Arc::new(value));
        self.tasks[t].error = None;
        self.finish_task(t, TaskStatus::Completed);
        let mut ready = Vec::new();
        for &d in &self.dependents[t] {
            let dependent = &mut self.tasks[d as usize];
            dependent.waiting_on -= 1;
            if dependent.waiting_on == 0 && dependent.status == TaskStatus::Pending {
                ready.push(d as usize);
            }
        }
        ready
    }

    /// Mark every task downstream of `failed` as skipped (iteratively);
    /// returns them.
    pub fn skip_dependents_of(&mut self, failed: usize) -> Vec<usize> {
        let message = format!("not run: dependency '{}' failed", self.workflow.tasks[failed].id);
        self.skip_downstream(failed, TaskError::new(codes::SKIPPED, message))
    }

    /// Skip task `t`, whose condition is false, and everything downstream
    /// of it; returns them all.
    pub fn skip_by_condition(&mut self, t: usize) -> Vec<usize> {
        let id = &self.workflow.tasks[t].id;
        let message = format!("not run: dependency '{id}' was skipped (condition false)");
        let downstream = TaskError::new(codes::CONDITION_FALSE, message);
        let when = self.workflow.tasks[t].when.as_deref().unwrap_or_default();
        let message = format!("condition false: {}", crate::text::excerpt(when));
        self.tasks[t].error = Some(TaskError::new(codes::CONDITION_FALSE, message));
        self.finish_task(t, TaskStatus::Skipped);
        let mut skipped = vec![t];
        skipped.extend(self.skip_downstream(t, downstream));
        skipped
    }

    /// Ready task `t`'s condition with the values it reads, if it has one
    /// not yet checked (retries do not ask again). The values are shared,
    /// not copied: the scheduler hands the check to another thread.
    pub fn condition_to_check(&mut self, t: usize) -> Option<ConditionCheck> {
        let when = self.workflow.tasks[t].when.as_ref()?;
        if std::mem::replace(&mut self.tasks[t].condition_checked, true) {
            return None;
        }
        // A template that does not parse binds nothing; the check says why.
        let references =
            substitution::parse_template(when).unwrap_or_default().into_iter().filter_map(|piece| match piece {
                Piece::Ref(reference) => Some(reference.root),
                Piece::Text(_) => None,
            });
        let mut values: Vec<(Root, Arc<Value>)> = Vec::new();
        for root in references {
            if values.iter().all(|(bound, _)| *bound != root)
                && let Some(value) = self.shared_value_of(t, &root)
            {
                values.push((root, value));
            }
        }
        Some(ConditionCheck::new(when.clone(), values))
    }

    /// What `root` names for task `t`, shared where the run shares it.
    fn shared_value_of(&self, t: usize, root: &Root) -> Option<Arc<Value>> {
        match root {
            Root::Task(id) => self.result_of(id).cloned(),
            Root::Input(name) => self.input(name).cloned(),
            Root::Item | Root::ItemIndex => self.value_of(t, root).cloned().map(Arc::new),
        }
    }

    /// Skip, with `error`, every pending task downstream of `t`.
    fn skip_downstream(&mut self, t: usize, error: TaskError) -> Vec<usize> {
        let mut skipped = Vec::new();
        let mut stack: Vec<u32> = self.dependents[t].clone();
        while let Some(d) = stack.pop() {
            let d = d as usize;
            if self.tasks[d].status != TaskStatus::Pending {
                continue;
            }
            self.tasks[d].error = Some(error.clone());
            self.finish_task(d, TaskStatus::Skipped);
            skipped.push(d);
            stack.extend_from_slice(&self.dependents[d]);
        }
        skipped
    }

    /// Task `t`'s entry in a report, showing `shown` of its state.
    fn task_report(&self, t: usize, shown: Shown) -> TaskReport {
        let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1000.0;
        let (task, state) = (&self.workflow.tasks[t], &self.tasks[t]);
        let called = !shown.history.is_empty();
        let usage = Usage::sum(shown.history.iter().filter_map(|call| call.usage.as_ref()));
        let cached = shown.history.last().is_some_and(|call| call.cached);
        TaskReport {
            id: task.id.clone(),
            name: task.name.clone(),
            protocol: task.protocol.clone(),
            method: task.method.clone(),
            dependencies: task.dependencies.clone(),
            status: state.status,
            attempts: state.attempts,
            started_at: state.started_at,
            finished_at: state.finished_at,
            queued_ms: state.started.map(|s| ms(self.started, s)),
            duration_ms: state.started.zip(state.finished).map(|(s, f)| ms(s, f)),
            result: shown.result,
            error: shown.error,
            params: shown.params.or_else(|| called.then(|| task.params.clone())),
            history: shown.history,
            parent: state.item.as_ref().map(|item| self.workflow.tasks[item.parent].id.clone()),
            item: self.listed_item(t).or_else(|| self.own_file(t)).cloned(),
            items: state.group.as_ref().map(|group| group.items.len()),
            usage,
            waiting_for: state.waiting_for.as_deref().filter(|_| state.status == TaskStatus::Queued).map(str::to_owned),
            cached,
            taken_from: state.taken_from.clone(),
        }
    }

    /// The tasks in the order a report lists them: as the document lists
    /// them, each `for_each` task followed by its items' tasks.
    fn report_order(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.tasks.len());
        for t in 0..self.documented {
            order.push(t);
            if let Some(group) = &self.tasks[t].group {
                order.extend(group.first..group.first + group.items.len());
            }
        }
        order
    }

    fn report_of(&self, tasks: Vec<TaskReport>) -> RunReport {
        let mut report = RunReport::new(
            self.workflow.id.clone(),
            self.workflow.name.clone(),
            self.started_at,
            self.started.elapsed(),
            tasks,
        );
        if self.cancelled {
            report.status = WorkflowStatus::Cancelled;
        }
        report.owner = self.workflow.owner.clone();
        report.failure = self.failure.clone();
        report.rerun_of = self.workflow.metadata.get(RERUN_OF).and_then(Value::as_str).map(str::to_owned);
        report
    }

    /// The report of a finished run: takes each task's result, error and
    /// calls out of the run (which ends with it) rather than copying them.
    pub fn final_report(&mut self) -> RunReport {
        let tasks = self.report_order().into_iter().map(|t| {
            let shown = self.tasks[t].take_shown();
            self.task_report(t, shown)
        });
        let tasks = tasks.collect();
        self.report_of(tasks)
    }

    /// The state of a run still in progress.
    pub fn snapshot(&self) -> RunReport {
        let tasks = self.report_order().into_iter().map(|t| self.task_report(t, self.tasks[t].shown())).collect();
        let mut report = self.report_of(tasks);
        report.status = WorkflowStatus::Running;
        report.finished_at = None;
        report
    }
}

/// The task that item `index` of `for_each` task `template` becomes: the
/// same call and settings under the id `ID[index]` (its params are shared,
/// not copied; `${item}` is resolved when it runs).
fn item_task(template: &Task, index: usize) -> Task {
    let id = format!("{}[{index}]", template.id);
    Task {
        name: if template.name == template.id { id.clone() } else { format!("{}[{index}]", template.name) },
        id,
        protocol: template.protocol.clone(),
        method: template.method.clone(),
        params: template.params.clone(),
        dependencies: template.dependencies.clone(),
        priority: template.priority,
        timeout: template.timeout,
        retry: template.retry.clone(),
        metadata: template.metadata.clone(),
        for_each: None,
        // The task's own condition was met before it was expanded.
        when: None,
        file: None,
        // Each item's call counts against the key, and may be cached.
        concurrency: template.concurrency.clone(),
        cache: template.cache,
    }
}

/// Why a `for_each` task has no items to expand into.
pub fn not_a_list(message: String) -> TaskError {
    TaskError::new(codes::NOT_A_LIST, format!("for_each: {message}"))
}

/// A `for_each` value for messages: the reference as written, or "the list".
fn show(items: &Value) -> String {
    match items {
        Value::String(s) => crate::text::excerpt(s),
        _ => "the list".to_owned(),
    }
}
