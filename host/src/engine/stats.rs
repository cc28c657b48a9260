//! What the scheduler counts as it runs, for `/metrics`: workflows
//! submitted and finished, and per protocol and method the tasks submitted,
//! ended (by status) and retried, each attempt's duration and each task's
//! wait from ready to started; and per protocol, provider and model the
//! tokens the calls' results reported. Plain numbers in the scheduler's own state
//! (no locks, no atomics); [`super::Engine::stats`] asks for a copy, with
//! the queue's depth at that moment.
//!
//! Each task finds its series once, when its workflow is accepted
//! ([`EngineStats::series`]); later counts are an index away.

use crate::metrics::{Histogram, SECONDS};
use crate::model::{Priority, TaskStatus, WorkflowStatus};
use crate::report::Usage;
use std::collections::{BTreeMap, HashMap};

/// Most (protocol, method) series kept; tasks of any others count in one
/// series labelled `other`, so no workload can grow the scrape without bound.
pub const MAX_SERIES: usize = 2000;
/// Most method series of one protocol; its other methods count as
/// (protocol, `other`). One provider's thousand methods cannot take the
/// series every other protocol needs.
pub const MAX_SERIES_PER_PROTOCOL: usize = 100;
/// Most (protocol, provider, model) token series kept; calls of any others
/// count under the model `other`.
pub const MAX_TOKEN_SERIES: usize = 2000;

/// Whose tokens: (protocol, provider, model; empty if the result named none).
pub type TokenSeries = (String, String, String);

/// The counts of one (protocol, method).
#[derive(Debug, Clone)]
pub struct MethodStats {
    pub protocol: String,
    pub method: String,
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub cancelled: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Each attempt's call, from start to answer.
    pub attempt_seconds: Histogram,
    /// From ready (queued) to its attempt started.
    pub queue_wait_seconds: Histogram,
}

impl MethodStats {
    pub fn new(protocol: &str, method: &str) -> Self {
        Self {
            protocol: protocol.to_owned(),
            method: method.to_owned(),
            submitted: 0,
            completed: 0,
            failed: 0,
            skipped: 0,
            cancelled: 0,
            retried: 0,
            attempt_seconds: Histogram::new(&SECONDS),
            queue_wait_seconds: Histogram::new(&SECONDS),
        }
    }

    /// Count a task that reached `status` (final).
    pub fn ended(&mut self, status: TaskStatus) {
        match status {
            TaskStatus::Completed => self.completed += 1,
            TaskStatus::Failed => self.failed += 1,
            TaskStatus::Skipped => self.skipped += 1,
            TaskStatus::Cancelled => self.cancelled += 1,
            TaskStatus::Pending | TaskStatus::Queued | TaskStatus::Running => {}
        }
    }
}

/// Everything the scheduler counts.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub workflows_submitted: u64,
    pub workflows_completed: u64,
    pub workflows_failed: u64,
    pub workflows_cancelled: u64,
    pub methods: Vec<MethodStats>,
    index: HashMap<String, HashMap<String, usize>>,
    /// Ready tasks in the shared queue, by priority (urgent first).
    pub queued: [usize; 4],
    /// Ready tasks waiting for a free provider of their protocol.
    pub waiting_for_provider: usize,
    /// Of those, the tasks whose protocol's providers a rate limit holds.
    pub waiting_for_rate_limit: usize,
    /// Ready tasks waiting for a place of their concurrency key.
    pub waiting_for_key: usize,
    pub running: usize,
    /// Workflows running now.
    pub running_workflows: usize,
    /// The store's commits, when there is a store.
    pub store: Option<crate::store::journal::Commits>,
    /// Tokens the calls' results reported.
    pub tokens: BTreeMap<TokenSeries, Usage>,
    /// Result cache lookups by protocol: (hits, misses).
    pub cache: BTreeMap<String, (u64, u64)>,
}

impl EngineStats {
    /// The series of `protocol`/`method`, made on first use.
    pub fn series(&mut self, protocol: &str, method: &str) -> usize {
        if let Some(&at) = self.index.get(protocol).and_then(|m| m.get(method)) {
            return at;
        }
        let of_protocol = self.index.get(protocol).map_or(0, HashMap::len);
        let (protocol, method) = match (self.methods.len() < MAX_SERIES, of_protocol < MAX_SERIES_PER_PROTOCOL) {
            (true, true) => (protocol, method),
            (true, false) => (protocol, "other"),
            (false, _) => ("other", "other"),
        };
        if let Some(&at) = self.index.get(protocol).and_then(|m| m.get(method)) {
            return at;
        }
        self.methods.push(MethodStats::new(protocol, method));
        let at = self.methods.len() - 1;
        self.index.entry(protocol.to_owned()).or_default().insert(method.to_owned(), at);
        at
    }

    pub fn method(&mut self, series: usize) -> Option<&mut MethodStats> {
        self.methods.get_mut(series)
    }

    /// The series of task `t` of a run whose tasks have `series`.
    pub fn of_task(&mut self, series: &[usize], t: usize) -> Option<&mut MethodStats> {
        self.methods.get_mut(*series.get(t)?)
    }

    pub fn workflow_ended(&mut self, status: WorkflowStatus) {
        match status {
            WorkflowStatus::Completed => self.workflows_completed += 1,
            WorkflowStatus::Failed => self.workflows_failed += 1,
            WorkflowStatus::Cancelled => self.workflows_cancelled += 1,
            WorkflowStatus::Running => {}
        }
    }

    /// Count a result cache lookup of a task of `protocol`.
    pub fn count_cache(&mut self, protocol: &str, hit: bool) {
        let protocol =
            if self.cache.contains_key(protocol) || self.cache.len() < MAX_SERIES { protocol } else { "other" };
        let counts = self.cache.entry(protocol.to_owned()).or_default();
        if hit { counts.0 += 1 } else { counts.1 += 1 }
    }

    /// Count the tokens a call of `provider` for `protocol` used.
    pub fn count_tokens(&mut self, protocol: &str, provider: &str, model: Option<&str>, usage: &Usage) {
        let mut key = (protocol.to_owned(), provider.to_owned(), model.unwrap_or_default().to_owned());
        if !self.tokens.contains_key(&key) && self.tokens.len() >= MAX_TOKEN_SERIES {
            key.2 = "other".to_owned();
        }
        let sum = self.tokens.entry(key).or_default();
        *sum = Usage::sum([&*sum, usage]).unwrap_or_default();
    }

    /// The queue depth of `priority`.
    pub fn queued(&self, priority: Priority) -> usize {
        self.queued[priority.rank()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_protocols_many_methods_leave_series_for_the_others() {
        let mut stats = EngineStats::default();
        let first = stats.series("many/v1", "m0");
        for n in 1..3000 {
            stats.series("many/v1", &format!("m{n}"));
        }
        let mut protocols: Vec<&str> = stats.methods.iter().map(|m| m.protocol.as_str()).collect();
        protocols.dedup();
        assert_eq!(protocols, ["many/v1"], "its overflow keeps its own label");
        assert_eq!(stats.methods.len(), MAX_SERIES_PER_PROTOCOL + 1, "its methods, then (many/v1, other)");
        assert_eq!(stats.series("many/v1", "m0"), first);
        let echo = stats.series("echo/v1", "timestamp");
        let method = &stats.methods[echo];
        assert_eq!((method.protocol.as_str(), method.method.as_str()), ("echo/v1", "timestamp"));
    }
}
