//! Workflow files: YAML or JSON text into a validated [`Workflow`].
//!
//! Parsing goes through a JSON value tree and then field by field, so that one
//! pass reports *every* problem with its task and field instead of stopping at
//! the first. Graph checks (duplicates, unknown or self dependencies, cycles,
//! `${…}` references to non-ancestors) run on the result. The text becomes
//! a tree in [`tree`] (budgets, duplicate keys); nesting is capped there at
//! 128 levels, and the graph and reference walks are iterative.
//!
//! This module does not know which protocols exist; [`check_catalog`] takes a
//! [`Catalog`] (the registry) when one is at hand.

mod dialect;
pub mod inputs;
mod schedule;
pub use schedule::overlay as schedule_overlay;
pub(crate) mod tree;

use crate::model::{Backoff, ForEach, MAX_ITEMS, Priority, RetryPolicy, Task, Workflow};
use crate::resolver::Dag;
use crate::resolver::Root;
use crate::resolver::condition::{Condition, ConditionError};
use crate::resolver::substitution::{self, holds_reference};
use crate::schema::ParamsSchema;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 256 * 1024 * 1024;
/// At most this many problems are printed; the count says how many more.
const MAX_PROBLEMS_SHOWN: usize = 50;
const MAX_NAME_CHARS: usize = 200;
const MAX_ID_CHARS: usize = 128;
const MIN_TIMEOUT_SECS: f64 = 0.001;
const MAX_TIMEOUT_SECS: f64 = 7.0 * 86_400.0;
const MAX_ATTEMPTS: u64 = 100;
const MAX_PARALLEL: u64 = 100_000;

const WORKFLOW_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "version",
    "priority",
    "max_parallel",
    "max_parallel_tasks",
    "timeout",
    "metadata",
    "inputs",
    "schedule",
    "tasks",
];
const TASK_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "protocol",
    "method",
    "params",
    "parameters",
    "dependencies",
    "priority",
    "timeout",
    "retry",
    "retry_config",
    "metadata",
    "for_each",
    "max_parallel",
    "allow_failures",
    "when",
];
const RETRY_FIELDS: &[&str] = &["max_attempts", "backoff", "backoff_strategy", "base_delay", "max_delay", "jitter"];

