//! The HTTP API under `/api/v1` (docs/http.md): the same operations as the
//! Socket.IO events, on the same port, with the same tokens, roles and
//! errors; live events as server-sent event streams ([`stream`]). Routes
//! are declared with `utoipa` so that the OpenAPI document at
//! `/api/v1/openapi.json` is generated from them ([`openapi`]).
//!
//! It parses requests and shapes answers; what a request does is the
//! [`Core`]'s, who may do it is `auth`'s. It owns what only HTTP keeps
//! ([`HttpTransport`]): the event log its streams read, the places for
//! streams, each token's turns to build reports, the budget of request
//! bodies.

mod error;
mod metrics;
mod schedules;
mod schema;
mod stream;

pub use stream::MAX_STREAMS;

use super::core::{Core, HostSeen, PluginsInfo, ProtocolInfo, ProviderInfo};
use super::events::EventLog;
use super::quota::{BodyBytes, Shares, Turns};
use super::requests::{list_query, one_task_tree};
use super::rpc::errors;
use super::socket::SocketTransport;
use crate::auth::{Action, AuthError, Caller};
use crate::listing::WorkflowSummary;
use crate::report::{RunReport, TaskReport};
use crate::workflow::{self, Format};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
pub use error::ApiError;
use error::ApiResult;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The prefix of every API route.
pub const BASE: &str = "/api/v1";

/// The largest request body read: what a Socket.IO request may be.
const MAX_BODY_BYTES: usize = super::rpc::MAX_REQUEST_BYTES;

/// A request body, or why it could not be read (too large, cut off).
type Body = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Gleitzeit host API", description = "Submit, watch and cancel workflows; keep schedules; list providers, protocols and plugins. Every route but health, readiness and this document takes `Authorization: Bearer TOKEN` (docs/security.md)."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// The `bearer` security scheme the document's routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API's routes and its OpenAPI document, built from the same list.
fn routes() -> (axum::Router<Arc<HttpTransport>>, utoipa::openapi::OpenApi) {
    let routes = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(submit_workflow, list_workflows))
        .routes(routes!(submit_task))
        .routes(routes!(get_workflow))
        .routes(routes!(get_results))
        .routes(routes!(get_task))
        .routes(routes!(cancel_workflow))
        .routes(routes!(rerun_workflow))
        .routes(routes!(schedules::add_schedule, schedules::list_schedules))
        .routes(routes!(schedules::get_schedule, schedules::remove_schedule))
        .routes(routes!(stream::workflow_events))
        .routes(routes!(stream::all_events))
        .routes(routes!(list_providers))
        .routes(routes!(list_protocols))
        .routes(routes!(list_plugins))
        .routes(routes!(list_hosts))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics::metrics));
    let (router, mut document) = routes.split_for_parts();
    utoipa::Modify::modify(&schema::ResponseDescriptions, &mut document);
    (router, document)
}

/// The OpenAPI 3 document of the API (what `/api/v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The HTTP transport's state: the core it calls, and what only HTTP keeps.
pub struct HttpTransport {
    pub(super) core: Arc<Core>,
    /// The Socket.IO transport, for the count of sockets `/metrics` shows.
    sockets: Arc<SocketTransport>,
    /// Recent events, numbered, for server-sent event streams.
    pub(super) events: EventLog,
    /// The places for server-sent event streams.
    streams: stream::StreamSlots,
    /// Each client token's share of them.
    stream_shares: Shares,
    /// Each token's turns to build reports.
    report_turns: Turns,
    /// The bytes of request bodies read at once.
    body_bytes: BodyBytes,
    /// The port the daemon listens on: its own pages' origins name it.
    pub(super) port: u16,
}

/// The limits of the HTTP transport, from the daemon's settings.
pub struct HttpLimits {
    /// Most server-sent event streams open at once.
    pub max_streams: usize,
    /// Most of them one client token may hold.
    pub max_streams_per_token: usize,
    /// With a cluster: where all hosts' streams are counted by token.
    pub streams_pool: Option<Arc<dyn super::quota::Pool>>,
}

