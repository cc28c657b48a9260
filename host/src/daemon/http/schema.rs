//! Schemas of the request bodies, for the OpenAPI document only: bodies are
//! read by the workflow parser (`workflow`, which reports every problem at
//! once, with aliases and typo hints), never through these types. They say
//! what docs/workflows.md says, in JSON Schema, for clients and their
//! generators.
#![allow(dead_code)] // described, not constructed

use serde_json::Value;

/// A workflow, as a workflow file holds it (docs/workflows.md).
#[derive(utoipa::ToSchema)]
pub struct WorkflowDocument {
    /// Up to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// Generated (`wf-…`) if absent; taken while the host keeps a workflow with it.
    #[schema(pattern = "^[A-Za-z0-9_-]+$", max_length = 200)]
    #[schema(nullable = false)]
    id: Option<String>,
    #[schema(nullable = false)]
    description: Option<String>,
    #[schema(nullable = false)]
    version: Option<String>,
    /// The default for its tasks.
    #[schema(nullable = false)]
    priority: Option<PriorityName>,
    /// At most this many of its tasks queued or running at once.
    #[schema(minimum = 1, maximum = 100000)]
    #[schema(nullable = false)]
    max_parallel: Option<u32>,
    /// The whole workflow's limit: seconds, or text such as "10m".
    #[schema(value_type = Option<String>, nullable = false)]
    timeout: Option<Value>,
    #[schema(nullable = false, value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Its parameters by name: a type (`string`, `integer`, `number`,
    /// `boolean`, `array`, `object`) or `{type, default, description}`;
    /// tasks read them as `${inputs.NAME}`, `?input=NAME=VALUE` gives them.
    #[schema(nullable = false, value_type = Option<Object>)]
    inputs: Option<Value>,
    /// `{ttl}`: every task's results are reused within it (a task's own
    /// `cache` wins).
    #[schema(nullable = false, value_type = Option<Object>)]
    cache: Option<Value>,
    #[schema(min_items = 1)]
    tasks: Vec<TaskDocument>,
}

/// One task of a workflow; `POST /api/v1/tasks` also takes `workflow_id`.
#[derive(utoipa::ToSchema)]
pub struct TaskDocument {
    /// Letters, digits, '_' and '-'; from the name if absent.
    #[schema(pattern = "^[A-Za-z0-9_-]+$")]
    #[schema(nullable = false)]
    id: Option<String>,
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(nullable = false)]
    description: Option<String>,
    /// `name/version`, as in `echo/v1`.
    #[schema(pattern = "^[a-z][a-z0-9_-]*/[a-z0-9_-]+$", max_length = 100)]
    protocol: String,
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_./:-]*$", max_length = 200)]
    method: String,
    /// May hold `${task.result.field}` references to its ancestors.
    #[schema(nullable = false, value_type = Option<Object>)]
    params: Option<Value>,
    /// Ids (or unique names) of the tasks it runs after.
    #[schema(nullable = false)]
    dependencies: Option<Vec<String>>,
    #[schema(nullable = false)]
    priority: Option<PriorityName>,
    /// Seconds per attempt, or text such as "30s".
    #[schema(value_type = Option<String>, nullable = false)]
    timeout: Option<Value>,
    #[schema(nullable = false, value_type = Option<Object>)]
    retry: Option<Value>,
    #[schema(nullable = false, value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Run once per item: a list, or a string holding one reference that
    /// gives a list (`${outline.result.items}`); params see `${item}` and
    /// `${item_index}`.
    #[schema(nullable = false, value_type = Option<Vec<Object>>, max_items = 100000)]
    for_each: Option<Value>,
    /// With `for_each`: at most this many items queued or running at once.
    #[schema(nullable = false, minimum = 1, maximum = 100000)]
    max_parallel: Option<u32>,
    /// With `for_each`: complete although some items failed.
    #[schema(nullable = false)]
    allow_failures: Option<bool>,
    /// A CEL condition over `${…}` references; false skips the task.
    #[schema(nullable = false, max_length = 4096)]
    when: Option<String>,
    /// One file the params read as `${item.text}` or `${item.base64}`: a
    /// relative path, or `{path, dir}` naming a `--files-dir` directory.
    #[schema(nullable = false, value_type = Option<Object>)]
    file: Option<Value>,
    /// `{key, max}`: at most `max` tasks whose key (text that may hold
    /// `${…}`) is the same run at once, across workflows.
    #[schema(nullable = false, value_type = Option<Object>)]
    concurrency: Option<Value>,
    /// `{ttl}` (seconds or text such as "1d"): reuse the result of the same
    /// call made within it; `false` to opt out of the workflow's.
    #[schema(nullable = false, value_type = Option<Object>)]
    cache: Option<Value>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PriorityName {
    Urgent,
    High,
    Normal,
    Low,
}

/// Fills in the `description` OpenAPI requires of each response where a
/// route gave none: the status's reason phrase.
pub struct ResponseDescriptions;

impl utoipa::Modify for ResponseDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    if let utoipa::openapi::RefOr::T(response) = response
                        && response.description.is_empty()
                    {
                        let reason = status.parse::<u16>().ok().and_then(|s| axum::http::StatusCode::from_u16(s).ok());
                        response.description = reason.and_then(|s| s.canonical_reason()).unwrap_or("Answer").to_owned();
                    }
                }
            }
        }
    }
}
