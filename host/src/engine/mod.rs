//! The engine: runs workflows to completion.
//!
//! One scheduler task owns all run-time state (no locks on the hot path):
//! it resolves dependencies, admits ready tasks into the shared priority queue
//! (respecting each workflow's `max_parallel`), dispatches them to providers
//! up to the host-wide concurrency limit, enforces per-attempt timeouts,
//! retries with backoff, skips the dependents of failed tasks and cancels what
//! is left when a workflow times out. Each dispatched call runs in its own
//! tokio task and reports back through the scheduler's channel.
//!
//! It does not parse or validate workflows (`workflow`), choose among
//! providers (`registry`) or know what a provider is made of (`plugins`).

use crate::model::{TaskError, TaskStatus, Workflow, codes};
use crate::queue::PriorityQueue;
use crate::registry::{Call, Registry};
use crate::report::{RunReport, TaskReport};
use crate::resolver::{Dag, substitute};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// Host-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tasks running at once across all workflows.
    pub concurrency: usize,
    /// Per-attempt timeout for tasks that set none.
    pub default_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            default_timeout: Duration::from_secs(300),
        }
    }
}

/// The engine stopped before the workflow finished.
#[derive(Debug, thiserror::Error)]
#[error("the engine stopped before workflow '{0}' finished")]
pub struct EngineStopped(String);

/// A handle to the scheduler; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    events: mpsc::UnboundedSender<Event>,
}

impl Engine {
    /// Start the scheduler on the current tokio runtime.
    pub fn start(registry: Arc<Registry>, config: EngineConfig) -> Self {
        let (events, inbox) = mpsc::unbounded_channel();
        let scheduler = Scheduler {
            registry,
            config,
            events: events.downgrade(),
            runs: HashMap::new(),
            queue: PriorityQueue::default(),
            running: 0,
            next_run: 0,
        };
        tokio::spawn(scheduler.run(inbox));
        Self { events }
    }

    /// Run a validated workflow and wait for its report.
    pub async fn run(&self, workflow: Workflow) -> Result<RunReport, EngineStopped> {
        let id = workflow.id.clone();
        let (done, report) = oneshot::channel();
        self.events
            .send(Event::Submit { workflow, done })
            .map_err(|_| EngineStopped(id.clone()))?;
        report.await.map_err(|_| EngineStopped(id))
    }
}

type RunId = u64;

enum Event {
    Submit {
        workflow: Workflow,
        done: oneshot::Sender<RunReport>,
    },
    Finished {
        run: RunId,
        task: usize,
        attempt: u32,
        outcome: Result<Value, TaskError>,
    },
    RetryDue {
        run: RunId,
        task: usize,
    },
    TimedOut {
        run: RunId,
    },
}

/// Run-time state of one task.
#[derive(Debug)]
struct TaskState {
    status: TaskStatus,
    attempts: u32,
    /// Dependencies not yet completed.
    waiting_on: usize,
    started_at: Option<SystemTime>,
    started: Option<Instant>,
    finished_at: Option<SystemTime>,
    finished: Option<Instant>,
    result: Option<Value>,
    error: Option<TaskError>,
    abort: Option<AbortHandle>,
}

/// Run-time state of one workflow.
struct Run {
    workflow: Workflow,
    tasks: Vec<TaskState>,
    dependents: Vec<Vec<u32>>,
    index: HashMap<String, usize>,
    /// Ready tasks not yet admitted to the shared queue (`max_parallel`).
    ready: PriorityQueue<usize>,
    /// Tasks in the shared queue or running.
    admitted: usize,
    unfinished: usize,
    started_at: SystemTime,
    started: Instant,
    done: Option<oneshot::Sender<RunReport>>,
    timeout: Option<AbortHandle>,
}

struct Scheduler {
    registry: Arc<Registry>,
    config: EngineConfig,
    /// Weak, so the scheduler ends once every `Engine` handle and running
    /// call is gone.
    events: mpsc::WeakUnboundedSender<Event>,
    runs: HashMap<RunId, Run>,
    queue: PriorityQueue<(RunId, usize)>,
    running: usize,
    next_run: RunId,
}