impl HttpTransport {
    pub fn new(core: Arc<Core>, sockets: Arc<SocketTransport>, limits: &HttpLimits, port: u16) -> Self {
        Self {
            core,
            sockets,
            events: EventLog::default(),
            streams: stream::StreamSlots::new(limits.max_streams),
            stream_shares: Shares::new(
                "event streams",
                "max_streams_per_token",
                limits.max_streams_per_token,
                limits.streams_pool.clone(),
            ),
            report_turns: Turns::default(),
            body_bytes: BodyBytes::default(),
            port,
        }
    }
}

/// The API router, with the document at `/api/v1/openapi.json`.
pub fn router(api: Arc<HttpTransport>) -> axum::Router {
    let (routes, document) = routes();
    let document = Arc::new(document);
    routes
        .route(
            &format!("{BASE}/openapi.json"),
            axum::routing::get(move || async move { axum::Json(document.as_ref().clone()) }),
        )
        // Set on the routes before they are wrapped in layers.
        .method_not_allowed_fallback(wrong_method)
        // Bodies up to what a Socket.IO request may be; the parser's own
        // budgets bound what is built from them.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(api.clone(), within_body_budget))
        .layer(axum::middleware::map_response(error::in_one_shape))
        .with_state(api)
}

/// Read a request's body only once the host's budget of body bytes has
/// room for it (as its `Content-Length` says; the most a body may be
/// without one), and hold that room until it is answered.
async fn within_body_budget(
    State(api): State<Arc<HttpTransport>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let bytes = match declared {
        Some(bytes) => bytes,
        None if axum::body::HttpBody::is_end_stream(request.body()) => 0,
        None => MAX_BODY_BYTES,
    };
    let _held = api.body_bytes.hold(bytes).await;
    next.run(request).await
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> (StatusCode, ApiError) {
    let path = crate::text::excerpt(uri.path());
    let message = format!("{path} does not take {method}; see {BASE}/openapi.json for the routes");
    (StatusCode::METHOD_NOT_ALLOWED, ApiError::new(errors::METHOD_NOT_FOUND, message))
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    let path = crate::text::excerpt(uri.path());
    ApiError::new(errors::METHOD_NOT_FOUND, format!("no route {path}; see {BASE}/openapi.json for the routes"))
}

/// The caller of a request, from its `Authorization: Bearer` token (any
/// caller when authentication is off). A missing or unknown token is
/// refused here, before the handler runs; the handler asks for its role.
pub struct Authenticated {
    caller: Caller,
    parts: Parts,
}

impl FromRequestParts<Arc<HttpTransport>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<HttpTransport>) -> Result<Self, Self::Rejection> {
        let token = super::bearer(&parts.headers)?;
        match api.core.policy().authenticate(token.as_deref()) {
            Ok(caller) => Ok(Self { caller, parts: parts.clone() }),
            Err(e) => Err(super::refused(parts, &e).into()),
        }
    }
}

impl Authenticated {
    /// The caller, if it may do `action`; a refusal is logged with the peer.
    fn may(&self, action: Action) -> Result<&Caller, ApiError> {
        self.caller.may(action).map(|()| &self.caller).map_err(|e| self.refused(&e))
    }

    fn refused(&self, error: &AuthError) -> ApiError {
        super::refused(&self.parts, error).into()
    }
}

/// The workflow `id` if the caller may see it; otherwise (for anyone else
/// it does not exist) 404.
/// A token's requests build reports a few at a time (each may be as large
/// as a workflow's limit), as over Socket.IO.
async fn visible(api: &HttpTransport, caller: &Caller, id: &str) -> Result<RunReport, ApiError> {
    let _turn = api.report_turns.wait(caller).await;
    api.core.report(caller, id).await?.ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(errors::NOT_FOUND, format!("no workflow '{}'", crate::text::excerpt(id)))
}

