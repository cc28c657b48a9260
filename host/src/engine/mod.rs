//! The engine: runs workflows to completion.
//!
//! One scheduler task ([`scheduler`]) owns all run-time state (no locks on
//! the hot path): it resolves dependencies, admits ready tasks into the
//! shared priority queue (respecting each workflow's `max_parallel`),
//! dispatches them to providers up to the host-wide concurrency limit (parking
//! tasks whose protocol has no free provider), enforces per-attempt timeouts,
//! retries with backoff, re-queues attempts whose provider vanished, skips the
//! dependents of failed tasks and cancels what is left on timeout or request.
//! Each dispatched call runs in its own tokio task and reports back through
//! the scheduler's channel. [`Engine`] is the handle; [`EngineEvent`]s tell
//! an observer (the Socket.IO layer) what happens. Started with a store
//! ([`Engine::start_durable`]), it hands every state change to the store's
//! journal and lets acknowledgements, events, reports and query answers
//! out only after what they tell is stored; [`Engine::restore`] takes up a
//! workflow saved before a restart.
//!
//! It does not parse or validate workflows (`workflow`), choose among
//! providers (`registry`), know what a provider is made of (`plugins`) or
//! how state is written (`store`).

pub mod budget;
mod conditions;
mod run;
mod scheduler;
mod stats;

use crate::listing::WorkflowSummary;
use crate::model::{TaskError, TaskStatus, Workflow};
use crate::report::RunReport;
use crate::store::Claim;
use crate::store::TaskRecord;
use crate::store::journal::{Journal, StoreHealth};
pub use budget::WorkflowLimits;
use scheduler::{Message, Scheduler};
use serde::Serialize;
use serde_json::Value;
pub use stats::{EngineStats, MethodStats};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The scheduler's name for one run of a workflow.
type RunId = u64;

/// Host-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tasks running at once across all workflows.
    pub concurrency: usize,
    /// Per-attempt timeout for tasks that set none.
    pub default_timeout: Duration,
    /// Whether a task whose protocol has no provider waits for one (the
    /// daemon, where remote providers come and go) or fails at once (single
    /// shot).
    pub wait_for_providers: bool,
    /// Finished workflows kept for status queries.
    pub keep_finished: usize,
    /// The directories `for_each: {files: …}` may read.
    pub file_dirs: Arc<crate::files::FileDirs>,
    /// What one workflow may hold (tasks, bytes).
    pub limits: WorkflowLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            default_timeout: Duration::from_secs(300),
            wait_for_providers: false,
            keep_finished: 1000,
            file_dirs: Arc::default(),
            limits: WorkflowLimits::default(),
        }
    }
}

/// Why the engine refused or could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the engine has stopped")]
    Stopped,
    #[error("a workflow with id '{0}' is already running")]
    DuplicateId(String),
    #[error("a workflow with id '{0}' has finished and its report is kept; submit it with another id (or none)")]
    FinishedId(String),
    /// The workflow as submitted is already past one of its limits.
    #[error("{0}")]
    TooLarge(String),
    /// Its owner has as many workflows running as it may.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Store(String),
}

impl EngineError {
    /// `owner` has `running` workflows running, its quota.
    pub(crate) fn busy(owner: &str, running: usize) -> Self {
        EngineError::Busy(format!(
            "token '{owner}' has {running} workflows running, its quota (max_workflows_per_token); wait for one to \
             finish"
        ))
    }
}

/// A task changed status. `result` and `error` are set once it is final
/// (`error` also while it waits for a retry).
#[derive(Debug, Clone, Serialize)]
pub struct TaskEvent {
    pub workflow_id: String,
    /// Who may see it (the workflow's owner); not sent.
    #[serde(skip)]
    pub owner: Option<Arc<str>>,
    pub task_id: String,
    pub status: TaskStatus,
    pub attempt: u32,
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    /// Its result came from the result cache, not a call.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// Partial output of a running task (`progress` from its provider).
#[derive(Debug, Clone, Serialize)]
pub struct ProgressEvent {
    pub workflow_id: String,
    #[serde(skip)]
    pub owner: Option<Arc<str>>,
    pub task_id: String,
    pub chunk: Value,
}

/// A workflow began to run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowStarted {
    pub workflow_id: String,
    pub name: String,
    pub task_count: usize,
    #[serde(skip)]
    pub owner: Option<Arc<str>>,
}

