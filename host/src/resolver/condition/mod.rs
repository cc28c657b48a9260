//! `when:` conditions: a CEL expression (the Common Expression Language,
//! evaluated by the `cel` crate) over earlier results and inputs, written
//! with the same `${…}` references as params:
//! `${detect.result.language} != "en" && ${inputs.count} > 2`.
//!
//! Each reference becomes a CEL variable bound to the value it names, so a
//! result can never be read as expression text, and references are checked
//! (ancestors only) by the same code as params. CEL has no recursion, but
//! its macros loop: the parser's recursion budget and the length limit bound
//! the expression, and a budget of steps and bytes ([`cost`]) bounds its
//! evaluation. This module evaluates; it does not decide what a false
//! condition does to a task, nor on which thread it is evaluated (`engine`).

mod cost;

use super::substitution::{Piece, Reference, Root, SubstitutionError, TemplateError, lookup, parse_template};
pub use cost::{MAX_BYTES, MAX_STEPS, OverBudget};
use serde_json::Value;
use std::sync::{Arc, LazyLock};

/// Longest `when:` accepted, in bytes.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// Longest parser message passed on.
const MAX_MESSAGE_CHARS: usize = 300;
/// Deepest nesting the CEL parser accepts in a condition.
const MAX_NESTING: u16 = 32;
/// Deepest a parsed condition may be, each operand of a chain of
/// operators one level (`1 + 1 + 1` is three): the interpreter recurses
/// that deep, and 650 levels overflowed the stack of the thread it ran on.
pub const MAX_DEPTH: usize = 100;

/// Why a condition cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConditionError {
    #[error("is {0} bytes long; the limit is {MAX_CONDITION_BYTES}")]
    TooLong(usize),
    #[error("nests {0} levels deep (each operator of a chain such as `a + b + c` is one); the limit is {MAX_DEPTH}")]
    TooDeep(usize),
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
    #[error("{0}")]
    OverBudget(#[from] OverBudget),
}

/// CEL's standard library, built once.
static STANDARD: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

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
        let mut expression = parser.parse(&source).map_err(|e| ConditionError::Syntax(one_line(&e.to_string())))?;
        let depth = cost::depth(&expression);
        if depth > MAX_DEPTH {
            return Err(ConditionError::TooDeep(depth));
        }
        let count = references.len();
        cost::instrument(&mut expression, |name| is_variable(name, count));
        Ok(Self { expression, references })
    }

    /// The references it reads, for validation.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// Evaluate with each reference's value from `value_of`, within the
    /// budget of a condition.
    pub fn evaluate<'r>(&self, value_of: impl Fn(&Root) -> Option<&'r Value>) -> Result<bool, ConditionError> {
        let meter = Arc::new(cost::Meter::default());
        let mut context = cel::Context::with_env(Arc::clone(&STANDARD));
        meter.register(&mut context);
        for (i, reference) in self.references.iter().enumerate() {
            let root = value_of(&reference.root).ok_or_else(|| SubstitutionError::missing(reference))?;
            context.add_variable_as_val(variable(i), meter.bind(lookup(reference, root)?)?);
        }
        let outcome = cel::Value::resolve(&self.expression, &context);
        // A spent budget is the verdict even where CEL absorbed its error
        // (`error || true` is `true`).
        if let Some(over) = meter.spent() {
            return Err(over.into());
        }
        match outcome {
            Ok(cel::Value::Bool(verdict)) => Ok(verdict),
            Ok(other) => Err(ConditionError::NotABoolean(describe(&other))),
            Err(e) => Err(ConditionError::Evaluation(one_line(&e.to_string()))),
        }
    }
}

/// Whether `name` is the variable of one of `count` references.
fn is_variable(name: &str, count: usize) -> bool {
    name.strip_prefix("__ref").and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < count)
}

