//! The data the whole host speaks: workflows, tasks, priorities, retry
//! policies, statuses, task errors and the specs providers declare.
//!
//! Plain data with no behaviour beyond small derived facts (a retry delay, a
//! priority's rank). Parsing lives in `workflow`, execution in `engine`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Dispatch priority; the queue serves `Urgent` first, FIFO within a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Urgent,
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::Urgent, Priority::High, Priority::Normal, Priority::Low];

    /// 0 for `Urgent` up to 3 for `Low`: the queue's lane index.
    pub fn rank(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Always `base_delay`.
    Fixed,
    /// `base_delay * n` before retry n.
    Linear,
    /// `base_delay * 2^(n-1)` before retry n.
    Exponential,
}

impl Backoff {
    pub const NAMES: &str = "fixed, linear, exponential";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "fixed" => Some(Backoff::Fixed),
            "linear" => Some(Backoff::Linear),
            "exponential" => Some(Backoff::Exponential),
            _ => None,
        }
    }
}

/// When and how often a failed task is tried again. Only retryable errors
/// (timeouts, transient provider failures) are retried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Total attempts including the first; 1 means no retry.
    pub max_attempts: u32,
    pub backoff: Backoff,
    #[serde(with = "secs")]
    pub base_delay: Duration,
    #[serde(with = "secs")]
    pub max_delay: Duration,
    /// Adds 10–30 % to each delay so retries of many tasks spread out.
    pub jitter: bool,
}

impl RetryPolicy {
    /// No retries: what a task without a `retry` block gets.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default_when_given() }
    }

    /// The defaults for fields missing from a `retry` block (the original's).
    pub fn default_when_given() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            jitter: true,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), capped at
    /// `max_delay`. `random` is a number in [0, 1) used for jitter.
    pub fn delay_before(&self, retry: u32, random: f64) -> Duration {
        let n = retry.max(1);
        let base = self.base_delay.as_secs_f64();
        let raw = match self.backoff {
            Backoff::Fixed => base,
            Backoff::Linear => base * f64::from(n),
            Backoff::Exponential => base * 2f64.powi(i32::try_from(n - 1).unwrap_or(i32::MAX).min(1000)),
        };
        let jittered = if self.jitter { raw * (1.1 + 0.2 * random.clamp(0.0, 1.0)) } else { raw };
        Duration::from_secs_f64(jittered.min(self.max_delay.as_secs_f64()))
    }
}

/// One unit of work: a method call on a protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    pub name: String,
    pub protocol: String,
    pub method: String,
    /// A JSON object; strings may hold `${task-id.result.path}` references.
    /// Shared: a call without references gets it as it is, not a copy.
    pub params: Arc<Value>,
    /// Ids of tasks that must complete first.
    pub dependencies: Vec<String>,
    pub priority: Priority,
    /// Per-attempt limit; the engine's default applies when `None`.
    #[serde(with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub metadata: Value,
    /// Set on a task that runs once per item of a list (see [`ForEach`]).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// A condition (CEL over `${…}` references) checked when the task is
    /// ready: false skips it (and its dependents) without failing anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// One file the task reads as its item (see [`FileRef`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
    /// At most so many tasks with its key run at once (see [`Concurrency`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Its calls' results are kept and reused (see [`CachePolicy`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

/// `cache: {ttl: 1d}` (a task's, or a workflow's for all its tasks): a
/// call with the same protocol, method, resolved params and provider
/// versions as one that succeeded within `ttl` is answered with that
/// result, without a call. Off by default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CachePolicy {
    #[serde(with = "secs")]
    pub ttl: Duration,
}

/// The key of a workflow's `metadata` that names the workflow it reruns
/// (set by the host on a rerun).
pub const RERUN_OF: &str = "rerun_of";

/// The longest `cache.ttl`: a year.
pub const MAX_CACHE_TTL_SECS: f64 = 365.0 * 86_400.0;

/// `concurrency: {key: "${inputs.customer}", max: 2}`: at most `max`
/// calls of tasks whose `key` (after `${…}` substitution) is the same run
/// at once, across workflows; the others wait in the queue. On a
/// `for_each` task it holds for each item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concurrency {
    pub key: String,
    pub max: u32,
}