/// What the engine tells its observer.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A workflow was accepted (or resumed after a restart).
    WorkflowStarted(WorkflowStarted),
    Task(TaskEvent),
    Progress(ProgressEvent),
    WorkflowFinished(Arc<RunReport>),
}

impl EngineEvent {
    /// The workflow it is about.
    pub fn workflow_id(&self) -> &str {
        match self {
            EngineEvent::WorkflowStarted(started) => &started.workflow_id,
            EngineEvent::Task(task) => &task.workflow_id,
            EngineEvent::Progress(progress) => &progress.workflow_id,
            EngineEvent::WorkflowFinished(report) => &report.workflow_id,
        }
    }
}

/// An accepted workflow; `done` resolves with its report.
pub struct Submitted {
    pub workflow_id: String,
    pub done: oneshot::Receiver<Arc<RunReport>>,
}

enum Command {
    Submit {
        workflow: Workflow,
        /// Its params and inputs as JSON, measured by the submitter.
        bytes: usize,
        /// Tasks whose outcomes it has already (see [`Engine::submit_keeping`]).
        kept: Vec<TaskRecord>,
        /// Most workflows its owner may have running, this one included.
        max_running: Option<usize>,
        accepted: oneshot::Sender<Result<(), EngineError>>,
        done: oneshot::Sender<Arc<RunReport>>,
    },
    Get {
        workflow_id: String,
        reply: oneshot::Sender<Option<Arc<RunReport>>>,
    },
    List {
        reply: oneshot::Sender<Vec<WorkflowSummary>>,
    },
    Cancel {
        workflow_id: String,
        reply: oneshot::Sender<bool>,
    },
    /// Take up a workflow a store kept from before a restart.
    Restore {
        saved: crate::store::Saved,
        done: oneshot::Sender<Arc<RunReport>>,
    },
    ProvidersChanged,
    Stats {
        reply: oneshot::Sender<EngineStats>,
    },
}

/// A handle to the scheduler; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inbox: mpsc::UnboundedSender<Message>,
    /// The durable engine's store: the owner of workflow ids, which it
    /// grants by claim.
    store: Option<crate::store::AsyncStore>,
    limits: WorkflowLimits,
    /// How the store is taking writes (with a store).
    health: Option<StoreHealth>,
}

impl Engine {
    /// Start the scheduler on the current tokio runtime.
    pub fn start(registry: Arc<crate::registry::Registry>, config: EngineConfig) -> Self {
        Self::spawn(registry, config, None, Arc::new(crate::store::MemoryCache::default()))
    }

    /// [`Engine::start`], with the results of `cache: {ttl}` calls kept in
    /// `results` rather than in this process's memory.
    pub fn start_cached(
        registry: Arc<crate::registry::Registry>,
        config: EngineConfig,
        results: Arc<dyn crate::store::ResultCache>,
    ) -> Self {
        Self::spawn(registry, config, None, results)
    }

    /// Start the scheduler and receive its [`EngineEvent`]s.
    pub fn start_observed(
        registry: Arc<crate::registry::Registry>,
        config: EngineConfig,
    ) -> (Self, mpsc::UnboundedReceiver<EngineEvent>) {
        let (observer, events) = mpsc::unbounded_channel();
        let results = Arc::new(crate::store::MemoryCache::default());
        (Self::spawn(registry, config, Some(observer), results), events)
    }

    /// Start the scheduler with a store: every state change is written down
    /// (by the journal's own thread), and acknowledgements, events and
    /// reports are released only once what they tell is stored.
    pub fn start_durable(
        registry: Arc<crate::registry::Registry>,
        config: EngineConfig,
        store: Arc<dyn crate::store::Store>,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<EngineEvent>)> {
        let (observer, events) = mpsc::unbounded_channel();
        let (inbox, messages) = mpsc::unbounded_channel();
        let refusals = inbox.downgrade();
        let journal = Journal::start(store.clone(), Some(observer.clone()), move |refused| {
            if let Some(inbox) = refusals.upgrade() {
                let _ = inbox.send(Message::Internal(scheduler::Internal::Refused(refused)));
            }
        })?;
        let health = Some(journal.health());
        let limits = config.limits;
        let results = Arc::new(crate::store::StoredResults(store.clone()));
        let scheduler = Scheduler::new(registry, config, inbox.downgrade(), Some(observer), Some(journal), results);
        tokio::spawn(scheduler.run(messages));
        Ok((Self { inbox, store: Some(crate::store::AsyncStore::new(store)), limits, health }, events))
    }