/// A request body as a tree: JSON or YAML as `Content-Type` says
/// (`application/json`; `application/yaml`, `application/x-yaml`,
/// `text/yaml`), or, without one, JSON if it starts with `{`.
async fn body_tree(headers: &HeaderMap, body: Body, origin: &'static str) -> Result<Value, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            errors::TOO_LARGE,
            format!("{origin}: the body is larger than {MAX_BODY_BYTES} bytes (64 MiB), the most the host reads"),
        ),
        _ => ApiError::new(errors::INVALID_REQUEST, format!("{origin}: cannot read the body: {}", e.body_text())),
    })?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let format = match media.as_deref() {
        Some("application/json") => Format::Json,
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => Format::Yaml,
        None | Some("") => Format::detect(std::path::Path::new(""), &body),
        Some(other) => {
            return Err(ApiError::new(
                errors::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{origin}: Content-Type '{}' is not read; send application/json or application/yaml",
                    crate::text::excerpt(other)
                ),
            ));
        }
    };
    // Reading text into a tree only fails on syntax (duplicate keys included).
    tokio::task::spawn_blocking(move || workflow::text_tree(origin, &body, format))
        .await
        .map_err(|e| ApiError::from(super::rpc::RpcError::internal(e)))?
        .map_err(|e| ApiError::new(errors::PARSE_ERROR, e.to_string()))
}

/// A workflow the host accepted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Accepted {
    workflow_id: String,
    task_count: usize,
}

