//! When a task becomes ready: its dependencies settled, its `when` checked in its owner's
//! turn (see `conditions`), then queued by priority or expanded (`fan_out`).

use super::{Internal, Scheduler};
use crate::engine::conditions::{self, Owner, Turn, Waiting};
use crate::engine::{EngineEvent, RunId, TaskEvent};
use crate::model::TaskStatus;
use crate::store::Record;
use std::time::Instant;

impl Scheduler {
    pub(super) fn notify(&mut self, id: RunId, t: usize) {
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
            cached: final_ && state.history.last().is_some_and(|call| call.cached),
        }));
    }

    /// Task `t` is ready: its condition, if it has one, is checked first
    /// (in its owner's next turn).
    pub(super) fn make_ready(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let Some(check) = run.condition_to_check(t) else { return self.queue_task(id, t) };
        self.conditions.queue(&run.owner, Waiting { run: id, task: t, check });
    }

    /// Start the turns owners with conditions waiting can take (see
    /// `conditions`); each hands back what it did as a message.
    pub(super) fn start_condition_turns(&mut self) {
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
    pub(super) fn conditions_checked(&mut self, owner: Owner, turn: Turn) {
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
    pub(super) fn queue_task(&mut self, id: RunId, t: usize) {
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
}