    fn spawn(
        registry: Arc<crate::registry::Registry>,
        config: EngineConfig,
        observer: Option<mpsc::UnboundedSender<EngineEvent>>,
        results: Arc<dyn crate::store::ResultCache>,
    ) -> Self {
        let (inbox, messages) = mpsc::unbounded_channel();
        let limits = config.limits;
        let scheduler = Scheduler::new(registry, config, inbox.downgrade(), observer, None, results);
        tokio::spawn(scheduler.run(messages));
        Self { inbox, store: None, limits, health: None }
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.inbox.send(Message::Command(command)).map_err(|_| EngineError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| EngineError::Stopped)
    }

    /// Accept a validated workflow; it runs in the background.
    pub async fn submit(&self, workflow: Workflow) -> Result<Submitted, EngineError> {
        self.submit_within(workflow, None).await
    }

    /// Accept a validated workflow unless its owner has `max_running`
    /// workflows running already.
    pub async fn submit_within(
        &self,
        workflow: Workflow,
        max_running: Option<usize>,
    ) -> Result<Submitted, EngineError> {
        self.submit_keeping(workflow, max_running, Vec::new()).await
    }

    /// [`Engine::submit_within`] a workflow whose tasks `kept` have their
    /// outcomes already (a rerun's, taken from the run it reruns): they
    /// are not run again.
    pub async fn submit_keeping(
        &self,
        workflow: Workflow,
        max_running: Option<usize>,
        kept: Vec<TaskRecord>,
    ) -> Result<Submitted, EngineError> {
        let bytes = self.within_limits(&workflow)?;
        // On a task of its own, so that it runs to its end even when the
        // caller stops waiting (a client that hangs up): a claim granted and
        // then neither accepted nor given back would hold the id with
        // nothing under it.
        let engine = self.clone();
        tokio::spawn(async move { engine.claim_and_submit(workflow, bytes, max_running, kept).await })
            .await
            .map_err(|_| EngineError::Stopped)?
    }

    /// Claim the workflow's id, hand it to the scheduler, and give the
    /// claim back if the scheduler refuses it.
    async fn claim_and_submit(
        &self,
        workflow: Workflow,
        bytes: usize,
        max_running: Option<usize>,
        kept: Vec<TaskRecord>,
    ) -> Result<Submitted, EngineError> {
        let quota = max_running.zip(workflow.owner.as_deref()).map(|(max, owner)| (owner.to_owned(), max));
        let claimed = self.claim(&workflow.id, quota).await?;
        let workflow_id = workflow.id.clone();
        let (done_tx, done) = oneshot::channel();
        let accepted =
            self.ask(|accepted| Command::Submit { workflow, bytes, kept, max_running, accepted, done: done_tx }).await;
        if let (true, Err(_) | Ok(Err(_))) = (claimed, &accepted) {
            self.release(&workflow_id).await;
        }
        accepted??;
        Ok(Submitted { workflow_id, done })
    }

    /// The bytes `workflow` holds as submitted, if that and its task count
    /// are within the limits (measured here, on the submitter's task, not
    /// on the scheduler's).
    fn within_limits(&self, workflow: &Workflow) -> Result<usize, EngineError> {
        let refused = |e: crate::model::TaskError| EngineError::TooLarge(e.message);
        self.limits.admit_tasks(0, workflow.tasks.len(), "the workflow").map_err(refused)?;
        let bytes = workflow.document_bytes();
        self.limits.admit_bytes(0, bytes, "its params and inputs").map_err(refused)?;
        Ok(bytes)
    }

    /// Why the store is not taking writes, if it is not (and since when).
    pub fn store_failing(&self) -> Option<String> {
        self.health.as_ref().and_then(StoreHealth::failing)
    }

