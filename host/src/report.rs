//! The result document of a finished workflow: every task's final status,
//! attempts, timings, result or error; as JSON (`--output json`,
//! `--output-file`) and as text for terminals.

use crate::model::{TaskError, TaskStatus, WorkflowStatus, codes};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Longest result or error shown per task in text output.
const TEXT_VALUE_CHARS: usize = 120;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskReport {
    pub id: String,
    pub name: String,
    pub protocol: String,
    pub method: String,
    /// The tasks it ran after (reports stored before this field have none).
    #[serde(default)]
    pub dependencies: Vec<String>,
    pub status: TaskStatus,
    pub attempts: u32,
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<SystemTime>,
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<SystemTime>,
    /// From the workflow's start to the task's first attempt.
    pub queued_ms: Option<f64>,
    /// From the first attempt's start to the end (retries included).
    pub duration_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "kept_apart")]
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    /// The params its last attempt was called with, references resolved
    /// (null until it starts).
    #[serde(default, skip_serializing_if = "none_or_kept_apart")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Arc<Value>>,
    /// Every call made for it, oldest first.
    #[serde(default, skip_serializing_if = "empty_or_kept_apart")]
    pub history: Vec<Attempt>,
    /// For a task a `for_each` made (`write[3]`): that task's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// And the item it ran for (a file's `{dir, path, name, size}`).
    #[serde(default, skip_serializing_if = "none_or_kept_apart")]
    #[schema(value_type = Option<Object>)]
    pub item: Option<Value>,
    /// For a `for_each` task once expanded: how many items it has (their
    /// tasks follow it in the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    /// Tokens its calls used, as the backends reported them (a `for_each`
    /// task: its items'); none if no call reported any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why a queued task is held back, e.g. "rate limit of wasm:openai:
    /// 300 requests per minute".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Its result came from the result cache (`cache: {ttl}`), not a call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The workflow whose run gave it its outcome: a rerun's completed
    /// tasks are taken from the run it reruns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_from: Option<String>,
}

/// The mark of a report whose tasks' outcomes are kept in their records.
const STORED_APART: &str = "\"outcomes_in_task_records\":true";

