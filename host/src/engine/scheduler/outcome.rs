//! What comes of a call: its result or error settled on the task, a retry after its
//! backoff, a failure before it started, the timers that say so.

use super::{Internal, MAX_REQUEUES, Message, Scheduler};
use crate::engine::RunId;
use crate::model::{TaskError, TaskStatus, codes};
use crate::report::Usage;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};
use tokio::task::AbortHandle;

impl Scheduler {
    /// Send `message` to the scheduler after `delay`.
    pub(super) fn after(&self, delay: Duration, message: Internal) -> Option<AbortHandle> {
        let inbox = self.inbox.upgrade()?;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inbox.send(Message::Internal(message));
        });
        Some(timer.abort_handle())
    }

    /// A task that cannot even start (bad reference, no provider, params
    /// that miss the schema) fails.
    pub(super) fn fail_before_start(&mut self, id: RunId, t: usize, error: TaskError) {
        if let Some(run) = self.runs.get_mut(&id) {
            run.admitted -= 1;
        }
        self.settle(id, t, Err(error));
        self.admit(id);
    }

    pub(super) fn finished(
        &mut self,
        id: RunId,
        t: usize,
        attempt: u32,
        took: Duration,
        outcome: Result<Value, TaskError>,
    ) {
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
        let usage = outcome.as_ref().ok().and_then(Usage::of);
        if let Some(provider) = state.provider() {
            if let Some((tokens, model)) = &usage {
                self.stats.count_tokens(protocol, provider, model.as_deref(), tokens);
            }
            // A backend that asked for a pause (429 Retry-After) gets no
            // call from this host before it ends.
            let pause = outcome.as_ref().err().and_then(TaskError::retry_after).map(|wait| Instant::now() + wait);
            let tokens = usage.as_ref().map_or(0, |(tokens, _)| tokens.total_tokens);
            self.registry.call_ended(protocol, provider, tokens, pause);
        }
        state.call_ended(took, outcome.as_ref().err(), usage);
        if let Some(method) = self.stats.of_task(&run.series, t) {
            method.attempt_seconds.observe(took.as_secs_f64());
        }
        run.admitted -= 1;
        self.running -= 1;
        if let Ok(result) = &outcome {
            self.keep_result(id, t, result);
        }
        self.settle(id, t, outcome);
        self.admit(id);
    }

    /// Record an attempt's outcome: complete, re-queue, retry later, or fail.
    pub(super) fn settle(&mut self, id: RunId, t: usize, outcome: Result<Value, TaskError>) {
        self.release_key(id, t);
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
                // A backend that said when to come back (429 Retry-After) is
                // not asked sooner.
                let delay =
                    policy.delay_before(state.attempts, fastrand::f64()).max(error.retry_after().unwrap_or_default());
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

    pub(super) fn retry_due(&mut self, id: RunId, t: usize) {
        let waiting = self.runs.get(&id).is_some_and(|run| run.tasks[t].status == TaskStatus::Pending);
        if waiting {
            self.make_ready(id, t);
        }
    }
}
