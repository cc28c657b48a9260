//! Writing down and telling: every state change goes to the journal (with a store)
//! and every event to the observer, after what it tells is stored; the store's refusals
//! and a workflow past its limits end there.

use super::Scheduler;
use crate::engine::{EngineEvent, RunId};
use crate::model::{TaskError, codes};
use crate::store::Record;
use crate::store::journal::{Item, Journal, Refusal};
use std::sync::Arc;

impl Scheduler {
    /// Workflow `id` went past one of its limits (`error` says which): it
    /// ends, failed, with everything it has not done cancelled.
    pub(super) fn over_limit(&mut self, id: RunId, error: &TaskError) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        tracing::warn!(workflow = %run.workflow.id, "ended: {}", error.message);
        run.failure.get_or_insert_with(|| error.message.clone());
        self.cancel(id, &format!("the workflow went past a limit: {}", error.message));
    }

    /// The store refused a record of a workflow for good (the journal
    /// stored a small one saying why instead): the task it was about loses
    /// what made it too large, and the workflow ends.
    pub(super) fn refused(&mut self, refusal: Refusal) {
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

    /// Hand a record to the journal (built only when there is one).
    pub(super) fn record(&self, make: impl FnOnce() -> Record) {
        if let Some(journal) = &self.journal {
            let record = make();
            journal.push(Some(record.workflow_id().to_owned()), Item::Record(record));
        }
    }

    /// Send an event to the observer: through the journal when there is one,
    /// so it leaves after what it reports is stored.
    pub(super) fn emit(&self, event: EngineEvent) {
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
    pub(super) fn event_sink(&self) -> Option<Arc<dyn Fn(EngineEvent) + Send + Sync>> {
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

    pub(super) fn observed(&self) -> bool {
        self.observer.is_some() || self.journal.as_ref().is_some_and(Journal::observed)
    }

    /// Run `then` once everything recorded so far for workflow `lane` (for
    /// all workflows if `None`) is stored; at once without a store.
    pub(super) fn after_stored(&self, lane: Option<String>, then: impl FnOnce() + Send + 'static) {
        match &self.journal {
            Some(journal) => journal.push(lane, Item::Then(Box::new(then))),
            None => then(),
        }
    }
}
