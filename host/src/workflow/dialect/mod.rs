//! The looser dialect of the original system's later workflow files, read
//! into this host's form before validation, with a note for each thing read
//! so (`workflow validate` prints them):
//!
//! - a method that names its protocol, `NAME/METHOD` (`llm/chat`): without
//!   `protocol` it calls `METHOD` of protocol `NAME/v1`; with a protocol
//!   `NAME/vN`, `METHOD` of that one;
//! - the original's methods that have another name here ([`RENAMED`]):
//!   `llm/complete`, `mcp/tools/list`, `mcp/server_info`, `mcp/ping`;
//! - numeric priorities, as its loader read them: 1 high, 2 normal, 3 low;
//! - `wait_for_completion` at the top level, which told its client to
//!   wait: dropped (here the client says whether it waits);
//! - `providers` at the top level, the original's pool of Ollama
//!   instances, and the params that chose an instance or a Docker
//!   container for one task ([`ORIGINAL_HINTS`]): dropped, in a file of
//!   the original's form (here the operator configures providers, the host
//!   spreads calls over them by free capacity, and scripts run in the
//!   sandbox);
//! - `${task.field}` in params, a field of the task's result (here
//!   `${task.result.field}`), and `${task}` for the whole result; on an
//!   `llm/v1` task, `${task.response}` is the text it answered
//!   (`${task.result.content}`).
//!
//! - the files the original's tasks named, and its batch files ([`files`]).
//!
//! Only what is unambiguous is read: a method with more than one `/` not
//! in [`RENAMED`], a priority other than 1 to 3, or `${x.field}` where `x`
//! is not a task of the workflow is left for validation to report. This
//! module rewrites the tree only; it does not validate.

mod files;

use super::{Problem, slug};
use crate::ids::is_id_char;
use crate::ids::is_protocol;
use crate::resolver::Root;
use crate::text::excerpt;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The version a protocol left out of a method is read with.
const IMPLIED_VERSION: &str = "v1";

/// The original's methods that have another name here: (protocol name,
/// its method, the method here).
const RENAMED: &[(&str, &str, &str)] = &[
    ("llm", "complete", "generate"),
    ("mcp", "tools/list", "list_tools"),
    ("mcp", "server_info", "server_info"),
    // MCP's ping answers nothing but "alive"; the server's info says that
    // and more.
    ("mcp", "ping", "server_info"),
];

/// Params of the original that chose where one task ran, not what it
/// did: (protocol, method or `*`, param, why it is dropped here).
const ORIGINAL_HINTS: &[(&str, &str, &str, &str)] = &[
    ("llm/v1", "*", "load_balancing_strategy", SPREAD),
    ("llm/v1", "*", "instance_tags", SPREAD),
    ("llm/v1", "*", "require_gpu", SPREAD),
    ("python/v1", "execute", "execution_mode", SANDBOX),
    ("python/v1", "execute", "image", SANDBOX),
    ("python/v1", "execute", "memory_limit", SANDBOX),
    ("python/v1", "execute", "cpu_limit", SANDBOX),
];
const SPREAD: &str = "it chose one of the original's Ollama instances; here the host spreads calls over the \
                      providers of the protocol by their free capacity";
const SANDBOX: &str = "it chose the original's Docker container; here every script runs in the host's WASM \
                       sandbox, within the operator's limits";

/// The field of an `llm/v1` result that holds the text (the original's
/// `response`).
const LLM_TEXT: &str = "content";

