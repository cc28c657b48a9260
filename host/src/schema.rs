//! Params schemas: the JSON Schema a provider declares for a method's params,
//! compiled once when the provider registers, and the check of a task's
//! params against it.
//!
//! The host checks twice: a workflow's static params when it is validated
//! (values that hold a `${…}` reference are left to the second check, since
//! they are known only at run time), and the substituted params just before
//! each call. Schemas come from providers, so they are bounded like any other
//! input: [`MAX_SCHEMA_BYTES`] of JSON, no reference outside the schema (no
//! file or network is ever read to resolve a `$ref`), and `pattern` keywords
//! run on the linear-time `regex` engine, so a hostile pattern cannot stall a
//! check. This module knows nothing of tasks or providers; callers name them
//! in their errors.

use jsonschema::paths::LocationSegment;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// The largest schema a provider may declare, as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// At most this many mismatches are reported for one params object.
pub const MAX_MISMATCHES: usize = 10;
/// A mismatch message is cut to this many bytes (it may quote the value).
const MAX_MESSAGE_BYTES: usize = 300;

/// Why a declared schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("the params schema is {0} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed")]
    TooLarge(usize),
    #[error("the params schema is not a JSON Schema: {0}")]
    Invalid(String),
}

/// A method's params schema, compiled. Cloning shares it.
#[derive(Clone)]
pub struct ParamsSchema(Arc<Compiled>);

struct Compiled {
    source: Value,
    validator: jsonschema::Validator,
}

/// One way params do not fit a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Where, as a path below the params: `params.top`, `params.items[2]`;
    /// `params` for the object itself.
    pub field: String,
    /// What the schema wanted, e.g. `"abc" is not of type "integer"`.
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl ParamsSchema {
    /// Compile a declared schema, refusing one that is too large, malformed
    /// or refers outside itself.
    pub fn compile(source: Value) -> Result<Self, SchemaError> {
        let size = source.to_string().len();
        if size > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge(size));
        }
        let validator = jsonschema::options()
            .offline()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&source)
            .map_err(|e| SchemaError::Invalid(cut(e.to_string())))?;
        Ok(Self(Arc::new(Compiled { source, validator })))
    }

    /// The schema as the provider declared it.
    pub fn source(&self) -> &Value {
        &self.0.source
    }

    /// Every way `params` miss the schema (at most [`MAX_MISMATCHES`]).
    pub fn check(&self, params: &Value) -> Result<(), Vec<Mismatch>> {
        self.mismatches(params, |_| false)
    }

    /// Like [`check`](Self::check), but a value for which `deferred` holds
    /// (a `${…}` reference, known only at run time), and everything inside
    /// it, is not judged.
    pub fn check_static(&self, params: &Value, deferred: impl Fn(&Value) -> bool) -> Result<(), Vec<Mismatch>> {
        self.mismatches(params, |path| holds_deferred(params, path, &deferred))
    }

    fn mismatches(
        &self,
        params: &Value,
        skip: impl Fn(&jsonschema::paths::Location) -> bool,
    ) -> Result<(), Vec<Mismatch>> {
        let found: Vec<Mismatch> = (self.0.validator.iter_errors(params))
            .filter(|e| !skip(e.instance_path()))
            .take(MAX_MISMATCHES)
            .map(|e| Mismatch { field: field_name(e.instance_path()), message: cut(e.to_string()) })
            .collect();
        if found.is_empty() { Ok(()) } else { Err(found) }
    }
}

impl fmt::Debug for ParamsSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ParamsSchema").field(&self.0.source).finish()
    }
}

impl PartialEq for ParamsSchema {
    fn eq(&self, other: &Self) -> bool {
        self.0.source == other.0.source
    }
}

impl serde::Serialize for ParamsSchema {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.source.serialize(serializer)
    }
}

