//! `${task-id.result.a.b[2].c}` references in task params, the item of a
//! `for_each` task (`${item}`, `${item.field[0]}`, `${item_index}`) and the
//! workflow's inputs (`${inputs.NAME}`).
//!
//! A string that is exactly one reference is replaced by the referenced JSON
//! value, keeping its type; references embedded in text insert strings as they
//! are and other values as compact JSON. `$${` writes a literal `${`. A path
//! that is missing at run time is an error naming the path, never a silent
//! pass-through.

use crate::ids::is_id_char;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// One step of a path into a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// What a reference starts from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Root {
    /// `${id.result…}`: an earlier task's result.
    Task(String),
    /// `${item…}`: the item a `for_each` task was expanded for.
    Item,
    /// `${item_index}`: that item's position, from 0.
    ItemIndex,
    /// `${inputs.NAME…}`: a workflow input.
    Input(String),
}

impl Root {
    /// The names a reference may start with besides task ids; no task may
    /// take them as its id.
    pub const RESERVED: [&str; 3] = ["item", "item_index", "inputs"];

    /// How the value it names starts in a path (`result.a[0]`, `item.a`).
    fn head(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Root::Task(_) => "result".into(),
            Root::Item => "item".into(),
            Root::ItemIndex => "item_index".into(),
            Root::Input(name) => format!("inputs.{name}").into(),
        }
    }

    /// What it names, for messages.
    fn describe(&self) -> String {
        match self {
            Root::Task(id) => format!("the result of task '{id}'"),
            Root::Item => "the item".to_owned(),
            Root::ItemIndex => "the item's index".to_owned(),
            Root::Input(name) => format!("input '{name}'"),
        }
    }
}

/// A parsed `${…}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: Root,
    /// The path below the root's value.
    pub path: Vec<PathSegment>,
}

impl Reference {
    /// The referenced task's id, for a task result.
    pub fn task(&self) -> Option<&str> {
        match &self.root {
            Root::Task(id) => Some(id),
            Root::Item | Root::ItemIndex | Root::Input(_) => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::Task(id) => write!(f, "${{{id}.result{}}}", PathDisplay(&self.path)),
            root => write!(f, "${{{}{}}}", root.head(), PathDisplay(&self.path)),
        }
    }
}

struct PathDisplay<'a>(&'a [PathSegment]);

impl fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in self.0 {
            match segment {
                PathSegment::Key(k) => write!(f, ".{k}")?,
                PathSegment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A string whose `${…}` cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reference '{text}': {reason}")]
pub struct TemplateError {
    pub text: String,
    pub reason: String,
}

/// A reference that cannot be resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstitutionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("'{reference}': task '{task}' has no result")]
    NoResult { reference: String, task: String },
    #[error("'{reference}': only the tasks a for_each makes have an item")]
    NoItem { reference: String },
    #[error("'{reference}': the workflow has no input '{name}' with a value")]
    NoInput { reference: String, name: String },
    #[error("'{reference}': path '{path}' not found in {within} ({reason})")]
    MissingPath { reference: String, within: String, path: String, reason: String },
}

/// A part of a string with references: text, or one reference.
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Ref(Reference),
}

impl SubstitutionError {
    /// What `reference` names has no value (yet).
    pub fn missing(reference: &Reference) -> Self {
        let text = reference.to_string();
        match &reference.root {
            Root::Task(task) => Self::NoResult { reference: text, task: task.clone() },
            Root::Item | Root::ItemIndex => Self::NoItem { reference: text },
            Root::Input(name) => Self::NoInput { reference: text, name: name.clone() },
        }
    }
}

fn malformed(text: &str, reason: impl Into<String>) -> TemplateError {
    TemplateError { text: text.to_owned(), reason: reason.into() }
}

/// Split a string into literal text and references.
pub(crate) fn parse_template(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        let after = &rest[at..];
        if after.starts_with("$${") {
            pieces.push(Piece::Text(&rest[..at]));
            pieces.push(Piece::Text("${"));
            rest = &rest[at + 3..];
        } else if after.starts_with("${") {
            pieces.push(Piece::Text(&rest[..at]));
            let Some(close) = after.find('}') else {
                return Err(malformed(after, "no closing '}'"));
            };
            let text = &after[..=close];
            pieces.push(Piece::Ref(parse_reference(text, &after[2..close])?));
            rest = &after[close + 1..];
        } else {
            pieces.push(Piece::Text(&rest[..=at]));
            rest = &rest[at + 1..];
        }
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|p| !matches!(p, Piece::Text("")));
    Ok(pieces)
}