/// A CEL value for messages, cut short.
fn describe(value: &cel::Value) -> String {
    crate::text::excerpt(&format!("{value:?}"))
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

    #[test]
    fn the_macros_give_what_they_gave_before_metering() {
        let values = json!({"inputs": {"xs": [1, 2, 3, 4], "m": {"a": 1, "b": 2}, "s": "abc"}});
        for (condition, expected) in [
            ("${inputs.xs}.map(x, x * 2) == [2, 4, 6, 8]", true),
            ("${inputs.xs}.map(x, x > 2, x * 10) == [30, 40]", true),
            ("${inputs.xs}.filter(x, x % 2 == 0) == [2, 4]", true),
            ("${inputs.xs}.all(x, x > 0) && !${inputs.xs}.all(x, x > 1)", true),
            ("${inputs.xs}.exists(x, x == 3) && !${inputs.xs}.exists(x, x == 5)", true),
            ("${inputs.xs}.exists_one(x, x == 3) && !${inputs.xs}.exists_one(x, x > 2)", true),
            ("${inputs.m}.all(k, ${inputs.m}[k] > 0) && ${inputs.m}.exists(k, k == 'b')", true),
            ("${inputs.xs}.map(x, ${inputs.xs}.filter(y, y < x).size()) == [0, 1, 2, 3]", true),
            ("[${inputs.s}, 'd'].map(t, t + t)[1] == 'dd' && {'k': ${inputs.xs}}.k[0] == 1", true),
            ("${inputs.xs}.exists(x, 1 / (x - 1) > 0) || true", true),
            ("type(${inputs.s}) == string && int('7') == 7", true),
            ("optional.of(${inputs.s}).hasValue() && optional.none().orValue(5) == 5", true),
            ("size(${inputs.s}) == 3 && ${inputs.s}.startsWith('ab') && has(${inputs.m}.a)", true),
        ] {
            assert_eq!(evaluate(condition, &values).map_err(|e| e.to_string()), Ok(expected), "{condition}");
        }
        // Errors inside a fold are still absorbed only where CEL absorbs them.
        assert!(matches!(
            evaluate("${inputs.xs}.all(x, 10 / (x - 1) > 0)", &values),
            Err(ConditionError::Evaluation(_))
        ));
    }

    #[test]
    fn a_condition_that_costs_too_much_is_stopped_within_its_budget() {
        let xs: Vec<i64> = (0..15_000).collect();
        let values = json!({"inputs": {"xs": xs, "s": "x".repeat(1 << 20)}});
        let started = std::time::Instant::now();
        // The issue's quadratic loop: 225 million comparisons unbounded.
        let square = "${inputs.xs}.map(x, ${inputs.xs}.filter(y, y == x).size()).size() > 0";
        assert_eq!(evaluate(square, &values), Err(ConditionError::OverBudget(OverBudget::Steps)));
        // A loop over a list with an operator that walks the list per item.
        assert_eq!(
            evaluate("${inputs.xs}.filter(x, x in ${inputs.xs}).size() > 0", &values),
            Err(OverBudget::Steps.into())
        );
        // Each item mapped to a copy of a 1 MiB string plus itself.
        let copies = "${inputs.xs}.map(x, ${inputs.s} + ${inputs.s}).size() > 0";
        assert_eq!(evaluate(copies, &values), Err(OverBudget::Bytes.into()));
        // Copies of a string grown step by step, without any loop.
        let growing = format!("size({}) > 0", "${inputs.s} + ".repeat(20) + "''");
        assert_eq!(evaluate(&growing, &values), Err(OverBudget::Bytes.into()));
        // A spent budget is not absorbed by `||`.
        assert_eq!(evaluate(&format!("({square}) || true"), &values), Err(OverBudget::Steps.into()));
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "stopped, not run out");
        let message = ConditionError::from(OverBudget::Steps).to_string();
        assert!(message.contains(&MAX_STEPS.to_string()) && message.contains("budget"), "{message}");
    }

    /// What a hostile probe found: work the first cut did not charge.
    #[test]
    fn strings_written_in_it_failing_calls_and_optionals_are_charged_too() {
        let xs: Vec<i64> = (0..3000).collect();
        let values = json!({"inputs": {"xs": xs}});
        // A 2 KB search per inner step, of strings written in the condition.
        let (hay, needle) = ("a".repeat(1900), "a".repeat(1800) + "b");
        let search = format!("${{inputs.xs}}.all(a, ${{inputs.xs}}.all(b, !'{hay}'.contains('{needle}')))");
        assert_eq!(evaluate(&search, &values), Err(OverBudget::Steps.into()));
        // A call that reads a long string and fails, absorbed by `exists`.
        let failing =
            format!("${{inputs.xs}}.exists(a, ${{inputs.xs}}.exists(b, double('{}x') == 1.0))", "1".repeat(3900));
        assert_eq!(evaluate(&failing, &values), Err(OverBudget::Steps.into()));
        // Lists kept inside optionals, and empty maps kept by a loop.
        let hidden = "${inputs.xs}.map(a, optional.of(${inputs.xs}.map(b, {}))).size() > 0";
        assert_eq!(evaluate(hidden, &values), Err(OverBudget::Bytes.into()));
    }

    #[test]
    fn a_long_chain_of_operators_is_refused_before_it_can_overflow_a_stack() {
        let values = json!({});
        let chain = format!("1{} > 0", " + 1".repeat(1000));
        assert_eq!(evaluate(&chain, &values), Err(ConditionError::TooDeep(1002)));
        let longest = format!("1{}", "+1".repeat((MAX_CONDITION_BYTES - 1) / 2));
        assert!(matches!(evaluate(&longest, &values), Err(ConditionError::TooDeep(_))), "as long as it may be");
        let index = format!("[1]{} == 1", "[0]".repeat(1000));
        assert!(matches!(evaluate(&index, &values), Err(ConditionError::TooDeep(_))));
        let within = format!("1{} > 0", " + 1".repeat(MAX_DEPTH - 3));
        assert_eq!(evaluate(&within, &values), Ok(true), "a chain of {MAX_DEPTH} levels runs");
    }

    #[test]
    fn ordinary_conditions_over_large_inputs_fit_the_budget() {
        let items: Vec<Value> = (0..100_000).map(|i| json!({"score": i % 10, "name": format!("item {i}")})).collect();
        let values = json!({"inputs": {"items": items, "s": "x".repeat(1 << 20)}});
        for condition in [
            "${inputs.items}.exists(i, i.score > 8)",
            "${inputs.items}.filter(i, i.score == 9).size() == 10000",
            "${inputs.items}.all(i, i.name.startsWith('item'))",
            "size(${inputs.items}) == 100000 && ${inputs.s}.contains('xx')",
        ] {
            assert_eq!(evaluate(condition, &values).map_err(|e| e.to_string()), Ok(true), "{condition}");
        }
    }
}
