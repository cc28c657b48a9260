//! Concurrency keys (`concurrency: {key, max}`): a task whose key has
//! `max` calls running waits in the key's own queue, not failed and not
//! counting an attempt, until one of them ends; keys are shared by every
//! workflow of the engine. A task holds its place from being let through
//! until its attempt's outcome is settled (or it is cancelled), across a
//! wait for a provider.

use super::Scheduler;
use crate::engine::RunId;
use crate::model::{MAX_KEY_CHARS, TaskError, TaskStatus, codes};
use crate::queue::PriorityQueue;
use crate::resolver::substitute;
use serde_json::Value;
use std::sync::Arc;

/// One key's calls running and tasks waiting.
#[derive(Default)]
pub(super) struct Key {
    running: usize,
    waiting: PriorityQueue<(RunId, usize)>,
}

impl Scheduler {
    /// Whether task `t` must wait for its concurrency key (it is then in
    /// the key's queue, or failed if its key cannot be resolved); if not,
    /// it holds one of the key's places.
    pub(super) fn held_by_key(&mut self, id: RunId, t: usize) -> bool {
        let Some(run) = self.runs.get_mut(&id) else { return false };
        let task = &run.workflow.tasks[t];
        let Some(concurrency) = &task.concurrency else { return false };
        if run.tasks[t].key.is_some() {
            return false; // let through already (then parked for a provider)
        }
        let written = Arc::new(Value::String(concurrency.key.clone()));
        let key: Arc<str> = match substitute(&written, |root| run.value_of(t, root)) {
            Ok(value) => key_text(&value).into(),
            Err(e) => {
                let error = TaskError::new(codes::SUBSTITUTION, format!("concurrency.key: {e}"));
                self.fail_before_start(id, t, error);
                return true;
            }
        };
        let (max, priority) = (concurrency.max as usize, task.priority);
        let entry = self.keys.entry(key.clone()).or_default();
        if entry.running < max {
            entry.running += 1;
            run.tasks[t].key = Some(key);
            return false;
        }
        entry.waiting.push(priority, (id, t));
        run.tasks[t].waiting_for = Some(format!("concurrency key '{key}': {max} running").into());
        true
    }

    /// Task `t` no longer holds a place of its key (its attempt settled,
    /// or it was cancelled): the key's next waiting task goes to the front
    /// of the queue.
    pub(super) fn release_key(&mut self, id: RunId, t: usize) {
        let Some(key) = self.runs.get_mut(&id).and_then(|run| run.tasks[t].key.take()) else { return };
        let Some(entry) = self.keys.get_mut(&key) else { return };
        entry.running = entry.running.saturating_sub(1);
        while let Some((priority, (id, t))) = entry.waiting.pop() {
            let queued = self.runs.get(&id).is_some_and(|run| run.tasks[t].status == TaskStatus::Queued);
            if queued {
                self.queue.push_front(priority, (id, t));
                break;
            }
        }
        if entry.running == 0 && entry.waiting.is_empty() {
            self.keys.remove(&key);
        }
    }

    /// Run `id` is cancelled: its tasks leave the keys' queues.
    pub(super) fn leave_keys(&mut self, id: RunId) {
        self.keys.retain(|_, key| {
            key.waiting.retain(|&(run, _)| run != id);
            key.running > 0 || !key.waiting.is_empty()
        });
    }

    /// Tasks waiting for a key, for `/metrics`.
    pub(super) fn waiting_for_keys(&self) -> usize {
        self.keys.values().map(|k| k.waiting.len()).sum()
    }
}

/// A resolved key as text (a string as it is, anything else as JSON),
/// at most [`MAX_KEY_CHARS`] characters.
fn key_text(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars().take(MAX_KEY_CHARS).collect()
}
