//! The daemon's shared state and the operations both transports offer:
//! submit, read, list and cancel workflows, and describe the providers,
//! protocols and plugins. Socket.IO handlers and HTTP routes parse their
//! requests and call these; authorization by role happens before (each
//! transport asks [`Caller::may`]), ownership here.
//!
//! It knows no transport: no sockets, rooms or HTTP types.

use super::events::EventLog;
use super::rpc::{RpcError, errors};
use super::socket::Sockets;
use crate::auth::{self, Caller};
use crate::engine::{Engine, EngineError, Submitted};
use crate::listing::{ListQuery, Listed, WorkflowSummary};
use crate::model::{Workflow, WorkflowStatus};
use crate::plugins::{PluginSet, PluginStatus};
use crate::registry::{ProviderKind, Registry};
use crate::report::RunReport;
use crate::store::Store;
use crate::workflow::{self, Catalog};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// State shared by the handlers of both transports.
pub struct Host {
    pub(super) engine: Engine,
    /// Reports of finished workflows (and lists of them) come from here.
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) registry: Arc<Registry>,
    /// The WASM plugins, kept in step with the plugins directory.
    pub(super) plugins: Arc<PluginSet>,
    /// What the Socket.IO transport keeps per socket.
    pub(super) sockets: Sockets,
    /// Recent events, numbered, for server-sent event streams.
    pub(super) events: EventLog,
    /// The places for server-sent event streams.
    pub(super) streams: StreamSlots,
    /// Each client token's share of them.
    pub(super) stream_shares: super::quota::Shares,
    /// Each token's turns to build reports.
    pub(super) report_turns: super::quota::Turns,
    /// The bytes of request bodies read at once.
    pub(super) body_bytes: super::quota::BodyBytes,
    /// Most workflows one client token may have running.
    pub(super) workflows_per_token: usize,
    pub(super) policy: Arc<auth::Policy>,
    pub(super) schedules: super::schedules::Schedules,
    /// The port the daemon listens on: its own pages' origins name it.
    pub(super) port: u16,
    pub(super) shutting_down: AtomicBool,
}

/// Most server-sent event streams open at once; one more is answered 429.
/// Every append to the event log wakes every stream, and each holds a file.
pub const MAX_STREAMS: usize = 1000;

/// One permit per server-sent event stream that may be open at once: a
/// stream holds its permit while it is open.
pub(super) struct StreamSlots {
    permits: Arc<tokio::sync::Semaphore>,
    capacity: usize,
}

impl StreamSlots {
    pub(super) fn new(capacity: usize) -> Self {
        Self { permits: Arc::new(tokio::sync::Semaphore::new(capacity)), capacity }
    }

    /// A place for one more stream, if there is one. The last twentieth
    /// of the places are kept for admins (`exempt`): clients filling the
    /// rest do not lock the operator and the dashboard out.
    pub(super) fn take(&self, exempt: bool) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kept = if exempt { 0 } else { self.capacity / 20 };
        if self.permits.available_permits() <= kept {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Streams open now.
    pub(super) fn open(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }
}

/// One provider, as `list_providers` and `GET /api/v1/providers` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    pub provider_id: String,
    pub protocol_id: String,
    pub name: String,
    pub version: String,
    pub methods: Vec<String>,
    #[schema(value_type = String)]
    pub kind: ProviderKind,
    /// Calls it takes at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// Calls it runs now.
    pub in_flight: usize,
}

/// One protocol: its methods and who serves it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProtocolInfo {
    pub protocol_id: String,
    pub methods: Vec<String>,
    pub providers: Vec<String>,
    /// The JSON Schema of each method's params, for the methods whose
    /// provider declares one (the first provider's, when several do).
    #[schema(value_type = Object)]
    pub params_schemas: BTreeMap<String, crate::schema::ParamsSchema>,
}

/// The plugins and the directory they are loaded from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginsInfo {
    pub plugins: Vec<PluginStatus>,
    pub directory: String,
}