/// Rewrite `tree` (a workflow document) from the dialect; the notes say
/// what was read how.
pub(super) fn read(tree: &mut Value) -> Vec<Problem> {
    let mut notes = Vec::new();
    let Value::Object(workflow) = tree else { return notes };
    let batch = files::batch(workflow);
    if let Some(note) = &batch {
        notes.push(Problem { task: None, field: Some("type".into()), message: note.clone() });
    }
    if let Some(note) = numeric_priority(workflow) {
        notes.push(Problem { task: None, field: Some("priority".into()), message: note });
    }
    if let Some(note) = wait_for_completion(workflow) {
        notes.push(Problem { task: None, field: Some("wait_for_completion".into()), message: note });
    }
    let pool = provider_pool(workflow);
    if let Some(note) = &pool {
        notes.push(Problem { task: None, field: Some("providers".into()), message: note.clone() });
    }
    let Some(Value::Array(tasks)) = workflow.get_mut("tasks") else { return notes };
    // References are read once every task's protocol is known.
    let method_notes: Vec<Option<String>> = (tasks.iter_mut())
        .map(|task| if let Value::Object(task) = task { method_with_protocol(task) } else { None })
        .collect();
    let tasks_by_id = task_answers(tasks, &method_notes);
    let original = batch.is_some() || pool.is_some() || method_notes.iter().any(Option::is_some);
    for ((index, task), method_note) in tasks.iter_mut().enumerate().zip(method_notes) {
        let Value::Object(task) = task else { continue };
        let label = label(task, index);
        let mut note = |field: &str, message: String| {
            notes.push(Problem { task: Some(label.clone()), field: Some(field.into()), message });
        };
        if let Some(message) = method_note {
            note("method", message);
        }
        if let Some(message) = numeric_priority(task) {
            note("priority", message);
        }
        for message in retry_fields(task) {
            note("retry_config", message);
        }
        for (field, message) in files::params(task, batch.is_some()) {
            note(field, message);
        }
        if original {
            for message in placement_hints(task) {
                note("params", message);
            }
        }
        let key = if task.contains_key("params") { "params" } else { "parameters" };
        if let Some(params) = task.get_mut(key) {
            for (from, to, why) in result_fields(params, &tasks_by_id, original) {
                note(key, format!("'{}' read as '{}' ({why})", excerpt(&from), excerpt(&to)));
            }
        }
    }
    notes
}

/// What the original's shorthand reads of a task's result.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// An `llm/v1` task: its `response` is the text (`content` here).
    Text,
    /// A script or a tool written in the original's form
    /// (`python/execute`, `mcp/tool.NAME`): its `result` is the value the
    /// script set or the tool answered, the `result` field here.
    Value,
    Other,
}

/// The ids the tasks will have (given, or from their names), with what
/// their results are to the original's shorthand. `rewritten` says which
/// tasks' methods were written in the original's form.
fn task_answers(tasks: &[Value], rewritten: &[Option<String>]) -> HashMap<String, Answer> {
    let id = |task: &Value| match (task.get("id"), task.get("name")) {
        (Some(Value::String(id)), _) => Some(id.clone()),
        (Some(Value::Number(n)), _) => Some(n.to_string()),
        (None, Some(Value::String(name))) => Some(slug(name)),
        _ => None,
    };
    let answer = |task: &Value, rewritten: bool| {
        let text = |field: &str| task.get(field).and_then(Value::as_str).unwrap_or_default();
        match (text("protocol"), text("method")) {
            ("llm/v1", _) => Answer::Text,
            ("python/v1", "execute") if rewritten => Answer::Value,
            ("mcp/v1", method) if rewritten && method.starts_with("tool.") => Answer::Value,
            _ => Answer::Other,
        }
    };
    let answers = tasks.iter().zip(rewritten).map(|(task, note)| Some((id(task)?, answer(task, note.is_some()))));
    answers.flatten().collect()
}

fn label(task: &Map<String, Value>, index: usize) -> String {
    match task.get("id").or_else(|| task.get("name")).and_then(Value::as_str) {
        Some(id) => format!("task '{}'", excerpt(id)),
        None => format!("task #{}", index + 1),
    }
}