/// The most `concurrency.max` may be.
pub const MAX_KEY_CONCURRENCY: u32 = 100_000;
/// The longest key, as written and as resolved.
pub const MAX_KEY_CHARS: usize = 256;

/// `file: {path, dir}`: the task's params see this file as `${item}`
/// (`${item.text}`, `${item.base64}`, `${item.path}`, `${item.name}`), read
/// from the named files directory just before each call, as a `for_each`
/// over files reads each of its files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRef {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// `{dir?, path, name}`: what `${item}` is before the file is read.
    #[serde(skip)]
    pub item: Value,
}

impl FileRef {
    pub fn new(path: String, dir: Option<String>) -> Self {
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        let mut item = serde_json::json!({"path": path, "name": name});
        if let Some(dir) = &dir {
            item["dir"] = Value::String(dir.clone());
        }
        Self { path, dir, item }
    }
}

/// Most items one `for_each` may expand into: a larger list fails the task
/// (it would hold that many tasks in memory and in the store).
pub const MAX_ITEMS: usize = 100_000;

/// A task that runs once per item: when it is ready, `items` is resolved
/// (a literal list, or references to earlier results that give one) and the
/// task becomes one task per item, `ID[0]`, `ID[1]`, …, whose params see
/// `${item}` and `${item_index}`. The task itself then stands for the set:
/// it ends when they all have, and its result is theirs, in item order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForEach {
    /// A list, or a string holding one reference that gives a list.
    #[serde(rename = "for_each")]
    pub items: Arc<Value>,
    /// At most this many of the items' tasks queued or running at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Whether the task completes although some items failed (their places
    /// in the result say so); otherwise it fails.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_failures: bool,
}

impl ForEach {
    /// For `{files: PATTERN, dir: NAME}`: the pattern and the directory's
    /// name, if given.
    pub fn files(&self) -> Option<(&str, Option<&str>)> {
        let pattern = self.items.get("files")?.as_str()?;
        Some((pattern, self.items.get("dir").and_then(Value::as_str)))
    }
}

/// A DAG of tasks, validated by `workflow::parse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The default for tasks that do not set their own.
    pub priority: Priority,
    /// At most this many of the workflow's tasks queued or running at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// The whole workflow's limit; unfinished tasks are cancelled after it.
    #[serde(with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    pub metadata: Value,
    /// Its declared parameters (`${inputs.NAME}`); bound, each `default`
    /// holds the value it runs with.
    #[serde(serialize_with = "serialize_inputs", skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    /// When a host starts it on its own (`gleitzeit schedule add`); a
    /// workflow run by hand ignores it but for its inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<ScheduleSpec>>,
    pub tasks: Vec<Task>,
    /// The token that submitted it (`auth`); none with authentication off.
    /// Not part of the document: the store keeps it beside.
    #[serde(skip)]
    pub owner: Option<String>,
}

/// What a declared input holds (reading and checking one is
/// `workflow::inputs`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

/// One declared input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    #[serde(skip)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Its value when none is given; none means the input is required.
    /// Once the workflow is bound, the value it runs with. Shared, so that
    /// a condition can read it away from the scheduler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Arc<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The inputs as the document writes them: a mapping by name.
pub(crate) fn serialize_inputs<S: serde::Serializer>(inputs: &[Input], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(inputs.iter().map(|input| (&input.name, input)))
}

/// A schedule as a workflow file's `schedule:` block has it (when it is
/// due is `schedule`'s; reading the block is `workflow::schedule`'s).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleSpec {
    /// Five fields (minute hour day month weekday), or six with seconds
    /// first; `@daily` and the other nicknames.
    pub cron: String,
    /// An IANA zone (`Europe/Berlin`); the pattern's hours are its hours.
    pub timezone: String,
    /// Values for the workflow's `inputs`, the same for every run.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    /// A declared string input that each run gets its due time in (RFC
    /// 3339, in the schedule's zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_input: Option<String>,
    /// The schedule's id (the workflow's id or name when the block names
    /// none); its runs are `ID-YYYYMMDDTHHMMSSZ`.
    pub id: String,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for dependencies (or for a retry timer).
    Pending,
    /// Ready and waiting for a free slot.
    Queued,
    Running,
    Completed,
    Failed,
    /// Not run because a dependency failed.
    Skipped,
    Cancelled,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Skipped | Self::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        };
        f.write_str(name)
    }
}

