//! From the queue to a provider: admission within the concurrency, tasks parked while no
//! provider of their protocol is free (and woken when one may be), params checked against
//! the provider's schema, and the call launched.

use super::{Internal, Message, Scheduler};
use crate::engine::{EngineEvent, ProgressEvent, RunId};
use crate::model::{TaskError, TaskStatus, codes};
use crate::queue::PriorityQueue;
use crate::registry::{Call, Provider, Selection, Starting};
use crate::resolver::substitute;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

impl Scheduler {
    /// Move ready tasks into the shared queue while `max_parallel` allows.
    pub(super) fn admit(&mut self, id: RunId) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let limit = run.workflow.max_parallel.map_or(usize::MAX, |m| m as usize);
        while run.admitted < limit {
            let Some((priority, t)) = run.ready.pop() else { break };
            run.admitted += 1;
            self.queue.push(priority, (id, t));
        }
    }

    pub(super) fn dispatch(&mut self) {
        self.start_condition_turns();
        self.unpark();
        while self.running < self.config.concurrency {
            let Some((_, (id, t))) = self.queue.pop() else { break };
            self.start(id, t);
        }
    }

    /// Start parked tasks of woken protocols while providers take them.
    pub(super) fn unpark(&mut self) {
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
                    Selection::Limited { until, why } => {
                        parked.push_front(priority, (id, t));
                        self.rate_limited(&protocol, until, why, (id, t));
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
    pub(super) fn start(&mut self, id: RunId, t: usize) {
        let queued = self.runs.get(&id).is_some_and(|run| run.tasks[t].status == TaskStatus::Queued);
        if !queued || self.looking_up(id, t) || self.held_by_key(id, t) {
            return;
        }
        let Some(run) = self.runs.get(&id) else { return };
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
                match selection {
                    Selection::Missing => self.await_provider(&protocol),
                    Selection::Limited { until, why } => self.rate_limited(&protocol, until, why, (id, t)),
                    Selection::Provider(_) | Selection::Busy => {}
                }
            }
        }
    }

    /// `protocol`'s parked tasks wait for a rate limit until `until`: task
    /// `t` of run `id`, just parked, says why, and a timer wakes them then
    /// (one per protocol, the earliest).
    fn rate_limited(&mut self, protocol: &str, until: Instant, why: String, (id, t): (RunId, usize)) {
        // The task just parked (or put back) says why; each parked task
        // said so when it was, so a long queue is not walked each time.
        if let Some(run) = self.runs.get_mut(&id) {
            run.tasks[t].waiting_for = Some(why.into());
        }
        if self.rate_timers.get(protocol).is_some_and(|due| *due <= until) {
            return;
        }
        self.rate_timers.insert(protocol.to_owned(), until);
        let wait = until.saturating_duration_since(Instant::now());
        self.after(wait, Internal::RateWindow { protocol: protocol.to_owned() });
    }

    /// A rate limit of `protocol` may let its parked tasks start.
    pub(super) fn rate_window(&mut self, protocol: String) {
        self.rate_timers.remove(&protocol);
        if self.parked.contains_key(&protocol) && !self.woken.contains(&protocol) {
            self.woken.push(protocol);
        }
    }

    /// No provider serves `protocol`: each task parked for it waits at most
    /// its timeout for one to register (a plugin dropped back in, a remote
    /// provider reconnecting), then fails.
    pub(super) fn await_provider(&mut self, protocol: &str) {
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
    pub(super) fn provider_wait_over(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let state = &mut run.tasks[t];
        state.provider_wait = None;
        let task = &run.workflow.tasks[t];
        if state.status != TaskStatus::Queued || self.registry.serves(&task.protocol) {
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

    /// Let `starting` (the chosen provider's start) finish before task `t`
    /// is called, holding one of the host's call slots meanwhile; the task
    /// stays queued, its deadline not yet running.
    fn start_provider(&mut self, id: RunId, t: usize, starting: Starting) {
        let Some(inbox) = self.inbox.upgrade() else { return };
        self.running += 1;
        tokio::spawn(async move {
            starting.await;
            let _ = inbox.send(Message::Internal(Internal::ProviderStarted { run: id, task: t }));
        });
    }

    /// Task `t`'s provider has started: the task goes back to the front of
    /// the queue, unless it ended meanwhile.
    pub(super) fn provider_started(&mut self, id: RunId, t: usize) {
        self.running -= 1;
        let Some(run) = self.runs.get(&id) else { return };
        if run.tasks[t].status == TaskStatus::Queued {
            self.queue.push_front(run.workflow.tasks[t].priority, (id, t));
        }
    }

    /// Call the provider for one attempt of a task.
    pub(super) fn launch(&mut self, id: RunId, t: usize, provider: Arc<dyn Provider>) {
        let sink = self.event_sink();
        let Some(run) = self.runs.get_mut(&id) else { return };
        if run.tasks[t].status != TaskStatus::Queued {
            return;
        }
        if let Some((item, text, base64)) = run.file_to_read(t) {
            return self.read_file(id, t, item, text, base64);
        }
        if let Some(starting) = provider.starting() {
            return self.start_provider(id, t, starting);
        }
        let task = &run.workflow.tasks[t];
        let params = substitute(&task.params, |root| run.value_of(t, root));
        run.drop_file_read(t);
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
        // On tokio's clock, which tests may pause; the other times here are
        // measurements, on the cheaper std clock (tokio's takes a lock per
        // read where its test clock is built in).
        let deadline = tokio::time::Instant::now() + timeout;
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
        state.waiting_for = None;
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
            owner: run.owner.clone(),
            attempt,
            method: task.method.clone(),
            params,
            deadline: deadline.into_std(),
            progress,
        };
        // `running` leaves before anything the provider sends for the attempt.
        self.notify(id, t);
        // Made here, not in the spawned task: a provider reserves its slot
        // when `call` is invoked, before the next selection.
        let pending = provider.call(call);
        let handle = tokio::spawn(async move {
            let called = Instant::now();
            let outcome = match tokio::time::timeout_at(deadline, pending).await {
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
