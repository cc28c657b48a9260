//! The host daemon (`gleitzeit serve`): one axum server on one port that
//! carries the Socket.IO transport (`socket`), the HTTP API (`http`), the
//! web dashboard (`dashboard`) and the health route. Both transports call
//! the same operations on the shared [`Core`] (`core`), which knows no
//! transport; they answer with the same errors (`rpc`) and see the same
//! events (`events`). Work enters the engine through the [`intake`], which
//! the schedules (`schedules`) use as well.
//!
//! This module owns the daemon's life: start (resuming stored work),
//! periodic pruning, and the drain on shutdown; where events go is
//! `relay`'s. It runs
//! nothing itself (the `engine` does) and validates workflows through
//! `workflow`, exactly as single-shot mode does.

mod cluster;
mod core;
mod dashboard;
mod events;
mod http;
mod intake;
mod listen;
mod quota;
mod relay;
mod requests;
mod rerun;
mod rpc;
mod schedules;
mod socket;

use crate::auth::{self, AuthError};
use crate::engine::{Engine, EngineConfig};
use crate::plugins::PluginSet;
use crate::registry::Registry;
pub use crate::schedule::MAX_SCHEDULES;
use crate::store::{AsyncStore, Store, StoreError};
use core::Core;
use http::HttpTransport;
pub use http::{MAX_STREAMS, openapi};
use intake::Intake;
pub use quota::{DEFAULT_SCHEDULES_PER_TOKEN, DEFAULT_STREAMS_PER_TOKEN, DEFAULT_WORKFLOWS_PER_TOKEN};
pub use rpc::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES, errors};
pub use schedules::{ADMINS_SCHEDULES, DEFAULT_MIN_INTERVAL as DEFAULT_MIN_SCHEDULE_INTERVAL};
pub use socket::MAX_SUBSCRIPTIONS;
use socket::SocketTransport;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of `gleitzeit serve`.
#[derive(Clone)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    /// How long running work may take to finish after a shutdown signal.
    pub grace: Duration,
    /// Where state is kept; none keeps it in memory only.
    pub store: Option<Arc<dyn Store>>,
    /// With `--cluster`: the cluster this host is part of (whose store
    /// `store` is).
    pub cluster: Option<Arc<crate::store::redis::cluster::Cluster>>,
    /// How long finished workflows stay in the store.
    pub retention: Duration,
    /// Who may connect, and what remote providers may take on.
    pub policy: Arc<auth::Policy>,
    /// Most server-sent event streams open at once (at most
    /// [`MAX_STREAMS`]; fewer where the process may open fewer files).
    pub max_streams: usize,
    /// Most of them one client token may hold.
    pub max_streams_per_token: usize,
    /// Most workflows one client token may have running.
    pub max_workflows_per_token: usize,
    /// Most schedules one client token may keep.
    pub max_schedules_per_token: usize,
    /// The shortest time a schedule may leave between two runs.
    pub min_schedule_interval: Duration,
}

/// The server failed while running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot resume the stored workflows: {0}")]
    Resume(#[from] StoreError),
    /// This host's cluster lease lapsed: it stops so that it never drives
    /// a workflow another host took over.
    #[error("{0}")]
    LeaseLost(String),
}

/// The peer of a request, as the log shows it.
fn peer(parts: &axum::http::request::Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<socket::Connection>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.peer.to_string())
}

/// The token of an `Authorization: Bearer TOKEN` header. Two such headers
/// are refused (-32600): which one a proxy or the host would read differs.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Result<Option<String>, rpc::RpcError> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(axum::http::header::AUTHORIZATION) {
            true => Err(rpc::RpcError::new(
                rpc::errors::INVALID_REQUEST,
                "the request has more than one Authorization header; send one",
            )),
            false => Ok(None),
        };
    };
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else { return Ok(None) };
    Ok(scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()))
}

/// Log a refusal with the peer's address, and make it the answer.
fn refused(parts: &axum::http::request::Parts, error: &AuthError) -> rpc::RpcError {
    tracing::warn!(peer = %peer(parts), "refused: {error}");
    rpc::RpcError::from(error)
}

/// Refuse requests from browser pages of origins the host does not allow
/// (a page on another site driving a daemon on localhost, or one reached
/// by DNS rebinding). Requests without `Origin` (not from a browser page)
/// pass: the token decides.
async fn check_origin(
    axum::extract::State(api): axum::extract::State<Arc<HttpTransport>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let origin = request.headers().get(axum::http::header::ORIGIN).map(|o| String::from_utf8_lossy(o.as_bytes()));
    match origin {
        Some(origin) if !auth::origin_allowed(&origin, api.port, &api.core.policy().allowed_origins) => {
            let error = AuthError::OriginNotAllowed { origin: crate::text::excerpt(&origin) };
            let (parts, _) = request.into_parts();
            let refusal = refused(&parts, &error);
            if parts.uri.path().starts_with(http::BASE) {
                return axum::response::IntoResponse::into_response(http::ApiError::from(refusal));
            }
            let body = refusal.to_reply();
            axum::response::IntoResponse::into_response((axum::http::StatusCode::FORBIDDEN, axum::Json(body)))
        }
        _ => next.run(request).await,
    }
}

