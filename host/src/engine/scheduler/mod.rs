//! The scheduler task: the only owner of run-time state. Commands and call
//! outcomes arrive on one channel and are handled in order, so no state is
//! shared or locked.
//!
//! This module holds the state, the loop, submissions, cancellation and the
//! end of a workflow. Its methods are split by what they do: `readiness`
//! (dependencies and conditions to a queued task), `fan_out` (`for_each`
//! items and their files), `dispatch` (queue to provider: admission,
//! parking, launch), `outcome` (results, retries, timers) and `records`
//! (the journal and events).

mod cache;
mod dispatch;
mod fan_out;
mod keys;
mod outcome;
mod readiness;
mod records;

use super::RunId;
use super::conditions::{Conditions, Owner, Turn};
use super::run::Run;
use super::{Command, EngineConfig, EngineError, EngineEvent, EngineStats, WorkflowStarted};
use crate::listing::WorkflowSummary;
use crate::model::{TaskError, TaskStatus, Workflow, codes};
use crate::queue::PriorityQueue;
use crate::registry::Registry;
use crate::report::RunReport;
use crate::store::journal::{Journal, Refusal};
use crate::store::{Record, ResultCache, TaskRecord};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

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
    /// A cached task's lookup is done (`hit`: the kept result).
    CacheLooked {
        run: RunId,
        task: usize,
        key: String,
        hit: Option<Value>,
    },
    /// A rate limit of `protocol`'s providers lets a call start again.
    RateWindow {
        protocol: String,
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
    /// The provider a task was to be called on has started.
    ProviderStarted {
        run: RunId,
        task: usize,
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
    /// Submitted, holding `bytes` (params and inputs) as it was, with the
    /// outcomes of the tasks `kept` from the run it reruns.
    New { bytes: usize, kept: Vec<TaskRecord> },
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
    /// Protocols whose parked tasks wait for a rate limit, and when the
    /// timer that wakes them fires.
    rate_timers: HashMap<String, Instant>,
    /// Concurrency keys with calls running or tasks waiting.
    keys: HashMap<Arc<str>, keys::Key>,
    /// Where results of `cache: {ttl}` tasks are kept.
    results: Arc<dyn ResultCache>,
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
        results: Arc<dyn ResultCache>,
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
            rate_timers: HashMap::new(),
            keys: HashMap::new(),
            results,
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
            Command::Submit { workflow, bytes, kept, max_running, accepted, done } => {
                let lane = workflow.id.clone();
                let outcome = match self.owner_at_quota(&workflow, max_running) {
                    Some(refusal) => Err(refusal),
                    None => self.submit(workflow, done, Start::New { bytes, kept }),
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
                } else if saved.cancel_requested {
                    self.cancel_workflow(&workflow_id);
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
                let found = self.cancel_workflow(&workflow_id);
                // Acknowledged once the cancellation is stored, like a submission.
                self.after_stored(Some(workflow_id), move || {
                    let _ = reply.send(found);
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
            Internal::RateWindow { protocol } => self.rate_window(protocol),
            Internal::CacheLooked { run, task, key, hit } => self.cache_looked(run, task, key, hit),
            Internal::Listed { run, task, outcome } => self.listed(run, task, outcome),
            Internal::FileRead { run, task, outcome } => self.file_read(run, task, outcome),
            Internal::ProviderStarted { run, task } => self.provider_started(run, task),
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
            Start::New { bytes, kept } => {
                run.held.hold(bytes);
                self.record(|| Record::Accepted {
                    workflow: Box::new(run.workflow.clone()),
                    submitted_at: run.started_at,
                });
                if !kept.is_empty() {
                    let ids: Vec<String> = kept.iter().map(|record| record.task_id.clone()).collect();
                    retries = run.resume(run.started_at, kept);
                    // Stored as this run's, so that a restart keeps them too.
                    for t in ids.iter().filter_map(|id| run.index.get(id).copied()) {
                        self.record(|| Record::Task(Box::new(run.task_record(t))));
                    }
                }
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
        (running >= max).then(|| EngineError::busy(owner, running))
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
        stats.waiting_for_rate_limit =
            self.rate_timers.keys().filter_map(|protocol| self.parked.get(protocol)).map(PriorityQueue::len).sum();
        stats.waiting_for_key = self.waiting_for_keys();
        stats.running = self.running;
        stats.running_workflows = self.runs.len();
        stats.store = self.journal.as_ref().map(Journal::commits);
        stats
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

    /// Cancel the running workflow `workflow_id` at a client's request;
    /// false if it does not run here.
    fn cancel_workflow(&mut self, workflow_id: &str) -> bool {
        let Some(&id) = self.by_workflow_id.get(workflow_id) else { return false };
        if let Some(run) = self.runs.get_mut(&id) {
            run.cancelled = true;
        }
        self.cancel(id, "the workflow was cancelled");
        true
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
        for &t in &changed {
            self.release_key(id, t);
        }
        self.leave_keys(id);
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
