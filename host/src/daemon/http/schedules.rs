//! The schedule routes: add (a workflow document with its `schedule:`
//! block, or the block's fields in the query), list, read and remove, with
//! the roles of submitting, reading and cancelling workflows.

use super::HttpTransport;
use super::{ApiError, ApiResult, Authenticated, BASE, Body, body_tree, schema};
use crate::auth::Action;
use crate::daemon::rpc::errors;
use crate::daemon::schedules::ScheduleInfo;
use crate::workflow;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Query fields that set fields of the `schedule:` block.
const BLOCK_FIELDS: &[&str] = &["id", "cron", "timezone", "due_input"];

/// Add a schedule: the host starts the workflow at each due time of its
/// `schedule:` block (docs/workflows.md). The query's fields set or replace
/// the block's.
#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules",
    params(
        ("cron" = Option<String>, Query, description = "The cron pattern (5 fields, or 6 with seconds first)"),
        ("timezone" = Option<String>, Query, description = "An IANA time zone (default UTC)"),
        ("id" = Option<String>, Query, description = "The schedule's id (default: the workflow's id, or its name as an id)"),
        ("due_input" = Option<String>, Query, description = "A declared string input that gets each run's due time"),
        ("input" = Option<Vec<String>>, Query, explode, description = "A value for one of the workflow's `inputs`, as NAME=VALUE (repeatable)"),
        ("replace" = Option<bool>, Query, description = "Replace this token's schedule of the same id (it keeps its last due time)")),
    request_body(description = "The workflow, as a workflow file has it (JSON or YAML)", content((schema::WorkflowDocument = "application/json"), (schema::WorkflowDocument = "application/yaml"))),
    responses(
        (status = 201, description = "Kept; its runs start at their due times", body = ScheduleInfo),
        (status = 422, description = "Not a valid workflow or schedule: the problems say where", body = ApiError),
        (status = 409, description = "The id is taken", body = ApiError),
        (status = 429, description = "The host keeps as many schedules as it allows", body = ApiError),
        (status = 413, description = "The workflow is over 1 MiB as JSON", body = ApiError),
        (status = 400, description = "Not JSON or YAML", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn add_schedule(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, HeaderMap, axum::Json<ScheduleInfo>), ApiError> {
    const ORIGIN: &str = "POST /api/v1/schedules";
    let caller = auth.may(Action::Submit)?;
    let (overrides, replace) = block_fields(query)?;
    let tree = body_tree(&headers, body, ORIGIN).await?;
    let info = api.core.add_schedule(caller, ORIGIN, tree, overrides, replace).await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = format!("{BASE}/schedules/{}", info.schedule_id).parse() {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, axum::Json(info)))
}

/// The query of `POST /api/v1/schedules`: fields of the `schedule:` block
/// (`input=NAME=VALUE` pairs as its `inputs`), and `replace`.
fn block_fields(query: Vec<(String, String)>) -> Result<(Map<String, Value>, bool), ApiError> {
    let bad = |message: String| ApiError::new(errors::INVALID_PARAMS, format!("POST /api/v1/schedules: {message}"));
    let mut block = Map::new();
    let mut pairs = Vec::new();
    let mut replace = false;
    super::refuse_repeats("POST /api/v1/schedules", &query, &["input"])?;
    for (key, value) in query {
        match key.as_str() {
            "input" => pairs.push(value),
            "replace" => {
                replace = value.parse().map_err(|_| {
                    bad(format!("replace must be true or false, got '{}'", crate::text::excerpt(&value)))
                })?
            }
            field if BLOCK_FIELDS.contains(&field) => {
                block.insert(key, Value::String(value));
            }
            other => {
                return Err(bad(format!(
                    "unknown query field '{}'; the fields are: {}, input, replace",
                    crate::text::excerpt(other),
                    BLOCK_FIELDS.join(", ")
                )));
            }
        }
    }
    if !pairs.is_empty() {
        let inputs = workflow::inputs::from_pairs(&pairs).map_err(|e| bad(format!("input {e}")))?;
        block.insert("inputs".into(), Value::Object(inputs));
    }
    Ok((block, replace))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Schedules {
    schedules: Vec<ScheduleInfo>,
}

/// The schedules this token may see (admins: all), by id.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, body = Schedules), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn list_schedules(State(api): State<Arc<HttpTransport>>, auth: Authenticated) -> ApiResult<Schedules> {
    let caller = auth.may(Action::Read)?;
    Ok(axum::Json(Schedules { schedules: api.core.schedules(caller).await }))
}

fn no_schedule(id: &str) -> ApiError {
    ApiError::new(errors::NOT_FOUND, format!("no schedule '{}'", crate::text::excerpt(id)))
}

/// One schedule: its pattern, next and last due times, and last run.
#[utoipa::path(get, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule id")),
    responses((status = 200, body = ScheduleInfo), (status = 404, body = ApiError), (status = 401, body = ApiError)))]
pub(super) async fn get_schedule(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<ScheduleInfo> {
    let caller = auth.may(Action::Read)?;
    api.core.schedule(caller, &id).await.map(axum::Json).ok_or_else(|| no_schedule(&id))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Removed {
    schedule_id: String,
    removed: bool,
}

/// Remove a schedule; the runs it started go on.
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule id")),
    responses((status = 200, body = Removed), (status = 404, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn remove_schedule(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Removed> {
    let caller = auth.may(Action::Cancel)?;
    match api.core.remove_schedule(caller, &id).await? {
        Some(schedule_id) => Ok(axum::Json(Removed { schedule_id, removed: true })),
        None => Err(no_schedule(&id)),
    }
}