/// Read back as its source, compiled again (how the hosts of a cluster
/// learn each other's providers).
impl<'de> serde::Deserialize<'de> for ParamsSchema {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::compile(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// All mismatches on one line, for a task's error.
pub fn describe(mismatches: &[Mismatch]) -> String {
    mismatches.iter().map(Mismatch::to_string).collect::<Vec<_>>().join("; ")
}

/// Whether the value at `path` in `params`, or one that holds it, is deferred.
fn holds_deferred(params: &Value, path: &jsonschema::paths::Location, deferred: &impl Fn(&Value) -> bool) -> bool {
    let mut at = params;
    for segment in path.segments() {
        if deferred(at) {
            return true;
        }
        let next = match (segment, at) {
            (LocationSegment::Property(key), Value::Object(map)) => map.get(&*key),
            (LocationSegment::Index(i), Value::Array(items)) => items.get(i),
            _ => None,
        };
        match next {
            Some(value) => at = value,
            None => return false,
        }
    }
    deferred(at)
}

/// `params.a.b[2]` for the JSON pointer `/a/b/2`.
fn field_name(path: &jsonschema::paths::Location) -> String {
    let mut name = String::from("params");
    for segment in path.segments() {
        match segment {
            LocationSegment::Property(key) => {
                name.push('.');
                name.push_str(&key);
            }
            LocationSegment::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// At most [`MAX_MESSAGE_BYTES`] of `text`, on a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn count_schema() -> ParamsSchema {
        ParamsSchema::compile(json!({
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {"type": "string"},
                "top": {"type": "integer", "minimum": 1},
                "words": {"type": "array", "items": {"type": "string"}},
            },
        }))
        .unwrap()
    }

    #[test]
    fn fitting_params_pass_and_each_mismatch_names_its_field() {
        let schema = count_schema();
        assert_eq!(schema.check(&json!({"text": "a b", "top": 2})), Ok(()));
        let found = schema.check(&json!({"top": "three", "words": ["a", 2]})).unwrap_err();
        let fields: Vec<&str> = found.iter().map(|m| m.field.as_str()).collect();
        assert!(fields.contains(&"params"), "the missing field is the object's: {found:?}");
        assert!(fields.contains(&"params.top") && fields.contains(&"params.words[1]"), "{found:?}");
        let text = describe(&found);
        assert!(text.contains("\"text\" is a required property"), "{text}");
        assert!(text.contains("params.top: \"three\" is not of type \"integer\""), "{text}");
    }

    #[test]
    fn deferred_values_are_not_judged_until_they_are_known() {
        let schema = count_schema();
        let reference = |v: &Value| v.as_str().is_some_and(|s| s.starts_with("${"));
        let params = json!({"text": "${a.result}", "top": "${b.result.n}", "words": "${c.result}"});
        assert_eq!(schema.check_static(&params, reference), Ok(()));
        let missing = schema.check_static(&json!({"top": "${b.result}"}), reference).unwrap_err();
        assert_eq!(missing.len(), 1, "a required field is missing whatever the references hold: {missing:?}");
        let wrong = schema.check_static(&json!({"text": 5, "top": "${b.result}"}), reference).unwrap_err();
        assert_eq!(wrong[0].field, "params.text");
    }

    #[test]
    fn hostile_schemas_are_refused_or_harmless() {
        let remote = ParamsSchema::compile(json!({"$ref": "https://example.com/schema.json"}));
        assert!(matches!(remote, Err(SchemaError::Invalid(_))), "no network to resolve a $ref: {remote:?}");
        let file = ParamsSchema::compile(json!({"$ref": "file:///etc/passwd"}));
        assert!(matches!(file, Err(SchemaError::Invalid(_))), "no file either: {file:?}");
        let huge = json!({"description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(matches!(ParamsSchema::compile(huge), Err(SchemaError::TooLarge(_))));
        assert!(matches!(ParamsSchema::compile(json!({"type": 5})), Err(SchemaError::Invalid(_))));
        // A pattern that backtracks exponentially elsewhere is linear here.
        let pattern = ParamsSchema::compile(json!({"properties": {"s": {"pattern": "^(a+)+$"}}})).unwrap();
        let long = format!("{}b", "a".repeat(50_000));
        assert_eq!(pattern.check(&json!({"s": long})).unwrap_err().len(), 1);
    }

    #[test]
    fn long_values_are_cut_in_messages_and_mismatches_are_bounded() {
        let schema = ParamsSchema::compile(json!({"items": {"type": "integer"}})).unwrap();
        let found = schema.check(&json!(vec!["x".repeat(10_000); 100])).unwrap_err();
        assert_eq!(found.len(), MAX_MISMATCHES);
        assert!(found.iter().all(|m| m.message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8()));
    }
}
