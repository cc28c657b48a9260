//! The looser dialect of the original system's later workflow files, read
//! into this host's form before validation, with a note for each thing read
//! so (`workflow validate` prints them):
//!
//! - a task without `protocol` whose method is `NAME/METHOD` (`llm/chat`)
//!   calls `METHOD` of protocol `NAME/v1`;
//! - numeric priorities, as its loader read them: 1 high, 2 normal, 3 low;
//! - `${task.field}` in params, a field of the task's result (here
//!   `${task.result.field}`), and `${task}` for the whole result.
//!
//! Only what is unambiguous is read: a method with more than one `/`, a
//! priority other than 1 to 3, or `${x.field}` where `x` is not a task of
//! the workflow is left for validation to report. This module rewrites the
//! tree only; it does not validate.

use super::{Problem, slug};
use crate::ids::is_id_char;
use crate::ids::is_protocol;
use crate::resolver::Root;
use crate::text::excerpt;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The version a protocol left out of a method is read with.
const IMPLIED_VERSION: &str = "v1";

/// Rewrite `tree` (a workflow document) from the dialect; the notes say
/// what was read how.
pub(super) fn read(tree: &mut Value) -> Vec<Problem> {
    let mut notes = Vec::new();
    let Value::Object(workflow) = tree else { return notes };
    if let Some(note) = numeric_priority(workflow) {
        notes.push(Problem { task: None, field: Some("priority".into()), message: note });
    }
    let Some(Value::Array(tasks)) = workflow.get_mut("tasks") else { return notes };
    let ids = task_ids(tasks);
    for (index, task) in tasks.iter_mut().enumerate() {
        let Value::Object(task) = task else { continue };
        let label = label(task, index);
        let mut note = |field: &str, message: String| {
            notes.push(Problem { task: Some(label.clone()), field: Some(field.into()), message });
        };
        if let Some(message) = implied_protocol(task) {
            note("method", message);
        }
        if let Some(message) = numeric_priority(task) {
            note("priority", message);
        }
        let key = if task.contains_key("params") { "params" } else { "parameters" };
        if let Some(params) = task.get_mut(key) {
            for (from, to) in result_fields(params, &ids) {
                note(
                    key,
                    format!("'{}' read as '{}' (fields start at the task's result)", excerpt(&from), excerpt(&to)),
                );
            }
        }
    }
    notes
}

/// The ids the tasks will have (given, or from their names).
fn task_ids(tasks: &[Value]) -> HashSet<String> {
    let id = |task: &Value| match (task.get("id"), task.get("name")) {
        (Some(Value::String(id)), _) => Some(id.clone()),
        (Some(Value::Number(n)), _) => Some(n.to_string()),
        (None, Some(Value::String(name))) => Some(slug(name)),
        _ => None,
    };
    tasks.iter().filter_map(id).collect()
}

fn label(task: &Map<String, Value>, index: usize) -> String {
    match task.get("id").or_else(|| task.get("name")).and_then(Value::as_str) {
        Some(id) => format!("task '{}'", excerpt(id)),
        None => format!("task #{}", index + 1),
    }
}

/// `method: NAME/METHOD` and no `protocol`: protocol `NAME/v1`.
fn implied_protocol(task: &mut Map<String, Value>) -> Option<String> {
    if task.contains_key("protocol") {
        return None;
    }
    let method = task.get("method")?.as_str()?;
    let (name, method) = method.split_once('/')?;
    let protocol = format!("{name}/{IMPLIED_VERSION}");
    if method.is_empty() || method.contains('/') || !is_protocol(&protocol) {
        return None;
    }
    let note =
        format!("'{name}/{method}' read as protocol '{protocol}', method '{method}' (the protocol was left out)");
    task.insert("method".into(), Value::String(method.to_owned()));
    task.insert("protocol".into(), Value::String(protocol));
    Some(note)
}

