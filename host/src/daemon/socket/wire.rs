//! Socket.IO payloads: an event's first argument read with the request
//! limit, field extraction with precise messages, and the replies providers
//! send to `execute_method`.

pub use crate::daemon::rpc::{MAX_REQUEST_BYTES, RpcError, TRANSPORT_MAX_BYTES, encoded_len, errors};
use crate::model::{TaskError, codes};
use serde_json::{Map, Value};

/// An event's payload (its first argument), checked against
/// [`MAX_REQUEST_BYTES`] before it is parsed, and read as workflow files are
/// (serde_json, duplicate keys refused; binary attachments are refused: the
/// protocol is JSON).
pub struct Payload(pub Result<Value, RpcError>);

impl<A: socketioxide::adapter::Adapter> socketioxide::handler::FromMessageParts<A> for Payload {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        _: &std::sync::Arc<socketioxide::socket::Socket<A>>,
        packet: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(Payload(first_argument(packet)))
    }
}

fn first_argument(packet: &socketioxide::handler::Value) -> Result<Value, RpcError> {
    let unreadable = |reason: &str| RpcError::new(errors::PARSE_ERROR, format!("cannot read the payload: {reason}"));
    let text = match packet {
        socketioxide::handler::Value::Str(_, Some(attachments)) if !attachments.is_empty() => {
            return Err(unreadable("binary attachments are not accepted; send JSON"));
        }
        socketioxide::handler::Value::Str(text, _) => text.as_str(),
        socketioxide::handler::Value::Bytes(_) => {
            return Err(unreadable("binary payloads are not accepted; send JSON"));
        }
    };
    if text.len() > MAX_REQUEST_BYTES {
        return Err(RpcError::new(
            errors::TOO_LARGE,
            format!("the message is {} bytes; requests are limited to {MAX_REQUEST_BYTES} bytes (64 MiB)", text.len()),
        ));
    }
    // `[event, first, ...]`: the event name is skipped, later arguments ignored.
    let args = crate::workflow::tree::arguments(text).map_err(|e| unreadable(&e))?;
    let Value::Array(args) = args else { return Err(unreadable("the event is not a list of arguments")) };
    args.into_iter().nth(1).ok_or_else(|| unreadable("the event carries no payload"))
}

/// The object payload of `event`, or an error saying what arrived instead.
pub fn object(event: &str, payload: Result<Value, RpcError>) -> Result<Map<String, Value>, RpcError> {
    match payload {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(RpcError::new(
            errors::INVALID_REQUEST,
            format!("{event}: the payload must be a JSON object, got {}", kind(&other)),
        )),
        Err(e) => Err(RpcError { message: format!("{event}: {}", e.message), ..e }),
    }
}

/// Fields of one event's payload, with errors that name the event and field.
pub struct Fields<'a> {
    pub event: &'a str,
    pub map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn invalid(&self, field: &str, expected: &str) -> RpcError {
        let found = self.map.get(field).map_or("nothing", kind);
        RpcError::new(
            errors::INVALID_PARAMS,
            format!("{}: field '{field}' must be {expected}, got {found}", self.event),
        )
    }

    pub fn string(&self, field: &str) -> Result<String, RpcError> {
        match self.map.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 256 => Ok(s.clone()),
            _ => Err(self.invalid(field, "a non-empty string of at most 256 bytes")),
        }
    }

    pub fn optional_string(&self, field: &str) -> Result<Option<String>, RpcError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(self.invalid(field, "a string")),
        }
    }

    pub fn optional_count(&self, field: &str, max: u64) -> Result<Option<u64>, RpcError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.invalid(field, &format!("a whole number from 1 to {max}"))),
            },
        }
    }

    /// An optional flag: false when absent.
    pub fn flag(&self, field: &str) -> Result<bool, RpcError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            _ => Err(self.invalid(field, "true or false")),
        }
    }

    /// An optional object: empty when absent.
    pub fn optional_object(&self, field: &str) -> Result<Map<String, Value>, RpcError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map.clone()),
            _ => Err(self.invalid(field, "an object")),
        }
    }

    pub fn object(&self, field: &str) -> Result<Value, RpcError> {
        match self.map.get(field) {
            Some(v @ Value::Object(_)) => Ok(v.clone()),
            _ => Err(self.invalid(field, "an object")),
        }
    }

    /// A list of strings, under `field` or its `alias`.
    pub fn strings(&self, field: &str, alias: &str) -> Result<Option<Vec<String>>, RpcError> {
        let key = if self.map.contains_key(field) { field } else { alias };
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| self.invalid(key, "a list of strings")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.invalid(key, "a list of strings")),
        }
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The arguments of an ack, however many there are. python-socketio acks a
/// handler that returns nothing with no arguments at all (`[]`), which
/// socketioxide cannot read into a single value; a tuple-like type is read
/// whole, so this one asks for a tuple of any length.
#[derive(Debug, Default, PartialEq)]
pub struct AckArgs(pub Vec<Value>);