/// Submit a workflow: YAML or JSON, as in a workflow file (docs/workflows.md).
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows",
    params(("input" = Option<Vec<String>>, Query, explode, description = "A value for one of the workflow's `inputs`, as NAME=VALUE (repeatable); read by the input's declared type")),
    request_body(description = "The workflow, as a workflow file has it (JSON, or the same as YAML)", content((schema::WorkflowDocument = "application/json"), (schema::WorkflowDocument = "application/yaml"))),
    responses(
        (status = 201, description = "Accepted; it runs now", body = Accepted),
        (status = 422, description = "Not a valid workflow: the problems say where", body = ApiError),
        (status = 409, description = "The id is taken", body = ApiError),
        (status = 400, description = "Not JSON or YAML", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn submit_workflow(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, HeaderMap, axum::Json<Accepted>), ApiError> {
    let caller = auth.may(Action::Submit)?;
    let tree = body_tree(&headers, body, "POST /api/v1/workflows").await?;
    let inputs = query_inputs(query)?;
    let workflow = api.core.validated("POST /api/v1/workflows", tree, inputs)?;
    let task_count = workflow.tasks.len();
    let submitted = api.core.submit(caller, workflow).await?;
    Ok(created(Accepted { workflow_id: submitted.workflow_id, task_count }))
}

/// A query field given twice is an error (422), as a key twice in a
/// document is: which one was meant is not for the host to guess. Those
/// of `may_repeat` are lists (`input=…&input=…`).
pub(super) fn refuse_repeats(route: &str, query: &[(String, String)], may_repeat: &[&str]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    match query.iter().find(|(key, _)| !may_repeat.contains(&key.as_str()) && !seen.insert(key.as_str())) {
        Some((key, _)) => Err(ApiError::new(
            errors::INVALID_PARAMS,
            format!("{route}: query field '{}' is given twice", crate::text::excerpt(key)),
        )),
        None => Ok(()),
    }
}

/// The `input=NAME=VALUE` pairs of a submission's query string.
fn query_inputs(query: Vec<(String, String)>) -> Result<Map<String, Value>, ApiError> {
    let pairs: Vec<String> = query.into_iter().filter(|(key, _)| key == "input").map(|(_, pair)| pair).collect();
    crate::workflow::inputs::from_pairs(&pairs)
        .map_err(|e| ApiError::new(errors::INVALID_PARAMS, format!("POST /api/v1/workflows: input {e}")))
}

fn created<T: HasWorkflowId>(body: T) -> (StatusCode, HeaderMap, axum::Json<T>) {
    let mut headers = HeaderMap::new();
    if let Ok(location) = format!("{BASE}/workflows/{}", body.workflow_id()).parse() {
        headers.insert(header::LOCATION, location);
    }
    (StatusCode::CREATED, headers, axum::Json(body))
}

trait HasWorkflowId {
    fn workflow_id(&self) -> &str;
}

impl HasWorkflowId for Accepted {
    fn workflow_id(&self) -> &str {
        &self.workflow_id
    }
}

/// A task the host accepted, as a one-task workflow.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TaskAccepted {
    workflow_id: String,
    task_id: String,
}

impl HasWorkflowId for TaskAccepted {
    fn workflow_id(&self) -> &str {
        &self.workflow_id
    }
}

/// Submit one task: a workflow of that task alone (its `workflow_id`, if
/// given, names the workflow).
#[utoipa::path(post, path = "/api/v1/tasks", tag = "workflows",
    request_body(description = "One task, as in a workflow file's `tasks`", content((schema::TaskDocument = "application/json"), (schema::TaskDocument = "application/yaml"))),
    responses(
        (status = 201, description = "Accepted", body = TaskAccepted),
        (status = 422, body = ApiError), (status = 409, body = ApiError), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn submit_task(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, HeaderMap, axum::Json<TaskAccepted>), ApiError> {
    let caller = auth.may(Action::Submit)?;
    let task = body_tree(&headers, body, "POST /api/v1/tasks").await?;
    if !task.is_object() {
        return Err(ApiError::new(
            errors::INVALID_REQUEST,
            "POST /api/v1/tasks: the body must be one task (an object)",
        ));
    }
    let workflow = api.core.validated("POST /api/v1/tasks", one_task_tree(task), Default::default())?;
    let task_id = workflow.tasks[0].id.clone();
    let submitted = api.core.submit(caller, workflow).await?;
    Ok(created(TaskAccepted { workflow_id: submitted.workflow_id, task_id }))
}

/// A page of workflows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct WorkflowPage {
    workflows: Vec<WorkflowSummary>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// Filters of a workflow listing.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read as a map by `list_query`; declared for the document
struct ListParams {
    /// running, completed, failed or cancelled
    #[param(value_type = Option<crate::model::WorkflowStatus>)]
    status: Option<String>,
    /// Names containing this, ignoring case
    name: Option<String>,
    /// Submitted at or after (RFC 3339)
    since: Option<String>,
    /// Submitted before (RFC 3339)
    until: Option<String>,
    /// `next_cursor` of the page before
    cursor: Option<String>,
    /// 1 to 1000 (default 100)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Workflows this token may see, newest submitted first.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(ListParams),
    responses((status = 200, body = WorkflowPage), (status = 422, body = ApiError), (status = 401, body = ApiError)))]
async fn list_workflows(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<WorkflowPage> {
    let caller = auth.may(Action::Read)?;
    refuse_repeats("GET /api/v1/workflows", &params, &[])?;
    let fields: Map<String, Value> = params.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let query = list_query(&fields, DEFAULT_PAGE)?;
    let listed = api.core.list(caller, query).await?;
    Ok(axum::Json(WorkflowPage { workflows: listed.workflows, next_cursor: listed.next.map(|c| c.encode()) }))
}

/// Workflows a page lists when the request names no `limit`.
const DEFAULT_PAGE: usize = 100;

/// A workflow's report: status, counts and each task's status, attempts,
/// timings and error. Results are left out (`result` is null), and so are
/// each task's params and history of calls: they are at `/results` and
/// `/tasks/{task}`.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "The workflow id")),
    responses((status = 200, body = RunReport), (status = 404, body = ApiError), (status = 401, body = ApiError)))]
async fn get_workflow(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<RunReport> {
    let caller = auth.may(Action::Read)?;
    let mut report = visible(&api, caller, &id).await?;
    outline(&mut report);
    Ok(axum::Json(report))
}

/// A report as the API shows it whole: without each task's result, params
/// and calls, which a 10,000-task workflow would make large (a task's
/// route has them).
fn outline(report: &mut RunReport) {
    for task in &mut report.tasks {
        task.result = None;
        task.params = None;
        task.history = Vec::new();
    }
}

/// One task in full: its status and timings, the params it was called with
/// (references resolved), every call made for it (attempt, provider,
/// start, duration, error) and its result.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/tasks/{task}", tag = "workflows",
    params(("id" = String, Path, description = "The workflow id"), ("task" = String, Path, description = "The task id")),
    responses((status = 200, body = TaskReport), (status = 404, body = ApiError), (status = 401, body = ApiError)))]