/// Where a workflow stands, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Running,
    /// Every task completed.
    Completed,
    /// At least one task failed, was skipped or cancelled by a timeout.
    Failed,
    /// A client cancelled it.
    Cancelled,
}

impl WorkflowStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The largest result (as JSON) any provider, WASM or remote, may return:
/// larger ones fail the task instead of flooding the host, its store and
/// every dependent's params.
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

impl Workflow {
    /// The bytes it holds as submitted: its tasks' params and `for_each`
    /// lists, and its inputs' values, as JSON (ids, names and settings are
    /// bounded by the document's own limits and not counted).
    pub fn document_bytes(&self) -> usize {
        let tasks = self.tasks.iter().map(|task| {
            json_bytes(task.params.as_ref()) + task.for_each.as_ref().map_or(0, |f| json_bytes(f.items.as_ref()))
        });
        let inputs = self.inputs.iter().filter_map(|input| input.default.as_deref()).map(json_bytes);
        tasks.chain(inputs).sum()
    }
}

/// About the length of `value` as compact JSON, found without writing it
/// (exact but for escapes inside strings, which it does not count): what a
/// workflow holds is counted in these bytes (`engine::budget`), and what a
/// store writes is weighed in them (`store::journal`). A walk over the
/// values, not a serialisation: a 1 MiB string weighs in O(1).
pub fn json_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => number_bytes(n),
        Value::String(s) => s.len() + 2,
        Value::Array(items) => list_bytes(items),
        Value::Object(map) => {
            let entries: usize = map.iter().map(|(key, value)| key.len() + 3 + json_bytes(value)).sum();
            entries + map.len().saturating_sub(1) + 2
        }
    }
}

/// [`json_bytes`] of a list of values, as a JSON array.
pub fn list_bytes(items: &[Value]) -> usize {
    items.iter().map(json_bytes).sum::<usize>() + items.len().saturating_sub(1) + 2
}

fn number_bytes(n: &serde_json::Number) -> usize {
    let digits = |mut v: u64| {
        let mut count = 1;
        while v >= 10 {
            v /= 10;
            count += 1;
        }
        count
    };
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => digits(u),
        (None, Some(i)) => digits(i.unsigned_abs()) + 1,
        (None, None) => n.to_string().len(),
    }
}

/// JSON-RPC 2.0 error codes tasks end with: the one table's.
pub use crate::codes;

/// The longest wait a provider's `retry_after` may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why an attempt failed: a JSON-RPC 2.0 error object plus retryability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema)]
#[error("{message} (code {code})")]
pub struct TaskError {
    pub code: i32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip)]
    pub retryable: bool,
    /// The provider vanished mid-call: run the attempt again elsewhere
    /// without counting it (bounded by the engine).
    #[serde(skip)]
    pub requeue: bool,
}

impl TaskError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None, retryable: false, requeue: false }
    }

    /// How long the provider asked to wait before trying again: `data`'s
    /// `retry_after` in seconds (a backend's 429 or 503 `Retry-After`),
    /// at most [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        let seconds = self.data.as_ref()?.get("retry_after")?.as_f64()?;
        Duration::try_from_secs_f64(seconds).ok().map(|d| d.min(MAX_RETRY_AFTER))
    }

    /// `who` (e.g. "plugin 'echo'") returned a result of `bytes` from
    /// `method`, above [`MAX_RESULT_BYTES`].
    pub fn result_too_large(who: &str, bytes: usize, method: &str) -> Self {
        Self::new(
            codes::RESULT_TOO_LARGE,
            format!(
                "{who} returned {bytes} bytes from '{method}'; results are limited to {MAX_RESULT_BYTES} bytes (16 MiB)"
            ),
        )
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn requeue(mut self) -> Self {
        self.requeue = true;
        self
    }
}

