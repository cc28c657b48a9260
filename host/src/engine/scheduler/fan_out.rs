//! `for_each` tasks: their items listed (a `files` listing read on the blocking pool, off
//! this thread), one item task each, and their files read when an item task starts.

use super::{Internal, Message, Scheduler};
use crate::engine::RunId;
use crate::engine::run::not_a_list;
use crate::files::FileDirs;
use crate::model::{MAX_ITEMS, TaskError, TaskStatus, codes};
use serde_json::Value;
use std::sync::Arc;

impl Scheduler {
    /// A ready `for_each` task becomes one task per item (or fails if its
    /// items are not a list); those its `max_parallel` allows are ready.
    /// Files are listed first, off the scheduler's thread.
    pub(super) fn expand(&mut self, id: RunId, t: usize) {
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
    pub(super) fn listed(&mut self, id: RunId, t: usize, outcome: Result<Vec<Value>, TaskError>) {
        let Some(run) = self.runs.get(&id) else { return };
        if run.tasks[t].status.is_final() {
            return;
        }
        match outcome {
            Ok(items) => self.expand_into(id, t, Arc::new(items)),
            Err(error) => self.settle(id, t, Err(error)),
        }
    }

    pub(super) fn expand_into(&mut self, id: RunId, t: usize, items: Arc<Vec<Value>>) {
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
    pub(super) fn off_thread(&self, work: impl FnOnce(&FileDirs) -> Internal + Send + 'static) {
        let Some(inbox) = self.inbox.upgrade() else { return };
        let dirs = self.config.file_dirs.clone();
        tokio::task::spawn_blocking(move || {
            let _ = inbox.send(Message::Internal(work(&dirs)));
        });
    }

    /// Queue the item tasks of `for_each` task `t` its limit now allows.
    pub(super) fn release_items(&mut self, id: RunId, t: usize) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        for c in run.release(t) {
            self.make_ready(id, c);
        }
    }

    /// Item task `c` is final: let the next item go, or end its `for_each`
    /// task once every item has.
    pub(super) fn item_ended(&mut self, id: RunId, c: usize) {
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

    /// Read the file of item task `t` before its call. The read holds one
    /// of the host's call slots until it is done: a file's content weighs
    /// what a call's params do, so no more are in memory than calls.
    pub(super) fn read_file(&mut self, id: RunId, t: usize, item: Value, text: bool, base64: bool) {
        self.running += 1;
        self.off_thread(move |dirs| {
            let outcome =
                dirs.read(&item, text, base64).map_err(|e| TaskError::new(codes::SUBSTITUTION, e.to_string()));
            Internal::FileRead { run: id, task: t, outcome }
        });
    }

    /// Item task `t`'s file is read: it goes back to the front of the queue
    /// for a provider (or fails), unless it ended meanwhile.
    pub(super) fn file_read(&mut self, id: RunId, t: usize, outcome: Result<Value, TaskError>) {
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
}
