//! Workflow text to a JSON tree, refusing what a plain `serde_json::Value`
//! would take silently: a key given twice in one mapping (the last would win)
//! is an error naming the key, the task it is in, and the line. YAML is read
//! by serde-saphyr, whose budgets bound nesting, node counts and aliases in
//! the parser itself (no pre-scan to get around); JSON by serde_json (its
//! recursion limit is 128).
//!
//! It builds the tree only; what the tree must hold is `workflow`'s check.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;

/// Most levels of nesting a YAML workflow may have (JSON: serde_json's 128).
pub const MAX_YAML_DEPTH: usize = 128;
/// Most YAML nodes (mappings, sequences, scalars) in one file: a workflow
/// of 200,000 tasks with params fits.
const MAX_YAML_NODES: usize = 20_000_000;

/// Where in the document a node is, to name the task in messages.
#[derive(Clone, Copy)]
enum Place {
    /// The workflow itself (the document, or a payload's `workflow`).
    Workflow,
    /// A Socket.IO event's arguments: `[event, payload, ...]`.
    Arguments,
    /// A request payload around a workflow or task.
    Payload,
    /// The `tasks` list.
    Tasks,
    /// Task number `n` (0-based), or somewhere inside it.
    Task(usize),
    Inside(usize),
    Elsewhere,
}

impl Place {
    fn key(self, key: &str) -> Place {
        match (self, key) {
            (Place::Workflow, "tasks") => Place::Tasks,
            (Place::Payload, "workflow") => Place::Workflow,
            (Place::Payload, "task") => Place::Task(0),
            (Place::Task(n) | Place::Inside(n), _) => Place::Inside(n),
            _ => Place::Elsewhere,
        }
    }

    fn item(self, index: usize) -> Place {
        match self {
            Place::Arguments if index == 1 => Place::Payload,
            Place::Tasks => Place::Task(index),
            Place::Task(n) | Place::Inside(n) => Place::Inside(n),
            _ => Place::Elsewhere,
        }
    }

    /// ` in task 'id'` (or `#N`), ` in the workflow`, or nothing.
    fn describe(self, task_id: Option<&str>) -> String {
        match (self, task_id) {
            (Place::Task(_), Some(id)) => format!(" in task '{}'", crate::text::excerpt(id)),
            (Place::Task(n) | Place::Inside(n), _) => format!(" in task #{}", n + 1),
            (Place::Workflow, _) => " in the workflow".to_owned(),
            _ => String::new(),
        }
    }
}

/// Reads one node, refusing duplicate keys in its mappings.
#[derive(Clone, Copy)]
struct Node<'a> {
    place: Place,
    yaml: bool,
    /// The message of a duplicate key, with the key's own line (a YAML
    /// deserializer locates a visitor's error at the enclosing mapping).
    duplicate: &'a RefCell<Option<String>>,
}

