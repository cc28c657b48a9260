//! A workflow's `inputs:`: the parameters it declares (a type, a default, a
//! description each) and the values one submission gives them
//! (`--input NAME=VALUE`, the `inputs` of a Socket.IO payload, `?input=` on
//! the HTTP API). Tasks read them as `${inputs.NAME}`.
//!
//! Binding ([`bind`]) checks the given values against the declarations and
//! writes each input's value into its `default`: a bound workflow carries
//! its values in its own document, so the store keeps them with it and a
//! restart reads the same ones. This module does not resolve references
//! (`resolver`) or know where the values came from.

use super::{Problem, WorkflowError, kind, show};
use crate::ids::is_id;
use crate::model::Workflow;
pub use crate::model::{Input, InputType};
use crate::text::excerpt;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Most inputs one workflow may declare.
pub const MAX_INPUTS: usize = 100;

impl InputType {
    const NAMES: &str = "string, integer, number, boolean, array, object";

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "array" => Self::Array,
            "object" => Self::Object,
            _ => return None,
        })
    }

    pub(super) fn article(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::Boolean => "true or false",
            Self::Array => "a list",
            Self::Object => "a mapping",
        }
    }

    fn holds(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::Array => value.is_array(),
            Self::Object => value.is_object(),
        }
    }

    /// `value` as this type: as it is if it has it, else a string read as
    /// JSON (`"3"` for an integer, `"[1, 2]"` for an array), as the command
    /// line and query strings give every value.
    pub(super) fn coerce(self, value: Value) -> Option<Value> {
        if self.holds(&value) {
            return Some(value);
        }
        let Value::String(text) = &value else { return None };
        serde_json::from_str::<Value>(text.trim()).ok().filter(|parsed| self.holds(parsed))
    }
}

/// Read `inputs:`, a mapping of names to a type (`topic: string`) or to
/// `{type, default, description}`; problems go to `problems`.
pub(super) fn parse(tree: Value, problems: &mut Vec<Problem>) -> Vec<Input> {
    let mut report = |field: String, message: String| {
        problems.push(Problem { task: None, field: Some(field), message });
    };
    let map = match tree {
        Value::Object(map) => map,
        Value::Null => return Vec::new(),
        other => {
            report("inputs".into(), format!("must be a mapping of input names to types, found {}", kind(&other)));
            return Vec::new();
        }
    };
    if map.len() > MAX_INPUTS {
        report("inputs".into(), format!("{} inputs; the limit is {MAX_INPUTS}", map.len()));
        return Vec::new();
    }
    let mut inputs = Vec::with_capacity(map.len());
    for (name, spec) in map {
        if !is_id(&name) {
            let field = format!("inputs.{}", excerpt(&name));
            report(field, format!("'{}' is not a valid input name: use letters, digits, '_' or '-'", excerpt(&name)));
            continue;
        }
        let field = format!("inputs.{name}");
        if let Some(input) = declaration(&field, name, spec, &mut report) {
            inputs.push(input);
        }
    }
    inputs
}

/// One input's declaration, a type name or a mapping.
fn declaration(field: &str, name: String, spec: Value, report: &mut impl FnMut(String, String)) -> Option<Input> {
    let mut spec = match spec {
        Value::String(kind) => Map::from_iter([("type".to_owned(), Value::String(kind))]),
        Value::Object(spec) => spec,
        other => {
            report(
                field.to_owned(),
                format!("must be a type ({}) or a mapping with 'type', found {}", InputType::NAMES, kind(&other)),
            );
            return None;
        }
    };
    for key in spec.keys().filter(|k| !["type", "default", "description"].contains(&k.as_str())) {
        report(format!("{field}.{key}"), "unknown field; input fields are: type, default, description".into());
    }
    let input_type = match spec.remove("type") {
        Some(Value::String(name)) => InputType::from_name(&name).or_else(|| {
            report(format!("{field}.type"), format!("unknown type '{}'; use {}", excerpt(&name), InputType::NAMES));
            None
        }),
        Some(other) => {
            report(format!("{field}.type"), format!("must be one of {}; found {}", InputType::NAMES, show(&other)));
            None
        }
        None => {
            report(format!("{field}.type"), format!("missing; use {}", InputType::NAMES));
            None
        }
    }?;
    let default = spec.remove("default");
    if let Some(value) = &default
        && !input_type.holds(value)
    {
        report(format!("{field}.default"), format!("must be {}, found {}", input_type.article(), show(value)));
        return None;
    }
    let description = match spec.remove("description") {
        None => None,
        Some(Value::String(text)) => Some(text),
        Some(other) => {
            report(format!("{field}.description"), format!("must be a string, found {}", kind(&other)));
            None
        }
    };
    Some(Input { name, kind: input_type, default: default.map(Arc::new), description })
}

/// Give `workflow`'s inputs their values: `given` where it names them, else
/// their defaults. A given name that is not declared, a value of the wrong
/// type and a required input left out are problems, each naming the input.
pub fn bind(origin: &str, workflow: &mut Workflow, given: Map<String, Value>) -> Result<(), WorkflowError> {
    let given = match &workflow.schedule {
        Some(spec) => by_hand(spec, given),
        None => given,
    };
    let mut problems = Vec::new();
    let mut report = |name: &str, message: String| {
        problems.push(Problem { task: None, field: Some(format!("inputs.{name}")), message });
    };
    let declared: Vec<&str> = workflow.inputs.iter().map(|i| i.name.as_str()).collect();
    for name in given.keys().filter(|name| !declared.contains(&name.as_str())) {
        let known = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
        report(name, format!("given, but the workflow declares no such input (inputs: {known})"));
    }
    let mut given = given;
    for input in &mut workflow.inputs {
        match given.remove(&input.name) {
            Some(value) => match input.kind.coerce(value.clone()) {
                Some(value) => input.default = Some(Arc::new(value)),
                None => report(&input.name, format!("must be {}, found {}", input.kind.article(), show(&value))),
            },
            None if input.default.is_none() => report(
                &input.name,
                format!("required and not given (give it with --input {}=VALUE, or declare a default)", input.name),
            ),
            None => {}
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(WorkflowError::Invalid { origin: origin.to_owned(), problems }) }
}

/// The values of a scheduled workflow run by hand (`run`, `workflow
/// submit`): its schedule's inputs and its due input as if due now, with
/// `given` over them.
fn by_hand(spec: &crate::cadence::Spec, given: Map<String, Value>) -> Map<String, Value> {
    let mut values = match spec.cadence() {
        Ok(cadence) => spec.values_at(&cadence, std::time::SystemTime::now()),
        Err(_) => spec.inputs.clone(),
    };
    values.extend(given);
    values
}

/// `NAME=VALUE` pairs (the command line's `--input`, the API's `?input=`)
/// as the values to bind; every value is a string here, read by its
/// input's type when bound. The error says which pair is wrong.
pub fn from_pairs(pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut given = Map::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("'{}' is not NAME=VALUE", excerpt(pair)));
        };
        if given.insert(name.to_owned(), Value::String(value.to_owned())).is_some() {
            return Err(format!("'{}' is given twice", excerpt(name)));
        }
    }
    Ok(given)
}