async fn get_task(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path((id, task)): Path<(String, String)>,
) -> ApiResult<TaskReport> {
    let caller = auth.may(Action::Read)?;
    let report = visible(&api, caller, &id).await?;
    let found = report.tasks.into_iter().find(|t| t.id == task);
    found.map(axum::Json).ok_or_else(|| no_task(&id, &task))
}

fn no_task(workflow_id: &str, task: &str) -> ApiError {
    let message =
        format!("workflow '{}' has no task '{}'", crate::text::excerpt(workflow_id), crate::text::excerpt(task));
    ApiError::new(errors::NOT_FOUND, message)
}

/// A workflow's results, by task id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Results {
    workflow_id: String,
    #[schema(value_type = String)]
    status: crate::model::WorkflowStatus,
    /// Each completed task's result (tasks without one are left out).
    results: Map<String, Value>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ResultsParams {
    /// Only this task's result
    task: Option<String>,
}

/// A workflow's results, whole (or one task's with `?task=ID`).
#[utoipa::path(get, path = "/api/v1/workflows/{id}/results", tag = "workflows",
    params(("id" = String, Path, description = "The workflow id"), ResultsParams),
    responses((status = 200, body = Results), (status = 404, body = ApiError), (status = 401, body = ApiError)))]
async fn get_results(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(params): Query<ResultsParams>,
) -> ApiResult<Results> {
    let caller = auth.may(Action::Read)?;
    let report = visible(&api, caller, &id).await?;
    if let Some(task) = &params.task
        && !report.tasks.iter().any(|t| &t.id == task)
    {
        return Err(no_task(&id, task));
    }
    let results = report
        .tasks
        .into_iter()
        .filter(|t| params.task.as_ref().is_none_or(|wanted| &t.id == wanted))
        .filter_map(|t| Some((t.id, t.result?)))
        .collect();
    Ok(axum::Json(Results { workflow_id: report.workflow_id, status: report.status, results }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Cancelled {
    workflow_id: String,
    cancelled: bool,
}

/// Cancel a running workflow: its running tasks are told to stop, the
/// rest are not run.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = String, Path, description = "The workflow id")),
    responses((status = 200, body = Cancelled), (status = 404, description = "No such running workflow", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn cancel_workflow(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Cancelled> {
    let caller = auth.may(Action::Cancel)?;
    if let Some(workflow_id) = api.core.cancel(caller, &id).await? {
        Ok(axum::Json(Cancelled { workflow_id, cancelled: true }))
    } else {
        Err(ApiError::new(errors::NOT_FOUND, format!("no running workflow '{}'", crate::text::excerpt(&id))))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Rerun {
    /// The new workflow.
    workflow_id: String,
    /// The workflow it reruns.
    rerun_of: String,
}

impl HasWorkflowId for Rerun {
    fn workflow_id(&self) -> &str {
        &self.workflow_id
    }
}

/// Start a new workflow from a failed or cancelled one: its completed tasks
/// keep their results (each marked `taken_from` it), its failed, skipped
/// and cancelled tasks run again; `?from=TASK` runs that task and every
/// task after it again too (also of a completed workflow). The new run
/// names its origin (`rerun_of`); the old one is unchanged.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/rerun", tag = "workflows",
    params(("id" = String, Path, description = "The workflow id"),
        ("from" = Option<String>, Query, description = "A task to run again with every task after it")),
    responses((status = 201, body = Rerun), (status = 404, description = "No such workflow", body = ApiError),
        (status = 409, description = "It still runs, or completed and no `from` was given", body = ApiError),
        (status = 422, description = "`from` names no task of it", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn rerun_workflow(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<(StatusCode, HeaderMap, axum::Json<Rerun>), ApiError> {
    let caller = auth.may(Action::Submit)?;
    let route = "POST /api/v1/workflows/{id}/rerun";
    refuse_repeats(route, &query, &[])?;
    if let Some((key, _)) = query.iter().find(|(key, _)| key != "from") {
        let message = format!("{route}: unknown query field '{}'; the one known is from", crate::text::excerpt(key));
        return Err(ApiError::new(errors::INVALID_PARAMS, message));
    }
    let from = query.into_iter().find(|(key, _)| key == "from").map(|(_, task)| task);
    let rerun = api.core.rerun(caller, &id, from.as_deref()).await?;
    Ok(created(Rerun { workflow_id: rerun.submitted.workflow_id, rerun_of: rerun.rerun_of }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Providers {
    providers: Vec<ProviderInfo>,
}

/// Every provider: WASM plugins and remote peers (admin tokens).
#[utoipa::path(get, path = "/api/v1/providers", tag = "providers",
    responses((status = 200, body = Providers), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn list_providers(State(api): State<Arc<HttpTransport>>, auth: Authenticated) -> ApiResult<Providers> {
    auth.may(Action::Observe)?;
    Ok(axum::Json(Providers { providers: api.core.providers() }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Hosts {
    hosts: Vec<HostSeen>,
}

/// The hosts of the cluster, this one first: when each was last seen,
/// whether its lease holds, its providers and plugins, what it runs (this
/// host alone without `--cluster`; admin tokens).
#[utoipa::path(get, path = "/api/v1/hosts", tag = "providers",
    responses((status = 200, body = Hosts), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn list_hosts(State(api): State<Arc<HttpTransport>>, auth: Authenticated) -> ApiResult<Hosts> {
    auth.may(Action::Observe)?;
    Ok(axum::Json(Hosts { hosts: api.core.hosts().await? }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Protocols {
    protocols: Vec<ProtocolInfo>,
}

/// Every protocol served, with its methods.
#[utoipa::path(get, path = "/api/v1/protocols", tag = "providers",
    responses((status = 200, body = Protocols), (status = 401, body = ApiError)))]
async fn list_protocols(State(api): State<Arc<HttpTransport>>, auth: Authenticated) -> ApiResult<Protocols> {
    auth.may(Action::ListProtocols)?;
    Ok(axum::Json(Protocols { protocols: api.core.protocols() }))
}

/// The WASM plugins: bundled and from the plugins directory, with their
/// state, version, load time and last error (admin tokens).
#[utoipa::path(get, path = "/api/v1/plugins", tag = "providers",
    responses((status = 200, body = PluginsInfo), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn list_plugins(State(api): State<Arc<HttpTransport>>, auth: Authenticated) -> ApiResult<PluginsInfo> {
    auth.may(Action::Observe)?;
    Ok(axum::Json(api.core.plugins()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    status: String,
}

/// Whether the daemon answers (no token needed).
#[utoipa::path(get, path = "/api/v1/health", tag = "health", security(()),
    responses((status = 200, body = Health)))]
async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok".into() })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Readiness {
    ready: bool,
    /// Each check: "ok", or what is wrong.
    checks: Map<String, Value>,
}

/// Whether the daemon takes work: not shutting down, and its store
/// answers (no token needed).
#[utoipa::path(get, path = "/api/v1/ready", tag = "health", security(()),
    responses((status = 200, body = Readiness), (status = 503, description = "Not ready: the checks say why", body = Readiness)))]
async fn ready(State(api): State<Arc<HttpTransport>>) -> (StatusCode, axum::Json<Readiness>) {
    let mut checks = Map::new();
    checks.insert("accepting".into(), json!(if api.core.shutting_down() { "shutting down" } else { "ok" }));
    if let Some(failing) = api.core.engine().store_failing() {
        checks.insert("store".into(), json!(failing));
    } else if let Some(store) = &api.core.store {
        let answer = tokio::time::timeout(READY_STORE_TIMEOUT, store.call("answer", |store| store.has("")));
        let state = match answer.await {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("{} did not answer within {} s", store.target(), READY_STORE_TIMEOUT.as_secs()),
        };
        checks.insert("store".into(), json!(state));
    }
    let ready = checks.values().all(|v| v == "ok");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(Readiness { ready, checks }))
}

/// How long readiness waits for the store.
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
