//! The operations both transports offer, over the engine, the store, the
//! registry, the plugins and the schedules: submit, read, list and cancel
//! workflows, keep schedules, and describe the providers, protocols and
//! plugins. Socket.IO handlers and HTTP routes parse their requests and
//! call these; authorization by role happens before (each transport asks
//! [`Caller::may`]), ownership here.
//!
//! It knows no transport: no sockets, rooms, streams or HTTP types. Each
//! transport keeps its own per-connection and per-stream state beside an
//! `Arc<Core>`.

use super::cluster::{Figures, Membership, Parts, What};
use super::intake::Intake;
use super::rpc::{RpcError, errors};
use super::schedules::{ScheduleInfo, Schedules};
use crate::auth::{self, Caller};
use crate::engine::{Engine, Submitted};
use crate::listing::{ListQuery, Listed, WorkflowSummary};
use crate::model::{Workflow, WorkflowStatus};
use crate::plugins::{PluginSet, PluginStatus};
use crate::registry::{ProviderKind, Registry};
use crate::report::RunReport;
use crate::store::AsyncStore;
use crate::store::redis::cluster::Cluster;
pub use crate::store::redis::cluster::HostSeen;
use crate::workflow::{self, Catalog};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What both transports share: the host without its transports.
pub struct Core {
    /// The way into the engine (the schedules hold a copy).
    pub(super) intake: Intake,
    /// Reports of finished workflows (and lists of them) come from here.
    pub(super) store: Option<AsyncStore>,
    pub(super) registry: Arc<Registry>,
    /// The WASM plugins, kept in step with the plugins directory.
    pub(super) plugins: Arc<PluginSet>,
    pub(super) schedules: Arc<Schedules>,
    /// This host among the hosts of its cluster (or alone).
    pub(super) membership: Arc<Membership>,
}

/// How long a cancellation asked of another host of the cluster is waited
/// for before the answer (it holds after that too: it is stored).
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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

impl Core {
    pub(super) fn engine(&self) -> &Engine {
        &self.intake.engine
    }

    pub(super) fn policy(&self) -> &auth::Policy {
        &self.intake.policy
    }

    pub(super) fn shutting_down(&self) -> bool {
        self.intake.shutting_down()
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
    pub(super) async fn submit(&self, caller: &Caller, workflow: Workflow) -> Result<Submitted, RpcError> {
        self.intake.submit(caller, workflow).await
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
        if let Some(live) = self.engine().workflow(id).await.map_err(RpcError::internal)? {
            return Ok(Some(live.as_ref().clone()));
        }
        let Some(store) = &self.store else { return Ok(None) };
        let (wanted, clustered) = (id.to_owned(), self.membership.cluster().is_some());
        let stored = move |store: &dyn crate::store::Store| {
            if let Some(report) = store.report(&wanted)? {
                return Ok(Some(report));
            }
            if !clustered {
                return Ok(None);
            }
            // Another host of the cluster drives it: its state as stored.
            if let Some(saved) = store.unfinished_one(&wanted)? {
                return Ok(Some(crate::engine::stored_snapshot(saved)));
            }
            store.report(&wanted) // it finished meanwhile
        };
        store.call("read a report", stored).await.map_err(RpcError::internal)
    }

    /// The workflows `query` asks for among those `caller` may see: from
    /// the store when there is one (running ones with their live counts),
    /// else from the engine's memory.
    pub(super) async fn list(&self, caller: &Caller, mut query: ListQuery) -> Result<Listed, RpcError> {
        if !caller.sees_all() {
            query.owner = caller.owner();
        }
        let live = self.engine().workflows().await.map_err(RpcError::internal)?;
        let Some(store) = &self.store else { return Ok(query.page(live)) };
        let asked = query.clone();
        let mut listed =
            store.call("list workflows", move |store| store.list(&asked)).await.map_err(RpcError::internal)?;
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
    ) -> Result<ScheduleInfo, RpcError> {
        self.intake.open()?;
        let workflow = self.validated(origin, workflow::schedule_overlay(tree, overrides), serde_json::Map::new())?;
        self.schedules.add(caller, workflow, replace).await
    }

    /// The schedules `caller` may see, by id.
    pub(super) async fn schedules(&self, caller: &Caller) -> Vec<ScheduleInfo> {
        self.schedules.list(caller).await
    }

    /// `caller`'s schedule `id`, if it may see it.
    pub(super) async fn schedule(&self, caller: &Caller, id: &str) -> Option<ScheduleInfo> {
        self.schedules.get(caller, id).await
    }

    /// Forget `caller`'s schedule `id`: the id the host kept it under;
    /// none if there is no such schedule the caller may see.
    pub(super) async fn remove_schedule(&self, caller: &Caller, id: &str) -> Result<Option<String>, RpcError> {
        self.schedules.remove(caller, id).await
    }

    /// Cancel `caller`'s running workflow `id`: the id the host keeps it
    /// under; none if there is no such workflow running.
    pub(super) async fn cancel(&self, caller: &Caller, id: &str) -> Result<Option<String>, RpcError> {
        for id in caller.named_ids(id) {
            let report = self.report_of(&id).await?;
            let Some(report) = report.filter(|r| r.status == WorkflowStatus::Running) else { continue };
            if !caller.sees(report.owner.as_deref()) {
                continue;
            }
            if self.engine().cancel(&id).await.map_err(RpcError::internal)? {
                return Ok(Some(id.into_owned()));
            }
            if let Some(cluster) = self.membership.cluster() {
                return self.cancel_elsewhere(cluster, &id).await.map(|asked| asked.then(|| id.into_owned()));
            }
        }
        Ok(None)
    }

    /// Ask the host of the cluster that drives workflow `id` to cancel it,
    /// and wait a while for it to end (a status read after the answer then
    /// shows it cancelled); false if it is no longer running.
    async fn cancel_elsewhere(&self, cluster: &Arc<Cluster>, id: &str) -> Result<bool, RpcError> {
        let (asking, wanted) = (cluster.clone(), id.to_owned());
        let asked = tokio::task::spawn_blocking(move || asking.request_cancel(&wanted))
            .await
            .map_err(RpcError::internal)?
            .map_err(RpcError::internal)?;
        if !asked {
            return Ok(false);
        }
        self.membership.say(What::Cancel(id.to_owned()));
        // Stored, the request outlives its driver: a takeover cancels it.
        let until = tokio::time::Instant::now() + CANCEL_WAIT;
        while tokio::time::Instant::now() < until {
            if self.report_of(id).await?.is_none_or(|report| report.status != WorkflowStatus::Running) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(true)
    }

    /// Whether a provider other than a remote one (a WASM plugin) serves
    /// `protocol`.
    pub(super) fn wasm_serves(&self, protocol: &str) -> bool {
        self.registry
            .providers()
            .iter()
            .any(|p| p.spec().protocol == protocol && matches!(p.kind(), ProviderKind::Wasm | ProviderKind::Builtin))
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

    /// The hosts of the cluster (this host alone without one).
    pub(super) async fn hosts(&self) -> Result<Vec<HostSeen>, RpcError> {
        let parts = Parts { engine: self.engine(), registry: &self.registry, plugins: &self.plugins };
        self.membership.hosts(&parts).await.map_err(RpcError::internal)
    }

    /// The cluster's figures for `/metrics`; none without a cluster.
    pub(super) async fn cluster_figures(&self) -> Option<Result<Figures, crate::store::StoreError>> {
        self.membership.figures().await
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