/// Parse the inside of `${…}`: `task-id.result`, `item` or `item_index`,
/// then `.key` / `[n]` steps.
fn parse_reference(text: &str, inner: &str) -> Result<Reference, TemplateError> {
    let expected =
        "expected '${task-id.result}', '${task-id.result.field[0]}', '${item…}', '${item_index}' or '${inputs.NAME}'";
    let split = inner.find(['.', '[']).unwrap_or(inner.len());
    let (head, tail) = inner.split_at(split);
    let (root, tail) = match head {
        "item" => (Root::Item, tail),
        "item_index" if tail.is_empty() => (Root::ItemIndex, tail),
        "item_index" => return Err(malformed(text, "'${item_index}' is a number; it has no fields")),
        "inputs" => {
            let name_end = tail.get(1..).map_or(0, |rest| rest.find(['.', '[']).unwrap_or(rest.len()) + 1);
            let name = tail.get(1..name_end).unwrap_or_default();
            if !tail.starts_with('.') || name.is_empty() || !name.chars().all(is_id_char) {
                return Err(malformed(text, "expected '${inputs.NAME}' with the name of a declared input"));
            }
            (Root::Input(name.to_owned()), &tail[name_end..])
        }
        _ if head.is_empty() || !head.chars().all(is_id_char) => {
            return Err(malformed(text, format!("'{head}' is not a task id; {expected}")));
        }
        _ => match tail.strip_prefix(".result") {
            Some(rest) => (Root::Task(head.to_owned()), rest),
            None => return Err(malformed(text, format!("the part after the task id must be 'result'; {expected}"))),
        },
    };
    let path = parse_path(text, tail)?;
    Ok(Reference { root, path })
}

/// `.key` and `[n]` steps.
fn parse_path(text: &str, mut tail: &str) -> Result<Vec<PathSegment>, TemplateError> {
    let expected = "expected '.field' or '[index]'";
    let mut path = Vec::new();
    while !tail.is_empty() {
        if let Some(after) = tail.strip_prefix('.') {
            let end = after.find(['.', '[', ']']).unwrap_or(after.len());
            if end == 0 {
                return Err(malformed(text, "empty field name after '.'"));
            }
            path.push(PathSegment::Key(after[..end].to_owned()));
            tail = &after[end..];
        } else if let Some(after) = tail.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Err(malformed(text, "'[' without ']'"));
            };
            let index = after[..end]
                .parse::<usize>()
                .map_err(|_| malformed(text, format!("'[{}]' is not an array index", &after[..end])))?;
            path.push(PathSegment::Index(index));
            tail = &after[end + 1..];
        } else {
            return Err(malformed(text, format!("unexpected '{tail}'; {expected}")));
        }
    }
    Ok(path)
}

/// Every string in `value`, walked without recursion.
fn strings_mut(
    value: &mut Value,
    mut visit: impl FnMut(&mut Value) -> Result<(), SubstitutionError>,
) -> Result<(), SubstitutionError> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(_) => visit(v)?,
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
    Ok(())
}

/// Every string in `value`, at any depth (iteratively: params may be deep).
fn strings(value: &Value) -> impl Iterator<Item = &str> {
    let mut stack = vec![value];
    std::iter::from_fn(move || {
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => return Some(s.as_str()),
                Value::Array(items) => stack.extend(items.iter()),
                Value::Object(map) => stack.extend(map.values()),
                _ => {}
            }
        }
        None
    })
}

/// Whether `text` holds a reference (and so is known only at run time); a
/// `$${` escape is not one.
pub fn holds_reference(text: &str) -> bool {
    text.contains("${") && parse_template(text).is_ok_and(|pieces| pieces.iter().any(|p| matches!(p, Piece::Ref(_))))
}

/// Whether `text` is exactly one reference and nothing else (a malformed
/// one counts: it is reported where references are checked).
pub fn is_whole_reference(text: &str) -> bool {
    match parse_template(text) {
        Ok(pieces) => matches!(pieces.as_slice(), [Piece::Ref(_)]),
        Err(_) => true,
    }
}