impl Scheduler {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>) {
        let mut batch = Vec::with_capacity(256);
        while inbox.recv_many(&mut batch, 256).await > 0 {
            for event in batch.drain(..) {
                self.handle(event);
            }
            self.dispatch();
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit { workflow, done } => self.submit(workflow, done),
            Event::Finished {
                run,
                task,
                attempt,
                outcome,
            } => self.finished(run, task, attempt, outcome),
            Event::RetryDue { run, task } => self.retry_due(run, task),
            Event::TimedOut { run } => self.cancel(run, "the workflow ran past its timeout"),
        }
    }

    fn submit(&mut self, workflow: Workflow, done: oneshot::Sender<RunReport>) {
        let id = self.next_run;
        self.next_run += 1;
        let ids: Vec<&str> = workflow.tasks.iter().map(|t| t.id.as_str()).collect();
        let dag = Dag::from_ids(&ids, |t| {
            workflow.tasks[t]
                .dependencies
                .iter()
                .map(String::as_str)
                .collect()
        });
        let tasks = (0..dag.len())
            .map(|t| TaskState {
                status: TaskStatus::Pending,
                attempts: 0,
                waiting_on: dag.deps(t).len(),
                started_at: None,
                started: None,
                finished_at: None,
                finished: None,
                result: None,
                error: None,
                abort: None,
            })
            .collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ((*id).to_owned(), i))
            .collect();
        let timeout = workflow
            .timeout
            .and_then(|after| self.after(after, Event::TimedOut { run: id }));
        let run = Run {
            dependents: dag.dependents(),
            tasks,
            index,
            ready: PriorityQueue::default(),
            admitted: 0,
            unfinished: dag.len(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            done: Some(done),
            timeout,
            workflow,
        };
        let roots: Vec<usize> = (0..run.tasks.len())
            .filter(|&t| run.tasks[t].waiting_on == 0)
            .collect();
        self.runs.insert(id, run);
        for t in roots {
            self.make_ready(id, t);
        }
    }

    /// Send `event` to the scheduler after `delay`.
    fn after(&self, delay: Duration, event: Event) -> Option<AbortHandle> {
        let events = self.events.upgrade()?;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(event);
        });
        Some(timer.abort_handle())
    }

    fn make_ready(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        run.tasks[t].status = TaskStatus::Queued;
        run.ready.push(run.workflow.tasks[t].priority, t);
        self.admit(id);
    }

    /// Move ready tasks into the shared queue while `max_parallel` allows.
    fn admit(&mut self, id: RunId) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let limit = run.workflow.max_parallel.map_or(usize::MAX, |m| m as usize);
        while run.admitted < limit {
            let Some(t) = run.ready.pop() else { break };
            run.admitted += 1;
            self.queue.push(run.workflow.tasks[t].priority, (id, t));
        }
    }

    fn dispatch(&mut self) {
        while self.running < self.config.concurrency {
            let Some((id, t)) = self.queue.pop() else {
                break;
            };
            self.start(id, t);
        }
    }

    fn start(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        if run.tasks[t].status != TaskStatus::Queued {
            return;
        }
        let task = &run.workflow.tasks[t];
        let params = substitute(&task.params, |dep| {
            run.index
                .get(dep)
                .and_then(|&i| run.tasks[i].result.as_ref())
        })
        .map_err(|e| TaskError::new(codes::SUBSTITUTION, e.to_string()));
        let provider = self.registry.provider_for(&task.protocol).ok_or_else(|| {
            TaskError::new(
                codes::NO_PROVIDER,
                format!("no provider serves protocol '{}'", task.protocol),
            )
        });
        let (params, provider, events) = match (params, provider, self.events.upgrade()) {
            (Ok(p), Ok(provider), Some(events)) => (p, provider, events),
            (Err(e), _, _) | (_, Err(e), _) => {
                run.admitted -= 1;
                self.settle(id, t, Err(e));
                self.admit(id);
                return;
            }
            (_, _, None) => return,
        };
        let timeout = task.timeout.unwrap_or(self.config.default_timeout);
        let deadline = Instant::now() + timeout;
        let state = &mut run.tasks[t];
        state.attempts += 1;
        state.status = TaskStatus::Running;
        state.started_at.get_or_insert_with(SystemTime::now);
        state.started.get_or_insert_with(Instant::now);
        let attempt = state.attempts;
        let call = Call {
            task_id: task.id.clone(),
            workflow_id: Some(run.workflow.id.clone()),
            attempt,
            method: task.method.clone(),
            params,
            deadline,
        };
        let handle = tokio::spawn(async move {
            let outcome = match tokio::time::timeout_at(deadline.into(), provider.call(call)).await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(TaskError::new(
                    codes::TIMEOUT,
                    format!("timed out after {}", secs(timeout)),
                )
                .retryable()),
            };
            let _ = events.send(Event::Finished {
                run: id,
                task: t,
                attempt,
                outcome,
            });
        });
        state.abort = Some(handle.abort_handle());
        self.running += 1;
    }

    fn finished(&mut self, id: RunId, t: usize, attempt: u32, outcome: Result<Value, TaskError>) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let state = &mut run.tasks[t];
        if state.status != TaskStatus::Running || state.attempts != attempt {
            return; // cancelled while it ran; already accounted for
        }
        state.abort = None;
        run.admitted -= 1;
        self.running -= 1;
        self.settle(id, t, outcome);
        self.admit(id);
    }

    /// Record an attempt's outcome: complete, retry later, or fail.
    fn settle(&mut self, id: RunId, t: usize, outcome: Result<Value, TaskError>) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let policy = &run.workflow.tasks[t].retry;
        let state = &mut run.tasks[t];
        match outcome {
            Ok(value) => {
                state.result = Some(value);
                state.error = None;
                run.finish_task(t, TaskStatus::Completed);
                let ready: Vec<usize> = run.dependents[t]
                    .iter()
                    .map(|&d| d as usize)
                    .filter(|&d| {
                        run.tasks[d].waiting_on -= 1;
                        run.tasks[d].waiting_on == 0 && run.tasks[d].status == TaskStatus::Pending
                    })
                    .collect();
                for d in ready {
                    self.make_ready(id, d);
                }
            }
            Err(error) if error.retryable && state.attempts < policy.max_attempts => {
                let delay = policy.delay_before(state.attempts, fastrand::f64());
                tracing::debug!(task = %run.workflow.tasks[t].id, attempt = state.attempts, "retrying in {delay:?}: {error}");
                state.error = Some(error);
                state.status = TaskStatus::Pending;
                self.after(delay, Event::RetryDue { run: id, task: t });
            }
            Err(error) => {
                state.error = Some(error);
                run.finish_task(t, TaskStatus::Failed);
                run.skip_dependents_of(t);
            }
        }
        self.finish_if_done(id);
    }

    fn retry_due(&mut self, id: RunId, t: usize) {
        let waiting = self
            .runs
            .get(&id)
            .is_some_and(|run| run.tasks[t].status == TaskStatus::Pending);
        if waiting {
            self.make_ready(id, t);
        }
    }

    /// End every unfinished task of a run as cancelled.
    fn cancel(&mut self, id: RunId, reason: &str) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        for t in 0..run.tasks.len() {
            let state = &mut run.tasks[t];
            if state.status.is_final() {
                continue;
            }
            if let Some(abort) = state.abort.take() {
                abort.abort();
                self.running -= 1;
            }
            state.error = Some(TaskError::new(
                codes::CANCELLED,
                format!("cancelled: {reason}"),
            ));
            run.finish_task(t, TaskStatus::Cancelled);
        }
        self.finish_if_done(id);
    }

    fn finish_if_done(&mut self, id: RunId) {
        if self.runs.get(&id).is_some_and(|run| run.unfinished == 0)
            && let Some(mut run) = self.runs.remove(&id)
        {
            if let Some(timer) = run.timeout.take() {
                timer.abort();
            }
            if let Some(done) = run.done.take() {
                let _ = done.send(run.report());
            }
        }
    }
}