/// The text format of a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By extension (`.json`, `.yaml`, `.yml`); otherwise JSON if the text
    /// starts with `{`, else YAML.
    pub fn detect(path: &Path, bytes: &[u8]) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// One thing wrong with a workflow, located by task and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `task 'id'` or `task #3` (1-based) when the task has no usable id.
    pub task: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.task, &self.field) {
            (Some(t), Some(field)) => write!(f, "{t}, field '{field}': {}", self.message),
            (Some(t), None) => write!(f, "{t}: {}", self.message),
            (None, Some(field)) => write!(f, "field '{field}': {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Why a workflow could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("cannot read workflow file {origin}: {source}")]
    Read { origin: String, source: std::io::Error },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{}", render_problems(origin, problems))]
    Invalid { origin: String, problems: Vec<Problem> },
}

impl WorkflowError {
    /// The located problems, for `Invalid`.
    pub fn problems(&self) -> &[Problem] {
        match self {
            WorkflowError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    let count = problems.len();
    let plural = if count == 1 { "problem" } else { "problems" };
    let mut out = format!("{origin} is not a valid workflow ({count} {plural}):");
    for p in problems.iter().take(MAX_PROBLEMS_SHOWN) {
        out.push_str(&format!("\n  - {p}"));
    }
    if count > MAX_PROBLEMS_SHOWN {
        out.push_str(&format!("\n  ... and {} more", count - MAX_PROBLEMS_SHOWN));
    }
    out
}

/// Protocols and methods that exist, for [`check_catalog`].
pub trait Catalog {
    /// The methods of `protocol`, or `None` if no provider serves it.
    fn methods(&self, protocol: &str) -> Option<Vec<String>>;
    /// Every protocol served.
    fn protocols(&self) -> Vec<String>;
    /// The distinct params schemas declared by the providers of `protocol`
    /// that serve `method` (any of them may get the call).
    fn schemas(&self, protocol: &str, method: &str) -> Vec<ParamsSchema>;
}

/// Read and validate a workflow file.
pub fn load(path: &Path) -> Result<Workflow, WorkflowError> {
    from_value(&path.display().to_string(), load_tree(path)?)
}

/// [`load`], with notes on what was read from the original's dialect.
pub fn load_noted(path: &Path) -> Result<(Workflow, Vec<Problem>), WorkflowError> {
    from_value_noted(&path.display().to_string(), load_tree(path)?)
}

/// A workflow file's tree, unvalidated (what `load` checks).
pub fn load_tree(path: &Path) -> Result<Value, WorkflowError> {
    let origin = path.display().to_string();
    let bytes = read_capped(path).map_err(|source| WorkflowError::Read { origin: origin.clone(), source })?;
    text_tree(&origin, &bytes, Format::detect(path, &bytes))
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FILE_BYTES as u64 {
        return Err(std::io::Error::other(format!(
            "the file is {len} bytes; workflows are limited to {MAX_FILE_BYTES} bytes"
        )));
    }
    std::fs::read(path)
}

/// Parse and validate workflow text. `origin` names the source in errors.
pub fn parse(origin: &str, bytes: &[u8], format: Format) -> Result<Workflow, WorkflowError> {
    from_value(origin, text_tree(origin, bytes, format)?)
}

pub fn text_tree(origin: &str, bytes: &[u8], format: Format) -> Result<Value, WorkflowError> {
    let syntax = |message: String| WorkflowError::Syntax { origin: origin.to_owned(), message };
    let text = std::str::from_utf8(bytes)
        .map_err(|e| syntax(format!("the file is not UTF-8 text (invalid byte at offset {})", e.valid_up_to())))?;
    tree::document(text, format).map_err(syntax)
}

/// Validate a workflow given as a JSON value (a file's tree or a payload).
pub fn from_value(origin: &str, tree: Value) -> Result<Workflow, WorkflowError> {
    from_value_noted(origin, tree).map(|(workflow, _)| workflow)
}

/// [`from_value`], with a note for each thing read from the original
/// system's looser dialect (see [`dialect`]).
pub fn from_value_noted(origin: &str, mut tree: Value) -> Result<(Workflow, Vec<Problem>), WorkflowError> {
    let notes = dialect::read(&mut tree);
    let mut fields = Fields::default();
    let mut workflow = fields.workflow(tree);
    let mut problems = fields.problems;
    if let Some(workflow) = &mut workflow {
        problems.extend(check_graph(workflow));
    }
    match workflow {
        Some(workflow) if problems.is_empty() => Ok((workflow, notes)),
        _ => Err(WorkflowError::Invalid { origin: origin.to_owned(), problems }),
    }
}

/// Check that every task's protocol and method are served, and that its
/// params fit the method's schema where a provider declares one (values that
/// hold a reference are checked when they are known, before the call).
pub fn check_catalog(origin: &str, workflow: &Workflow, catalog: &dyn Catalog) -> Result<(), WorkflowError> {
    let mut methods_of: HashMap<&str, Option<Vec<String>>> = HashMap::new();
    let mut problems = Vec::new();
    for task in &workflow.tasks {
        let methods = methods_of.entry(&task.protocol).or_insert_with(|| catalog.methods(&task.protocol));
        let located = |field: &str, message: String| Problem {
            task: Some(format!("task '{}'", task.id)),
            field: Some(field.to_owned()),
            message,
        };
        match methods {
            None => {
                let known = catalog.protocols();
                let list = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                problems.push(located(
                    "protocol",
                    format!("no provider serves protocol '{}' (served: {list})", task.protocol),
                ));
            }
            Some(methods) if !methods.iter().any(|m| crate::model::method_matches(m, &task.method)) => {
                problems.push(located(
                    "method",
                    format!(
                        "protocol '{}' has no method '{}' (methods: {})",
                        task.protocol,
                        task.method,
                        methods.join(", ")
                    ),
                ))
            }
            Some(_) => {
                for schema in catalog.schemas(&task.protocol, &task.method) {
                    let fits = schema.check_static(&task.params, |v| v.as_str().is_some_and(holds_reference));
                    for mismatch in fits.err().into_iter().flatten() {
                        problems.push(located(&mismatch.field, mismatch.message));
                    }
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(WorkflowError::Invalid { origin: origin.to_owned(), problems }) }
}

/// Field-by-field conversion that records every problem it meets.
#[derive(Default)]
struct Fields {
    problems: Vec<Problem>,
}

impl Fields {
    fn report(&mut self, task: Option<&str>, field: Option<&str>, message: impl Into<String>) {
        self.problems.push(Problem {
            task: task.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    fn workflow(&mut self, tree: Value) -> Option<Workflow> {
        let Value::Object(mut map) = tree else {
            self.report(
                None,
                None,
                format!("the top level must be a mapping with 'name' and 'tasks', found {}", kind(&tree)),
            );
            return None;
        };
        self.unknown_fields(None, &map, WORKFLOW_FIELDS, "workflow");
        let at = None;
        let name = self.required_string(at, &mut map, "name");
        if let Some(name) = &name {
            self.check_len(at, "name", name, MAX_NAME_CHARS);
        }
        let given_id = self.optional_id(at, &mut map, "id");
        let schedule_id = schedule::default_id(given_id.as_deref(), name.as_deref().unwrap_or_default());
        let id = given_id.unwrap_or_else(|| format!("wf-{}", uuid::Uuid::new_v4().simple()));
        let description = self.optional_string(at, &mut map, "description");
        let version = self.version(&mut map);
        let priority = self.priority(at, &mut map).unwrap_or_default();
        let max_parallel = self.max_parallel(&mut map);
        let timeout = self.duration(at, &mut map, "timeout");
        let metadata = self.metadata(at, &mut map);
        let inputs = map.remove("inputs").map(|tree| inputs::parse(tree, &mut self.problems)).unwrap_or_default();
        let context = schedule::Context { inputs: &inputs, default_id: schedule_id };
        let schedule = map.remove("schedule").and_then(|tree| schedule::parse(tree, &context, &mut self.problems));
        let tasks = self.tasks(&mut map, priority);
        Some(Workflow {
            id,
            name: name.unwrap_or_default(),
            description,
            version,
            priority,
            max_parallel,
            timeout,
            metadata,
            inputs,
            schedule,
            tasks: tasks?,
            owner: None,
        })
    }

    fn tasks(&mut self, map: &mut Map<String, Value>, default_priority: Priority) -> Option<Vec<Task>> {
        let list = match map.remove("tasks") {
            None => {
                self.report(None, Some("tasks"), "missing; a workflow needs a list of tasks");
                return None;
            }
            Some(Value::Array(list)) if list.is_empty() => {
                self.report(None, Some("tasks"), "the list is empty; a workflow needs at least one task");
                return None;
            }
            Some(Value::Array(list)) => list,
            Some(other) => {
                self.report(None, Some("tasks"), format!("must be a list of tasks, found {}", kind(&other)));
                return None;
            }
        };
        Some(list.into_iter().enumerate().filter_map(|(i, v)| self.task(i, v, default_priority)).collect())
    }

    fn task(&mut self, index: usize, tree: Value, default_priority: Priority) -> Option<Task> {
        let numbered = format!("task #{}", index + 1);
        let Value::Object(mut map) = tree else {
            self.report(Some(&numbered), None, format!("must be a mapping, found {}", kind(&tree)));
            return None;
        };
        let raw_id = self.optional_id(Some(&numbered), &mut map, "id");
        let name = self.optional_string(Some(&numbered), &mut map, "name");
        let id = match (raw_id, &name) {
            (Some(id), _) => Some(id),
            (None, Some(name)) => Some(slug(name)).filter(|s| !s.is_empty()),
            (None, None) => None,
        };
        let label = match &id {
            Some(id) => format!("task '{id}'"),
            None => {
                self.report(Some(&numbered), None, "needs an 'id' (or a 'name' to derive one from)");
                numbered
            }
        };
        let at = Some(label.as_str());
        self.unknown_fields(at, &map, TASK_FIELDS, "task");
        if let Some(name) = &name {
            self.check_len(at, "name", name, MAX_NAME_CHARS);
        }
        map.remove("description");
        let protocol = self.pattern_string(
            at,
            &mut map,
            "protocol",
            is_protocol,
            "a protocol id like 'echo/v1' (lowercase name, '/', version)",
        );
        let method = self.pattern_string(
            at,
            &mut map,
            "method",
            is_method,
            "a method name starting with a letter (letters, digits, '_', '.', '/', ':', '-')",
        );
        let params = self.params(at, &mut map);
        let dependencies = self.dependencies(at, &mut map);
        let priority = self.priority(at, &mut map).unwrap_or(default_priority);
        let timeout = self.duration(at, &mut map, "timeout");
        let retry = self.retry(at, &mut map);
        let metadata = self.metadata(at, &mut map);
        let for_each = self.for_each(at, &mut map);
        let when = self.condition(at, &mut map);
        if let Some(reserved) = id.as_deref().filter(|id| Root::RESERVED.contains(id)) {
            self.report(at, Some("id"), format!("'{reserved}' is reserved for the items of for_each; rename the task"));
        }
        // Invalid fields were reported; the task still takes part in the
        // graph checks under its id, so one pass finds every problem.
        let id = id?;
        Some(Task {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            protocol: protocol.unwrap_or_default(),
            method: method.unwrap_or_default(),
            params: Arc::new(params.unwrap_or_else(|| Value::Object(Map::new()))),
            dependencies,
            priority,
            timeout,
            retry: retry.unwrap_or_else(RetryPolicy::none),
            metadata,
            for_each,
            when,
        })
    }

    /// `for_each: {files: PATTERN, dir: NAME}`: a relative glob, and the
    /// name of a files directory (the host checks that it has one).
    fn files(&mut self, at: Option<&str>, spec: &Map<String, Value>) {
        for key in spec.keys().filter(|k| !["files", "dir"].contains(&k.as_str())) {
            self.report(at, Some(&format!("for_each.{key}")), "unknown field; files fields are: files, dir");
        }
        match &spec["files"] {
            Value::String(pattern) => {
                if let Err(e) = crate::files::check_pattern(pattern) {
                    self.report(at, Some("for_each.files"), e);
                }
            }
            other => self.report(at, Some("for_each.files"), format!("must be a glob pattern, found {}", show(other))),
        }
        match spec.get("dir") {
            None => {}
            Some(Value::String(dir)) if is_id(dir) => {}
            Some(other) => self.report(
                at,
                Some("for_each.dir"),
                format!("must be a files directory's name, found {}", show(other)),
            ),
        }
    }

    /// `when`: a string that parses as a condition (its references are
    /// checked with the graph).
    fn condition(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<String> {
        let text = match map.remove("when")? {
            Value::String(text) => text,
            Value::Bool(b) => b.to_string(),
            other => {
                self.report(at, Some("when"), format!("must be a condition (a string), found {}", kind(&other)));
                return None;
            }
        };
        match Condition::parse(&text) {
            Ok(_) => Some(text),
            // Malformed references are reported with the graph's checks.
            Err(ConditionError::Template(_)) => Some(text),
            Err(e) => {
                self.report(at, Some("when"), e.to_string());
                None
            }
        }
    }

    /// `for_each` (a list, or one reference that gives a list) with its
    /// `max_parallel` and `allow_failures`, which need it.
    fn for_each(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<ForEach> {
        let max_parallel = map.remove("max_parallel");
        let allow_failures = map.remove("allow_failures");
        let Some(items) = map.remove("for_each") else {
            for (key, given) in [("max_parallel", &max_parallel), ("allow_failures", &allow_failures)] {
                if given.is_some() {
                    self.report(at, Some(key), "applies to a task with 'for_each' only");
                }
            }
            return None;
        };
        match &items {
            Value::Array(list) if list.len() > MAX_ITEMS => {
                self.report(at, Some("for_each"), format!("{} items; the limit is {MAX_ITEMS}", list.len()))
            }
            Value::Array(_) => {}
            Value::String(s) if substitution::is_whole_reference(s) => {}
            Value::Object(files) if files.contains_key("files") => self.files(at, files),
            other => self.report(
                at,
                Some("for_each"),
                format!(
                    "must be a list of items, one reference that gives a list (like \"${{topics.result.items}}\") or {{files: PATTERN, dir: NAME}}, found {}",
                    show(other)
                ),
            ),
        }
        let max_parallel = max_parallel.and_then(|v| self.integer(at, "max_parallel", &v, 1, MAX_PARALLEL));
        let allow_failures = match allow_failures {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                self.report(at, Some("allow_failures"), format!("must be true or false, found {}", show(&other)));
                false
            }
        };
        Some(ForEach { items: Arc::new(items), max_parallel: max_parallel.map(|n| n as u32), allow_failures })
    }

    fn unknown_fields(&mut self, at: Option<&str>, map: &Map<String, Value>, known: &[&str], what: &str) {
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            let hint = known
                .iter()
                .map(|k| (strsim::jaro_winkler(k, key), k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!("; did you mean '{k}'?"))
                .unwrap_or_else(|| format!("; {what} fields are: {}", known.join(", ")));
            self.report(at, Some(key), format!("unknown field{hint}"));
        }
    }

    /// Take one of two alias keys; both present is a problem.
    fn take_aliased(
        &mut self,
        at: Option<&str>,
        map: &mut Map<String, Value>,
        key: &str,
        alias: &str,
    ) -> Option<(String, Value)> {
        match (map.remove(key), map.remove(alias)) {
            (Some(_), Some(_)) => {
                self.report(at, Some(key), format!("given twice, as '{key}' and as '{alias}'; keep one"));
                None
            }
            (Some(v), None) => Some((key.to_owned(), v)),
            (None, Some(v)) => Some((alias.to_owned(), v)),
            (None, None) => None,
        }
    }

    fn optional_string(&mut self, at: Option<&str>, map: &mut Map<String, Value>, key: &str) -> Option<String> {
        match map.remove(key)? {
            Value::String(s) => Some(s),
            other => {
                self.report(at, Some(key), format!("must be a string, found {}", kind(&other)));
                None
            }
        }
    }

    fn required_string(&mut self, at: Option<&str>, map: &mut Map<String, Value>, key: &str) -> Option<String> {
        if !map.contains_key(key) {
            self.report(at, Some(key), "missing (required)");
            return None;
        }
        let value = self.optional_string(at, map, key)?;
        if value.trim().is_empty() {
            self.report(at, Some(key), "must not be empty");
            return None;
        }
        Some(value)
    }

    fn check_len(&mut self, at: Option<&str>, key: &str, value: &str, max: usize) {
        let chars = value.chars().count();
        if chars > max {
            self.report(at, Some(key), format!("is {chars} characters long; the limit is {max}"));
        }
    }

    fn optional_id(&mut self, at: Option<&str>, map: &mut Map<String, Value>, key: &str) -> Option<String> {
        let id = match map.remove(key)? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => {
                self.report(at, Some(key), format!("must be a string, found {}", kind(&other)));
                return None;
            }
        };
        if !is_id(&id) {
            self.report(
                at,
                Some(key),
                format!("'{}' is not a valid id: use 1 to {MAX_ID_CHARS} letters, digits, '_' or '-'", excerpt(&id)),
            );
            return None;
        }
        Some(id)
    }

    fn pattern_string(
        &mut self,
        at: Option<&str>,
        map: &mut Map<String, Value>,
        key: &str,
        valid: fn(&str) -> bool,
        expected: &str,
    ) -> Option<String> {
        let value = self.required_string(at, map, key)?;
        if !valid(&value) {
            self.report(at, Some(key), format!("'{}' is not {expected}", excerpt(&value)));
            return None;
        }
        Some(value)
    }

    fn version(&mut self, map: &mut Map<String, Value>) -> Option<String> {
        match map.remove("version")? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.report(None, Some("version"), format!("must be a string, found {}", kind(&other)));
                None
            }
        }
    }

    fn priority(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<Priority> {
        match map.remove("priority")? {
            Value::String(s) => {
                let p = Priority::from_name(&s);
                if p.is_none() {
                    self.report(
                        at,
                        Some("priority"),
                        format!("unknown priority '{}'; use urgent, high, normal or low", excerpt(&s)),
                    );
                }
                p
            }
            other => {
                self.report(
                    at,
                    Some("priority"),
                    format!("must be one of urgent, high, normal, low; found {}", kind(&other)),
                );
                None
            }
        }
    }

    fn max_parallel(&mut self, map: &mut Map<String, Value>) -> Option<u32> {
        let (key, value) = self.take_aliased(None, map, "max_parallel", "max_parallel_tasks")?;
        self.integer(None, &key, &value, 1, MAX_PARALLEL).map(|n| n as u32)
    }

    fn integer(&mut self, at: Option<&str>, key: &str, value: &Value, min: u64, max: u64) -> Option<u64> {
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.report(
                    at,
                    Some(key),
                    format!("must be a whole number from {min} to {max}, found {}", show(value)),
                );
                None
            }
        }
    }

    /// Seconds as a number, or a string like `"90s"`, `"5m"`, `"1h 30m"`.
    fn duration_value(&mut self, at: Option<&str>, key: &str, value: &Value, min: f64, max: f64) -> Option<Duration> {
        let secs = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => humantime::parse_duration(s).ok().map(|d| d.as_secs_f64()),
            _ => None,
        };
        match secs {
            Some(s) if (min..=max).contains(&s) => Some(Duration::from_secs_f64(s)),
            _ => {
                self.report(
                    at,
                    Some(key),
                    format!(
                        "must be a number of seconds (or a duration like \"90s\") from {min} to {max}, found {}",
                        show(value)
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, at: Option<&str>, map: &mut Map<String, Value>, key: &str) -> Option<Duration> {
        let value = map.remove(key)?;
        self.duration_value(at, key, &value, MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS)
    }

    fn metadata(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Value {
        match map.remove("metadata") {
            None => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(other) => {
                self.report(at, Some("metadata"), format!("must be a mapping, found {}", kind(&other)));
                Value::Null
            }
        }
    }

    fn params(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<Value> {
        match self.take_aliased(at, map, "params", "parameters") {
            None => Some(Value::Object(Map::new())),
            Some((_, v @ Value::Object(_))) => Some(v),
            Some((_, Value::Null)) => Some(Value::Object(Map::new())),
            Some((key, other)) => {
                self.report(
                    at,
                    Some(&key),
                    format!("must be a mapping of parameter names to values, found {}", kind(&other)),
                );
                None
            }
        }
    }

    fn dependencies(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Vec<String> {
        let list = match map.remove("dependencies") {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::String(one)) => vec![Value::String(one)],
            Some(Value::Array(list)) => list,
            Some(other) => {
                self.report(at, Some("dependencies"), format!("must be a list of task ids, found {}", kind(&other)));
                return Vec::new();
            }
        };
        let mut seen = HashSet::new();
        let mut deps = Vec::new();
        for item in list {
            match item {
                Value::String(s) => {
                    if seen.insert(s.clone()) {
                        deps.push(s);
                    }
                }
                other => self.report(
                    at,
                    Some("dependencies"),
                    format!("each entry must be a task id (a string), found {}", kind(&other)),
                ),
            }
        }
        deps
    }

    fn retry(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<RetryPolicy> {
        let Some((key, value)) = self.take_aliased(at, map, "retry", "retry_config") else {
            return Some(RetryPolicy::none());
        };
        let mut retry = match value {
            Value::Object(m) => m,
            Value::Null => return Some(RetryPolicy::none()),
            other => {
                self.report(
                    at,
                    Some(&key),
                    format!(
                        "must be a mapping (max_attempts, backoff, base_delay, max_delay, jitter), found {}",
                        kind(&other)
                    ),
                );
                return None;
            }
        };
        let before = self.problems.len();
        self.unknown_fields(at, &retry, RETRY_FIELDS, "retry");
        let mut policy = RetryPolicy::default_when_given();
        let field = |name: &str| format!("{key}.{name}");
        if let Some(v) = retry.remove("max_attempts") {
            policy.max_attempts = self.integer(at, &field("max_attempts"), &v, 1, MAX_ATTEMPTS).unwrap_or(1) as u32;
        }
        if let Some((name, v)) = self.take_aliased(at, &mut retry, "backoff", "backoff_strategy") {
            match v.as_str().and_then(Backoff::from_name) {
                Some(b) => policy.backoff = b,
                None => self.report(
                    at,
                    Some(&field(&name)),
                    format!("unknown backoff {}; use {}", show(&v), Backoff::NAMES),
                ),
            }
        }
        if let Some(v) = retry.remove("base_delay") {
            policy.base_delay = self.duration_value(at, &field("base_delay"), &v, 0.0, 3600.0).unwrap_or_default();
        }
        if let Some(v) = retry.remove("max_delay") {
            policy.max_delay = self.duration_value(at, &field("max_delay"), &v, 0.0, 86_400.0).unwrap_or_default();
        }
        if let Some(v) = retry.remove("jitter") {
            match v {
                Value::Bool(b) => policy.jitter = b,
                other => {
                    self.report(at, Some(&field("jitter")), format!("must be true or false, found {}", show(&other)))
                }
            }
        }
        if policy.max_delay < policy.base_delay {
            self.report(
                at,
                Some(&field("max_delay")),
                format!(
                    "{}s is less than base_delay {}s",
                    policy.max_delay.as_secs_f64(),
                    policy.base_delay.as_secs_f64()
                ),
            );
        }
        (self.problems.len() == before).then_some(policy)
    }
}

/// Duplicate ids, unknown and self dependencies, cycles and references.
/// Dependencies given by task name are rewritten to ids.
fn check_graph(workflow: &mut Workflow) -> Vec<Problem> {
    let (problems, renames) = graph_problems(workflow);
    for (task, dep, target) in renames {
        let id = workflow.tasks[target].id.clone();
        workflow.tasks[task].dependencies[dep] = id;
    }
    problems
}

/// The problems, and the dependencies named by task name as
/// `(task, dependency position, target task)`.
fn graph_problems(workflow: &Workflow) -> (Vec<Problem>, Vec<(usize, usize, usize)>) {
    let mut problems = Vec::new();
    let located = |id: &str, field: &str, message: String| Problem {
        task: Some(format!("task '{id}'")),
        field: Some(field.to_owned()),
        message,
    };
    // With duplicate ids the first task keeps the id.
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(workflow.tasks.len());
    for (i, task) in workflow.tasks.iter().enumerate() {
        if let Some(&first) = index.get(task.id.as_str()) {
            let message = format!("duplicate id: tasks #{} and #{} both use it", first + 1, i + 1);
            problems.push(located(&task.id, "id", message));
        } else {
            index.insert(&task.id, i);
        }
    }
    let mut by_name: Option<HashMap<&str, &str>> = None;
    let mut renames = Vec::new();
    let mut deps = vec![Vec::new(); workflow.tasks.len()];
    for (t, task) in workflow.tasks.iter().enumerate() {
        for (d, dep) in task.dependencies.iter().enumerate() {
            let target = index.get(dep.as_str()).copied().or_else(|| {
                let names = by_name.get_or_insert_with(|| names_to_ids(workflow));
                let target = names.get(dep.as_str()).and_then(|id| index.get(id)).copied();
                renames.extend(target.map(|target| (t, d, target)));
                target
            });
            match target {
                Some(target) if target == t => {
                    problems.push(located(&task.id, "dependencies", "a task cannot depend on itself".into()))
                }
                Some(target) => deps[t].push(target as u32),
                None => {
                    let message = format!("unknown task '{}'{}", excerpt(dep), suggest(dep, workflow));
                    problems.push(located(&task.id, "dependencies", message));
                }
            }
        }
    }
    let dag = Dag::new(deps);
    for cycle in dag.cycles() {
        let mut path: Vec<&str> = cycle.iter().map(|&t| workflow.tasks[t as usize].id.as_str()).collect();
        path.push(path[0]);
        let message = format!("dependency cycle: {} (each task depends on the next)", path.join(" -> "));
        problems.push(located(path[0], "dependencies", message));
    }
    problems.extend(check_references(workflow, &dag, &index));
    (problems, renames)
}

/// Names that map to exactly one task, for dependencies given by name.
fn names_to_ids(workflow: &Workflow) -> HashMap<&str, &str> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in &workflow.tasks {
        *count.entry(&t.name).or_default() += 1;
    }
    workflow.tasks.iter().filter(|t| count[t.name.as_str()] == 1).map(|t| (t.name.as_str(), t.id.as_str())).collect()
}

fn suggest(dep: &str, workflow: &Workflow) -> String {
    workflow
        .tasks
        .iter()
        .map(|t| (strsim::jaro_winkler(&t.id, dep), &t.id))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, id)| format!("; did you mean '{id}'?"))
        .unwrap_or_default()
}

/// Every `${…}` must be well formed, and a `${id.result…}` must name an
/// ancestor; `${item}` is for the params of a `for_each` task. Descendant
/// sets are computed once per referenced task.
fn check_references(workflow: &Workflow, dag: &Dag, index: &HashMap<&str, usize>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut wanted: HashMap<usize, Vec<(usize, &'static str)>> = HashMap::new();
    for (t, task) in workflow.tasks.iter().enumerate() {
        let when = task.when.clone().map(Value::String);
        let fields = [
            ("params", Some(task.params.as_ref())),
            ("for_each", task.for_each.as_ref().map(|f| f.items.as_ref())),
            ("when", when.as_ref()),
        ];
        for (field, value) in fields {
            let Some(value) = value else { continue };
            let located = |message: String| Problem {
                task: Some(format!("task '{}'", task.id)),
                field: Some(field.into()),
                message,
            };
            for found in substitution::references(value) {
                let r = match found {
                    Err(e) => {
                        problems.push(located(e.to_string()));
                        continue;
                    }
                    Ok(r) => r,
                };
                if let Root::Input(name) = &r.root {
                    if !workflow.inputs.iter().any(|i| i.name == *name) {
                        let declared: Vec<&str> = workflow.inputs.iter().map(|i| i.name.as_str()).collect();
                        let declared = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
                        problems.push(located(format!("'{r}' names no declared input (inputs: {declared})")));
                    }
                    continue;
                }
                let Some(id) = r.task() else {
                    if field != "params" {
                        problems.push(located(format!("'{r}': the items are not known yet in '{field}'")));
                    } else if task.for_each.is_none() {
                        problems.push(located(format!("'{r}' needs 'for_each' on the task (it names the item)")));
                    }
                    continue;
                };
                match index.get(id) {
                    None => problems.push(located(format!("'{r}' refers to unknown task '{id}'"))),
                    Some(&target) if target == t => problems.push(located(format!("'{r}' refers to the task itself"))),
                    Some(&target) if dag.deps(t).contains(&(target as u32)) => {}
                    Some(&target) => wanted.entry(target).or_default().push((t, field)),
                }
            }
        }
    }
    let dependents = if wanted.is_empty() { Vec::new() } else { dag.dependents() };
    let mut targets: Vec<_> = wanted.into_iter().collect();
    targets.sort_unstable();
    for (target, users) in targets {
        let descendants = dag.descendants(target, &dependents);
        for (user, field) in users.into_iter().filter(|&(u, _)| !descendants[u]) {
            let (user, target) = (&workflow.tasks[user].id, &workflow.tasks[target].id);
            problems.push(Problem {
                task: Some(format!("task '{user}'")),
                field: Some(field.into()),
                message: format!(
                    "refers to the result of task '{target}', which is not among its dependencies (direct or indirect); add '{target}' to 'dependencies'"
                ),
            });
        }
    }
    problems
}

pub(crate) fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_CHARS && s.chars().all(substitution::is_id_char)
}

/// A protocol id, `name/version` (`echo/v1`): the one rule for tasks,
/// remote providers and plugins alike (the original let the version be
/// left out; here it is always named).
pub fn is_protocol(s: &str) -> bool {
    let Some((name, version)) = s.split_once('/') else { return false };
    let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(lower)
        && !version.is_empty()
        && version.chars().all(lower)
        && s.len() <= 100
}

/// `^[a-zA-Z][a-zA-Z0-9_./:-]*$`, the original's method pattern.
pub fn is_method(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./:-".contains(c))
        && s.len() <= 200
}

/// A task id derived from a name: lowercase, other characters as '-'.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    s.trim_matches('-').chars().take(MAX_ID_CHARS).collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value as short text for messages.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", excerpt(s)),
        Value::Array(_) | Value::Object(_) => kind(v).to_owned(),
        other => other.to_string(),
    }
}

/// At most 60 characters of user text.
pub fn excerpt(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(60).collect();
    if chars.next().is_some() { format!("{head}…") } else { head }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Workflow, WorkflowError> {
        parse("wf.yaml", text.as_bytes(), Format::Yaml)
    }

    fn problems(text: &str) -> Vec<String> {
        match yaml(text) {
            Ok(_) => panic!("expected problems"),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn parses_the_full_schema_with_aliases() {
        let wf = yaml(
            r#"
name: demo
id: wf-1
version: 2
priority: high
max_parallel_tasks: 4
timeout: 5m
tasks:
  - id: a
    protocol: echo/v1
    method: echo
    parameters: {message: hi}
    retry_config: {max_attempts: 4, backoff_strategy: linear, base_delay: 0.5, max_delay: 2, jitter: false}
  - name: Second Step
    protocol: echo/v1
    method: echo
    dependencies: [a]
    priority: low
    timeout: 2.5
    params: {message: "${a.result.echoed}"}
  - id: c
    protocol: echo/v1
    method: echo
    dependencies: [Second Step, a, a]
"#,
        )
        .unwrap();
        assert_eq!(wf.tasks[2].dependencies, ["second-step", "a"], "names become ids, repeats drop");
        assert_eq!((wf.id.as_str(), wf.version.as_deref(), wf.max_parallel), ("wf-1", Some("2"), Some(4)));
        assert_eq!(wf.timeout, Some(Duration::from_secs(300)));
        let [a, b, _] = &wf.tasks[..] else { panic!() };
        assert_eq!(a.priority, Priority::High, "inherits the workflow's priority");
        assert_eq!(a.retry.max_attempts, 4);
        assert_eq!(a.retry.backoff, Backoff::Linear);
        assert_eq!(a.params["message"], "hi");
        assert_eq!((b.id.as_str(), b.name.as_str()), ("second-step", "Second Step"));
        assert_eq!(b.priority, Priority::Low);
        assert_eq!(b.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(b.retry, RetryPolicy::none());
    }

    #[test]
    fn reports_every_problem_with_task_and_field() {
        let found = problems(
            r#"
name: bad
tasks:
  - id: a
    protocol: Echo
    method: echo
    priority: hgh
    timeout: -1
    dependecies: [b]
  - id: a
    protocol: echo/v1
    method: "1x"
    retry: {backoff: sometimes, max_attempts: 0}
  - id: c
    protocol: echo/v1
    method: echo
    dependencies: [c, nope]
"#,
        );
        let expected = [
            "task 'a', field 'dependecies': unknown field; did you mean 'dependencies'?",
            "task 'a', field 'protocol': 'Echo' is not a protocol id",
            "task 'a', field 'priority': unknown priority 'hgh'",
            "task 'a', field 'timeout': must be a number of seconds",
            "task 'a', field 'method': '1x' is not a method name",
            "task 'a', field 'retry.max_attempts': must be a whole number from 1 to 100, found 0",
            "task 'a', field 'retry.backoff': unknown backoff 'sometimes'",
            "task 'c', field 'dependencies': a task cannot depend on itself",
            "task 'c', field 'dependencies': unknown task 'nope'",
        ];
        for want in expected {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
        }
    }

    #[test]
    fn graph_problems_are_found_after_fields_are_valid() {
        let found = problems(
            r#"
name: graph
tasks:
  - {id: a, protocol: echo/v1, method: echo, dependencies: [c]}
  - {id: b, protocol: echo/v1, method: echo, dependencies: [a]}
  - {id: c, protocol: echo/v1, method: echo, dependencies: [b]}
  - {id: d, protocol: echo/v1, method: echo, dependencies: [d]}
  - {id: a, protocol: echo/v1, method: echo}
"#,
        );
        assert!(found.iter().any(|p| p.contains("duplicate id: tasks #1 and #5")), "{found:#?}");
        assert!(found.iter().any(|p| p == "task 'a', field 'dependencies': dependency cycle: a -> c -> b -> a (each task depends on the next)"), "{found:#?}");
        assert!(found.iter().any(|p| p.contains("task 'd'") && p.contains("itself")), "{found:#?}");
    }

    #[test]
    fn references_must_point_to_ancestors() {
        let found = problems(
            r#"
name: refs
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, dependencies: [a]}
  - {id: c, protocol: echo/v1, method: echo, dependencies: [b], params: {m: "${a.result.x}", n: "${b.result}"}}
  - {id: d, protocol: echo/v1, method: echo, params: {m: "${c.result}", n: "${ghost.result}", o: "${a.result..x}"}}
"#,
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found.iter().any(|p| p.starts_with(
            "task 'd', field 'params': refers to the result of task 'c', which is not among its dependencies"
        )));
        assert!(found.iter().any(|p| p.contains("'${ghost.result}' refers to unknown task 'ghost'")));
        assert!(found.iter().any(|p| p.contains("malformed reference '${a.result..x}'")));
    }

    #[test]
    fn for_each_is_checked_like_params() {
        let found = problems(
            r#"
name: fan
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, for_each: "${a.result.list}", params: {m: "${item}"}}
  - {id: c, protocol: echo/v1, method: echo, for_each: {file: x}, max_parallel: 0, allow_failures: "yes"}
  - {id: d, protocol: echo/v1, method: echo, max_parallel: 2, allow_failures: true, params: {m: "${item.x}"}}
  - {id: e, protocol: echo/v1, method: echo, for_each: "${item}", params: {m: "${item_index}"}}
  - {id: item, protocol: echo/v1, method: echo, for_each: "list: ${a.result}", dependencies: [a]}
"#,
        );
        let expected = [
            "task 'b', field 'for_each': refers to the result of task 'a', which is not among its dependencies",
            "task 'c', field 'for_each': must be a list of items, one reference that gives a list (like \"${topics.result.items}\") or {files: PATTERN, dir: NAME}, found a mapping",
            "task 'c', field 'max_parallel': must be a whole number from 1 to 100000, found 0",
            "task 'c', field 'allow_failures': must be true or false, found 'yes'",
            "task 'd', field 'max_parallel': applies to a task with 'for_each' only",
            "task 'd', field 'allow_failures': applies to a task with 'for_each' only",
            "task 'd', field 'params': '${item.x}' needs 'for_each' on the task (it names the item)",
            "task 'e', field 'for_each': '${item}': the items are not known yet in 'for_each'",
            "task 'item', field 'id': 'item' is reserved for the items of for_each; rename the task",
            "task 'item', field 'for_each': must be a list of items, one reference",
        ];
        for want in expected {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn for_each_survives_the_stores_round_trip() {
        let wf = yaml(
            r#"
name: fan
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, dependencies: [a], for_each: "${a.result}", max_parallel: 3, allow_failures: true, params: {m: "${item}"}}
  - {id: c, protocol: echo/v1, method: echo, for_each: [1, {x: 2}]}
"#,
        )
        .unwrap();
        let for_each = wf.tasks[1].for_each.as_ref().unwrap();
        assert_eq!((for_each.max_parallel, for_each.allow_failures), (Some(3), true));
        let stored = crate::store::workflow_json("test", &wf).unwrap();
        assert_eq!(crate::store::workflow_from_json("test", &wf.id, &stored).unwrap(), wf);
    }

    #[test]
    fn a_schedule_block_is_checked_against_the_declared_inputs() {
        let found = problems(
            r#"
name: "!!!"
inputs: {at: string, count: integer, flag: boolean}
schedule: {cron: "0 25 * * *", timezone: Europe/Berln, every: day}
tasks:
  - {id: t, protocol: echo/v1, method: echo}
"#,
        );
        let expected = [
            "field 'schedule.every': unknown field; schedule fields are: cron, timezone, inputs, due_input, id",
            "field 'schedule.timezone': unknown time zone 'Europe/Berln'",
        ];
        for want in expected {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
        }
        let found = problems(
            r#"
name: "!!!"
inputs: {at: string, count: integer, flag: boolean}
schedule: {cron: "0 25 * * *"}
tasks:
  - {id: t, protocol: echo/v1, method: echo}
"#,
        );
        assert!(found[0].starts_with("field 'schedule.cron': '0 25 * * *' is not a cron pattern"), "{found:#?}");
        let found = problems(
            r#"
name: "!!!"
inputs: {at: string, count: integer, flag: boolean}
schedule: {cron: "@daily", due_input: count, inputs: {count: many, flag: "true", x: 1}}
tasks:
  - {id: t, protocol: echo/v1, method: echo}
"#,
        );
        let expected = [
            "field 'schedule.inputs.count': must be an integer, found 'many'",
            "field 'schedule.inputs.x': the workflow declares no such input (inputs: at, count, flag)",
            "field 'schedule.due_input': input 'count' must be of type string to hold a time",
            "field 'schedule.id': the workflow's name gives no id; set schedule.id",
        ];
        for want in expected {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        assert!(
            problems("name: x\nschedule: 7am\ntasks:\n  - {id: t, protocol: echo/v1, method: echo}\n")[0]
                .starts_with("field 'schedule': must be a mapping with 'cron'")
        );

        // The id: the block's, else the workflow's, else its name's.
        let id = |text: &str| yaml(text).unwrap().schedule.unwrap().id;
        let tasks = "tasks:\n  - {id: t, protocol: echo/v1, method: echo}\n";
        assert_eq!(id(&format!("name: Morning Digest\nschedule: {{cron: '@daily'}}\n{tasks}")), "morning-digest");
        assert_eq!(id(&format!("id: md\nname: x\nschedule: {{cron: '@daily'}}\n{tasks}")), "md");
        assert_eq!(id(&format!("id: md\nname: x\nschedule: {{cron: '@daily', id: mine}}\n{tasks}")), "mine");
        // Run by hand, a scheduled workflow takes its schedule's inputs.
        let mut wf = yaml(&format!(
            "name: x\ninputs: {{at: string, n: integer}}\nschedule: {{cron: '@daily', due_input: at, inputs: {{n: '3'}}}}\n{tasks}"
        ))
        .unwrap();
        inputs::bind("x", &mut wf, Map::new()).unwrap();
        let at = wf.inputs[0].default.clone().unwrap();
        assert!(at.as_str().unwrap().ends_with("+00:00"), "due now, in UTC: {at}");
        assert_eq!(wf.inputs[1].default, Some(serde_json::json!(3)));
    }

    #[test]
    fn inputs_are_declared_with_types_and_bound_once() {
        let found = problems(
            r#"
name: inputs
inputs: {a: strin, b: {type: integer, default: x}, c: {type: string, deflt: 1}, "d e": string, f: 3}
tasks:
  - {id: t, protocol: echo/v1, method: echo, params: {m: "${inputs.zz}"}}
  - {id: inputs, protocol: echo/v1, method: echo}
"#,
        );
        let expected = [
            "field 'inputs.a.type': unknown type 'strin'; use string, integer, number, boolean, array, object",
            "field 'inputs.b.default': must be an integer, found 'x'",
            "field 'inputs.c.deflt': unknown field; input fields are: type, default, description",
            "field 'inputs.d e': 'd e' is not a valid input name",
            "field 'inputs.f': must be a type (string, integer, number, boolean, array, object) or a mapping with 'type', found a number",
            "task 't', field 'params': '${inputs.zz}' names no declared input (inputs: c)",
            "task 'inputs', field 'id': 'inputs' is reserved",
        ];
        for want in expected {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");

        let mut wf = yaml(
            "name: x\ninputs: {n: {type: number, default: 1.5}, o: object}\ntasks:\n  - {id: t, protocol: echo/v1, method: echo}\n",
        )
        .unwrap();
        let given = serde_json::json!({"o": "{\"k\": [1]}"}).as_object().unwrap().clone();
        inputs::bind("x", &mut wf, given).unwrap();
        let values: Vec<_> = wf.inputs.iter().map(|i| i.default.clone().unwrap()).collect();
        assert_eq!(values, [serde_json::json!(1.5), serde_json::json!({"k": [1]})], "strings are read by type");
        // Bound values travel in the document, so a stored workflow reads back with them.
        let stored = crate::store::workflow_json("test", &wf).unwrap();
        let again = crate::store::workflow_from_json("test", &wf.id, &stored).unwrap();
        assert_eq!(again, wf);
        let mut again = again;
        assert!(inputs::bind("x", &mut again, Map::new()).is_ok(), "a bound workflow needs nothing more");
    }

    #[test]
    fn conditions_are_checked_like_params() {
        let found = problems(
            r#"
name: when
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, when: "${a.result.x} =="}
  - {id: d, protocol: echo/v1, method: echo, when: [1]}
"#,
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("task 'b', field 'when': is not a valid CEL expression: Syntax error: mismatched input '<EOF>' expecting"),
            "{found:#?}"
        );
        assert_eq!(found[1], "task 'd', field 'when': must be a condition (a string), found a list");
        let found = problems(
            r#"
name: when
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: c, protocol: echo/v1, method: echo, when: "${a.result.x} == 1"}
  - {id: e, protocol: echo/v1, method: echo, for_each: [1], when: "${item} == 1"}
  - {id: f, protocol: echo/v1, method: echo, when: "${a.reslt} == 1", dependencies: [a]}
  - {id: g, protocol: echo/v1, method: echo, when: true}
"#,
        );
        let expected = [
            "task 'c', field 'when': refers to the result of task 'a', which is not among its dependencies",
            "task 'e', field 'when': '${item}': the items are not known yet in 'when'",
            "task 'f', field 'when': malformed reference '${a.reslt}'",
        ];
        for want in expected {
            assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn hostile_input_gets_clear_errors() {
        let err = parse("x.yaml", b"name: \xff\xfe", Format::Yaml).unwrap_err();
        assert!(err.to_string().contains("not UTF-8 text (invalid byte at offset 6)"), "{err}");

        let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        let err = yaml(bomb).unwrap_err();
        assert!(matches!(err, WorkflowError::Syntax { .. }), "{err}");

        let deep = format!("name: x\ntasks: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(yaml(&deep).unwrap_err(), WorkflowError::Syntax { .. }));
        let deep_json = format!("{{\"name\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse("x.json", deep_json.as_bytes(), Format::Json).unwrap_err(),
            WorkflowError::Syntax { .. }
        ));

        let err = yaml("- just\n- a list\n").unwrap_err();
        assert!(err.to_string().contains("the top level must be a mapping"), "{err}");
    }
}