/// Every reference in `params`, or the first malformed one per string, for
/// validation.
pub fn references(params: &Value) -> Vec<Result<Reference, TemplateError>> {
    let mut found = Vec::new();
    for s in strings(params).filter(|s| s.contains("${")) {
        match parse_template(s) {
            Ok(pieces) => found.extend(pieces.into_iter().filter_map(|p| match p {
                Piece::Ref(r) => Some(Ok(r)),
                Piece::Text(_) => None,
            })),
            Err(e) => found.push(Err(e)),
        }
    }
    found
}

/// Follow `reference.path` into `result`.
pub(crate) fn lookup<'v>(reference: &Reference, result: &'v Value) -> Result<&'v Value, SubstitutionError> {
    let mut at = result;
    for (depth, segment) in reference.path.iter().enumerate() {
        let next = match (segment, at) {
            (PathSegment::Key(k), Value::Object(map)) => map.get(k).ok_or_else(|| format!("no field '{k}'")),
            (PathSegment::Index(i), Value::Array(items)) => {
                items.get(*i).ok_or_else(|| format!("index {i} is out of range for an array of {}", items.len()))
            }
            (_, other) => Err(format!(
                "'{}{}' is {}, not {}",
                reference.root.head(),
                PathDisplay(&reference.path[..depth]),
                kind(other),
                match segment {
                    PathSegment::Key(_) => "an object",
                    PathSegment::Index(_) => "an array",
                }
            )),
        };
        at = next.map_err(|reason| SubstitutionError::MissingPath {
            reference: reference.to_string(),
            within: reference.root.describe(),
            path: format!("{}{}", reference.root.head(), PathDisplay(&reference.path)),
            reason,
        })?;
    }
    Ok(at)
}