impl Node<'_> {
    fn at(self, place: Place) -> Self {
        Self { place, ..self }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Not finite (YAML's .inf, .nan) has no JSON form: null, as serde_json does.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self.at(self.place.item(items.len())))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some((key, line)) = self.next_key(&mut map)? {
            if object.contains_key(&key) {
                let task_id = object.get("id").and_then(Value::as_str);
                let message = format!(
                    "duplicate key '{}'{}: a key may appear once in each mapping{line}",
                    crate::text::excerpt(&key),
                    self.place.describe(task_id)
                );
                *self.duplicate.borrow_mut() = Some(message.clone());
                return Err(A::Error::custom(message));
            }
            let value = map.next_value_seed(self.at(self.place.key(&key)))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

impl Node<'_> {
    /// The next key, and (in YAML, where it can be known) ` at line L
    /// column C` of it.
    fn next_key<'de, A: MapAccess<'de>>(&self, map: &mut A) -> Result<Option<(String, String)>, A::Error> {
        if !self.yaml {
            return Ok(map.next_key::<String>()?.map(|key| (key, String::new())));
        }
        let key = map.next_key::<serde_saphyr::Spanned<String>>()?;
        Ok(key.map(|k| {
            let at = format!(" at line {} column {}", k.referenced.line(), k.referenced.column());
            (k.value, at)
        }))
    }
}

/// A workflow document (a file's whole text) as a tree.
pub fn document(text: &str, format: super::Format) -> Result<Value, String> {
    match format {
        super::Format::Json => json(text, Place::Workflow),
        super::Format::Yaml => yaml(text),
    }
}

/// A Socket.IO event's arguments (`[event, payload, ...]`, JSON text) as a
/// tree; duplicate keys are refused here too, naming the task when it is in
/// a workflow or task payload.
pub fn arguments(text: &str) -> Result<Value, String> {
    json(text, Place::Arguments)
}

fn json(text: &str, place: Place) -> Result<Value, String> {
    let duplicate = RefCell::new(None);
    let node = Node { place, yaml: false, duplicate: &duplicate };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // serde_json locates the error at the duplicate key itself.
    let tree = node.deserialize(&mut deserializer).map_err(|e| format!("invalid JSON: {e}"))?;
    deserializer.end().map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(tree)
}

/// Stack for parsing YAML: the deserializer recurses once per level (up to
/// [`MAX_YAML_DEPTH`]), with large frames in unoptimised builds; a tokio
/// worker's 2 MiB is not enough for that in every build.
const YAML_STACK_BYTES: usize = 64 << 20;

fn yaml(text: &str) -> Result<Value, String> {
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new().name("yaml".into()).stack_size(YAML_STACK_BYTES);
        match parser.spawn_scoped(scope, || yaml_here(text)) {
            Ok(parsing) => parsing.join().unwrap_or_else(|_| Err("invalid YAML: the parser failed".into())),
            Err(e) => Err(format!("cannot start the YAML parser: {e}")),
        }
    })
}

/// What the YAML parser may spend on one document.
fn budget() -> serde_saphyr::Budget {
    // Budget and Options are non-exhaustive: set what differs from the defaults.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_YAML_DEPTH;
    budget.flow_nesting_limit = MAX_YAML_DEPTH;
    budget.max_nodes = MAX_YAML_NODES;
    budget.max_events = 4 * MAX_YAML_NODES;
    budget.max_total_scalar_bytes = super::MAX_FILE_BYTES;
    budget
}

fn yaml_here(text: &str) -> Result<Value, String> {
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget());
    // Our visitor sees every entry, so it can name the task.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.with_snippet = false;
    DUPLICATE.with(|duplicate| {
        duplicate.replace(None);
        let parsed = serde_saphyr::from_str_with_options::<Document>(text, options);
        match (parsed, duplicate.take()) {
            (Ok(tree), _) => Ok(tree.0),
            (Err(_), Some(message)) => Err(format!("invalid YAML: {message}")),
            (Err(e), None) => Err(yaml_error(&e)),
        }
    })
}

/// The parser's error, with one wording for nesting too deep however it is
/// written (the budget's depth for block collections, the scanner's limit
/// for flow ones).
fn yaml_error(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let too_deep =
        matches!(e, serde_saphyr::Error::Budget { breach: serde_saphyr::budget::BudgetBreach::Depth { .. }, .. })
            || text.contains("recursion limit exceeded");
    let at = e.location().map(|at| format!(" at line {} column {}", at.line(), at.column())).unwrap_or_default();
    if too_deep {
        return format!("invalid YAML: collections nested deeper than {MAX_YAML_DEPTH} levels{at}");
    }
    let mut inner = e;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    match inner {
        serde_saphyr::Error::Budget { breach, .. } => match over_budget(breach) {
            Some(what) => format!("invalid YAML: the file {what}{at}"),
            None => format!("invalid YAML: {text}"),
        },
        _ => format!("invalid YAML: {text}"),
    }
}

