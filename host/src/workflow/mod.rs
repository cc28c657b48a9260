//! Workflow files: YAML or JSON text into a validated [`Workflow`].
//!
//! The text becomes a tree in [`tree`] (budgets, duplicate keys; nesting is
//! capped there at 128 levels). [`dialect`] rewrites the original system's
//! looser forms in that tree, [`fields`] reads it field by field so that one
//! pass reports *every* problem with its task and field instead of stopping
//! at the first, and [`graph`] checks what spans tasks (duplicates, unknown
//! or self dependencies, cycles, `${…}` references to non-ancestors) with
//! iterative walks. [`inputs`] and [`schedule`] read their blocks.
//!
//! This module owns the entry points, the problem type and the rules for
//! ids. It does not know which protocols exist; [`check_catalog`] takes a
//! [`Catalog`] (the registry) when one is at hand.

mod dialect;
mod fields;
mod graph;
pub mod inputs;
mod schedule;
pub use schedule::overlay as schedule_overlay;
pub(crate) mod tree;

use crate::ids::MAX_ID_CHARS;
use crate::model::Workflow;
use crate::resolver::substitution::holds_reference;
use crate::schema::ParamsSchema;
use crate::text::excerpt;
use fields::Fields;
use graph::check_graph;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 256 * 1024 * 1024;
/// At most this many problems are printed; the count says how many more.
const MAX_PROBLEMS_SHOWN: usize = 50;

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

#[cfg(test)]
mod tests;
