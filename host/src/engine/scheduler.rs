//! The scheduler task: the only owner of run-time state. Commands and call
//! outcomes arrive on one channel and are handled in order, so no state is
//! shared or locked.

use super::RunId;
use super::conditions::{self, Conditions, Owner, Turn, Waiting};
use super::run::{Run, not_a_list};
use super::{Command, EngineConfig, EngineError, EngineEvent, EngineStats, ProgressEvent, TaskEvent, WorkflowStarted};
use crate::files::FileDirs;
use crate::listing::WorkflowSummary;
use crate::model::{MAX_ITEMS, TaskError, TaskStatus, Workflow, codes};
use crate::queue::PriorityQueue;
use crate::registry::{Call, Provider, Registry, Selection};
use crate::report::RunReport;
use crate::resolver::substitute;
use crate::store::journal::{Item, Journal, Refusal};
use crate::store::{Record, TaskRecord};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// How often a task may go back to the queue because its provider vanished
/// mid-call (those attempts do not count against its retries).
const MAX_REQUEUES: u32 = 3;

/// Most bytes of finished reports kept in memory (besides the latest),
/// however many `keep_finished` allows: without a store they are only
/// there, and each may be as large as a workflow's limit.
const FINISHED_BYTES: usize = 512 << 20;

/// Messages the scheduler sends itself (timers, finished calls).
pub(super) enum Internal {
    Finished {
        run: RunId,
        task: usize,
        attempt: u32,
        /// How long the call took.
        took: Duration,
        outcome: Result<Value, TaskError>,
    },
    RetryDue {
        run: RunId,
        task: usize,
    },
    TimedOut {
        run: RunId,
    },
    /// A parked task's wait for a provider of its protocol is over.
    ProviderWaitOver {
        run: RunId,
        task: usize,
    },
    /// A `files` for_each task's directory is listed.
    Listed {
        run: RunId,
        task: usize,
        outcome: Result<Vec<Value>, TaskError>,
    },
    /// A file's item task has its file read (or cannot).
    FileRead {
        run: RunId,
        task: usize,
        outcome: Result<Value, TaskError>,
    },
    /// The store has a finished workflow's report.
    ReportStored {
        workflow_id: String,
    },
    /// The store refused a record of a workflow for good.
    Refused(Refusal),
    /// An owner's turn of condition checks is over (see `conditions`).
    ConditionsChecked {
        owner: Owner,
        turn: Turn,
    },
}

/// How a workflow comes to the scheduler.
pub(super) enum Start {
    /// Submitted, holding `bytes` (params and inputs) as it was.
    New { bytes: usize },
    /// Taken up from the store after a restart, with its tasks' states.
    Resumed { submitted_at: SystemTime, tasks: Vec<TaskRecord> },
}

pub(super) enum Message {
    Command(Command),
    Internal(Internal),
}

pub(super) struct Scheduler {
    registry: Arc<Registry>,
    config: EngineConfig,
    /// Weak, so the scheduler ends once every `Engine` handle and running
    /// call is gone.
    inbox: mpsc::WeakUnboundedSender<Message>,
    /// Receives progress chunks directly (they need no storing), and every
    /// other event too when there is no journal.
    observer: Option<mpsc::UnboundedSender<EngineEvent>>,
    /// With a store: records go here, and events, acknowledgements and
    /// reports follow them once they are stored.
    journal: Option<Journal<EngineEvent>>,
    runs: HashMap<RunId, Run>,
    by_workflow_id: HashMap<String, RunId>,
    /// Runs by owner, for the owners' quotas.
    running_by_owner: HashMap<Arc<str>, usize>,
    /// Finished reports kept in memory (without a store), with the bytes
    /// their runs held.
    finished: VecDeque<(Arc<RunReport>, usize)>,
    /// What `finished` holds, at most [`FINISHED_BYTES`] beyond the last.
    finished_bytes: usize,
    /// The ids of `finished`, and of finished workflows whose report the
    /// journal has not yet stored: a new submission may not take them (the
    /// socket layer asks the store about the rest).
    finished_ids: HashMap<String, usize>,
    queue: PriorityQueue<(RunId, usize)>,
    /// Ready tasks whose protocol has no free provider right now, by
    /// protocol, still in priority order.
    parked: HashMap<String, PriorityQueue<(RunId, usize)>>,
    /// Protocols that may have a free provider again.
    woken: Vec<String>,
    running: usize,
    next_run: RunId,
    stats: EngineStats,
    /// Conditions being checked or waiting for their owner's turn.
    conditions: Conditions,
}

