//! `when:` conditions: a CEL expression (the Common Expression Language,
//! evaluated by the `cel` crate) over earlier results and inputs, written
//! with the same `${…}` references as params:
//! `${detect.result.language} != "en" && ${inputs.count} > 2`.
//!
//! Each reference becomes a CEL variable bound to the value it names, so a
//! result can never be read as expression text, and references are checked
//! (ancestors only) by the same code as params. CEL has no loops or
//! recursion; the parser's own recursion budget and the length limit bound
//! the rest. This module evaluates; it does not decide what a false
//! condition does to a task (`engine`).

use super::substitution::{Piece, Reference, Root, SubstitutionError, TemplateError, lookup, parse_template};
use serde_json::Value;

/// Longest `when:` accepted, in bytes.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// Longest parser message passed on.
const MAX_MESSAGE_CHARS: usize = 300;
/// Deepest nesting the CEL parser accepts in a condition.
const MAX_NESTING: u16 = 32;

/// Why a condition cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConditionError {
    #[error("is {0} bytes long; the limit is {MAX_CONDITION_BYTES}")]
    TooLong(usize),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("is not a valid CEL expression: {0}")]
    Syntax(String),
    #[error(transparent)]
    Reference(#[from] SubstitutionError),
    #[error("cannot be evaluated: {0}")]
    Evaluation(String),
    #[error("gave {0}, not true or false")]
    NotABoolean(String),
}

/// A parsed condition: its CEL program and the references it binds.
pub struct Condition {
    expression: cel::parser::Expression,
    references: Vec<Reference>,
}

/// The CEL variable that stands for reference number `i`.
fn variable(i: usize) -> String {
    format!("__ref{i}")
}

impl Condition {
    /// Parse `text`: its `${…}` references, then the CEL around them.
    pub fn parse(text: &str) -> Result<Self, ConditionError> {
        if text.len() > MAX_CONDITION_BYTES {
            return Err(ConditionError::TooLong(text.len()));
        }
        let mut source = String::with_capacity(text.len());
        let mut references = Vec::new();
        for piece in parse_template(text)? {
            match piece {
                Piece::Text(text) => source.push_str(text),
                Piece::Ref(reference) => {
                    source.push_str(&variable(references.len()));
                    references.push(reference);
                }
            }
        }
        let parser = cel::parser::Parser::new().max_recursion_depth(MAX_NESTING);
        let expression = parser.parse(&source).map_err(|e| ConditionError::Syntax(one_line(&e.to_string())))?;
        Ok(Self { expression, references })
    }

    /// The references it reads, for validation.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// Evaluate with each reference's value from `value_of`.
    pub fn evaluate<'r>(&self, value_of: impl Fn(&Root) -> Option<&'r Value>) -> Result<bool, ConditionError> {
        let mut context = cel::Context::default();
        for (i, reference) in self.references.iter().enumerate() {
            let root = value_of(&reference.root).ok_or_else(|| SubstitutionError::missing(reference))?;
            context.add_variable_from_value(variable(i), cel_value(lookup(reference, root)?));
        }
        match cel::Value::resolve(&self.expression, &context) {
            Ok(cel::Value::Bool(verdict)) => Ok(verdict),
            Ok(other) => Err(ConditionError::NotABoolean(describe(&other))),
            Err(e) => Err(ConditionError::Evaluation(one_line(&e.to_string()))),
        }
    }
}

/// A JSON value as CEL sees it: whole numbers are `int` (as CEL writes
/// `3`), so `${a.result.n} + 1` adds like numbers do; only integers above
/// `i64` are `uint`. (Nesting is bounded: results and documents are at most
/// 128 levels deep.)
fn cel_value(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            (None, None) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::from(s.as_str()),
        Value::Array(items) => cel::Value::List(std::sync::Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => {
            let entries: std::collections::HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), cel_value(v))).collect();
            cel::Value::from(entries)
        }
    }
}

/// A CEL value for messages, cut short.
fn describe(value: &cel::Value) -> String {
    crate::workflow::excerpt(&format!("{value:?}"))
}

/// The parser's message on one line, without its position and snippet:
/// they point into the expression as rewritten (`${…}` as variables), not
/// as written.
fn one_line(message: &str) -> String {
    let lines = message.lines().filter(|line| !line.starts_with('|'));
    let text: Vec<&str> = lines.map(|line| strip_position(line.trim())).collect();
    let text = text.join("; ").replace("__ref", "$ref");
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `ERROR: <input>:1:10: Syntax error: …` without `ERROR: <input>:1:10: `.
fn strip_position(line: &str) -> &str {
    let Some(rest) = line.strip_prefix("ERROR: <input>:") else { return line };
    rest.splitn(3, ':').nth(2).map_or(line, str::trim_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn evaluate(text: &str, values: &Value) -> Result<bool, ConditionError> {
        Condition::parse(text)?.evaluate(|root| match root {
            Root::Task(id) => values.get(id),
            Root::Input(name) => values.get("inputs").and_then(|i| i.get(name)),
            Root::Item | Root::ItemIndex => None,
        })
    }

    #[test]
    fn references_are_values_in_the_expression() {
        let values = json!({"detect": {"language": "de", "score": 0.9, "tags": ["a", "b"]}, "inputs": {"count": 3}});
        assert_eq!(evaluate(r#"${detect.result.language} != "en""#, &values), Ok(true));
        assert_eq!(evaluate(r#"${detect.result.language} == "en""#, &values), Ok(false));
        assert_eq!(evaluate("${detect.result.score} > 0.5 && ${inputs.count} >= 3", &values), Ok(true));
        assert_eq!(evaluate(r#"size(${detect.result.tags}) == 2 && "b" in ${detect.result.tags}"#, &values), Ok(true));
        assert_eq!(
            evaluate(
                "${inputs.count} + 1 == 4 && double(${inputs.count}) * 0.5 > 1.0 && ${inputs.count} > 2.5",
                &values
            )
            .map_err(|e| e.to_string()),
            Ok(true)
        );
        // A result that looks like CEL is a value, never code.
        let sly = json!({"a": {"text": "\") || true || (\""}});
        assert_eq!(evaluate(r#"${a.result.text} == "x""#, &sly), Ok(false));
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        let values = json!({"a": {"n": 1}});
        assert!(matches!(evaluate("${a.result.n} +", &values), Err(ConditionError::Syntax(_))));
        assert_eq!(evaluate("${a.result.n} + 1", &values), Err(ConditionError::NotABoolean("Int(2)".into())));
        let err = evaluate("${a.result.m} == 1", &values).unwrap_err();
        assert!(err.to_string().contains("path 'result.m' not found in the result of task 'a'"), "{err}");
        assert!(matches!(evaluate("${a.result", &values), Err(ConditionError::Template(_))));
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(matches!(evaluate(&deep, &values), Err(ConditionError::Syntax(_))), "nesting has a budget");
        for hostile in ["", "(((", "\u{0}", "a.b.c(", "'open", "1 ? 2 :", "ä ö ü", "}{", "__ref0", "[1,2,3].map(x, x"]
        {
            assert!(evaluate(hostile, &values).is_err(), "{hostile:?} is refused, not a panic");
        }
        let long = format!("true{}", " && true".repeat(600));
        assert_eq!(evaluate(&long, &values), Err(ConditionError::TooLong(long.len())));
    }
}
