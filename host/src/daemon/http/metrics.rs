//! `GET /metrics`: the host's metrics in the Prometheus text format, each
//! made of the facts its owner keeps (the engine's stats, the registry's
//! providers, the plugins' statuses, the transports' connections) at the
//! moment of the scrape. docs/metrics.md lists them.

use super::Authenticated;
use super::HttpTransport;
use super::error::ApiError;
use crate::auth::Action;
use crate::daemon::cluster::Depth;
use crate::daemon::cluster::Figures;
use crate::daemon::core::ProviderInfo;
use crate::engine::EngineStats;
use crate::metrics::{Scrape, render};
use crate::model::Priority;
use crate::plugins::PluginStatus;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long a scrape waits for the cluster's figures from Redis: a scrape
/// of the host's own figures is not held up by a Redis that hangs.
const CLUSTER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What one scrape reports.
struct Facts {
    engine: EngineStats,
    providers: Vec<ProviderInfo>,
    plugins: Vec<PluginStatus>,
    sockets: usize,
    streams: usize,
    /// With `--cluster`, when Redis answered.
    cluster: Option<Figures>,
}

/// The host's metrics, for tokens of role metrics or admin.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "The Prometheus (OpenMetrics) text format; docs/metrics.md lists each metric", content_type = "application/openmetrics-text", body = String),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn metrics(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
) -> Result<impl IntoResponse, ApiError> {
    auth.may(Action::Scrape)?;
    let engine = api.core.engine().stats().await.map_err(crate::daemon::rpc::RpcError::internal)?;
    let facts = Facts {
        engine,
        providers: api.core.providers(),
        plugins: api.core.plugins.statuses(),
        sockets: api.sockets.connected(),
        streams: api.streams.open(),
        cluster: match tokio::time::timeout(CLUSTER_WAIT, api.core.cluster_figures()).await {
            Ok(Some(Ok(figures))) => Some(figures),
            Ok(Some(Err(e))) => {
                tracing::warn!("/metrics without the cluster's figures: {e}");
                None
            }
            Err(_) => {
                tracing::warn!("/metrics without the cluster's figures: Redis did not answer within {CLUSTER_WAIT:?}");
                None
            }
            Ok(None) => None,
        },
    };
    let text = render(move |scrape| write(scrape, &facts));
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}

fn write(scrape: &mut Scrape<'_>, facts: &Facts) -> Result<(), std::fmt::Error> {
    let engine = &facts.engine;
    scrape.counters(
        "gleitzeit_workflows_submitted",
        "Workflows accepted (or resumed after a restart).",
        [(vec![], engine.workflows_submitted)],
    )?;
    let ended = [
        ("completed", engine.workflows_completed),
        ("failed", engine.workflows_failed),
        ("cancelled", engine.workflows_cancelled),
    ];
    scrape.counters(
        "gleitzeit_workflows_finished",
        "Workflows that ended, by how.",
        ended.map(|(status, n)| (vec![("status", status)], n)),
    )?;
    let by_protocol = by_protocol(engine);
    scrape.counters(
        "gleitzeit_tasks_submitted",
        "Tasks accepted, by protocol.",
        by_protocol.iter().map(|(p, n)| (vec![("protocol", p.as_str())], n.submitted)),
    )?;
    scrape.counters(
        "gleitzeit_tasks_finished",
        "Tasks that ended, by protocol and status.",
        by_protocol.iter().flat_map(|(p, n)| {
            [("completed", n.completed), ("failed", n.failed), ("skipped", n.skipped), ("cancelled", n.cancelled)]
                .map(|(status, count)| (vec![("protocol", p.as_str()), ("status", status)], count))
        }),
    )?;
    scrape.counters(
        "gleitzeit_task_retries",
        "Failed attempts that were tried again, by protocol.",
        by_protocol.iter().map(|(p, n)| (vec![("protocol", p.as_str())], n.retried)),
    )?;
    scrape.gauges(
        "gleitzeit_tasks_queued",
        "Ready tasks waiting for a concurrency slot, by priority.",
        Priority::ALL.map(|p| (vec![("priority", p.name())], engine.queued(p) as i64)),
    )?;
    scrape.gauges(
        "gleitzeit_tasks_waiting_for_provider",
        "Ready tasks waiting for a free provider of their protocol.",
        [(vec![], engine.waiting_for_provider as i64)],
    )?;
    scrape.gauges(
        "gleitzeit_tasks_held",
        "Ready tasks held back, by reason: rate_limit (of those waiting for a provider), concurrency_key.",
        [
            (vec![("reason", "rate_limit")], engine.waiting_for_rate_limit as i64),
            (vec![("reason", "concurrency_key")], engine.waiting_for_key as i64),
        ],
    )?;
    scrape.gauges("gleitzeit_tasks_running", "Task attempts running now.", [(vec![], engine.running as i64)])?;
    fn method(m: &crate::engine::MethodStats) -> Vec<(&'static str, &str)> {
        vec![("protocol", m.protocol.as_str()), ("method", m.method.as_str())]
    }
    scrape.histograms(
        "gleitzeit_task_attempt_duration_seconds",
        "Each attempt's call, from start to answer, by protocol and method.",
        engine.methods.iter().map(|m| (method(m), &m.attempt_seconds)),
    )?;
    scrape.histograms(
        "gleitzeit_task_queue_wait_seconds",
        "From a task being ready to its attempt starting, by protocol and method.",
        engine.methods.iter().map(|m| (method(m), &m.queue_wait_seconds)),
    )?;
    write_providers(scrape, facts)?;
    scrape.counters(
        "gleitzeit_llm_tokens",
        "Tokens the calls' results reported (usage), by protocol, provider, model and kind (prompt, completion).",
        engine.tokens.iter().flat_map(|((protocol, provider, model), usage)| {
            let labels = |kind| {
                vec![
                    ("protocol", protocol.as_str()),
                    ("provider", provider.as_str()),
                    ("model", model.as_str()),
                    ("kind", kind),
                ]
            };
            [(labels("prompt"), usage.prompt_tokens), (labels("completion"), usage.completion_tokens)]
        }),
    )?;
    scrape.counters(
        "gleitzeit_cache_lookups",
        "Result cache lookups of tasks with cache: {ttl}, by protocol and result (hit: answered without a call).",
        engine.cache.iter().flat_map(|(protocol, (hits, misses))| {
            [
                (vec![("protocol", protocol.as_str()), ("result", "hit")], *hits),
                (vec![("protocol", protocol.as_str()), ("result", "miss")], *misses),
            ]
        }),
    )?;
    if let Some(store) = &engine.store {
        scrape.histograms(
            "gleitzeit_store_commit_duration_seconds",
            "Each batch's write to the store, retries included.",
            [(vec![], &store.seconds)],
        )?;
        scrape.histograms("gleitzeit_store_batch_records", "Records written per batch.", [(vec![], &store.records)])?;
        scrape.counters(
            "gleitzeit_store_write_failures",
            "Writes the store refused (each retried until it took them).",
            [(vec![], store.failures)],
        )?;
    }
    scrape.gauges(
        "gleitzeit_socketio_connections",
        "Socket.IO clients connected now.",
        [(vec![], facts.sockets as i64)],
    )?;
    scrape.gauges(
        "gleitzeit_event_streams",
        "Server-sent event streams open now.",
        [(vec![], facts.streams as i64)],
    )?;
    match &facts.cluster {
        Some(cluster) => write_cluster(scrape, cluster),
        None => Ok(()),
    }
}

