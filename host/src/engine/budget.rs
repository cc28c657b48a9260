//! What one workflow may hold, and the count of what it holds.
//!
//! A workflow is bounded in tasks (its document's and every `for_each`
//! item's) and in bytes: its params and inputs as submitted, and as it runs
//! every task's resolved params, result and `for_each` items, measured as
//! the JSON the store writes. Those are the figures that grow a workflow's
//! memory in the engine and its records in the store, so bounding them
//! bounds both: no workflow can make a record too large for the store, or
//! take the host's memory from the others. The scheduler charges a run as
//! it grows and fails it, naming the limit, when a charge would take it
//! over; this module counts and words the refusal, and knows nothing of
//! what a refusal does.

use crate::model::{TaskError, codes};

/// The most one workflow may hold (`max_workflow_tasks`,
/// `max_workflow_mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowLimits {
    pub max_tasks: usize,
    pub max_bytes: usize,
}

/// The default limits: far above what an ordinary workflow needs (500
/// files summarised by a model hold a few MB), far below what would make
/// one user's workflow everyone's problem.
pub const DEFAULT_MAX_TASKS: usize = 100_000;
pub const DEFAULT_MAX_MB: usize = 128;
/// The highest settings: a finished report holds everything a workflow
/// holds in one record, and must stay below the stores' own record limits
/// (SQLite's 1,000,000,000 bytes, Redis's 512 MB) with room for its task
/// entries.
pub const CEILING_TASKS: usize = 1_000_000;
pub const CEILING_MB: usize = 256;

impl Default for WorkflowLimits {
    fn default() -> Self {
        Self { max_tasks: DEFAULT_MAX_TASKS, max_bytes: DEFAULT_MAX_MB << 20 }
    }
}

impl WorkflowLimits {
    /// Whether a run of `tasks` tasks may grow by `more`; the error
    /// names the limit and its setting.
    pub fn admit_tasks(&self, tasks: usize, more: usize, what: &str) -> Result<(), TaskError> {
        if tasks.saturating_add(more) <= self.max_tasks {
            return Ok(());
        }
        Err(over(format!(
            "{what}: {more} more tasks would make {} tasks in this workflow; the limit is {} (max_workflow_tasks)",
            tasks.saturating_add(more),
            self.max_tasks
        )))
    }

    /// Whether a run holding `held` bytes may hold `more` for `what` (e.g.
    /// "the result of task 'x'"); the error names the limit and its setting.
    pub fn admit_bytes(&self, held: usize, more: usize, what: &str) -> Result<(), TaskError> {
        let total = held.saturating_add(more);
        if total <= self.max_bytes {
            return Ok(());
        }
        Err(over(format!(
            "{what} ({}) would take this workflow to {} of params, results and items; the limit is {} \
             (max_workflow_mb)",
            shown(more),
            shown(total),
            shown(self.max_bytes)
        )))
    }
}

/// The bytes a run holds, as the store would write them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Held {
    bytes: usize,
}

impl Held {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hold `bytes` more for `what`, or refuse if that would pass `limits`.
    pub fn charge(&mut self, limits: &WorkflowLimits, bytes: usize, what: &str) -> Result<(), TaskError> {
        limits.admit_bytes(self.bytes, bytes, what)?;
        self.hold(bytes);
        Ok(())
    }

    /// Hold `bytes` the run holds already, whatever the limits (a workflow
    /// as submitted, checked by the submitter; one resumed from the store).
    pub fn hold(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// What was held for something the run no longer keeps.
    pub fn release(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// A refusal: the task fails with it, and its workflow ends.
fn over(message: String) -> TaskError {
    TaskError::new(codes::WORKFLOW_LIMIT, message)
}

/// A size for messages: bytes, KiB or MiB.
pub fn shown(bytes: usize) -> String {
    match bytes {
        b if b < 1 << 10 => format!("{b} bytes"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_charge_past_the_limit_is_refused_and_names_the_setting() {
        let limits = WorkflowLimits { max_tasks: 10, max_bytes: 1000 };
        let mut held = Held::default();
        held.charge(&limits, 600, "a").unwrap();
        let error = held.charge(&limits, 600, "the result of task 'b'").unwrap_err();
        assert_eq!(error.code, codes::WORKFLOW_LIMIT);
        assert!(error.message.contains("the result of task 'b' (600 bytes)"), "{}", error.message);
        assert!(error.message.contains("max_workflow_mb"), "{}", error.message);
        assert_eq!(held.bytes(), 600, "a refused charge holds nothing");
        held.release(600);
        held.charge(&limits, 1000, "c").unwrap();
        assert!(limits.admit_tasks(4, 6, "for_each").is_ok());
        let error = limits.admit_tasks(4, 7, "for_each").unwrap_err();
        assert!(error.message.contains("limit is 10 (max_workflow_tasks)"), "{}", error.message);
    }
}
