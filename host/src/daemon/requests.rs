//! Reading the fields of requests both transports take alike: a listing's
//! filters and the one-task workflow of `submit_task`. Each transport
//! hands them its fields as JSON; what they become is the same.

use super::rpc::{RpcError, errors};
use crate::listing::ListQuery;
use serde_json::json;

/// The one-task workflow `submit_task` (and `POST /api/v1/tasks`) runs:
/// the task's `workflow_id`, if any, becomes the workflow's id; its name
/// (or id) the workflow's name.
pub(super) fn one_task_tree(mut task: serde_json::Value) -> serde_json::Value {
    let workflow_id = task.as_object_mut().and_then(|t| t.remove("workflow_id"));
    let name = task.get("name").or_else(|| task.get("id")).cloned().unwrap_or(json!("task"));
    let mut tree = json!({ "name": name, "tasks": [task] });
    if let Some(id) = workflow_id.filter(|id| !id.is_null()) {
        tree["id"] = id;
    }
    tree
}

/// A listing's filters from request fields (a Socket.IO payload, or an
/// HTTP query's strings): `status`, `name`, `since`/`until` (RFC 3339),
/// `cursor` (from an earlier page) and `limit` (1 to
/// [`crate::listing::MAX_PAGE`]; `default_limit` when absent).
pub(super) fn list_query(
    fields: &serde_json::Map<String, serde_json::Value>,
    default_limit: usize,
) -> Result<ListQuery, RpcError> {
    use serde_json::Value;
    let bad = |field: &str, wanted: &str, got: &Value| {
        let got = match got {
            Value::String(s) => format!("'{}'", crate::text::excerpt(s)),
            other => crate::text::excerpt(&other.to_string()),
        };
        RpcError::new(errors::INVALID_PARAMS, format!("field '{field}' must be {wanted}, got {got}"))
    };
    let text = |field: &str| -> Result<Option<&str>, RpcError> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(bad(field, "a string", other)),
        }
    };
    let time = |field: &str| -> Result<Option<std::time::SystemTime>, RpcError> {
        text(field)?
            .map(|t| {
                humantime::parse_rfc3339_weak(t)
                    .map_err(|_| bad(field, "an RFC 3339 time (2026-12-01T07:00:00Z)", &json!(t)))
            })
            .transpose()
    };
    let status = text("status")?
        .map(|s| {
            serde_json::from_value(json!(s))
                .map_err(|_| bad("status", "one of running, completed, failed, cancelled", &json!(s)))
        })
        .transpose()?;
    let after = text("cursor")?
        .map(|c| {
            crate::listing::Cursor::decode(c)
                .ok_or_else(|| bad("cursor", "a next_cursor from an earlier page", &json!(c)))
        })
        .transpose()?;
    let max = crate::listing::MAX_PAGE;
    let wanted = format!("a whole number from 1 to {max}");
    let limit = match fields.get("limit") {
        None | Some(Value::Null) => default_limit,
        Some(Value::Number(n)) => {
            n.as_u64().filter(|n| (1..=max as u64).contains(n)).ok_or_else(|| bad("limit", &wanted, &json!(n)))?
                as usize
        }
        Some(Value::String(s)) => {
            s.parse::<usize>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| bad("limit", &wanted, &json!(s)))?
        }
        Some(other) => return Err(bad("limit", &wanted, other)),
    };
    // An empty name matches every name; every other field is refused empty.
    let name = text("name")?.filter(|n| !n.is_empty()).map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(RpcError::new(errors::INVALID_PARAMS, "field 'name' must be at most 256 bytes"));
    }
    Ok(ListQuery { owner: None, status, name, since: time("since")?, until: time("until")?, after, limit })
}