impl Scheduler {
    pub fn new(
        registry: Arc<Registry>,
        config: EngineConfig,
        inbox: mpsc::WeakUnboundedSender<Message>,
        observer: Option<mpsc::UnboundedSender<EngineEvent>>,
        journal: Option<Journal<EngineEvent>>,
    ) -> Self {
        Self {
            registry,
            config,
            inbox,
            observer,
            journal,
            runs: HashMap::new(),
            by_workflow_id: HashMap::new(),
            running_by_owner: HashMap::new(),
            finished: VecDeque::new(),
            finished_bytes: 0,
            finished_ids: HashMap::new(),
            queue: PriorityQueue::default(),
            parked: HashMap::new(),
            woken: Vec::new(),
            running: 0,
            next_run: 0,
            stats: EngineStats::default(),
            conditions: Conditions::default(),
        }
    }

    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Message>) {
        let mut batch = Vec::with_capacity(256);
        while inbox.recv_many(&mut batch, 256).await > 0 {
            for message in batch.drain(..) {
                match message {
                    Message::Command(command) => self.command(command),
                    Message::Internal(internal) => self.internal(internal),
                }
            }
            self.dispatch();
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Submit { workflow, bytes, max_running, accepted, done } => {
                let lane = workflow.id.clone();
                let outcome = match self.owner_at_quota(&workflow, max_running) {
                    Some(refusal) => Err(refusal),
                    None => self.submit(workflow, done, Start::New { bytes }),
                };
                // A workflow is acknowledged once it is stored.
                self.after_stored(Some(lane), move || {
                    let _ = accepted.send(outcome);
                });
            }
            Command::Restore { saved, done } => {
                let workflow_id = saved.workflow.id.clone();
                let submitted_at = saved.submitted_at;
                let tasks = saved.tasks;
                if let Err(e) = self.submit(saved.workflow, done, Start::Resumed { submitted_at, tasks }) {
                    tracing::error!("cannot resume workflow {workflow_id}: {e}");
                }
            }
            // Answered once everything recorded so far is stored: a status
            // never shows a result that a crash could still lose.
            Command::Get { workflow_id, reply } => {
                let found = self.get(&workflow_id);
                self.after_stored(Some(workflow_id), move || {
                    let _ = reply.send(found);
                });
            }
            Command::List { reply } => {
                let list = self.list();
                self.after_stored(None, move || {
                    let _ = reply.send(list);
                });
            }
            Command::Cancel { workflow_id, reply } => {
                let found = self.by_workflow_id.get(&workflow_id).copied();
                if let Some(id) = found {
                    if let Some(run) = self.runs.get_mut(&id) {
                        run.cancelled = true;
                    }
                    self.cancel(id, "the workflow was cancelled");
                }
                // Acknowledged once the cancellation is stored, like a submission.
                self.after_stored(Some(workflow_id), move || {
                    let _ = reply.send(found.is_some());
                });
            }
            Command::ProvidersChanged => self.woken.extend(self.parked.keys().cloned()),
            Command::Stats { reply } => {
                let _ = reply.send(self.stats_now());
            }
        }
    }

    fn internal(&mut self, internal: Internal) {
        match internal {
            Internal::Finished { run, task, attempt, took, outcome } => {
                self.finished(run, task, attempt, took, outcome)
            }
            Internal::RetryDue { run, task } => self.retry_due(run, task),
            Internal::TimedOut { run } => self.cancel(run, "the workflow ran past its timeout"),
            Internal::ProviderWaitOver { run, task } => self.provider_wait_over(run, task),
            Internal::Listed { run, task, outcome } => self.listed(run, task, outcome),
            Internal::FileRead { run, task, outcome } => self.file_read(run, task, outcome),
            Internal::ReportStored { workflow_id } => self.forget_finished_id(&workflow_id),
            Internal::Refused(refusal) => self.refused(refusal),
            Internal::ConditionsChecked { owner, turn } => self.conditions_checked(owner, turn),
        }
    }

    /// Start a workflow: a new one, or one resumed from the store, whose
    /// recorded task states are taken up where they were.
    fn submit(
        &mut self,
        workflow: Workflow,
        done: oneshot::Sender<Arc<RunReport>>,
        start: Start,
    ) -> Result<(), EngineError> {
        if self.by_workflow_id.contains_key(&workflow.id) {
            return Err(EngineError::DuplicateId(workflow.id));
        }
        if self.finished_ids.contains_key(&workflow.id) {
            return Err(EngineError::FinishedId(workflow.id));
        }
        let id = self.next_run;
        self.next_run += 1;
        let mut run = Run::new(workflow, done);
        self.count_submitted(&mut run);
        let mut retries = Vec::new();
        match start {
            Start::Resumed { submitted_at, tasks } => {
                // Before the expansions add item tasks that share their params.
                run.held.hold(run.workflow.document_bytes());
                retries = run.resume(submitted_at, tasks);
            }
            Start::New { bytes } => {
                run.held.hold(bytes);
                self.record(|| Record::Accepted {
                    workflow: Box::new(run.workflow.clone()),
                    submitted_at: run.started_at,
                })
            }
        }
        // A workflow stored before its limits were lowered (or before there
        // were any) ends at once, saying so, rather than holding the host.
        let over = run.over_limits(&self.config.limits);
        let left = run.workflow.timeout.map(|limit| limit.saturating_sub(run.started.elapsed()));
        run.timeout = left.and_then(|after| self.after(after, Internal::TimedOut { run: id }));
        if self.observed() {
            self.emit(EngineEvent::WorkflowStarted(WorkflowStarted {
                workflow_id: run.workflow.id.clone(),
                name: run.workflow.name.clone(),
                task_count: run.workflow.tasks.len(),
                owner: run.owner.clone(),
            }));
        }
        let ready = run.ready_to_start();
        self.by_workflow_id.insert(run.workflow.id.clone(), id);
        if let Some(owner) = &run.owner {
            *self.running_by_owner.entry(owner.clone()).or_default() += 1;
        }
        self.runs.insert(id, run);
        for (t, due) in retries {
            self.after(due, Internal::RetryDue { run: id, task: t });
        }
        for t in ready {
            self.make_ready(id, t);
        }
        if let Some(error) = over {
            self.over_limit(id, &error);
            return Ok(());
        }
        for t in self.runs.get(&id).map(Run::groups_done).unwrap_or_default() {
            if let Some(run) = self.runs.get(&id) {
                let outcome = run.group_outcome(t);
                self.settle(id, t, outcome);
            }
        }
        self.finish_if_done(id);
        Ok(())
    }

    /// Why `workflow` may not start: its owner has `max_running` running.
    fn owner_at_quota(&self, workflow: &Workflow, max_running: Option<usize>) -> Option<EngineError> {
        let (max, owner) = (max_running?, workflow.owner.as_deref()?);
        let running = self.running_by_owner.get(owner).copied().unwrap_or(0);
        (running >= max).then(|| {
            EngineError::Busy(format!(
                "token '{owner}' has {running} workflows running, its quota (max_workflows_per_token); \
                 wait for one to finish"
            ))
        })
    }

    /// Workflow `id` went past one of its limits (`error` says which): it
    /// ends, failed, with everything it has not done cancelled.
    fn over_limit(&mut self, id: RunId, error: &TaskError) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        tracing::warn!(workflow = %run.workflow.id, "ended: {}", error.message);
        run.failure.get_or_insert_with(|| error.message.clone());
        self.cancel(id, &format!("the workflow went past a limit: {}", error.message));
    }

    /// The store refused a record of a workflow for good (the journal
    /// stored a small one saying why instead): the task it was about loses
    /// what made it too large, and the workflow ends.
    fn refused(&mut self, refusal: Refusal) {
        let Some(&id) = self.by_workflow_id.get(&refusal.workflow_id) else { return };
        let error =
            TaskError::new(codes::WORKFLOW_LIMIT, format!("its record could not be stored: {}", refusal.reason));
        if let Some(run) = self.runs.get_mut(&id)
            && let Some(&t) = refusal.task_id.as_ref().and_then(|task| run.index.get(task))
        {
            run.drop_outcome(t, error.clone());
        }
        self.over_limit(id, &error);
    }

    /// Give each task of a new run its stats series, and count it.
    fn count_submitted(&mut self, run: &mut Run) {
        self.stats.workflows_submitted += 1;
        run.series = run.workflow.tasks.iter().map(|t| self.stats.series(&t.protocol, &t.method)).collect();
        // A `for_each` task is counted as its items, when it has them.
        for (task, &series) in run.workflow.tasks.iter().zip(&run.series) {
            if task.for_each.is_none()
                && let Some(method) = self.stats.method(series)
            {
                method.submitted += 1;
            }
        }
    }

    /// The stats as of now, with the queue's depth.
    fn stats_now(&self) -> EngineStats {
        let mut stats = self.stats.clone();
        stats.queued = self.queue.lane_lengths();
        stats.waiting_for_provider = self.parked.values().map(PriorityQueue::len).sum();
        stats.running = self.running;
        stats.store = self.journal.as_ref().map(Journal::commits);
        stats
    }

    /// Hand a record to the journal (built only when there is one).
    fn record(&self, make: impl FnOnce() -> Record) {
        if let Some(journal) = &self.journal {
            let record = make();
            journal.push(Some(record.workflow_id().to_owned()), Item::Record(record));
        }
    }

    /// Send an event to the observer: through the journal when there is one,
    /// so it leaves after what it reports is stored.
    fn emit(&self, event: EngineEvent) {
        match (&self.journal, &self.observer) {
            (Some(journal), _) => journal.push(Some(event.workflow_id().to_owned()), Item::Event(event)),
            (None, Some(observer)) => {
                let _ = observer.send(event);
            }
            (None, None) => {}
        }
    }

    /// Where events from outside the scheduler (a task's progress) go: the
    /// same way as its own, so a chunk never overtakes the `running` status
    /// of the attempt it belongs to (which the journal releases only once
    /// stored). None if nobody observes.
    fn event_sink(&self) -> Option<Arc<dyn Fn(EngineEvent) + Send + Sync>> {
        match (&self.journal, &self.observer) {
            (Some(journal), _) if journal.observed() => {
                let journal = journal.clone();
                Some(Arc::new(move |event: EngineEvent| {
                    journal.push(Some(event.workflow_id().to_owned()), Item::Event(event))
                }))
            }
            (None, Some(observer)) => {
                let observer = observer.clone();
                Some(Arc::new(move |event| {
                    let _ = observer.send(event);
                }))
            }
            _ => None,
        }
    }

    fn observed(&self) -> bool {
        self.observer.is_some() || self.journal.as_ref().is_some_and(Journal::observed)
    }

    /// Run `then` once everything recorded so far for workflow `lane` (for
    /// all workflows if `None`) is stored; at once without a store.
    fn after_stored(&self, lane: Option<String>, then: impl FnOnce() + Send + 'static) {
        match &self.journal {
            Some(journal) => journal.push(lane, Item::Then(Box::new(then))),
            None => then(),
        }
    }

    fn get(&self, workflow_id: &str) -> Option<Arc<RunReport>> {
        match self.by_workflow_id.get(workflow_id).and_then(|id| self.runs.get(id)) {
            Some(run) => Some(Arc::new(run.snapshot())),
            None => self.finished.iter().rev().find(|(r, _)| r.workflow_id == workflow_id).map(|(r, _)| r.clone()),
        }
    }

    fn list(&self) -> Vec<WorkflowSummary> {
        let running = self.runs.values().map(|run| WorkflowSummary::of(&run.snapshot()));
        let finished = self.finished.iter().map(|(r, _)| WorkflowSummary::of(r));
        running.chain(finished).collect()
    }

    /// Send `message` to the scheduler after `delay`.
    fn after(&self, delay: Duration, message: Internal) -> Option<AbortHandle> {
        let inbox = self.inbox.upgrade()?;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inbox.send(Message::Internal(message));
        });
        Some(timer.abort_handle())
    }

    fn notify(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get(&id) else { return };
        let state = &run.tasks[t];
        if state.status == TaskStatus::Queued {
            return; // every ready task is queued at once: not worth an event
        }
        self.record(|| Record::Task(Box::new(run.task_record(t))));
        let final_ = state.status.is_final();
        if final_
            && run.workflow.tasks[t].for_each.is_none()
            && let Some(method) = self.stats.of_task(&run.series, t)
        {
            method.ended(state.status);
        }
        if !self.observed() {
            return;
        }
        self.emit(EngineEvent::Task(TaskEvent {
            workflow_id: run.workflow.id.clone(),
            owner: run.owner.clone(),
            task_id: run.workflow.tasks[t].id.clone(),
            status: state.status,
            attempt: state.attempts,
            result: if final_ { state.result.as_deref().cloned() } else { None },
            error: if final_ || state.status == TaskStatus::Pending { state.error.clone() } else { None },
        }));
    }

    /// Task `t` is ready: its condition, if it has one, is checked first
    /// (in its owner's next turn).
    fn make_ready(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let Some(check) = run.condition_to_check(t) else { return self.queue_task(id, t) };
        self.conditions.queue(&run.owner, Waiting { run: id, task: t, check });
    }

    /// Start the turns owners with conditions waiting can take (see
    /// `conditions`); each hands back what it did as a message.
    fn start_condition_turns(&mut self) {
        for (owner, mut checks) in self.conditions.turns() {
            checks.retain(|w| self.runs.get(&w.run).is_some_and(|run| run.tasks[w.task].status == TaskStatus::Pending));
            if checks.is_empty() {
                self.conditions.turn_over(&owner, Vec::new());
                continue;
            }
            self.off_thread(move |_| Internal::ConditionsChecked { owner, turn: conditions::take_turn(checks) });
        }
    }

    /// An owner's turn is over: each checked task queues, is skipped with
    /// what depends on it, or fails; unless it ended meanwhile (cancelled).
    fn conditions_checked(&mut self, owner: Owner, turn: Turn) {
        self.conditions.turn_over(&owner, turn.unchecked);
        for (id, t, verdict) in turn.verdicts {
            let Some(run) = self.runs.get_mut(&id) else { continue };
            if run.tasks[t].status != TaskStatus::Pending {
                continue;
            }
            match verdict {
                Ok(true) => self.queue_task(id, t),
                Ok(false) => {
                    for skipped in run.skip_by_condition(t) {
                        self.notify(id, skipped);
                    }
                    self.finish_if_done(id);
                }
                Err(error) => self.settle(id, t, Err(error)),
            }
        }
    }

    /// Ready task `t`, its condition held, queues (a `for_each` task
    /// expands first).
    fn queue_task(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        if run.workflow.tasks[t].for_each.is_some() && run.tasks[t].group.is_none() {
            return self.expand(id, t);
        }
        run.tasks[t].status = TaskStatus::Queued;
        run.tasks[t].retry_at = None;
        run.tasks[t].ready_at = Some(Instant::now());
        run.ready.push(run.workflow.tasks[t].priority, t);
        self.notify(id, t);
        self.admit(id);
    }

    /// A ready `for_each` task becomes one task per item (or fails if its
    /// items are not a list); those its `max_parallel` allows are ready.
    /// Files are listed first, off the scheduler's thread.
    fn expand(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        if let Some((pattern, dir)) = run.files_to_list(t) {
            return self.off_thread(move |dirs| {
                let outcome = dirs.list(&pattern, dir.as_deref(), MAX_ITEMS).map_err(|e| not_a_list(e.to_string()));
                Internal::Listed { run: id, task: t, outcome }
            });
        }
        match run.items_of(t) {
            Ok(items) => self.expand_into(id, t, items),
            Err(error) => self.settle(id, t, Err(error)),
        }
    }

    /// `for_each` task `t`'s files are listed, unless it ended meanwhile.
    fn listed(&mut self, id: RunId, t: usize, outcome: Result<Vec<Value>, TaskError>) {
        let Some(run) = self.runs.get(&id) else { return };
        if run.tasks[t].status.is_final() {
            return;
        }
        match outcome {
            Ok(items) => self.expand_into(id, t, Arc::new(items)),
            Err(error) => self.settle(id, t, Err(error)),
        }
    }

    fn expand_into(&mut self, id: RunId, t: usize, items: Arc<Vec<Value>>) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        if let Err(error) = run.hold_items(t, &items, &self.config.limits) {
            return self.settle(id, t, Err(error));
        }
        let count = items.len();
        run.expand(t, items);
        if let Some(method) = self.stats.of_task(&run.series, t) {
            method.submitted += count as u64;
        }
        self.notify(id, t);
        if count == 0 {
            return self.settle(id, t, Ok(Value::Array(Vec::new())));
        }
        self.release_items(id, t);
    }

    /// Run `work` on the blocking pool with the host's files directories
    /// and hand its outcome back as a message: a slow disk, a large
    /// directory, a large file or a costly condition stalls no other task.
    fn off_thread(&self, work: impl FnOnce(&FileDirs) -> Internal + Send + 'static) {
        let Some(inbox) = self.inbox.upgrade() else { return };
        let dirs = self.config.file_dirs.clone();
        tokio::task::spawn_blocking(move || {
            let _ = inbox.send(Message::Internal(work(&dirs)));
        });
    }

    /// Queue the item tasks of `for_each` task `t` its limit now allows.
    fn release_items(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        for c in run.release(t) {
            self.make_ready(id, c);
        }
    }

    /// Item task `c` is final: let the next item go, or end its `for_each`
    /// task once every item has.
    fn item_ended(&mut self, id: RunId, c: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        match run.item_ended(c) {
            Some((parent, true)) => {
                let outcome = run.group_outcome(parent);
                self.settle(id, parent, outcome);
            }
            Some((parent, false)) => self.release_items(id, parent),
            None => {}
        }
    }

    /// Move ready tasks into the shared queue while `max_parallel` allows.
    fn admit(&mut self, id: RunId) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let limit = run.workflow.max_parallel.map_or(usize::MAX, |m| m as usize);
        while run.admitted < limit {
            let Some((priority, t)) = run.ready.pop() else { break };
            run.admitted += 1;
            self.queue.push(priority, (id, t));
        }
    }

    fn dispatch(&mut self) {
        self.start_condition_turns();
        self.unpark();
        while self.running < self.config.concurrency {
            let Some((_, (id, t))) = self.queue.pop() else { break };
            self.start(id, t);
        }
    }

    /// Start parked tasks of woken protocols while providers take them.
    fn unpark(&mut self) {
        for protocol in std::mem::take(&mut self.woken) {
            while self.running < self.config.concurrency {
                let Some(parked) = self.parked.get_mut(&protocol) else { break };
                let Some((priority, (id, t))) = parked.pop() else { break };
                let provider = match self.registry.select(&protocol) {
                    Selection::Provider(provider) => provider,
                    Selection::Busy => {
                        parked.push_front(priority, (id, t));
                        break;
                    }
                    Selection::Missing => {
                        parked.push_front(priority, (id, t));
                        self.await_provider(&protocol);
                        break;
                    }
                };
                self.launch(id, t, provider);
            }
            if self.parked.get(&protocol).is_some_and(PriorityQueue::is_empty) {
                self.parked.remove(&protocol);
            }
        }
    }

    /// Start a queued task, or park it until its protocol has a free provider.
    fn start(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get(&id) else { return };
        if run.tasks[t].status != TaskStatus::Queued {
            return;
        }
        let protocol = &run.workflow.tasks[t].protocol;
        match self.registry.select(protocol) {
            Selection::Provider(provider) => self.launch(id, t, provider),
            Selection::Missing if !self.config.wait_for_providers => {
                let message = format!("no provider serves protocol '{protocol}'");
                self.fail_before_start(id, t, TaskError::new(codes::NO_PROVIDER, message));
            }
            selection => {
                let (priority, protocol) = (run.workflow.tasks[t].priority, protocol.clone());
                self.parked.entry(protocol.clone()).or_default().push(priority, (id, t));
                if matches!(selection, Selection::Missing) {
                    self.await_provider(&protocol);
                }
            }
        }
    }

    /// No provider serves `protocol`: each task parked for it waits at most
    /// its timeout for one to register (a plugin dropped back in, a remote
    /// provider reconnecting), then fails.
    fn await_provider(&mut self, protocol: &str) {
        let Some(parked) = self.parked.get(protocol) else { return };
        let waiting: Vec<(RunId, usize)> = parked.iter().copied().collect();
        for (id, t) in waiting {
            let Some(run) = self.runs.get(&id) else { continue };
            if run.tasks[t].provider_wait.is_some() {
                continue;
            }
            let limit = run.workflow.tasks[t].timeout.unwrap_or(self.config.default_timeout);
            let timer = self.after(limit, Internal::ProviderWaitOver { run: id, task: t });
            if let Some(run) = self.runs.get_mut(&id) {
                run.tasks[t].provider_wait = timer;
            }
        }
    }

    /// Fail a task still parked with no provider for its protocol; if a
    /// provider exists by now (busy), the task keeps its place.
    fn provider_wait_over(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let state = &mut run.tasks[t];
        state.provider_wait = None;
        let task = &run.workflow.tasks[t];
        if state.status != TaskStatus::Queued || !matches!(self.registry.select(&task.protocol), Selection::Missing) {
            return;
        }
        let limit = task.timeout.unwrap_or(self.config.default_timeout);
        let message = format!(
            "no provider served protocol '{}' within the task's timeout of {}s",
            task.protocol,
            limit.as_secs_f64()
        );
        if let Some(parked) = self.parked.get_mut(&task.protocol) {
            parked.retain(|&entry| entry != (id, t));
        }
        self.fail_before_start(id, t, TaskError::new(codes::NO_PROVIDER, message));
    }

    /// Call the provider for one attempt of a task.
    fn launch(&mut self, id: RunId, t: usize, provider: Arc<dyn Provider>) {
        let sink = self.event_sink();
        let Some(run) = self.runs.get_mut(&id) else { return };
        if run.tasks[t].status != TaskStatus::Queued {
            return;
        }
        if let Some((item, text, base64)) = run.file_to_read(t) {
            return self.read_file(id, t, item, text, base64);
        }
        let task = &run.workflow.tasks[t];
        let params = substitute(&task.params, |root| run.value_of(t, root));
        // The content is in the params now (or the call fails): not kept twice.
        if let Some(item) = &mut run.tasks[t].item {
            item.read = None;
        }
        let task = &run.workflow.tasks[t];
        let params = match params {
            Ok(params) => params,
            Err(e) => return self.fail_before_start(id, t, TaskError::new(codes::SUBSTITUTION, e.to_string())),
        };
        if let Err(error) = fits_schema(&task.protocol, &task.method, &params, provider.as_ref()) {
            return self.fail_before_start(id, t, error);
        }
        if let Err(error) = run.hold_params(t, &params, &self.config.limits) {
            return self.fail_before_start(id, t, error);
        }
        let task = &run.workflow.tasks[t];
        let Some(inbox) = self.inbox.upgrade() else { return };
        let timeout = task.timeout.unwrap_or(self.config.default_timeout);
        let deadline = Instant::now() + timeout;
        let state = &mut run.tasks[t];
        if let (Some(ready), Some(method)) = (state.ready_at, self.stats.of_task(&run.series, t)) {
            method.queue_wait_seconds.observe(ready.elapsed().as_secs_f64());
        }
        state.attempts += 1;
        state.status = TaskStatus::Running;
        state.started_at.get_or_insert_with(SystemTime::now);
        state.started.get_or_insert_with(Instant::now);
        if let Some(timer) = state.provider_wait.take() {
            timer.abort();
        }
        let attempt = state.attempts;
        state.called(attempt, provider.id());
        state.params = (!Arc::ptr_eq(&params, &task.params)).then(|| params.clone());
        let progress = sink.map(|sink| {
            let (workflow_id, task_id, owner) = (run.workflow.id.clone(), task.id.clone(), run.owner.clone());
            Arc::new(move |chunk| {
                let (workflow_id, task_id, owner) = (workflow_id.clone(), task_id.clone(), owner.clone());
                sink(EngineEvent::Progress(ProgressEvent { workflow_id, owner, task_id, chunk }));
            }) as crate::registry::Progress
        });
        let call = Call {
            task_id: task.id.clone(),
            workflow_id: Some(run.workflow.id.clone()),
            attempt,
            method: task.method.clone(),
            params,
            deadline,
            progress,
        };
        // `running` leaves before anything the provider sends for the attempt.
        self.notify(id, t);
        // Made here, not in the spawned task: a provider reserves its slot
        // when `call` is invoked, before the next selection.
        let pending = provider.call(call);
        let handle = tokio::spawn(async move {
            let called = Instant::now();
            let outcome = match tokio::time::timeout_at(deadline.into(), pending).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    Err(TaskError::new(codes::TIMEOUT, format!("timed out after {}s", timeout.as_secs_f64()))
                        .retryable())
                }
            };
            let took = called.elapsed();
            let _ = inbox.send(Message::Internal(Internal::Finished { run: id, task: t, attempt, took, outcome }));
        });
        if let Some(run) = self.runs.get_mut(&id) {
            run.tasks[t].abort = Some(handle.abort_handle());
        }
        self.running += 1;
    }

    /// Read the file of item task `t` before its call. The read holds one
    /// of the host's call slots until it is done: a file's content weighs
    /// what a call's params do, so no more are in memory than calls.
    fn read_file(&mut self, id: RunId, t: usize, item: Value, text: bool, base64: bool) {
        self.running += 1;
        self.off_thread(move |dirs| {
            let outcome =
                dirs.read(&item, text, base64).map_err(|e| TaskError::new(codes::SUBSTITUTION, e.to_string()));
            Internal::FileRead { run: id, task: t, outcome }
        });
    }

    /// Item task `t`'s file is read: it goes back to the front of the queue
    /// for a provider (or fails), unless it ended meanwhile.
    fn file_read(&mut self, id: RunId, t: usize, outcome: Result<Value, TaskError>) {
        self.running -= 1;
        let Some(run) = self.runs.get_mut(&id) else { return };
        if run.tasks[t].status != TaskStatus::Queued {
            return;
        }
        match outcome {
            Ok(read) => {
                run.file_read(t, read);
                self.queue.push_front(run.workflow.tasks[t].priority, (id, t));
            }
            Err(error) => self.fail_before_start(id, t, error),
        }
    }

    /// A task that cannot even start (bad reference, no provider, params
    /// that miss the schema) fails.
    fn fail_before_start(&mut self, id: RunId, t: usize, error: TaskError) {
        if let Some(run) = self.runs.get_mut(&id) {
            run.admitted -= 1;
        }
        self.settle(id, t, Err(error));
        self.admit(id);
    }

    fn finished(&mut self, id: RunId, t: usize, attempt: u32, took: Duration, outcome: Result<Value, TaskError>) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        // A provider slot of this protocol is free again.
        let protocol = &run.workflow.tasks[t].protocol;
        if self.parked.contains_key(protocol) && !self.woken.contains(protocol) {
            self.woken.push(protocol.clone());
        }
        let state = &mut run.tasks[t];
        if state.status != TaskStatus::Running || state.attempts != attempt {
            return; // cancelled while it ran; already accounted for
        }
        state.abort = None;
        state.call_ended(took, outcome.as_ref().err());
        if let Some(method) = self.stats.of_task(&run.series, t) {
            method.attempt_seconds.observe(took.as_secs_f64());
        }
        run.admitted -= 1;
        self.running -= 1;
        self.settle(id, t, outcome);
        self.admit(id);
    }

    /// Record an attempt's outcome: complete, re-queue, retry later, or fail.
    fn settle(&mut self, id: RunId, t: usize, outcome: Result<Value, TaskError>) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let outcome = outcome.and_then(|value| run.hold_result(t, value, &self.config.limits));
        let over = outcome.as_ref().err().filter(|e| e.code == codes::WORKFLOW_LIMIT).cloned();
        let policy = &run.workflow.tasks[t].retry;
        let state = &mut run.tasks[t];
        let mut changed = vec![t];
        match outcome {
            Ok(value) => {
                let ready = run.complete(t, value);
                self.notify(id, t);
                for d in ready {
                    self.make_ready(id, d);
                }
                changed.clear();
            }
            Err(error) if error.requeue && state.requeues < MAX_REQUEUES => {
                tracing::info!(task = %run.workflow.tasks[t].id, "re-queued: {error}");
                state.requeues += 1;
                state.attempts -= 1;
                state.error = Some(error);
                state.status = TaskStatus::Pending;
                changed.clear();
                self.make_ready(id, t);
            }
            Err(error) if error.retryable && state.attempts < policy.max_attempts => {
                let delay = policy.delay_before(state.attempts, fastrand::f64());
                tracing::debug!(task = %run.workflow.tasks[t].id, attempt = state.attempts, "retrying in {delay:?}: {error}");
                state.error = Some(error);
                state.status = TaskStatus::Pending;
                state.retry_at = Some(SystemTime::now() + delay);
                if let Some(method) = self.stats.of_task(&run.series, t) {
                    method.retried += 1;
                }
                self.after(delay, Internal::RetryDue { run: id, task: t });
            }
            Err(error) => {
                state.error = Some(error);
                run.finish_task(t, TaskStatus::Failed);
                changed.extend(run.skip_dependents_of(t));
            }
        }
        for task in changed {
            self.notify(id, task);
        }
        let item_ended =
            self.runs.get(&id).is_some_and(|run| run.tasks[t].item.is_some() && run.tasks[t].status.is_final());
        if item_ended {
            self.item_ended(id, t);
        }
        self.finish_if_done(id);
        if let Some(error) = over {
            self.over_limit(id, &error);
        }
    }

    fn retry_due(&mut self, id: RunId, t: usize) {
        let waiting = self.runs.get(&id).is_some_and(|run| run.tasks[t].status == TaskStatus::Pending);
        if waiting {
            self.make_ready(id, t);
        }
    }

    /// End every unfinished task of a run as cancelled.
    fn cancel(&mut self, id: RunId, reason: &str) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let mut changed = Vec::new();
        for t in 0..run.tasks.len() {
            let state = &mut run.tasks[t];
            if state.status.is_final() {
                continue;
            }
            let error = TaskError::new(codes::CANCELLED, format!("cancelled: {reason}"));
            if let Some(abort) = state.abort.take() {
                abort.abort();
                self.running -= 1;
                state.call_abandoned(error.clone());
            }
            state.error = Some(error);
            run.finish_task(t, TaskStatus::Cancelled);
            changed.push(t);
        }
        for t in changed {
            self.notify(id, t);
        }
        self.finish_if_done(id);
    }

    fn finish_if_done(&mut self, id: RunId) {
        if self.runs.get(&id).is_none_or(|run| run.unfinished != 0) {
            return;
        }
        let Some(mut run) = self.runs.remove(&id) else { return };
        self.by_workflow_id.remove(&run.workflow.id);
        if let Some(owner) = &run.owner
            && let Some(running) = self.running_by_owner.get_mut(owner)
        {
            *running -= 1;
            if *running == 0 {
                self.running_by_owner.remove(owner);
            }
        }
        if let Some(timer) = run.timeout.take() {
            timer.abort();
        }
        let report = Arc::new(run.final_report());
        self.stats.workflow_ended(report.status);
        self.record(|| Record::Finished(report.clone()));
        if let Some(done) = run.done.take() {
            let finished = report.clone();
            self.after_stored(Some(report.workflow_id.clone()), move || {
                let _ = done.send(finished);
            });
        }
        self.emit(EngineEvent::WorkflowFinished(report.clone()));
        if self.journal.is_some() {
            // Until the store has the report, only this set knows the id.
            *self.finished_ids.entry(report.workflow_id.clone()).or_default() += 1;
            if let Some(inbox) = self.inbox.upgrade() {
                let workflow_id = report.workflow_id.clone();
                self.after_stored(Some(workflow_id.clone()), move || {
                    let _ = inbox.send(Message::Internal(Internal::ReportStored { workflow_id }));
                });
            }
        }
        *self.finished_ids.entry(report.workflow_id.clone()).or_default() += 1;
        self.finished.push_back((report, run.held.bytes()));
        self.finished_bytes += run.held.bytes();
        while self.finished.len() > self.config.keep_finished
            || (self.finished_bytes > FINISHED_BYTES && self.finished.len() > 1)
        {
            if let Some((forgotten, bytes)) = self.finished.pop_front() {
                self.finished_bytes -= bytes;
                self.forget_finished_id(&forgotten.workflow_id);
            }
        }
    }

    /// One of the reasons to keep `workflow_id` in `finished_ids` is gone.
    fn forget_finished_id(&mut self, workflow_id: &str) {
        if let Some(reasons) = self.finished_ids.get_mut(workflow_id) {
            *reasons -= 1;
            if *reasons == 0 {
                self.finished_ids.remove(workflow_id);
            }
        }
    }
}

/// Whether `params`, substituted, fit the schema `provider` declares for
/// `method`; the error names each field that does not.
fn fits_schema(protocol: &str, method: &str, params: &Value, provider: &dyn Provider) -> Result<(), TaskError> {
    let Some(schema) = provider.spec().params_schema(method) else { return Ok(()) };
    schema.check(params).map_err(|mismatches| {
        TaskError::new(
            codes::INVALID_PARAMS,
            format!(
                "the params do not fit the schema of {protocol}.{method} (provider {}): {}",
                provider.id(),
                crate::schema::describe(&mismatches)
            ),
        )
    })
}