impl Host {
    pub(super) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Validate a workflow tree exactly as `gleitzeit run` does; the
    /// problems go into the error's `data.problems`.
    /// The workflow `tree` describes, its inputs bound to `inputs`, once
    /// it is valid and its protocols are served.
    pub(super) fn validated(
        &self,
        origin: &str,
        tree: serde_json::Value,
        inputs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Workflow, RpcError> {
        let mut workflow = workflow::from_value(origin, tree).map_err(invalid)?;
        workflow::inputs::bind(origin, &mut workflow, inputs).map_err(invalid)?;
        workflow::check_catalog(origin, &workflow, self.registry.as_ref() as &dyn Catalog).map_err(invalid)?;
        Ok(workflow)
    }

    /// Accept a validated workflow as `caller`'s.
    pub(super) async fn submit(&self, caller: &Caller, mut workflow: Workflow) -> Result<Submitted, RpcError> {
        workflow.owner = caller.owner();
        workflow.id = caller.own_id(&workflow.id).into_owned();
        if self.shutting_down() {
            return Err(RpcError::new(errors::SHUTTING_DOWN, "the host is shutting down and takes no new work"));
        }
        let quota = (!caller.sees_all()).then_some(self.workflows_per_token);
        self.engine.submit_within(workflow, quota).await.map_err(|e| match e {
            EngineError::DuplicateId(_) | EngineError::FinishedId(_) => RpcError::new(errors::CONFLICT, e.to_string()),
            EngineError::TooLarge(_) => RpcError::new(errors::TOO_LARGE, e.to_string()),
            EngineError::Busy(_) => RpcError::new(errors::BUSY, e.to_string()),
            EngineError::Stopped | EngineError::Store(_) => RpcError::internal(e),
        })
    }

    /// The report of `caller`'s workflow `id` (running or finished), if
    /// `caller` may see it: to anyone else it does not exist.
    pub(super) async fn report(&self, caller: &Caller, id: &str) -> Result<Option<RunReport>, RpcError> {
        for id in caller.named_ids(id) {
            if let Some(report) = self.report_of(&id).await? {
                return Ok(Some(report).filter(|r| caller.sees(r.owner.as_deref())));
            }
        }
        Ok(None)
    }

    /// The report of the workflow the host keeps as `id`, from the engine
    /// or the store.
    async fn report_of(&self, id: &str) -> Result<Option<RunReport>, RpcError> {
        let live = self.engine.workflow(id).await.map_err(RpcError::internal)?;
        match (live, &self.store) {
            (Some(report), _) => Ok(Some(report.as_ref().clone())),
            (None, Some(store)) => {
                let (store, wanted) = (store.clone(), id.to_owned());
                tokio::task::spawn_blocking(move || store.report(&wanted))
                    .await
                    .map_err(RpcError::internal)?
                    .map_err(RpcError::internal)
            }
            (None, None) => Ok(None),
        }
    }

    /// The workflows `query` asks for among those `caller` may see: from
    /// the store when there is one (running ones with their live counts),
    /// else from the engine's memory.
    pub(super) async fn list(&self, caller: &Caller, mut query: ListQuery) -> Result<Listed, RpcError> {
        if !caller.sees_all() {
            query.owner = caller.owner();
        }
        let live = self.engine.workflows().await.map_err(RpcError::internal)?;
        let Some(store) = &self.store else { return Ok(query.page(live)) };
        let (store, asked) = (store.clone(), query.clone());
        let mut listed = tokio::task::spawn_blocking(move || store.list(&asked))
            .await
            .map_err(RpcError::internal)?
            .map_err(RpcError::internal)?;
        let live: HashMap<String, WorkflowSummary> = live.into_iter().map(|w| (w.workflow_id.clone(), w)).collect();
        for listed in listed.workflows.iter_mut().filter(|w| w.status == WorkflowStatus::Running) {
            if let Some(now) = live.get(&listed.workflow_id) {
                listed.summary = now.summary.clone();
            }
        }
        Ok(listed)
    }

    /// Keep the schedule of the workflow `tree` as `caller`'s: its
    /// `schedule:` block with `overrides` (fields of that block, given
    /// beside the file) over it, validated as a submission is.
    pub(super) async fn add_schedule(
        &self,
        caller: &Caller,
        origin: &str,
        tree: serde_json::Value,
        overrides: serde_json::Map<String, serde_json::Value>,
        replace: bool,
    ) -> Result<super::schedules::ScheduleInfo, RpcError> {
        if self.shutting_down() {
            return Err(RpcError::new(errors::SHUTTING_DOWN, "the host is shutting down and takes no new work"));
        }
        let workflow = self.validated(origin, workflow::schedule_overlay(tree, overrides), serde_json::Map::new())?;
        self.schedules.add(caller, workflow, replace).await
    }

    /// Cancel `caller`'s running workflow `id`: the id the host keeps it
    /// under; none if there is no such workflow running.
    pub(super) async fn cancel(&self, caller: &Caller, id: &str) -> Result<Option<String>, RpcError> {
        for id in caller.named_ids(id) {
            let live = self.engine.workflow(&id).await.map_err(RpcError::internal)?;
            if live.is_some_and(|report| caller.sees(report.owner.as_deref())) {
                let cancelled = self.engine.cancel(&id).await.map_err(RpcError::internal)?;
                return Ok(cancelled.then(|| id.into_owned()));
            }
        }
        Ok(None)
    }

    /// Whether a provider other than a remote one (a WASM plugin) serves
    /// `protocol`.
    pub(super) fn wasm_serves(&self, protocol: &str) -> bool {
        self.registry.providers().iter().any(|p| p.spec().protocol == protocol && p.kind() != ProviderKind::Remote)
    }

    pub(super) fn providers(&self) -> Vec<ProviderInfo> {
        self.registry
            .providers()
            .iter()
            .map(|p| {
                let spec = p.spec();
                let load = p.load();
                ProviderInfo {
                    provider_id: p.id().to_string(),
                    protocol_id: spec.protocol.clone(),
                    name: spec.name.clone(),
                    version: spec.version.clone(),
                    methods: spec.methods.iter().map(|m| m.name.clone()).collect(),
                    kind: p.kind(),
                    max_concurrent: load.capacity,
                    in_flight: load.in_flight,
                }
            })
            .collect()
    }

    pub(super) fn protocols(&self) -> Vec<ProtocolInfo> {
        let mut by_protocol: BTreeMap<String, ProtocolInfo> = BTreeMap::new();
        for p in self.registry.providers() {
            let protocol = &p.spec().protocol;
            let entry = by_protocol.entry(protocol.clone()).or_insert_with(|| ProtocolInfo {
                protocol_id: protocol.clone(),
                methods: Vec::new(),
                providers: Vec::new(),
                params_schemas: BTreeMap::new(),
            });
            for method in &p.spec().methods {
                entry.methods.push(method.name.clone());
                if let Some(schema) = &method.params_schema {
                    entry.params_schemas.entry(method.name.clone()).or_insert_with(|| schema.clone());
                }
            }
            entry.providers.push(p.id().to_string());
        }
        let mut protocols: Vec<ProtocolInfo> = by_protocol.into_values().collect();
        for protocol in &mut protocols {
            protocol.methods.sort();
            protocol.methods.dedup();
        }
        protocols
    }

    pub(super) fn plugins(&self) -> PluginsInfo {
        PluginsInfo { plugins: self.plugins.statuses(), directory: self.plugins.dir().display().to_string() }
    }
}

/// A workflow that failed validation, as an error with its problems.
pub(super) fn invalid(e: workflow::WorkflowError) -> RpcError {
    let problems: Vec<serde_json::Value> =
        e.problems().iter().map(|p| json!({ "task": p.task, "field": p.field, "message": p.message })).collect();
    RpcError::new(errors::INVALID_PARAMS, e.to_string()).with_data(json!({ "problems": problems }))
}

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