/// A budget the parser stopped at, in a writer's words, with its limit.
fn over_budget(breach: &serde_saphyr::budget::BudgetBreach) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach as B;
    let budget = budget();
    Some(match breach {
        B::RecordedAnchorEvents { .. } | B::RecordedAnchorBytes { .. } => format!(
            "expands its aliases (*name) beyond the limit of {} copied nodes and {} MiB",
            budget.max_recorded_anchor_events,
            budget.max_recorded_anchor_bytes >> 20
        ),
        B::Aliases { .. } => format!("uses more than {} aliases (*name)", budget.max_aliases),
        B::AliasAnchorRatio { aliases, anchors } => format!(
            "uses {aliases} aliases (*name) of {anchors} anchors, more than {} per anchor",
            budget.alias_anchor_ratio_multiplier
        ),
        B::Anchors { .. } => format!("defines more than {} anchors (&name)", budget.max_anchors),
        B::MergeKeys { .. } => format!("uses more than {} merge keys (<<)", budget.max_merge_keys),
        B::Nodes { .. } => format!("has more than {} values", budget.max_nodes),
        B::Events { .. } => format!("has more than {} parser events", budget.max_events),
        B::ScalarBytes { .. } => format!("holds more than {} MiB of text", budget.max_total_scalar_bytes >> 20),
        _ => return None,
    })
}

thread_local! {
    /// Where a YAML document's duplicate key is told: serde-saphyr takes a
    /// type to build, not a seed that could carry it.
    static DUPLICATE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A whole YAML workflow document.
struct Document(Value);

impl<'de> serde::Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DUPLICATE
            .with(|duplicate| Node { place: Place::Workflow, yaml: true, duplicate }.deserialize(deserializer))
            .map(Document)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::workflow::Format;

    #[test]
    fn a_key_given_twice_is_an_error_naming_it_the_task_and_the_line() {
        let yaml = "name: w\ntasks:\n  - id: fetch\n    protocol: echo/v1\n    method: echo\n    method: ping\n";
        let error = document(yaml, Format::Yaml).unwrap_err();
        assert!(error.contains("duplicate key 'method' in task 'fetch'"), "{error}");
        assert!(error.contains("line 6"), "{error}");
        let json_text = "{\"name\": \"w\",\n \"tasks\": [{\"protocol\": \"a/v1\", \"protocol\": \"b/v1\"}]}";
        let error = document(json_text, Format::Json).unwrap_err();
        assert!(error.contains("duplicate key 'protocol' in task #1") && error.contains("line 2"), "{error}");
        let error = document("name: a\nname: b\n", Format::Yaml).unwrap_err();
        assert!(error.contains("duplicate key 'name' in the workflow"), "{error}");
        let error =
            arguments(r#"["submit_workflow", {"workflow": {"tasks": [{}, {"id": "x", "params": {"a": 1, "a": 2}}]}}]"#)
                .unwrap_err();
        assert!(error.contains("duplicate key 'a' in task #2"), "{error}");
    }

    /// Here on a test thread's 2 MiB stack, as on a tokio worker's.
    #[test]
    fn deep_nesting_is_refused_quickly_however_it_is_written() {
        let json = format!("[\"e\", {}{}]", "[".repeat(126), "]".repeat(126));
        assert!(arguments(&json).is_ok(), "127 levels of JSON are read");
        let error = arguments(&format!("[{}{}]", "[".repeat(200), "]".repeat(200))).unwrap_err();
        assert!(error.contains("recursion limit"), "{error}");
        let yaml = format!("{}x\n", "- ".repeat(127));
        assert!(document(&yaml, Format::Yaml).is_ok(), "127 levels of YAML are read");
        let started = std::time::Instant::now();
        for text in ["[".repeat(1 << 20), "{a: ".repeat(200_000), "- ".repeat(500_000), "? ".repeat(500_000)] {
            let error = document(&text, Format::Yaml).unwrap_err();
            assert!(error.starts_with("invalid YAML"), "{error}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    /// Each level's list quotes the one before ten times: 10^9 nodes.
    #[test]
    fn an_alias_bomb_is_refused_quickly_in_a_writers_words() {
        let mut yaml = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..10 {
            let quoted = vec![format!("*l{}", level - 1); 10].join(", ");
            yaml.push_str(&format!("l{level}: &l{level} [{quoted}]\n"));
        }
        let started = std::time::Instant::now();
        let error = document(&yaml, Format::Yaml).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(error.starts_with("invalid YAML: the file "), "{error}");
        assert!(error.contains("alias") && error.contains("limit") || error.contains("more than"), "{error}");
        assert!(!error.contains("RecordedAnchorEvents") && !error.contains("budget breached"), "{error}");
    }
}