/// Run the daemon until `shutdown` resolves, then stop taking work, let
/// running workflows finish within the grace period, and close.
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    plugins: Arc<PluginSet>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let engine_config = EngineConfig { wait_for_providers: true, ..config.engine };
    let store = config.store.clone().map(AsyncStore::new);
    let (engine, events) = match &store {
        None => Engine::start_observed(registry.clone(), engine_config),
        Some(store) => {
            // The store holds finished workflows; memory keeps only live work.
            // A query answered after a workflow ends is released only once its
            // report is stored, so the store always has it by then.
            let engine_config = EngineConfig { keep_finished: 0, ..engine_config };
            let started = Engine::start_durable(registry.clone(), engine_config, store.sync().clone())?;
            resume(&started.0, store).await?;
            tokio::spawn(prune_periodically(store.clone(), config.retention));
            started
        }
    };
    let schedules = schedules::Schedules::load(
        store.clone(),
        schedules::Bounds { min_interval: config.min_schedule_interval, per_token: config.max_schedules_per_token },
    )
    .await?;
    let scheduled = schedules.count().await;
    let intake = Intake::new(engine.clone(), config.policy.clone(), config.max_workflows_per_token);
    let schedules = Arc::new(schedules);
    let addr = listener.local_addr()?;
    let (following, asks) = cluster::Following::new();
    let membership = Arc::new(cluster::Membership::new(config.cluster.clone(), format!("http://{addr}"), following));
    if let (Some(cluster), Some(store)) = (&config.cluster, &store) {
        cluster::Duties {
            membership: membership.clone(),
            cluster: cluster.clone(),
            engine: engine.clone(),
            registry: registry.clone(),
            plugins: plugins.clone(),
            store: store.clone(),
            policy: config.policy.clone(),
            schedules: schedules.clone(),
        }
        .start();
    }
    let core =
        Arc::new(Core { intake: intake.clone(), store, registry, plugins, schedules: schedules.clone(), membership });
    let sockets = Arc::new(SocketTransport::new(core.clone()));
    let limits = http::HttpLimits {
        max_streams: config.max_streams,
        max_streams_per_token: config.max_streams_per_token,
        streams_pool: core.membership.streams_pool(),
    };
    let api = Arc::new(HttpTransport::new(core.clone(), sockets.clone(), &limits, listener.local_addr()?.port()));
    let (layer, io) = socket::layer(&sockets);
    let outlets = relay::Outlets { io: io.clone(), sockets: sockets.clone(), api: api.clone() };
    tokio::spawn(relay::forward_events(outlets.clone(), core.membership.clone(), events));
    if let Some(cluster) = &config.cluster {
        let (engine, cluster, membership) = (engine.clone(), cluster.clone(), core.membership.clone());
        tokio::spawn(relay::relay_the_others(outlets, engine, cluster, membership, asks));
    }
    tokio::spawn(schedules::fire_when_due(schedules, intake.clone()));
    let app = http::router(api.clone())
        .merge(dashboard::router())
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(layer)
        .layer(axum::middleware::from_fn_with_state(sockets, socket::meter_transports))
        .layer(axum::middleware::from_fn_with_state(api, check_origin));
    tracing::info!("listening on {addr}");
    announce(&format!("gleitzeit host listening on http://{addr} (Socket.IO path /socket.io/)"));
    announce(&format!("plugins: bundled, and {} (watched)", core.plugins.dir().display()));
    announce(&config.policy.describe());
    if scheduled > 0 {
        announce(&format!("schedules: {scheduled} (gleitzeit schedule list)"));
    }
    if let Some(cluster) = &config.cluster {
        announce(&format!(
            "cluster: host {} under epoch {}, lease {}s",
            cluster.lease.host,
            cluster.lease.epoch,
            cluster.lease.ttl.as_secs_f64()
        ));
    }
    let server = listen::serve(socket::MeteredListener(listener), app, connections_that_fit());
    let lease_lost = lease_lost(config.cluster.clone());
    tokio::select! {
        () = server => Ok(()),
        why = lease_lost => Err(ServeError::LeaseLost(why)),
        () = shutdown => {
            intake.stop_taking_work();
            if drain(&engine, config.grace).await {
                // Let submitters fetch the reports of what just finished.
                tokio::time::sleep(LINGER.min(config.grace)).await;
            }
            if let Some(cluster) = config.cluster.clone() {
                // What is still unfinished goes to the others at their next
                // look, not a lease later; this host writes nothing more.
                match tokio::task::spawn_blocking(move || cluster.leave()).await {
                    Ok(Err(e)) => tracing::warn!("cannot give the lease back: {e}"),
                    Err(e) => tracing::warn!("cannot give the lease back: {e}"),
                    Ok(Ok(())) => {}
                }
            }
            io.close().await;
            Ok(())
        }
    }
}