thread_local! {
    /// Set while a report is written as a store keeps it ([`RunReport::to_stored_json`]).
    static KEPT_APART: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn kept_apart<T>(_: &T) -> bool {
    KEPT_APART.get()
}

fn none_or_kept_apart<T>(value: &Option<T>) -> bool {
    value.is_none() || KEPT_APART.get()
}

fn empty_or_kept_apart<T>(value: &[T]) -> bool {
    value.is_empty() || KEPT_APART.get()
}

/// One call made for a task: which provider took it, when, how long it
/// took and how it failed. A call whose provider vanished is listed and
/// then made again under the same attempt number (it does not count
/// against the task's retries).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    /// The id of the provider that took the call, e.g. `wasm:echo`.
    #[schema(value_type = String)]
    pub provider: Arc<str>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: SystemTime,
    /// Null while the call runs.
    pub duration_ms: Option<f64>,
    /// Why the call failed (null if it succeeded or still runs).
    pub error: Option<TaskError>,
    /// Tokens it used, if its result reported them ([`Usage::of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The model its result names, with its usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Answered from the result cache, without a call (provider `cache`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// Tokens used, as LLM backends report them: the names the
/// OpenAI-compatible API gives and both bundled `llm/v1` bridges put in
/// their results' `usage`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// The longest model name kept with a call (a label of `/metrics`).
const MAX_MODEL_CHARS: usize = 128;

impl Usage {
    /// The usage `result` reports in its `usage`, with the `model` it names.
    pub fn of(result: &Value) -> Option<(Self, Option<String>)> {
        let usage = result.get("usage")?;
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        let (prompt, completion) = (count("prompt_tokens"), count("completion_tokens"));
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        let total = count("total_tokens").unwrap_or(prompt.saturating_add(completion));
        let model = result.get("model").and_then(Value::as_str).map(|m| m.chars().take(MAX_MODEL_CHARS).collect());
        Some((Self { prompt_tokens: prompt, completion_tokens: completion, total_tokens: total }, model))
    }

    /// The sum of `all`, or None if there is nothing to sum.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Usage>) -> Option<Usage> {
        all.into_iter().fold(None, |sum, u| {
            let sum = sum.unwrap_or_default();
            Some(Usage {
                prompt_tokens: sum.prompt_tokens.saturating_add(u.prompt_tokens),
                completion_tokens: sum.completion_tokens.saturating_add(u.completion_tokens),
                total_tokens: sum.total_tokens.saturating_add(u.total_tokens),
            })
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Summary {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    /// Not final yet (pending, queued or running).
    pub unfinished: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReport {
    pub workflow_id: String,
    pub name: String,
    pub status: WorkflowStatus,
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<SystemTime>,
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<SystemTime>,
    pub duration_ms: f64,
    pub summary: Summary,
    pub tasks: Vec<TaskReport>,
    /// The token that submitted it (see `auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Why the workflow ended without running its tasks (set aside because
    /// its stored state could not be read). Not `error`: an answer with a
    /// top-level `error` is a refusal in the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Tokens all its calls used, as the backends reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The workflow this run reruns (`workflow rerun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
}

/// Whether every task completed, was skipped by a false condition, or
/// failed as an item of a `for_each` task that completed anyway (it allows
/// failures).
fn all_completed_or_allowed(tasks: &[TaskReport]) -> bool {
    let completed: std::collections::HashSet<&str> =
        tasks.iter().filter(|t| t.status == TaskStatus::Completed).map(|t| t.id.as_str()).collect();
    tasks.iter().all(|t| match t.status {
        TaskStatus::Completed => true,
        TaskStatus::Skipped => t.error.as_ref().is_some_and(|e| e.code == codes::CONDITION_FALSE),
        _ => t.parent.as_deref().is_some_and(|parent| completed.contains(parent)),
    })
}

impl RunReport {
    pub fn new(
        workflow_id: String,
        name: String,
        started_at: SystemTime,
        took: Duration,
        mut tasks: Vec<TaskReport>,
    ) -> Self {
        let usage = Usage::sum(tasks.iter().filter(|t| t.items.is_none()).filter_map(|t| t.usage.as_ref()));
        sum_items_usage(&mut tasks);
        let mut summary = Summary { total: tasks.len(), ..Summary::default() };
        for t in &tasks {
            match t.status {
                TaskStatus::Completed => summary.completed += 1,
                TaskStatus::Failed => summary.failed += 1,
                TaskStatus::Skipped => summary.skipped += 1,
                TaskStatus::Cancelled => summary.cancelled += 1,
                _ => summary.unfinished += 1,
            }
        }
        let status = if summary.completed == summary.total || all_completed_or_allowed(&tasks) {
            WorkflowStatus::Completed
        } else {
            WorkflowStatus::Failed
        };
        Self {
            workflow_id,
            name,
            status,
            started_at: Some(started_at),
            finished_at: Some(started_at + took),
            duration_ms: took.as_secs_f64() * 1000.0,
            summary,
            tasks,
            owner: None,
            failure: None,
            usage,
            rerun_of: None,
        }
    }

    /// The report as a store keeps it: without each task's result, params,
    /// calls and item, which the task's own stored record has; a finished
    /// workflow's results are not written twice, and a report stays small
    /// however large they are. The store puts them back when it reads it.
    pub fn to_stored_json(&self) -> serde_json::Result<String> {
        KEPT_APART.set(true);
        let json = serde_json::to_string(self);
        KEPT_APART.set(false);
        // A report is an object: the mark goes first, where a reader finds it.
        Ok(format!("{{{STORED_APART},{}", json?.get(1..).unwrap_or_default()))
    }

    /// Whether `stored` (a report as a store keeps it) was written by
    /// [`RunReport::to_stored_json`], so that its tasks' outcomes are in
    /// their records.
    pub fn is_stored_apart(stored: &str) -> bool {
        stored.strip_prefix('{').is_some_and(|rest| rest.starts_with(STORED_APART))
    }

    /// A terminal-friendly rendering: one line per task, then a summary.
    pub fn to_text(&self) -> String {
        let width = |f: fn(&TaskReport) -> usize| self.tasks.iter().map(f).max().unwrap_or(0);
        let id_w = width(|t| t.id.chars().count());
        let call_w = width(|t| t.protocol.len() + t.method.len() + 1);
        let mut out = String::new();
        for t in &self.tasks {
            let call = format!("{}.{}", t.protocol, t.method);
            let attempts = match (t.items, t.attempts) {
                _ if t.cached => "cached".to_owned(),
                _ if t.taken_from.is_some() => "kept".to_owned(),
                (Some(1), _) => "1 item".to_owned(),
                (Some(items), _) => format!("{items} items"),
                (None, 1) => "1 attempt ".to_owned(),
                (None, attempts) => format!("{attempts} attempts"),
            };
            let took = t.duration_ms.map(|ms| format!("{ms:.1} ms")).unwrap_or_else(|| "-".into());
            let detail = match (&t.result, &t.error, &t.waiting_for) {
                (Some(result), _, _) => clip(&result.to_string()),
                (None, Some(e), _) => clip(&format!("error {}: {}", e.code, e.message)),
                (None, None, Some(why)) => clip(&format!("waiting for the {why}")),
                (None, None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<9}  {:<id_w$}  {:<call_w$}  {attempts:<10}  {took:>9}  {detail}",
                t.status.to_string(),
                t.id,
                call
            );
        }
        let s = &self.summary;
        let status = self.status.name();
        let _ = write!(
            out,
            "workflow '{}' ({}) {status} in {:.1} ms: {} tasks, {} completed, {} failed, {} skipped, {} cancelled",
            self.name, self.workflow_id, self.duration_ms, s.total, s.completed, s.failed, s.skipped, s.cancelled
        );
        if let Some(origin) = &self.rerun_of {
            let kept = self.tasks.iter().filter(|t| t.taken_from.is_some()).count();
            let _ = write!(out, "; a rerun of {origin}, {kept} kept from it");
        }
        if let Some(usage) = &self.usage {
            let (prompt, completion) = (usage.prompt_tokens, usage.completion_tokens);
            let _ = write!(out, "; {} tokens ({prompt} prompt, {completion} completion)", usage.total_tokens);
        }
        if let Some(failure) = &self.failure {
            let _ = write!(out, "\n{failure}");
        }
        out
    }
}

/// Each `for_each` task's usage: the sum of its items'.
fn sum_items_usage(tasks: &mut [TaskReport]) {
    let mut by_parent: std::collections::HashMap<String, Vec<Usage>> = std::collections::HashMap::new();
    for t in tasks.iter() {
        if let (Some(parent), Some(usage)) = (&t.parent, t.usage) {
            by_parent.entry(parent.clone()).or_default().push(usage);
        }
    }
    for t in tasks.iter_mut().filter(|t| t.items.is_some()) {
        if let Some(items) = by_parent.get(&t.id) {
            t.usage = Usage::sum(items);
        }
    }
}

fn clip(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(TEXT_VALUE_CHARS).collect();
    if chars.next().is_some() { format!("{head}… (--output json shows all)") } else { head }
}

/// Times as RFC 3339 text with microseconds.
mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_micros(*t).to_string())
    }

    pub fn parse<E: serde::de::Error>(text: &str) -> Result<SystemTime, E> {
        humantime::parse_rfc3339(text).map_err(E::custom)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        parse(&String::deserialize(d)?)
    }
}

/// The same, `None` as null.
pub(crate) mod rfc3339_option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| rfc3339::parse(&t)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str, status: TaskStatus, result: Option<Value>, error: Option<TaskError>) -> TaskReport {
        TaskReport {
            id: id.into(),
            name: id.into(),
            dependencies: Vec::new(),
            protocol: "echo/v1".into(),
            method: "echo".into(),
            status,
            attempts: u32::from(status != TaskStatus::Skipped),
            started_at: None,
            finished_at: None,
            queued_ms: None,
            duration_ms: Some(1.25),
            result,
            error,
            params: None,
            history: Vec::new(),
            parent: None,
            item: None,
            items: None,
            usage: None,
            waiting_for: None,
            cached: false,
            taken_from: None,
        }
    }

    #[test]
    fn summary_status_and_text() {
        let long = json!("x".repeat(500));
        let report = RunReport::new(
            "wf-1".into(),
            "demo".into(),
            SystemTime::UNIX_EPOCH,
            Duration::from_millis(3),
            vec![
                task("a", TaskStatus::Completed, Some(long), None),
                task("b", TaskStatus::Failed, None, Some(TaskError::new(-32602, "bad"))),
                task("c", TaskStatus::Skipped, None, None),
            ],
        );
        assert_eq!(report.status, WorkflowStatus::Failed);
        assert_eq!(
            report.summary,
            Summary { total: 3, completed: 1, failed: 1, skipped: 1, cancelled: 0, unfinished: 0 }
        );
        let text = report.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("completed  a  echo/v1.echo  1 attempt"), "{text}");
        assert!(lines[0].ends_with("… (--output json shows all)"), "long results are clipped");
        assert!(lines[1].ends_with("error -32602: bad"), "{text}");
        assert!(lines[2].contains("0 attempts"), "{text}");
        assert_eq!(
            lines[3],
            "workflow 'demo' (wf-1) failed in 3.0 ms: 3 tasks, 1 completed, 1 failed, 1 skipped, 0 cancelled"
        );
        let mut held = task("d", TaskStatus::Queued, None, None);
        held.waiting_for = Some("concurrency key 'acme': 2 running".into());
        let running = RunReport::new("wf-2".into(), "held".into(), SystemTime::UNIX_EPOCH, Duration::ZERO, vec![held]);
        assert!(
            running.to_text().lines().next().unwrap().ends_with("waiting for the concurrency key 'acme': 2 running")
        );
        let mut kept = task("e", TaskStatus::Completed, Some(json!(1)), None);
        kept.taken_from = Some("wf-0".into());
        let mut rerun =
            RunReport::new("wf-3".into(), "again".into(), SystemTime::UNIX_EPOCH, Duration::ZERO, vec![kept]);
        rerun.rerun_of = Some("wf-0".into());
        let text = rerun.to_text();
        assert!(text.starts_with("completed  e  echo/v1.echo  kept"), "{text}");
        assert!(text.ends_with("0 cancelled; a rerun of wf-0, 1 kept from it"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["started_at"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(json["tasks"][1]["error"], json!({"code": -32602, "message": "bad"}));
    }
}