/// `method: NAME/METHOD`: without `protocol`, protocol `NAME/v1`; with a
/// protocol of that name, its method `METHOD` (renamed as [`RENAMED`]
/// says).
fn method_with_protocol(task: &mut Map<String, Value>) -> Option<String> {
    let written = task.get("method")?.as_str()?.to_owned();
    if let Some(note) = renamed_under_protocol(task, &written) {
        return Some(note);
    }
    let (name, method) = written.split_once('/')?;
    let renamed = RENAMED.iter().find(|(protocol, old, _)| *protocol == name && *old == method);
    let here = renamed.map_or(method, |(_, _, new)| new);
    if here.is_empty() || here.contains('/') {
        return None;
    }
    let given = task.get("protocol").and_then(Value::as_str);
    let protocol = match given {
        None => format!("{name}/{IMPLIED_VERSION}"),
        Some(given) if given.split_once('/').is_some_and(|(given_name, _)| given_name == name) => given.to_owned(),
        Some(_) => return None,
    };
    if !is_protocol(&protocol) {
        return None;
    }
    let why = match (renamed, given) {
        (Some((_, old, new)), _) if old != new => format!("the original's '{written}' is '{here}' here"),
        (_, None) => "the protocol was left out".to_owned(),
        (_, Some(_)) => "the method named its protocol".to_owned(),
    };
    task.insert("method".into(), Value::String(here.to_owned()));
    task.insert("protocol".into(), Value::String(protocol.clone()));
    Some(format!("'{written}' read as protocol '{protocol}', method '{here}' ({why})"))
}

/// `protocol: mcp/v1` with a method of the original that has another
/// name here, written without its protocol (`ping`, `tools/list`).
fn renamed_under_protocol(task: &mut Map<String, Value>, written: &str) -> Option<String> {
    let protocol = task.get("protocol")?.as_str()?.to_owned();
    let (name, _) = protocol.split_once('/')?;
    let (_, _, here) = RENAMED.iter().find(|(p, old, new)| *p == name && *old == written && old != new)?;
    task.insert("method".into(), Value::String((*here).to_owned()));
    Some(format!("'{written}' read as '{here}' (the original's '{written}' of {protocol} is '{here}' here)"))
}

/// `retry_config`'s (or `retry`'s) fields of the original that have
/// another name here: `initial_delay` is `base_delay`; `backoff_multiplier`
/// chooses the backoff (1: fixed, more: exponential, which doubles).
fn retry_fields(task: &mut Map<String, Value>) -> Vec<String> {
    let mut notes = Vec::new();
    let key = if task.contains_key("retry_config") { "retry_config" } else { "retry" };
    let Some(Value::Object(retry)) = task.get_mut(key) else {
        return notes;
    };
    if !retry.contains_key("base_delay")
        && let Some(delay) = retry.remove("initial_delay")
    {
        retry.insert("base_delay".into(), delay);
        notes.push("'initial_delay' read as 'base_delay'".to_owned());
    }
    let has_backoff = retry.contains_key("backoff") || retry.contains_key("backoff_strategy");
    if let Some(multiplier) = retry.get("backoff_multiplier").and_then(Value::as_f64).filter(|_| !has_backoff) {
        retry.remove("backoff_multiplier");
        let (backoff, why) = if multiplier == 1.0 {
            ("fixed", "each wait the same".to_owned())
        } else {
            ("exponential", format!("each wait twice the last here, {multiplier} times in the original"))
        };
        retry.insert("backoff".into(), Value::String(backoff.into()));
        notes.push(format!("'backoff_multiplier: {multiplier}' read as 'backoff: {backoff}' ({why})"));
    }
    notes
}

/// `wait_for_completion` at the top level: the original's client waited
/// for the workflow to end before it returned. Here the client says so.
fn wait_for_completion(workflow: &mut Map<String, Value>) -> Option<String> {
    workflow.remove("wait_for_completion")?;
    Some(
        "dropped: it told the original's client to wait for the end; here `gleitzeit run` and \
         `workflow submit --wait` wait, `workflow submit` returns at once"
            .into(),
    )
}

/// `providers` at the top level: the original's pool of Ollama instances
/// ("in production, this would be in your main configuration file").
fn provider_pool(workflow: &mut Map<String, Value>) -> Option<String> {
    if !workflow.get("providers").is_some_and(Value::is_object) {
        return None;
    }
    workflow.remove("providers");
    Some(
        "dropped: the original's pool of provider instances; here the operator configures providers (plugins, \
         [manifests], remote providers) and the host spreads calls over them by their free capacity"
            .into(),
    )
}