/// Whether a provider's method name `pattern` serves `method`: the same
/// name, or a family such as `tool.*` (every `tool.NAME`, not `tool.`).
pub fn method_matches(pattern: &str, method: &str) -> bool {
    pattern == method
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| prefix.ends_with('.') && method.len() > prefix.len() && method.starts_with(prefix))
}

/// One method a protocol offers (a name ending in `.*` is a family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    pub name: String,
    pub description: String,
    /// The JSON Schema its params must fit, when the provider declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_schema: Option<crate::schema::ParamsSchema>,
}

/// What a provider serves, as it declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderSpec {
    pub protocol: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub methods: Vec<MethodSpec>,
}

impl ProviderSpec {
    pub fn has_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.name == method)
    }

    /// The schema of the method that serves `method` (by name, else its
    /// family), if it declares one.
    pub fn params_schema(&self, method: &str) -> Option<&crate::schema::ParamsSchema> {
        let served = (self.methods.iter().find(|m| m.name == method))
            .or_else(|| self.methods.iter().find(|m| method_matches(&m.name, method)))?;
        served.params_schema.as_ref()
    }
}

/// Durations serialize as seconds (f64), like the workflow files write them.
mod secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod opt_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bytes_counts_what_the_store_writes_but_escapes() {
        let values: [Value; 5] = [
            serde_json::json!(null),
            serde_json::json!({"a": [1, -20, 3.25, "two", {"b": "é", "c": false}], "d": u64::MAX}),
            serde_json::json!("x".repeat(5000)),
            serde_json::json!([]),
            serde_json::json!({}),
        ];
        for value in values {
            assert_eq!(json_bytes(&value), serde_json::to_vec(&value).unwrap_or_default().len(), "{value}");
        }
        let escaped = serde_json::json!("a\n\"b");
        assert_eq!(json_bytes(&escaped) + 2, serde_json::to_vec(&escaped).unwrap_or_default().len());
    }

    #[test]
    fn method_families_hold_their_members_only() {
        assert!(method_matches("echo", "echo"));
        assert!(method_matches("tool.*", "tool.get-sum"));
        assert!(!method_matches("tool.*", "tool."));
        assert!(!method_matches("tool.*", "tools.x"));
        assert!(!method_matches("tool*", "toolbox"), "a family ends in '.*'");
        assert!(!method_matches("echo", "echo2"));
    }

    fn policy(backoff: Backoff) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(7),
            jitter: false,
        }
    }

    #[test]
    fn backoff_grows_as_named_and_is_capped() {
        let secs = |p: &RetryPolicy, n| p.delay_before(n, 0.0).as_secs_f64();
        let fixed = policy(Backoff::Fixed);
        assert_eq!([secs(&fixed, 1), secs(&fixed, 3)], [2.0, 2.0]);
        let linear = policy(Backoff::Linear);
        assert_eq!([secs(&linear, 1), secs(&linear, 3), secs(&linear, 4)], [2.0, 6.0, 7.0]);
        let exp = policy(Backoff::Exponential);
        assert_eq!([secs(&exp, 1), secs(&exp, 2), secs(&exp, 3)], [2.0, 4.0, 7.0]);
        assert_eq!(secs(&exp, u32::MAX), 7.0, "huge retry numbers stay capped");
    }

    #[test]
    fn jitter_adds_ten_to_thirty_percent_within_the_cap() {
        let mut p = policy(Backoff::Fixed);
        p.jitter = true;
        assert!((p.delay_before(1, 0.0).as_secs_f64() - 2.2).abs() < 1e-9);
        assert!((p.delay_before(1, 0.999_999).as_secs_f64() - 2.6).abs() < 1e-5);
        p.base_delay = Duration::from_secs(7);
        assert_eq!(p.delay_before(1, 0.5), Duration::from_secs(7));
    }

    #[test]
    fn priorities_rank_urgent_first() {
        let mut all = [Priority::Low, Priority::Urgent, Priority::Normal, Priority::High];
        all.sort();
        assert_eq!(all, Priority::ALL);
        assert_eq!(Priority::from_name("high"), Some(Priority::High));
        assert_eq!(Priority::from_name("hgh"), None);
    }
}