/// A JSON value's kind, for messages ("a string", "an array").
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Replace every reference in `params` using `value_of(root)` (a task's
/// result, the item). Params without a `$` come back as they are, shared
/// rather than copied.
pub fn substitute<'r>(
    params: &Arc<Value>,
    value_of: impl Fn(&Root) -> Option<&'r Value>,
) -> Result<Arc<Value>, SubstitutionError> {
    if !strings(params).any(|s| s.contains('$')) {
        return Ok(params.clone());
    }
    let mut out = Value::clone(params);
    strings_mut(&mut out, |v| {
        let Value::String(s) = v else { return Ok(()) };
        if !s.contains('$') {
            return Ok(());
        }
        let pieces = parse_template(s)?;
        let resolve = |r: &Reference| -> Result<&'r Value, SubstitutionError> {
            let value = value_of(&r.root).ok_or_else(|| SubstitutionError::missing(r))?;
            lookup(r, value)
        };
        if let [Piece::Ref(r)] = pieces.as_slice() {
            *v = resolve(r)?.clone();
            return Ok(());
        }
        let mut text = String::with_capacity(s.len());
        for piece in &pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Ref(r) => match resolve(r)? {
                    Value::String(inner) => text.push_str(inner),
                    other => text.push_str(&other.to_string()),
                },
            }
        }
        *v = Value::String(text);
        Ok(())
    })?;
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(params: Value, results: &Value) -> Result<Value, SubstitutionError> {
        substitute(&Arc::new(params), |root| match root {
            Root::Task(id) => results.get(id),
            Root::Item => results.get("@item"),
            Root::ItemIndex => results.get("@index"),
            Root::Input(name) => results.get("@inputs").and_then(|inputs| inputs.get(name)),
        })
        .map(Arc::unwrap_or_clone)
    }

    #[test]
    fn params_without_references_are_shared_not_copied() {
        let params = Arc::new(json!({"a": ["plain", {"b": 1}]}));
        assert!(Arc::ptr_eq(&substitute(&params, |_| None).unwrap(), &params));
        let escaped = Arc::new(json!({"a": "$${x}"}));
        assert_eq!(*substitute(&escaped, |_| None).unwrap(), json!({"a": "${x}"}), "an escape is a change");
    }

    #[test]
    fn whole_string_keeps_type_and_embedded_inserts_text() {
        let results = json!({"a": {"n": 3, "s": "hi", "list": [1, {"c": true}], "obj": {"k": 1}}});
        let out = run(
            json!({
                "whole": "${a.result}",
                "num": "${a.result.n}",
                "deep": "${a.result.list[1].c}",
                "text": "say ${a.result.s} x${a.result.n} ${a.result.obj}",
                "nested": [{"x": "${a.result.s}"}],
                "escaped": "cost $${a.result.n} and $5",
            }),
            &results,
        )
        .unwrap();
        assert_eq!(out["whole"], results["a"]);
        assert_eq!(out["num"], json!(3));
        assert_eq!(out["deep"], json!(true));
        assert_eq!(out["text"], json!("say hi x3 {\"k\":1}"));
        assert_eq!(out["nested"][0]["x"], json!("hi"));
        assert_eq!(out["escaped"], json!("cost ${a.result.n} and $5"));
    }

    #[test]
    fn a_missing_path_names_the_path_and_why() {
        let results = json!({"a": {"list": [1]}});
        let err = run(json!({"p": "${a.result.list[4]}"}), &results).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'${a.result.list[4]}': path 'result.list[4]' not found in the result of task 'a' (index 4 is out of range for an array of 1)"
        );
        let err = run(json!({"p": "${a.result.list.x}"}), &results).unwrap_err();
        assert!(err.to_string().contains("'result.list' is an array, not an object"), "{err}");
        let err = run(json!({"p": "${zz.result}"}), &results).unwrap_err();
        assert!(matches!(err, SubstitutionError::NoResult { .. }));
    }

    #[test]
    fn the_item_and_its_index_are_references_too() {
        let values = json!({"@item": {"topic": "owls", "tags": ["a", "b"]}, "@index": 3, "t": {"x": 1}});
        let out = run(
            json!({"w": "${item}", "p": "About ${item.topic} (#${item_index}), tag ${item.tags[1]}, x=${t.result.x}"}),
            &values,
        )
        .unwrap();
        assert_eq!(out["w"], values["@item"]);
        assert_eq!(out["p"], json!("About owls (#3), tag b, x=1"));
        let err = run(json!({"p": "${item.title}"}), &values).unwrap_err();
        assert_eq!(err.to_string(), "'${item.title}': path 'item.title' not found in the item (no field 'title')");
        let err = run(json!({"p": "${item}"}), &json!({})).unwrap_err();
        assert!(matches!(err, SubstitutionError::NoItem { .. }), "{err}");
        let found = references(&json!({"p": "${item[0]} ${item_index} ${a.result}"}));
        let roots: Vec<Root> = found.into_iter().map(|r| r.unwrap().root).collect();
        assert_eq!(roots, [Root::Item, Root::ItemIndex, Root::Task("a".into())]);
    }

    #[test]
    fn inputs_are_references_by_name() {
        let values = json!({"@inputs": {"topic": "owls", "sizes": [1, 2]}});
        let out = run(json!({"t": "${inputs.topic}", "s": "n=${inputs.sizes[1]}", "all": "${inputs.sizes}"}), &values);
        assert_eq!(out.unwrap(), json!({"t": "owls", "s": "n=2", "all": [1, 2]}));
        let err = run(json!({"p": "${inputs.nope}"}), &values).unwrap_err();
        assert_eq!(err.to_string(), "'${inputs.nope}': the workflow has no input 'nope' with a value");
        for bad in ["${inputs}", "${inputs.}", "${inputs[0]}", "${inputs.a b}"] {
            let found = references(&json!({ "p": bad }));
            assert!(found[0].as_ref().is_err_and(|e| e.reason.contains("inputs.NAME")), "{bad}: {found:?}");
        }
    }

    #[test]
    fn malformed_references_are_reported() {
        for (text, reason) in [
            ("${a.result", "no closing"),
            ("${}", "is not a task id"),
            ("${a.output}", "must be 'result'"),
            ("${a.result..x}", "empty field name"),
            ("${a.result[x]}", "not an array index"),
            ("${a.result[1}", "'[' without ']'"),
            ("${a b.result}", "is not a task id"),
            ("${item_index.x}", "it has no fields"),
            ("${item..x}", "empty field name"),
        ] {
            let found = references(&json!({ "p": text }));
            let err = found[0].as_ref().unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn references_are_collected_from_nested_params() {
        let found = references(&json!({"a": ["${x.result}", {"b": "${y.result.k[0]} ${x.result}"}], "c": 1}));
        let mut tasks: Vec<String> = found.into_iter().map(|r| r.unwrap().task().unwrap().to_owned()).collect();
        tasks.sort();
        assert_eq!(tasks, ["x", "x", "y"]);
    }
}