/// The params of [`ORIGINAL_HINTS`] in `task`'s params, dropped; a note
/// for each.
fn placement_hints(task: &mut Map<String, Value>) -> Vec<String> {
    let text = |field: &str| task.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (protocol, method) = (text("protocol"), text("method"));
    let key = if task.contains_key("params") { "params" } else { "parameters" };
    let Some(Value::Object(params)) = task.get_mut(key) else { return Vec::new() };
    let applies = ORIGINAL_HINTS.iter().filter(|(p, m, ..)| *p == protocol && (*m == "*" || *m == method));
    let dropped = applies.filter(|(_, _, param, _)| params.remove(*param).is_some());
    dropped.map(|(_, _, param, why)| format!("'{param}' dropped: {why}")).collect()
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

/// A reference as written, as read, and why.
type Read = (String, String, &'static str);

/// Rewrite `${task.field…}` and `${task}` in every string of `params` to
/// name the task's result; returns each. In a file of the `original`'s
/// form, a reference to no task is kept as text, as the original kept it.
fn result_fields(params: &mut Value, ids: &HashMap<String, Answer>, original: bool) -> Vec<Read> {
    let mut read = Vec::new();
    each_string(params, |text| {
        if text.contains("${")
            && let Some(rewritten) = rewrite(text, ids, original, &mut read)
        {
            *text = rewritten;
        }
    });
    read
}

/// Call `change` on every string in `value`, however deep (iteratively:
/// the tree's depth is bounded, but not by the stack).
fn each_string(value: &mut Value, mut change: impl FnMut(&mut String)) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) => change(text),
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
}