/// `priority: 1|2|3`: high, normal, low.
fn numeric_priority(map: &mut Map<String, Value>) -> Option<String> {
    let number = map.get("priority")?.as_u64()?;
    let name = match number {
        1 => "high",
        2 => "normal",
        3 => "low",
        _ => return None,
    };
    map.insert("priority".into(), Value::String(name.into()));
    Some(format!("{number} read as '{name}' (1 high, 2 normal, 3 low)"))
}

/// Rewrite `${task.field…}` and `${task}` in every string of `params` to
/// name the task's result; returns each (as written, as read).
fn result_fields(params: &mut Value, ids: &HashSet<String>) -> Vec<(String, String)> {
    let mut read = Vec::new();
    let mut stack = vec![params];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) if text.contains("${") => {
                if let Some(rewritten) = rewrite(text, ids, &mut read) {
                    *text = rewritten;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
    read
}

/// `text` with each loose reference to a task of `ids` made strict, if any
/// was; `$${` escapes are kept.
fn rewrite(text: &str, ids: &HashSet<String>, read: &mut Vec<(String, String)>) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find("${") {
        let escaped = at > 0 && rest[..at].ends_with('$');
        let Some(close) = rest[at..].find('}').map(|c| at + c) else { break };
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..close];
        match (!escaped).then(|| strict(inner, ids)).flatten() {
            Some(strict) => {
                read.push((format!("${{{inner}}}"), format!("${{{strict}}}")));
                out.push_str(&format!("${{{strict}}}"));
                changed = true;
            }
            None => out.push_str(&rest[at..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// `task.field…` or `task` (a task of `ids`, not followed by `.result`)
/// as `task.result.field…`.
fn strict(inner: &str, ids: &HashSet<String>) -> Option<String> {
    let end = inner.find(|c: char| !is_id_char(c)).unwrap_or(inner.len());
    let (task, tail) = inner.split_at(end);
    let loose = !ids.contains(task)
        || Root::RESERVED.contains(&task)
        || tail == ".result"
        || tail.starts_with(".result.")
        || tail.starts_with(".result[");
    if loose || !(tail.is_empty() || tail.starts_with('.') || tail.starts_with('[')) {
        return None;
    }
    Some(format!("{task}.result{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_original_later_form_is_read_with_notes() {
        let mut tree = json!({"name": "old", "priority": 1, "tasks": [
            {"id": "topic", "method": "llm/chat", "priority": 3, "parameters": {"prompt": "x"}},
            {"name": "Write It", "method": "llm/chat", "dependencies": ["topic"],
             "parameters": {"prompt": "About ${topic.content} and ${topic}, not ${topic.result.x} or $${topic.y} or ${other.z}"}},
            {"id": "odd", "method": "a/b/c", "priority": 7},
        ]});
        let notes: Vec<String> = read(&mut tree).iter().map(ToString::to_string).collect();
        assert_eq!(
            notes,
            [
                "field 'priority': 1 read as 'high' (1 high, 2 normal, 3 low)",
                "task 'topic', field 'method': 'llm/chat' read as protocol 'llm/v1', method 'chat' (the protocol was left out)",
                "task 'topic', field 'priority': 3 read as 'low' (1 high, 2 normal, 3 low)",
                "task 'Write It', field 'method': 'llm/chat' read as protocol 'llm/v1', method 'chat' (the protocol was left out)",
                "task 'Write It', field 'parameters': '${topic.content}' read as '${topic.result.content}' (fields start at the task's result)",
                "task 'Write It', field 'parameters': '${topic}' read as '${topic.result}' (fields start at the task's result)",
            ]
        );
        assert_eq!(tree["tasks"][0]["protocol"], "llm/v1");
        assert_eq!(tree["tasks"][0]["method"], "chat");
        assert_eq!(
            tree["tasks"][1]["parameters"]["prompt"],
            "About ${topic.result.content} and ${topic.result}, not ${topic.result.x} or $${topic.y} or ${other.z}"
        );
        assert_eq!(
            (&tree["tasks"][2]["method"], &tree["tasks"][2]["priority"]),
            (&json!("a/b/c"), &json!(7)),
            "left alone"
        );
    }
}