/// Connections served at once: three quarters of the files the process
/// may open (the rest are for the store, plugins and logs).
fn connections_that_fit() -> usize {
    let soft = rlimit::Resource::NOFILE.get().map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX).max(64)
}

/// A line for whoever watches the daemon's stdout. Unlike `println!`, it
/// does not panic when nobody reads any more (`serve | head -1`).
fn announce(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// How often finished workflows past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Resolves with the reason once this host's cluster lease is lost; never
/// without a cluster.
async fn lease_lost(cluster: Option<Arc<crate::store::redis::cluster::Cluster>>) -> String {
    let Some(cluster) = cluster else { return std::future::pending().await };
    let mut lost = cluster.lease.watch();
    let why = lost.wait_for(Option::is_some).await.map(|why| why.clone().unwrap_or_default());
    match why {
        Ok(why) => why,
        Err(_) => std::future::pending().await,
    }
}

/// Take up every workflow the store has unfinished (this host's, in a
/// cluster). One whose stored state cannot be read is set aside (closed as
/// failed, saying why) so that the host starts and serves the others.
async fn resume(engine: &Engine, store: &AsyncStore) -> Result<(), StoreError> {
    let unfinished = store.call("read unfinished workflows", |store| store.unfinished()).await?;
    set_aside(store, unfinished.unreadable).await?;
    let saved = unfinished.saved;
    if !saved.is_empty() {
        tracing::info!("resuming {} unfinished workflows from {}", saved.len(), store.target());
        announce(&format!("resuming {} unfinished workflows from {}", saved.len(), store.target()));
    }
    restore_all(engine, saved);
    Ok(())
}

/// Take up workflows taken over from a gone host of the cluster.
async fn resume_these(engine: &Engine, store: &AsyncStore, taken: crate::store::Unfinished) {
    if let Err(e) = set_aside(store, taken.unreadable).await {
        tracing::error!("{e}");
    }
    if !taken.saved.is_empty() {
        tracing::info!("resuming {} workflows taken over from a gone host", taken.saved.len());
    }
    restore_all(engine, taken.saved);
}

fn restore_all(engine: &Engine, saved: Vec<crate::store::Saved>) {
    for workflow in saved {
        if engine.restore(workflow).is_err() {
            break; // the engine stopped: nothing left to resume into
        }
    }
}

/// Close stored workflows that cannot be read, each with a report that
/// says why (`workflow status ID` shows it), and say so in the log.
async fn set_aside(store: &AsyncStore, unreadable: Vec<crate::store::Unreadable>) -> Result<(), StoreError> {
    if unreadable.is_empty() {
        return Ok(());
    }
    for workflow in &unreadable {
        tracing::error!(workflow = %workflow.workflow_id, "set aside: {}", workflow.error);
    }
    let ids: Vec<&str> = unreadable.iter().map(|w| w.workflow_id.as_str()).collect();
    announce(&format!("set aside {} stored workflows that cannot be read: {}", ids.len(), ids.join(", ")));
    let records: Vec<_> = unreadable.iter().map(|w| crate::store::Record::Finished(Arc::new(w.report()))).collect();
    store.call("set aside unreadable workflows", move |store| store.write(&records)).await
}

/// Forget finished workflows older than `retention`, now and every minute.
async fn prune_periodically(store: AsyncStore, retention: Duration) {
    loop {
        let cutoff = std::time::SystemTime::now().checked_sub(retention).unwrap_or(std::time::UNIX_EPOCH);
        match store.call("prune finished workflows", move |store| store.prune(cutoff)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!("pruned {n} finished workflows older than {}", humantime::format_duration(retention))
            }
            Err(e) => tracing::warn!("{e}"),
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

/// After a shutdown signal, how long clients may still query workflows that
/// finished during the grace period.
const LINGER: Duration = Duration::from_secs(1);

/// Wait until no workflow runs, or the grace period ends; true if any
/// workflow was still running when the signal came.
async fn drain(engine: &Engine, grace: Duration) -> bool {
    let until = Instant::now() + grace;
    let mut waited = false;
    loop {
        // A listing waits for the store; one that cannot write waits
        // forever, and the grace period is all it gets.
        let Ok(listed) = tokio::time::timeout_at(until.into(), engine.workflows()).await else {
            tracing::warn!("the store took no writes within the grace period; stopping anyway");
            return true;
        };
        let running = listed
            .map(|list| list.iter().filter(|w| w.status == crate::model::WorkflowStatus::Running).count())
            .unwrap_or(0);
        if running == 0 {
            return waited;
        }
        if Instant::now() >= until {
            tracing::warn!("{running} workflows still running after the grace period; stopping anyway");
            return true;
        }
        waited = true;
        tracing::info!("waiting for {running} running workflows to finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
