//! The field-by-field reader: a workflow's tree into a [`Workflow`],
//! recording every problem it meets with its task and field rather than
//! stopping at the first.
//!
//! It owns the field names each level accepts and the bounds on each
//! value (lengths, timeouts, attempts, parallelism). It reads one task at a
//! time and knows nothing of the graph: dependencies and references
//! between tasks are `super::graph`'s, protocols and methods the catalog's.

use super::{Problem, inputs, kind, schedule, show, slug};
use crate::ids::{MAX_ID_CHARS, is_id, is_method, is_protocol};
use crate::model::{
    Backoff, CachePolicy, Concurrency, FileRef, ForEach, MAX_CACHE_TTL_SECS, MAX_ITEMS, MAX_KEY_CHARS,
    MAX_KEY_CONCURRENCY, Priority, RetryPolicy, Task, Workflow,
};
use crate::resolver::Root;
use crate::resolver::condition::{Condition, ConditionError};
use crate::resolver::substitution;
use crate::text::excerpt;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const MAX_NAME_CHARS: usize = 200;
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
    "cache",
    "tasks",
];
pub(super) const TASK_FIELDS: &[&str] = &[
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
    "file",
    "concurrency",
    "cache",
];
const RETRY_FIELDS: &[&str] = &["max_attempts", "backoff", "backoff_strategy", "base_delay", "max_delay", "jitter"];

/// Field-by-field conversion that records every problem it meets.
#[derive(Default)]
pub(super) struct Fields {
    pub(super) problems: Vec<Problem>,
}

impl Fields {
    fn report(&mut self, task: Option<&str>, field: Option<&str>, message: impl Into<String>) {
        self.problems.push(Problem {
            task: task.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    pub(super) fn workflow(&mut self, tree: Value) -> Option<Workflow> {
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
        let cache = self.cache(at, &mut map).flatten();
        let tasks = self.tasks(&mut map, priority, cache);
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

    fn tasks(
        &mut self,
        map: &mut Map<String, Value>,
        default_priority: Priority,
        default_cache: Option<CachePolicy>,
    ) -> Option<Vec<Task>> {
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
        let task = |(i, v)| self.task(i, v, default_priority, default_cache);
        Some(list.into_iter().enumerate().filter_map(task).collect())
    }

    fn task(
        &mut self,
        index: usize,
        tree: Value,
        default_priority: Priority,
        default_cache: Option<CachePolicy>,
    ) -> Option<Task> {
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
        let file = self.file(at, &mut map);
        let concurrency = self.concurrency(at, &mut map);
        let cache = self.cache(at, &mut map).unwrap_or(default_cache);
        if file.is_some() && for_each.is_some() {
            self.report(at, Some("file"), "a task reads one 'file' or runs 'for_each' item, not both");
        }
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
            file,
            concurrency,
            cache,
        })
    }

    /// `cache: {ttl: DURATION}` (Some(Some)), `cache: false` (Some(None)),
    /// or nothing said (None).
    fn cache(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<Option<CachePolicy>> {
        let mut spec = match map.remove("cache")? {
            Value::Bool(false) | Value::Null => return Some(None),
            Value::Object(spec) => spec,
            other => {
                let found = show(&other);
                self.report(at, Some("cache"), format!("must be {{ttl: DURATION}} or false, found {found}"));
                return None;
            }
        };
        for key in spec.keys().filter(|k| k.as_str() != "ttl") {
            self.report(at, Some(&format!("cache.{key}")), "unknown field; cache fields are: ttl");
        }
        let Some(ttl) = spec.remove("ttl") else {
            self.report(at, Some("cache.ttl"), "missing (how long a result is reused, e.g. \"1d\")");
            return None;
        };
        let ttl = self.duration_value(at, "cache.ttl", &ttl, 1.0, MAX_CACHE_TTL_SECS)?;
        Some(Some(CachePolicy { ttl }))
    }

    /// `concurrency: {key: TEXT, max: N}`; the key's references are
    /// checked with the graph.
    fn concurrency(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<Concurrency> {
        let mut spec = match map.remove("concurrency")? {
            Value::Object(spec) => spec,
            other => {
                let found = kind(&other);
                self.report(at, Some("concurrency"), format!("must be a mapping {{key: TEXT, max: N}}, found {found}"));
                return None;
            }
        };
        for key in spec.keys().filter(|k| !["key", "max"].contains(&k.as_str())) {
            self.report(at, Some(&format!("concurrency.{key}")), "unknown field; concurrency fields are: key, max");
        }
        let key = match spec.remove("key") {
            Some(Value::String(key)) if !key.is_empty() => {
                self.check_len(at, "concurrency.key", &key, MAX_KEY_CHARS);
                Some(key)
            }
            other => {
                let found = other.as_ref().map_or("nothing".to_owned(), show);
                self.report(at, Some("concurrency.key"), format!("must be a text (it may hold ${{…}}), found {found}"));
                None
            }
        };
        let max = match spec.remove("max") {
            Some(v) => self.integer(at, "concurrency.max", &v, 1, MAX_KEY_CONCURRENCY.into()),
            None => {
                self.report(at, Some("concurrency.max"), "missing (how many may run at once)");
                None
            }
        };
        Some(Concurrency { key: key?, max: u32::try_from(max?).ok()? })
    }

    /// `file: PATH` or `file: {path: PATH, dir: NAME}`: a relative path in
    /// a files directory (the host checks that it has one).
    fn file(&mut self, at: Option<&str>, map: &mut Map<String, Value>) -> Option<FileRef> {
        let (path, dir) = match map.remove("file")? {
            Value::String(path) => (Value::String(path), None),
            Value::Object(mut spec) => {
                for key in spec.keys().filter(|k| !["path", "dir"].contains(&k.as_str())) {
                    self.report(at, Some(&format!("file.{key}")), "unknown field; file fields are: path, dir");
                }
                (spec.remove("path").unwrap_or(Value::Null), spec.remove("dir"))
            }
            other => {
                let found = show(&other);
                self.report(at, Some("file"), format!("must be a path or {{path: PATH, dir: NAME}}, found {found}"));
                return None;
            }
        };
        // A path reported here still makes the task one that reads a file:
        // its `${item…}` references are not reported a second time.
        let path = match path {
            Value::String(path) => {
                if let Err(e) = crate::files::check_path(&path) {
                    self.report(at, Some("file.path"), e);
                }
                Some(path)
            }
            other => {
                self.report(at, Some("file.path"), format!("must be a relative path, found {}", show(&other)));
                None
            }
        };
        let dir = match dir {
            None => None,
            Some(Value::String(dir)) if is_id(&dir) => Some(dir),
            Some(other) => {
                self.report(at, Some("file.dir"), format!("must be a files directory's name, found {}", show(&other)));
                None
            }
        };
        Some(FileRef::new(path?, dir))
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
            // A key is user text of any length: shown cut short.
            let key = &excerpt(key);
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