/// The cluster seen from this host (`--cluster`).
fn write_cluster(scrape: &mut Scrape<'_>, cluster: &Figures) -> Result<(), std::fmt::Error> {
    scrape.gauges(
        "gleitzeit_cluster_hosts",
        "Hosts of the cluster, by status (up: its lease holds; gone).",
        [("up", cluster.hosts_up), ("gone", cluster.hosts_gone)]
            .map(|(status, n)| (vec![("status", status)], n as i64)),
    )?;
    fn protocol(depth: &Depth) -> Vec<(&'static str, &str)> {
        vec![("protocol", depth.protocol.as_str())]
    }
    scrape.gauges(
        "gleitzeit_cluster_tasks_waiting",
        "Calls offered to the cluster's hosts and not yet taken, by protocol: the cluster's queue.",
        cluster.queue.iter().map(|depth| (protocol(depth), depth.waiting as i64)),
    )?;
    scrape.gauges(
        "gleitzeit_cluster_tasks_taken",
        "Calls a host took from the cluster's queue and runs now, by protocol.",
        cluster.queue.iter().map(|depth| (protocol(depth), depth.taken as i64)),
    )?;
    scrape.counters(
        "gleitzeit_cluster_tasks_offered",
        "Calls this host offered to the other hosts.",
        [(vec![], cluster.offered)],
    )?;
    scrape.counters(
        "gleitzeit_cluster_tasks_served",
        "Calls of the other hosts' workflows this host ran.",
        [(vec![], cluster.served)],
    )?;
    scrape.counters(
        "gleitzeit_cluster_workflows_taken_over",
        "Workflows this host took over from gone hosts.",
        [(vec![], cluster.taken_over)],
    )
}

fn write_providers(scrape: &mut Scrape<'_>, facts: &Facts) -> Result<(), std::fmt::Error> {
    let mut providers: BTreeMap<(String, String), i64> = BTreeMap::new();
    for p in &facts.providers {
        let kind = serde_json::to_value(p.kind).ok().and_then(|k| k.as_str().map(str::to_owned)).unwrap_or_default();
        *providers.entry((kind, p.protocol_id.clone())).or_default() += 1;
    }
    scrape.gauges(
        "gleitzeit_providers",
        "Providers serving now, by kind (wasm, remote) and protocol.",
        providers
            .iter()
            .map(|((kind, protocol), n)| (vec![("kind", kind.as_str()), ("protocol", protocol.as_str())], *n)),
    )?;
    fn plugin(s: &PluginStatus) -> Vec<(&'static str, &str)> {
        vec![("plugin", s.name.as_str())]
    }
    scrape.counters(
        "gleitzeit_plugin_loads",
        "Plugin versions loaded since the host started (the first load included).",
        facts.plugins.iter().map(|s| (plugin(s), s.loads)),
    )?;
    scrape.counters(
        "gleitzeit_plugin_reloads",
        "Plugin versions loaded in place of an earlier one.",
        facts.plugins.iter().map(|s| (plugin(s), s.loads.saturating_sub(1))),
    )?;
    scrape.counters(
        "gleitzeit_plugin_load_failures",
        "Plugin load attempts that failed.",
        facts.plugins.iter().map(|s| (plugin(s), s.failures)),
    )
}

/// The per-method counts summed by protocol.
fn by_protocol(engine: &EngineStats) -> BTreeMap<String, crate::engine::MethodStats> {
    let mut sums: BTreeMap<String, crate::engine::MethodStats> = BTreeMap::new();
    for m in &engine.methods {
        let sum = sums.entry(m.protocol.clone()).or_insert_with(|| crate::engine::MethodStats::new(&m.protocol, ""));
        sum.submitted += m.submitted;
        sum.completed += m.completed;
        sum.failed += m.failed;
        sum.skipped += m.skipped;
        sum.cancelled += m.cancelled;
        sum.retried += m.retried;
    }
    sums
}