impl<'de> serde::Deserialize<'de> for AckArgs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Args;
        impl<'de> serde::de::Visitor<'de> for Args {
            type Value = Vec<Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the ack's arguments")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(args)
            }
        }
        deserializer.deserialize_tuple(usize::MAX, Args).map(AckArgs)
    }
}

/// A provider's answer to `execute_method`: `{result}`, `{error}` or a
/// JSON-RPC 2.0 response (which has one of the two). Ack answers arrive as
/// the list of ack arguments; the first one counts.
pub fn method_reply(provider: &str, reply: Value) -> Result<Value, TaskError> {
    let reply = match reply {
        Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
        other => other,
    };
    let Value::Object(mut map) = reply else {
        return Err(TaskError::new(
            codes::INTERNAL_ERROR,
            format!("provider '{provider}' answered with {} instead of {{result}} or {{error}}", kind(&reply)),
        ));
    };
    if let Some(error) = map.remove("error").filter(|e| !e.is_null()) {
        return Err(provider_error(provider, error));
    }
    map.remove("result").ok_or_else(|| {
        TaskError::new(codes::INTERNAL_ERROR, format!("provider '{provider}' answered without 'result' or 'error'"))
    })
}

/// `{code, message, data, retryable}` or a plain string.
fn provider_error(provider: &str, error: Value) -> TaskError {
    match error {
        Value::Object(e) => {
            let message = e.get("message").and_then(Value::as_str).unwrap_or("provider error").to_owned();
            let code = e.get("code").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
            let mut error = TaskError::new(code.unwrap_or(codes::SERVER_ERROR), message);
            error.data = e.get("data").cloned();
            error.retryable = e.get("retryable").and_then(Value::as_bool).unwrap_or(false);
            error
        }
        Value::String(message) => TaskError::new(codes::SERVER_ERROR, message),
        other => TaskError::new(codes::SERVER_ERROR, format!("provider '{provider}' failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_in_every_accepted_shape() {
        assert_eq!(method_reply("p", json!([{"result": {"a": 1}}])), Ok(json!({"a": 1})));
        assert_eq!(method_reply("p", json!({"jsonrpc": "2.0", "id": "1", "result": 5})), Ok(json!(5)));
        let e = method_reply("p", json!({"error": {"code": -32602, "message": "bad", "retryable": true}})).unwrap_err();
        assert_eq!((e.code, e.message.as_str(), e.retryable), (-32602, "bad", true));
        let e = method_reply("p", json!({"error": "ValueError: x"})).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (codes::SERVER_ERROR, "ValueError: x"));
        let e = method_reply("p", json!([42])).unwrap_err();
        assert!(e.message.contains("answered with a number"), "{}", e.message);
        assert!(method_reply("p", json!({"other": 1})).is_err());
    }

    #[test]
    fn fields_name_the_event_and_field() {
        let map = json!({"provider_id": 3, "methods": ["a", 2]}).as_object().cloned().unwrap();
        let fields = Fields { event: "register_provider", map: &map };
        assert_eq!(
            fields.string("provider_id").unwrap_err().message,
            "register_provider: field 'provider_id' must be a non-empty string of at most 256 bytes, got a number"
        );
        assert!(
            fields
                .strings("supported_methods", "methods")
                .unwrap_err()
                .message
                .contains("field 'methods' must be a list of strings")
        );
        let e = object("submit_workflow", Ok(json!([1]))).unwrap_err();
        assert_eq!(e.code, errors::INVALID_REQUEST);
    }
}