/// `text` with each loose reference to a task of `ids` made strict, if any
/// was; `$${` escapes are kept.
fn rewrite(text: &str, ids: &HashMap<String, Answer>, original: bool, read: &mut Vec<Read>) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find("${") {
        let escaped = at > 0 && rest[..at].ends_with('$');
        let Some(close) = rest[at..].find('}').map(|c| at + c) else { break };
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..close];
        match (!escaped).then(|| strict(inner, ids, original)).flatten() {
            Some((reading, why)) => {
                let now = match reading {
                    Reading::Reference(strict) => format!("${{{strict}}}"),
                    Reading::Text => format!("$${{{inner}}}"),
                };
                read.push((format!("${{{inner}}}"), now.clone(), why));
                out.push_str(&now);
                changed = true;
            }
            None => out.push_str(&rest[at..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// How a loose reference is read.
enum Reading {
    /// As this strict reference.
    Reference(String),
    /// As the text it is (it names no task).
    Text,
}

/// `task.field…` or `task` (a task of `ids`, not followed by `.result`)
/// as `task.result.field…`; an LLM task's `response` as its `content`; a
/// script's or tool's `result` or `response` (written in the original's
/// form) as its `result` field; a task named with `_` for the `-` of its
/// id by its id. In a file of the `original`'s form, a reference to no task
/// as text.
fn strict(inner: &str, ids: &HashMap<String, Answer>, original: bool) -> Option<(Reading, &'static str)> {
    let end = inner.find(|c: char| !is_id_char(c)).unwrap_or(inner.len());
    let (written, tail) = inner.split_at(end);
    let bounded = tail.is_empty() || tail.starts_with('.') || tail.starts_with('[');
    if !bounded || written.is_empty() || Root::RESERVED.contains(&written) {
        return None;
    }
    let Some((task, answer)) = task_named(written, ids) else {
        let why = "no task has that id; the original passed such a reference on as written";
        return original.then_some((Reading::Text, why));
    };
    let after = |field: &str| {
        tail.strip_prefix(field).filter(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    };
    if answer == Answer::Text
        && let Some(rest) = after(".response")
    {
        let why = "fields start at the task's result; an LLM's answer is its 'content'";
        return Some((Reading::Reference(format!("{task}.result.{LLM_TEXT}{rest}")), why));
    }
    if answer == Answer::Value
        && let Some(rest) = after(".result").or_else(|| after(".response"))
    {
        let why = "the original's result of a script or a tool is the value it gave, its 'result' field here";
        return Some((Reading::Reference(format!("{task}.result.result{rest}")), why));
    }
    if tail == ".result" || tail.starts_with(".result.") || tail.starts_with(".result[") {
        let why = "the original's ids were task names with '_' between words; here '-'";
        return (task != written).then(|| (Reading::Reference(format!("{task}{tail}")), why));
    }
    Some((Reading::Reference(format!("{task}.result{tail}")), "fields start at the task's result"))
}

/// The task `written` names: its id, or its id with `_` for `-`.
fn task_named<'a>(written: &'a str, ids: &'a HashMap<String, Answer>) -> Option<(&'a str, Answer)> {
    if let Some(answer) = ids.get(written) {
        return Some((written, *answer));
    }
    let respelled = written.replace('_', "-");
    ids.get_key_value(&respelled).map(|(id, answer)| (id.as_str(), *answer))
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
                "task 'Write It', field 'parameters': '${other.z}' read as '$${other.z}' (no task has that id; the original passed such a reference on as written)",
            ]
        );
        assert_eq!(tree["tasks"][0]["protocol"], "llm/v1");
        assert_eq!(tree["tasks"][0]["method"], "chat");
        assert_eq!(
            tree["tasks"][1]["parameters"]["prompt"],
            "About ${topic.result.content} and ${topic.result}, not ${topic.result.x} or $${topic.y} or $${other.z}"
        );
        assert_eq!(
            (&tree["tasks"][2]["method"], &tree["tasks"][2]["priority"]),
            (&json!("a/b/c"), &json!(7)),
            "left alone"
        );
    }

    #[test]
    fn names_with_underscores_bare_renamed_methods_and_retry_config_are_read() {
        let mut tree = json!({"name": "old", "tasks": [
            {"name": "Add Numbers", "method": "mcp/tool.add", "params": {"a": 1, "b": 2}},
            {"name": "Say", "method": "llm/chat", "retry_config": {"max_attempts": 3, "initial_delay": 2, "backoff_multiplier": 1.5},
             "params": {"prompt": "${add_numbers.result} ${add_numbers.response} ${say.result.content}"}},
            {"id": "ping", "protocol": "mcp/v1", "method": "ping"},
            {"id": "tools", "protocol": "mcp/v1", "method": "tools/list"},
        ]});
        let notes: Vec<String> = read(&mut tree).iter().map(ToString::to_string).collect();
        assert_eq!(
            tree["tasks"][1]["params"]["prompt"],
            "${add-numbers.result.result} ${add-numbers.result.result} ${say.result.content}"
        );
        assert_eq!(
            tree["tasks"][1]["retry_config"],
            json!({"max_attempts": 3, "base_delay": 2, "backoff": "exponential"})
        );
        assert!(
            notes.iter().any(|n| n.contains("'backoff_multiplier: 1.5' read as 'backoff: exponential'")),
            "{notes:?}"
        );
        assert_eq!(
            (&tree["tasks"][2]["method"], &tree["tasks"][3]["method"]),
            (&json!("server_info"), &json!("list_tools"))
        );
        assert!(notes.contains(&"task 'ping', field 'method': 'ping' read as 'server_info' (the original's 'ping' of mcp/v1 is 'server_info' here)".to_owned()), "{notes:?}");
    }

    #[test]
    fn the_originals_provider_pool_and_placement_params_are_dropped_with_notes() {
        let pool = json!({"ollama_pool": {"type": "ollama_pool", "instances": [{"id": "local"}]}});
        let mut tree = json!({"name": "old", "providers": pool, "tasks": [
            {"name": "ask", "protocol": "llm/v1", "method": "llm/chat",
             "params": {"model": "m", "load_balancing_strategy": "least_loaded", "instance_tags": ["gpu"], "require_gpu": true}},
            {"name": "calc", "protocol": "python/v1", "method": "python/execute",
             "params": {"execution_mode": "sandboxed", "memory_limit": "512m", "cpu_limit": 1.0, "image": "python:3.11", "code": "result = 1"}},
            {"id": "own", "protocol": "echo/v1", "method": "echo", "params": {"require_gpu": true}},
        ]});
        let notes: Vec<String> = read(&mut tree).iter().map(ToString::to_string).collect();
        assert_eq!(tree.get("providers"), None);
        assert_eq!(tree["tasks"][0]["params"], json!({"model": "m"}));
        assert_eq!(tree["tasks"][1]["params"], json!({"code": "result = 1"}));
        assert_eq!(tree["tasks"][2]["params"], json!({"require_gpu": true}), "another protocol's params are its own");
        assert!(
            notes[0].starts_with("field 'providers': dropped: the original's pool of provider instances"),
            "{notes:?}"
        );
        assert_eq!(notes.iter().filter(|n| n.contains("dropped: it chose one of the original's Ollama")).count(), 3);
        assert_eq!(notes.iter().filter(|n| n.contains("dropped: it chose the original's Docker")).count(), 4);

        // In this host's own form, such params are the plugin's to judge.
        let mut own = json!({"name": "new", "tasks": [
            {"id": "ask", "protocol": "llm/v1", "method": "chat", "params": {"instance_tags": ["gpu"]}}]});
        assert!(read(&mut own).is_empty());
        assert_eq!(own["tasks"][0]["params"], json!({"instance_tags": ["gpu"]}));
    }

    #[test]
    fn a_reference_to_no_task_is_an_error_in_this_hosts_own_form() {
        let mut tree = json!({"name": "new", "tasks": [
            {"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": "${missing.result}"}},
        ]});
        assert!(read(&mut tree).is_empty());
        assert_eq!(tree["tasks"][0]["params"]["message"], "${missing.result}", "left for validation to refuse");
    }

    #[test]
    fn a_method_naming_another_protocol_or_an_unknown_two_part_method_is_left_alone() {
        let mut tree = json!({"name": "old", "wait_for_completion": false, "tasks": [
            {"id": "other", "protocol": "echo/v1", "method": "llm/chat"},
            {"id": "tools", "method": "mcp/tools/list"},
            {"id": "deep", "method": "mcp/tools/call"},
            {"id": "say", "protocol": "llm/v2", "method": "llm/chat",
             "params": {"prompt": "${say.response.x} ${tools.response}"}},
        ]});
        let notes = read(&mut tree);
        assert_eq!(tree.get("wait_for_completion"), None, "dropped whatever its value");
        assert_eq!(
            (&tree["tasks"][0]["protocol"], &tree["tasks"][0]["method"]),
            (&json!("echo/v1"), &json!("llm/chat"))
        );
        assert_eq!(
            (&tree["tasks"][1]["protocol"], &tree["tasks"][1]["method"]),
            (&json!("mcp/v1"), &json!("list_tools"))
        );
        assert_eq!(tree["tasks"][2]["method"], "mcp/tools/call");
        assert_eq!(tree["tasks"][3]["protocol"], "llm/v2");
        assert_eq!(tree["tasks"][3]["method"], "chat");
        // Only an llm/v1 task's `response` is its `content`.
        assert_eq!(tree["tasks"][3]["params"]["prompt"], "${say.result.response.x} ${tools.result.response}");
        assert_eq!(notes.len(), 5, "{notes:?}");
    }

    #[test]
    fn the_result_of_a_script_or_tool_in_the_originals_form_is_its_value() {
        let mut tree = json!({"name": "old", "tasks": [
            {"id": "add", "method": "mcp/tool.add", "params": {"a": 1, "b": 2}},
            {"id": "calc", "method": "python/execute", "params": {"code": "result = 1"}},
            {"id": "own", "protocol": "mcp/v1", "method": "tool.add"},
            {"id": "use", "protocol": "echo/v1", "method": "echo", "dependencies": ["add", "calc", "own"],
             "params": {"message": "${add.result} ${calc.result.x} ${calc.stdout} ${own.result}"}},
        ]});
        let notes = read(&mut tree);
        assert_eq!(
            tree["tasks"][3]["params"]["message"],
            "${add.result.result} ${calc.result.result.x} ${calc.result.stdout} ${own.result}",
            "this host's own form keeps its meaning"
        );
        assert!(
            notes.iter().any(|n| n.to_string().ends_with(
                "'${add.result}' read as '${add.result.result}' (the original's result of a script or a tool is the value it gave, its 'result' field here)"
            )),
            "{notes:?}"
        );
    }
}