    /// Claim `workflow_id` in the store, the owner of ids (without one, the
    /// scheduler's own records decide): whether a claim was granted. An id
    /// the store holds is refused: a new workflow under it would overwrite
    /// a finished one's report and results, or run beside a running one.
    /// Within `quota` (owner, most running), where the store counts it
    /// (a cluster's): the engine counts its own runs as well.
    async fn claim(&self, workflow_id: &str, quota: Option<(String, usize)>) -> Result<bool, EngineError> {
        let Some(store) = &self.store else { return Ok(false) };
        let id = workflow_id.to_owned();
        let owner = quota.as_ref().map(|(owner, _)| owner.clone());
        let claim = store
            .call("claim a workflow id", move |store| {
                let quota = quota.as_ref().map(|(owner, max)| crate::store::Quota { owner, max: *max });
                store.claim_within(&id, quota)
            })
            .await
            .map_err(|e| EngineError::Store(e.to_string()))?;
        let id = workflow_id.to_owned();
        match claim {
            Claim::Granted => Ok(true),
            Claim::Running => Err(EngineError::DuplicateId(id)),
            Claim::Finished => Err(EngineError::FinishedId(id)),
            Claim::Busy(running) => Err(EngineError::busy(owner.as_deref().unwrap_or_default(), running)),
        }
    }

    /// Give back the claim of a workflow the scheduler did not accept; a
    /// failure only delays the id's reuse (SQLite: until the next start;
    /// Redis: the claim's time to live).
    async fn release(&self, workflow_id: &str) {
        let Some(store) = &self.store else { return };
        let id = workflow_id.to_owned();
        if let Err(e) = store.call("give back a claim", move |store| store.release(&id)).await {
            tracing::warn!(workflow = %workflow_id, "{e}");
        }
    }

    /// Run a validated workflow and wait for its report.
    pub async fn run(&self, workflow: Workflow) -> Result<Arc<RunReport>, EngineError> {
        self.submit(workflow).await?.done.await.map_err(|_| EngineError::Stopped)
    }

    /// A running workflow's current state, or a finished one's report.
    pub async fn workflow(&self, workflow_id: &str) -> Result<Option<Arc<RunReport>>, EngineError> {
        let workflow_id = workflow_id.to_owned();
        self.ask(|reply| Command::Get { workflow_id, reply }).await
    }

    /// Running workflows, then the most recently finished ones.
    pub async fn workflows(&self) -> Result<Vec<WorkflowSummary>, EngineError> {
        self.ask(|reply| Command::List { reply }).await
    }

    /// Cancel a running workflow; false if no such workflow is running.
    pub async fn cancel(&self, workflow_id: &str) -> Result<bool, EngineError> {
        let workflow_id = workflow_id.to_owned();
        self.ask(|reply| Command::Cancel { workflow_id, reply }).await
    }

    /// Resume a workflow saved by a store before a restart; its report
    /// arrives on the returned receiver.
    pub fn restore(&self, saved: crate::store::Saved) -> Result<oneshot::Receiver<Arc<RunReport>>, EngineError> {
        let (done, finished) = oneshot::channel();
        self.send(Command::Restore { saved, done })?;
        Ok(finished)
    }

    /// What the scheduler has counted so far, and its queue's depth now.
    pub async fn stats(&self) -> Result<EngineStats, EngineError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Providers were added (or freed): parked tasks should try again.
    pub fn providers_changed(&self) {
        let _ = self.send(Command::ProvidersChanged);
    }
}

/// The state of a workflow another host drives, as the store has it: its
/// report while it runs, from its document and its tasks' stored states.
pub fn stored_snapshot(saved: crate::store::Saved) -> RunReport {
    // Resuming makes the running tasks ready to run again; the snapshot
    // shows them as the store has them.
    let mut running: std::collections::HashMap<String, (TaskStatus, Vec<crate::report::Attempt>)> = saved
        .tasks
        .iter()
        .filter(|record| !record.status.is_final())
        .map(|record| (record.task_id.clone(), (record.status, record.history.clone())))
        .collect();
    let mut run = run::Run::new(saved.workflow, oneshot::channel().0);
    let _ = run.resume(saved.submitted_at, saved.tasks);
    let mut report = run.snapshot();
    for task in &mut report.tasks {
        if let Some((status, history)) = running.remove(&task.id) {
            (task.status, task.history) = (status, history);
        }
    }
    report
}

#[cfg(test)]
mod tests;
