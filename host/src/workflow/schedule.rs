//! A workflow's `schedule:` block: when a host starts it on its own
//! (`{cron, timezone, inputs, due_input, id}`), read and checked against
//! the inputs the workflow declares, so that a schedule that could not
//! start its runs is refused when it is written, not at its first due
//! time. What the block means (due times, runs) is `crate::schedule`'s;
//! this module only reads it.

use super::inputs::{Input, InputType};
use super::{Problem, kind, show, slug};
use crate::cadence::{Cadence, CadenceError, DEFAULT_TIMEZONE, MAX_CRON_BYTES, Spec};
use crate::ids::{MAX_SCHEDULE_ID_CHARS, is_id, is_schedule_id};
use crate::text::excerpt;
use serde_json::{Map, Value};

const FIELDS: &[&str] = &["cron", "timezone", "inputs", "due_input", "id"];

/// What the block needs besides itself: the workflow's declared inputs,
/// and the id its runs are named after when the block names none (the
/// workflow's `id` if it gives one, else its name as an id).
pub(super) struct Context<'a> {
    pub inputs: &'a [Input],
    pub default_id: Option<String>,
}

/// `tree` with `overrides` set in its `schedule:` block (made if there is
/// none); `inputs` are merged name by name. A tree or block of the wrong
/// shape is left for the validator to name.
pub fn overlay(mut tree: Value, overrides: Map<String, Value>) -> Value {
    if overrides.is_empty() {
        return tree;
    }
    let Some(top) = tree.as_object_mut() else { return tree };
    let Value::Object(block) = top.entry("schedule").or_insert_with(|| Value::Object(Map::new())) else { return tree };
    for (key, value) in overrides {
        match (block.get_mut(&key), value) {
            (Some(Value::Object(old)), Value::Object(new)) if key == "inputs" => old.extend(new),
            (_, value) => {
                block.insert(key, value);
            }
        }
    }
    tree
}

/// Read `schedule:`; problems go to `problems` with fields `schedule.*`.
pub(super) fn parse(tree: Value, context: &Context, problems: &mut Vec<Problem>) -> Option<Box<Spec>> {
    let mut report = |field: &str, message: String| {
        problems.push(Problem { task: None, field: Some(field.to_owned()), message });
    };
    let mut map = match tree {
        Value::Object(map) => map,
        other => {
            report(
                "schedule",
                format!("must be a mapping with 'cron' (and 'timezone', 'inputs'), found {}", kind(&other)),
            );
            return None;
        }
    };
    for key in map.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        report(
            &format!("schedule.{}", excerpt(key)),
            format!("unknown field; schedule fields are: {}", FIELDS.join(", ")),
        );
    }
    if !map.contains_key("cron") {
        report("schedule.cron", "missing; a schedule needs a cron pattern such as \"0 7 * * *\"".into());
    }
    let cron = text(&mut map, "cron", &mut report);
    let timezone = text(&mut map, "timezone", &mut report).unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned());
    let cron = cron?;
    if let Err(e) = Cadence::new(&cron, &timezone) {
        let field = if matches!(e, CadenceError::Zone { .. }) { "schedule.timezone" } else { "schedule.cron" };
        report(field, e.to_string());
        return None;
    }
    let inputs = values(map.remove("inputs"), context.inputs, &mut report)?;
    let due_input = text(&mut map, "due_input", &mut report);
    if let Some(name) = &due_input {
        match context.inputs.iter().find(|i| i.name == *name) {
            None => report("schedule.due_input", format!("'{}' is not a declared input", excerpt(name))),
            Some(input) if input.kind != InputType::String => {
                report("schedule.due_input", format!("input '{name}' must be of type string to hold a time"))
            }
            Some(_) if inputs.contains_key(name) => {
                report("schedule.due_input", format!("input '{name}' is also given in schedule.inputs"))
            }
            Some(_) => {}
        }
    }
    let id = text(&mut map, "id", &mut report).or_else(|| context.default_id.clone());
    let id = match id {
        Some(id) if is_schedule_id(&id) => id,
        Some(id) => {
            report(
                "schedule.id",
                format!(
                    "'{}' is not a valid schedule id: use 1 to {MAX_SCHEDULE_ID_CHARS} letters, digits, '_' or '-' \
                     (an admin names a client token's as TOKEN:ID)",
                    excerpt(&id)
                ),
            );
            return None;
        }
        None => {
            report("schedule.id", "the workflow's name gives no id; set schedule.id".into());
            return None;
        }
    };
    Some(Box::new(Spec { cron, timezone, inputs, due_input, id }))
}

/// The id a schedule without `schedule.id` takes: the workflow's given
/// `id` (checked like a given `schedule.id`: two long ids must not become
/// one), else its name as an id, cut to the longest a schedule id may be.
pub(super) fn default_id(given_id: Option<&str>, name: &str) -> Option<String> {
    let id = match given_id {
        Some(id) => id.to_owned(),
        None => slug(name).chars().take(MAX_SCHEDULE_ID_CHARS).collect(),
    };
    (!id.is_empty()).then_some(id)
}

fn text(map: &mut Map<String, Value>, key: &str, report: &mut impl FnMut(&str, String)) -> Option<String> {
    let field = format!("schedule.{key}");
    match map.remove(key)? {
        Value::String(s) if key == "cron" && s.len() > MAX_CRON_BYTES => {
            report(&field, format!("is {} bytes long; the limit is {MAX_CRON_BYTES}", s.len()));
            None
        }
        Value::String(s) if s.trim().is_empty() => {
            report(&field, "must not be empty".into());
            None
        }
        Value::String(s) => Some(s),
        other => {
            report(&field, format!("must be a string, found {}", kind(&other)));
            None
        }
    }
}

/// `schedule.inputs`: values for declared inputs, each read by its type.
fn values(
    tree: Option<Value>,
    declared: &[Input],
    report: &mut impl FnMut(&str, String),
) -> Option<Map<String, Value>> {
    let map = match tree {
        None | Some(Value::Null) => return Some(Map::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            report("schedule.inputs", format!("must be a mapping of input names to values, found {}", kind(&other)));
            return None;
        }
    };
    let mut values = Map::new();
    for (name, value) in map {
        let field = format!("schedule.inputs.{}", if is_id(&name) { name.clone() } else { excerpt(&name) });
        let Some(input) = declared.iter().find(|i| i.name == name) else {
            let names: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
            let known = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
            report(&field, format!("the workflow declares no such input (inputs: {known})"));
            continue;
        };
        match input.kind.coerce(value.clone()) {
            Some(value) => {
                values.insert(name, value);
            }
            None => report(&field, format!("must be {}, found {}", input.kind.article(), show(&value))),
        }
    }
    Some(values)
}
