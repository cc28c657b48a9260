//! Run-time state of one workflow and its tasks, and the report built from it.

use crate::model::{TaskError, TaskStatus, Workflow, WorkflowStatus, codes};
use crate::queue::PriorityQueue;
use crate::report::{Attempt, RunReport, TaskReport};
use crate::resolver::Dag;
use crate::store::TaskRecord;
use serde_json::Value;
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
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    pub abort: Option<AbortHandle>,
    /// While parked with no provider for its protocol: the timer that fails
    /// the task if none comes within its timeout.
    pub provider_wait: Option<AbortHandle>,
    /// While waiting for a retry: when it is due.
    pub retry_at: Option<SystemTime>,
    /// When it last became ready (queued), for the queue-wait histogram.
    pub ready_at: Option<Instant>,
    /// The params of its last call where resolving references changed
    /// them; otherwise the document's params are the ones it got.
    pub params: Option<Arc<Value>>,
    /// Every call made for it.
    pub history: Vec<Attempt>,
}

/// What a report shows of a task's state beyond its status and times.
struct Shown {
    result: Option<Value>,
    error: Option<TaskError>,
    params: Option<Arc<Value>>,
    history: Vec<Attempt>,
}

impl TaskState {
    fn shown(&self) -> Shown {
        Shown {
            result: self.result.clone(),
            error: self.error.clone(),
            params: self.params.clone(),
            history: self.history.clone(),
        }
    }

    fn take_shown(&mut self) -> Shown {
        Shown {
            result: self.result.take(),
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
        });
    }

    /// The running call ended after `took`, failing with `error` if any.
    pub fn call_ended(&mut self, took: Duration, error: Option<&TaskError>) {
        if let Some(call) = self.history.last_mut().filter(|call| call.duration_ms.is_none()) {
            call.duration_ms = Some(took.as_secs_f64() * 1000.0);
            call.error = error.cloned();
        }
    }

    /// The running call will not end: it was cancelled, or the host
    /// stopped while it ran.
    pub fn call_abandoned(&mut self, error: TaskError) {
        let took = self.history.last().map(|call| call.started_at.elapsed().unwrap_or_default());
        if let Some(took) = took {
            self.call_ended(took, Some(&error));
        }
    }
}

/// Run-time state of one workflow.
pub(super) struct Run {
    pub workflow: Workflow,
    /// The workflow's owner, shared by its events.
    pub owner: Option<Arc<str>>,
    /// Each task's series in the engine's stats (see `stats`).
    pub series: Vec<usize>,
    pub tasks: Vec<TaskState>,
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
}

impl Run {
    pub fn new(workflow: Workflow, done: oneshot::Sender<Arc<RunReport>>) -> Self {
        let ids: Vec<&str> = workflow.tasks.iter().map(|t| t.id.as_str()).collect();
        let dag = Dag::from_ids(&ids, |t| workflow.tasks[t].dependencies.iter().map(String::as_str).collect());
        let tasks = (0..dag.len())
            .map(|t| TaskState {
                status: TaskStatus::Pending,
                attempts: 0,
                requeues: 0,
                waiting_on: dag.deps(t).len(),
                started_at: None,
                started: None,
                finished_at: None,
                finished: None,
                result: None,
                error: None,
                abort: None,
                provider_wait: None,
                retry_at: None,
                ready_at: None,
                params: None,
                history: Vec::new(),
            })
            .collect();
        let index = ids.iter().enumerate().map(|(i, id)| ((*id).to_owned(), i)).collect();
        Self {
            dependents: dag.dependents(),
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
            owner: workflow.owner.as_deref().map(Arc::from),
            series: Vec::new(),
            workflow,
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
        let mut retries = Vec::new();
        for record in records {
            let Some(&t) = self.index.get(&record.task_id) else { continue };
            let state = &mut self.tasks[t];
            state.attempts = record.attempts;
            state.started_at = record.started_at;
            state.started = record.started_at.map(instant_of);
            state.error = record.error;
            state.params = record.params;
            state.history = record.history;
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
        retries
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
            result: state.result.clone(),
            error: state.error.clone(),
            retry_at: state.retry_at,
            // Only a final state needs them: a task that was running when
            // the host stopped runs again and resolves its params again.
            // (They can be as large as the results they quote.)
            params: state.params.clone().filter(|_| state.status.is_final()),
            history: state.history.clone(),
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
        self.tasks[t].result = Some(value);
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
        let failed_id = self.workflow.tasks[failed].id.clone();
        let mut skipped = Vec::new();
        let mut stack: Vec<u32> = self.dependents[failed].clone();
        while let Some(d) = stack.pop() {
            let d = d as usize;
            if self.tasks[d].status != TaskStatus::Pending {
                continue;
            }
            let message = format!("not run: dependency '{failed_id}' failed");
            self.tasks[d].error = Some(TaskError::new(codes::SKIPPED, message));
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
        }
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
        report
    }

    /// The report of a finished run: takes each task's result, error and
    /// calls out of the run (which ends with it) rather than copying them.
    pub fn final_report(&mut self) -> RunReport {
        let tasks = (0..self.tasks.len()).map(|t| {
            let shown = self.tasks[t].take_shown();
            self.task_report(t, shown)
        });
        let tasks = tasks.collect();
        self.report_of(tasks)
    }

    /// The state of a run still in progress.
    pub fn snapshot(&self) -> RunReport {
        let tasks = (0..self.tasks.len()).map(|t| self.task_report(t, self.tasks[t].shown())).collect();
        let mut report = self.report_of(tasks);
        report.status = WorkflowStatus::Running;
        report.finished_at = None;
        report
    }
}