impl Run {
    fn finish_task(&mut self, t: usize, status: TaskStatus) {
        let state = &mut self.tasks[t];
        state.status = status;
        state.finished_at = Some(SystemTime::now());
        state.finished = Some(Instant::now());
        self.unfinished -= 1;
    }

    /// Mark every task downstream of `failed` as skipped (iteratively).
    fn skip_dependents_of(&mut self, failed: usize) {
        let failed_id = self.workflow.tasks[failed].id.clone();
        let mut stack: Vec<u32> = self.dependents[failed].clone();
        while let Some(d) = stack.pop() {
            let d = d as usize;
            if self.tasks[d].status != TaskStatus::Pending {
                continue;
            }
            self.tasks[d].error = Some(TaskError::new(
                codes::SKIPPED,
                format!("not run: dependency '{failed_id}' failed"),
            ));
            self.finish_task(d, TaskStatus::Skipped);
            stack.extend_from_slice(&self.dependents[d]);
        }
    }

    fn report(self) -> RunReport {
        let started = self.started;
        let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1000.0;
        let tasks = self
            .workflow
            .tasks
            .into_iter()
            .zip(self.tasks)
            .map(|(task, state)| TaskReport {
                id: task.id,
                name: task.name,
                protocol: task.protocol,
                method: task.method,
                status: state.status,
                attempts: state.attempts,
                started_at: state.started_at,
                finished_at: state.finished_at,
                queued_ms: state.started.map(|s| ms(started, s)),
                duration_ms: state.started.zip(state.finished).map(|(s, f)| ms(s, f)),
                result: state.result,
                error: state.error,
            })
            .collect();
        RunReport::new(
            self.workflow.id,
            self.workflow.name,
            self.started_at,
            started.elapsed(),
            tasks,
        )
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests;
