//! The host daemon's Socket.IO server (socketioxide on axum): remote
//! providers register and answer `execute_method` calls; clients submit and
//! query workflows and receive their events. The wire protocol is in
//! `docs/protocol.md`.
//!
//! It owns the sockets and the remote providers they registered; it runs
//! nothing itself (the `engine` does) and validates workflows through
//! `workflow`, exactly as single-shot mode does.

mod handlers;
mod outbound;
mod remote;
mod wire;

use crate::auth::{self, Action, AuthError, Caller};
use crate::engine::{Engine, EngineConfig, EngineEvent};
use crate::locks::lock;
use crate::model::MethodSpec;
use crate::plugins::{PluginEvent, PluginSet};
use crate::registry::{Provider, Registry};
use crate::store::{Store, StoreError};
use remote::RemoteProvider;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
pub use wire::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES, errors};

/// Settings of `gleitzeit serve`.
#[derive(Clone)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    /// How long running work may take to finish after a shutdown signal.
    pub grace: Duration,
    /// Where state is kept; none keeps it in memory only.
    pub store: Option<Arc<dyn Store>>,
    /// How long finished workflows stay in the store.
    pub retention: Duration,
    /// Who may connect, and what remote providers may take on.
    pub policy: Arc<auth::Policy>,
}

/// The server failed while running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot resume the stored workflows: {0}")]
    Resume(#[from] StoreError),
}

/// State shared by the handlers.
pub struct Host {
    engine: Engine,
    /// Reports of finished workflows (and lists of them) come from here.
    store: Option<Arc<dyn Store>>,
    registry: Arc<Registry>,
    /// The WASM plugins, kept in step with the plugins directory.
    plugins: Arc<PluginSet>,
    /// Remote providers by the socket that registered them.
    remotes: Mutex<HashMap<String, Vec<Arc<RemoteProvider>>>>,
    /// Methods declared with `register_protocol`, by socket and protocol.
    declared: Mutex<HashMap<(String, String), Vec<MethodSpec>>>,
    /// What each socket has been sent and has read.
    outboxes: outbound::Outboxes,
    policy: Arc<auth::Policy>,
    /// Provider ids by the token that first registered each (with
    /// authentication on), for the daemon's lifetime: a brief disconnect
    /// does not free an id for another token.
    provider_claims: Mutex<HashMap<String, String>>,
    /// The port the daemon listens on: its own pages' origins name it.
    port: u16,
    shutting_down: AtomicBool,
}

/// The room of a workflow's events: its submitter and subscribers.
fn room(workflow_id: &str) -> String {
    format!("workflow:{workflow_id}")
}

/// The room of provider and plugin changes: those who subscribed to them.
/// (Workflow ids cannot contain ':', so no workflow's room is this one.)
const PROVIDERS_ROOM: &str = "providers";

impl Host {
    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// A socket connected (called from the connect handler, once it counts
    /// as connected): open its outbox on the connection it came on.
    fn opened(&self, socket: &socketioxide::extract::SocketRef) {
        let parts = socket.req_parts();
        let websocket = parts.uri.query().is_some_and(|q| query_param(q, "transport") == Some("websocket"));
        let connection = parts.extensions.get::<axum::extract::ConnectInfo<outbound::Connection>>();
        let sid = socket.id.to_string();
        self.outboxes.open(&sid, connection.map(|c| c.0.meter.clone()), websocket);
        // It may have gone already; `forget_socket` has run then, or runs later.
        if !socket.connected() {
            self.outboxes.close(&sid);
        }
    }

    /// Wait for a slot to build an answer for `socket`; `None` (do no work)
    /// once it is gone or has left too much unread.
    async fn request_slot(
        &self,
        socket: &socketioxide::extract::SocketRef,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if !socket.connected() {
            return None;
        }
        let slot = self.outboxes.slot(&socket.id.to_string()).await?;
        (socket.connected() && self.admit_bytes(socket, 0)).then_some(slot)
    }

    /// Send `bytes` with `send` if `socket`'s outbox admits them; what was
    /// not sent after all is not counted.
    fn send_counted(&self, socket: &socketioxide::extract::SocketRef, bytes: usize, send: impl FnOnce() -> bool) {
        if self.admit_bytes(socket, bytes) && !send() {
            self.outboxes.refund(&socket.id.to_string(), bytes);
        }
    }

    /// Whether `bytes` more may be queued for `socket`; a socket that left
    /// too much unread is disconnected instead (what was queued for it is
    /// freed).
    fn admit_bytes(&self, socket: &socketioxide::extract::SocketRef, bytes: usize) -> bool {
        match self.outboxes.admit(&socket.id.to_string(), bytes) {
            Ok(()) => true,
            Err(unread) => {
                tracing::warn!(
                    socket = %socket.id,
                    "the client left {unread} bytes unread (at most {} may wait); disconnecting it",
                    outbound::UNREAD_LIMIT
                );
                let _ = socket.clone().disconnect();
                false
            }
        }
    }

    /// Who `socket` is, if it may do `action`. A refusal is logged with
    /// the peer's address.
    fn caller(&self, socket: &socketioxide::extract::SocketRef, action: Action) -> Result<Caller, wire::RpcError> {
        let caller = match (socket.extensions.get::<Caller>(), &self.policy.tokens) {
            (Some(caller), _) => Ok(caller),
            (None, None) => Ok(Caller::Anyone),
            // Every socket that passed the handshake has one: fail closed.
            (None, Some(_)) => Err(AuthError::NoToken),
        };
        caller.and_then(|caller| caller.may(action).map(|()| caller)).map_err(|e| self.refused(socket, &e))
    }

    /// Log a refusal with the peer's address, and make it the answer.
    fn refused(&self, socket: &socketioxide::extract::SocketRef, error: &AuthError) -> wire::RpcError {
        let peer = peer(socket.req_parts());
        tracing::warn!(socket = %socket.id, %peer, "refused: {error}");
        wire::RpcError::from(error)
    }

    /// Refuse `caller` registering `provider_id` for `protocol` unless its
    /// token serves the protocol, no WASM plugin has it reserved, and the id
    /// is not another token's.
    fn may_register(&self, caller: &Caller, provider_id: &str, protocol: &str) -> Result<(), AuthError> {
        caller.may_serve(protocol)?;
        if self.wasm_serves(protocol) && !self.policy.remote_may_serve.iter().any(|p| p == protocol) {
            return Err(AuthError::ProtocolReserved { protocol: protocol.to_owned() });
        }
        let (Some(owner), false) = (caller.owner(), caller.sees_all()) else { return Ok(()) };
        let mut claims = lock(&self.provider_claims);
        match claims.get(provider_id) {
            Some(first) if *first != owner => Err(AuthError::ProviderIdTaken { provider_id: provider_id.to_owned() }),
            Some(_) => Ok(()),
            None => {
                claims.insert(provider_id.to_owned(), owner);
                Ok(())
            }
        }
    }

    /// Whether a provider other than a remote one (a WASM plugin) serves
    /// `protocol`. The remotes are looked at once, not once per provider.
    fn wasm_serves(&self, protocol: &str) -> bool {
        let remotes = lock(&self.remotes);
        let remote_ids: std::collections::HashSet<&str> = remotes.values().flatten().map(|p| p.id()).collect();
        self.registry.providers().iter().any(|p| p.spec().protocol == protocol && !remote_ids.contains(p.id()))
    }

    fn declare_protocol(&self, sid: &str, protocol: &str, methods: Vec<MethodSpec>) {
        lock(&self.declared).insert((sid.to_owned(), protocol.to_owned()), methods);
    }

    fn declared_methods(&self, sid: &str, protocol: &str) -> Option<Vec<MethodSpec>> {
        lock(&self.declared).get(&(sid.to_owned(), protocol.to_owned())).cloned().filter(|m| !m.is_empty())
    }

    fn add_remote(&self, sid: &str, provider: Arc<RemoteProvider>) -> Result<(), wire::RpcError> {
        let mut remotes = lock(&self.remotes);
        let own = remotes.get(sid).is_some_and(|list| list.iter().any(|p| p.id() == provider.id()));
        if !own && self.registry.providers().iter().any(|p| p.id() == provider.id()) {
            return Err(wire::RpcError::new(
                errors::CONFLICT,
                format!(
                    "register_provider: provider_id '{}' is already registered by another connection",
                    provider.id()
                ),
            ));
        }
        let list = remotes.entry(sid.to_owned()).or_default();
        if let Some(old) = list.iter().position(|p| p.id() == provider.id()) {
            let old = list.remove(old);
            self.registry.unregister(old.id());
            old.close();
        }
        self.registry.register(provider.clone());
        list.push(provider);
        drop(remotes);
        self.engine.providers_changed();
        Ok(())
    }

    /// A socket disconnected: its providers leave; their calls in flight go
    /// back to the queue.
    fn forget_socket(&self, sid: &str) {
        self.outboxes.close(sid);
        let providers = lock(&self.remotes).remove(sid).unwrap_or_default();
        for provider in providers {
            tracing::info!(provider = provider.id(), "remote provider disconnected");
            self.registry.unregister(provider.id());
            provider.close();
        }
        lock(&self.declared).retain(|(socket, _), _| socket != sid);
    }

    fn progress(&self, sid: &str, call_id: &str, chunk: Value) -> bool {
        let remotes = lock(&self.remotes);
        remotes.get(sid).is_some_and(|list| list.iter().any(|p| p.progress(call_id, chunk.clone())))
    }

    fn deliver(&self, sid: &str, call_id: &str, reply: Value) -> bool {
        let remotes = lock(&self.remotes);
        remotes.get(sid).is_some_and(|list| list.iter().any(|p| p.deliver(call_id, reply.clone())))
    }

    fn providers(&self) -> Vec<Value> {
        let remotes = lock(&self.remotes);
        let remote_of = |id: &str| remotes.values().flatten().find(|p| p.id() == id).cloned();
        self.registry
            .providers()
            .iter()
            .map(|p| {
                let spec = p.spec();
                let methods: Vec<&str> = spec.methods.iter().map(|m| m.name.as_str()).collect();
                let mut entry = json!({
                    "provider_id": p.id(),
                    "protocol_id": spec.protocol,
                    "name": spec.name,
                    "version": spec.version,
                    "methods": methods,
                    "kind": "wasm",
                });
                if let Some(remote) = remote_of(p.id()) {
                    entry["kind"] = json!("remote");
                    entry["max_concurrent"] = json!(remote.max_concurrent());
                    entry["in_flight"] = json!(remote.in_flight());
                    entry["socket_id"] = json!(remote.socket_id());
                }
                entry
            })
            .collect()
    }

    fn protocols(&self) -> Vec<Value> {
        let mut by_protocol: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> = Default::default();
        for p in self.registry.providers() {
            let entry = by_protocol.entry(p.spec().protocol.clone()).or_default();
            entry.0.extend(p.spec().methods.iter().map(|m| m.name.clone()));
            entry.1.push(p.id().to_owned());
        }
        by_protocol
            .into_iter()
            .map(|(protocol, (mut methods, providers))| {
                methods.sort();
                methods.dedup();
                json!({ "protocol_id": protocol, "methods": methods, "providers": providers })
            })
            .collect()
    }
}

/// The peer of a request, as the log shows it.
fn peer(parts: &axum::http::request::Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<outbound::Connection>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.peer.to_string())
}

/// Refuse requests from browser pages of origins the host does not allow
/// (a page on another site driving a daemon on localhost, or one reached
/// by DNS rebinding). Requests without `Origin` (not from a browser page)
/// pass: the token decides.
async fn check_origin(
    axum::extract::State(host): axum::extract::State<Arc<Host>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let origin = request.headers().get(axum::http::header::ORIGIN).map(|o| String::from_utf8_lossy(o.as_bytes()));
    match origin {
        Some(origin) if !auth::origin_allowed(&origin, host.port, &host.policy.allowed_origins) => {
            let error = AuthError::OriginNotAllowed { origin: crate::workflow::excerpt(&origin) };
            let (parts, _) = request.into_parts();
            tracing::warn!(peer = %peer(&parts), "refused: {error}");
            let body = wire::RpcError::from(&error).to_reply();
            axum::response::IntoResponse::into_response((axum::http::StatusCode::FORBIDDEN, axum::Json(body)))
        }
        _ => next.run(request).await,
    }
}

/// `name`'s value in a URL query (`a=1&b=2`).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// Tell Socket.IO sockets' outboxes which connections carry what they are
/// sent: a WebSocket that replaces long-polling, and the connection of each
/// long-polling request (credited as the kernel takes its bytes, not when
/// the response is handed to hyper).
async fn meter_transports(
    axum::extract::State(host): axum::extract::State<Arc<Host>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let query = request.uri().query().unwrap_or_default();
    let connection = request.extensions().get::<axum::extract::ConnectInfo<outbound::Connection>>();
    if let (Some(sid), Some(transport), Some(connection)) =
        (query_param(query, "sid"), query_param(query, "transport"), connection)
    {
        let meter = connection.0.meter.clone();
        match transport {
            "websocket" => host.outboxes.upgraded(sid, meter),
            _ if request.method() == axum::http::Method::GET => host.outboxes.polled_on(sid, meter),
            _ => {}
        }
    }
    next.run(request).await
}

/// Tell the subscribers of provider changes when a plugin loads, fails or
/// goes, and let parked tasks try the new providers.
fn announce_plugin_changes(plugins: &PluginSet, io: SocketIo, engine: Engine) {
    plugins.on_change(move |event| {
        let (name, payload) = match event {
            PluginEvent::Loaded(status) => ("plugin_loaded", json!(status)),
            PluginEvent::Failed(status) => ("plugin_failed", json!(status)),
            PluginEvent::Removed(name) => ("plugin_removed", json!({ "name": name })),
        };
        let io = io.clone();
        tokio::spawn(async move { io.to(PROVIDERS_ROOM).emit(name, &payload).await });
        engine.providers_changed();
    });
}

/// What `payload` counts in a socket's outbox.
fn counted_len(payload: &impl serde::Serialize) -> usize {
    wire::encoded_len(payload) + outbound::PACKET_OVERHEAD
}

/// Emit to each socket in `room` that has not left too much unread.
fn emit_to_room(io: &SocketIo, host: &Host, room: String, event: &str, payload: &impl serde::Serialize) {
    let sockets = io.to(room).sockets();
    if sockets.is_empty() {
        return;
    }
    let bytes = counted_len(payload);
    for socket in sockets {
        host.send_counted(&socket, bytes, || socket.emit(event, payload).is_ok());
    }
}

/// Send the engine's events to the sockets in each workflow's room.
async fn forward_events(io: SocketIo, host: Arc<Host>, mut events: mpsc::UnboundedReceiver<EngineEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            // Two events per task: `task_status` when it starts (or waits
            // for a retry), `task_result` when it ends.
            EngineEvent::Task(task) if task.status.is_final() => {
                let result = json!({
                    "task_id": task.task_id,
                    "workflow_id": task.workflow_id,
                    "status": task.status,
                    "result": task.result,
                    "error": task.error,
                    "attempt": task.attempt,
                });
                emit_to_room(&io, &host, room(&task.workflow_id), "task_result", &result);
            }
            // A start (no error) is a few ids: sent to the room at once,
            // uncounted (an outbox's balance cannot bank what it did not count).
            EngineEvent::Task(task) if task.error.is_none() => {
                let _ = io.to(room(&task.workflow_id)).emit("task_status", &task).await;
            }
            EngineEvent::Task(task) => {
                emit_to_room(&io, &host, room(&task.workflow_id), "task_status", &task);
            }
            EngineEvent::Progress(progress) => {
                emit_to_room(&io, &host, room(&progress.workflow_id), "task_progress", &progress);
            }
            EngineEvent::WorkflowFinished(report) => {
                let done = json!({
                    "workflow_id": report.workflow_id,
                    "name": report.name,
                    "status": report.status,
                    "summary": report.summary,
                    "duration_ms": report.duration_ms,
                });
                let _ = io.to(room(&report.workflow_id)).emit("workflow_completed", &done).await;
            }
        }
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
    let (engine, events) = match &config.store {
        None => Engine::start_observed(registry.clone(), engine_config),
        Some(store) => {
            // The store holds finished workflows; memory keeps only live work.
            // A query answered after a workflow ends is released only once its
            // report is stored, so the store always has it by then.
            let engine_config = EngineConfig { keep_finished: 0, ..engine_config };
            let started = Engine::start_durable(registry.clone(), engine_config, store.clone())?;
            resume(&started.0, store).await?;
            tokio::spawn(prune_periodically(store.clone(), config.retention));
            started
        }
    };
    let host = Arc::new(Host {
        engine: engine.clone(),
        store: config.store.clone(),
        registry,
        plugins,
        remotes: Mutex::default(),
        declared: Mutex::default(),
        outboxes: outbound::Outboxes::default(),
        policy: config.policy.clone(),
        provider_claims: Mutex::default(),
        port: listener.local_addr()?.port(),
        shutting_down: AtomicBool::new(false),
    });
    let (layer, io) = SocketIo::builder()
        // One limit for every transport (see `wire`): what exceeds the
        // request limit but not this is refused with an error, not dropped.
        .max_payload(wire::TRANSPORT_MAX_BYTES as u64)
        .ws_max_message_size(wire::TRANSPORT_MAX_BYTES)
        .ws_max_frame_size(wire::TRANSPORT_MAX_BYTES)
        // Packets queued per socket before emits fail: a submitter of a large
        // workflow receives several events per task in a burst, and a full
        // buffer would drop them (and acks) silently.
        .max_buffer_size(1 << 20)
        .with_state(host.clone())
        .build_layer();
    io.ns("/", handlers::on_connect.with(handlers::register_handlers).with(handlers::authenticate));
    announce_plugin_changes(&host.plugins, io.clone(), engine.clone());
    tokio::spawn(forward_events(io.clone(), host.clone(), events));
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(layer)
        .layer(axum::middleware::from_fn_with_state(host.clone(), meter_transports))
        .layer(axum::middleware::from_fn_with_state(host.clone(), check_origin));
    let addr = listener.local_addr()?;
    tracing::info!("listening on {addr}");
    announce(&format!("gleitzeit host listening on http://{addr} (Socket.IO path /socket.io/)"));
    announce(&format!("plugins: bundled, and {} (watched)", host.plugins.dir().display()));
    announce(&host.policy.describe());
    let server = axum::serve(
        outbound::MeteredListener(listener),
        app.into_make_service_with_connect_info::<outbound::Connection>(),
    );
    tokio::select! {
        result = server => result.map_err(ServeError::Io),
        () = shutdown => {
            host.shutting_down.store(true, Ordering::Relaxed);
            if drain(&engine, config.grace).await {
                // Let submitters fetch the reports of what just finished.
                tokio::time::sleep(LINGER.min(config.grace)).await;
            }
            io.close().await;
            Ok(())
        }
    }
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

/// Take up every workflow the store has unfinished. One whose stored state
/// cannot be read is set aside (closed as failed, saying why) so that the
/// host starts and serves the others.
async fn resume(engine: &Engine, store: &Arc<dyn Store>) -> Result<(), StoreError> {
    let reader = store.clone();
    let unfinished = blocking(store, "read unfinished workflows", move || reader.unfinished()).await?;
    set_aside(store, unfinished.unreadable).await?;
    let saved = unfinished.saved;
    if !saved.is_empty() {
        tracing::info!("resuming {} unfinished workflows from {}", saved.len(), store.target());
        announce(&format!("resuming {} unfinished workflows from {}", saved.len(), store.target()));
    }
    for workflow in saved {
        if engine.restore(workflow).is_err() {
            break; // the engine stopped: nothing left to resume into
        }
    }
    Ok(())
}

/// Close stored workflows that cannot be read, each with a report that
/// says why (`workflow status ID` shows it), and say so in the log.
async fn set_aside(store: &Arc<dyn Store>, unreadable: Vec<crate::store::Unreadable>) -> Result<(), StoreError> {
    if unreadable.is_empty() {
        return Ok(());
    }
    for workflow in &unreadable {
        tracing::error!(workflow = %workflow.workflow_id, "set aside: {}", workflow.error);
    }
    let ids: Vec<&str> = unreadable.iter().map(|w| w.workflow_id.as_str()).collect();
    announce(&format!("set aside {} stored workflows that cannot be read: {}", ids.len(), ids.join(", ")));
    let records: Vec<_> = unreadable.iter().map(|w| crate::store::Record::Finished(Arc::new(w.report()))).collect();
    let writer = store.clone();
    blocking(store, "set aside unreadable workflows", move || writer.write(&records)).await
}

/// Run a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    action: &'static str,
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(call).await.map_err(|e| StoreError::Io {
        target: store.target(),
        action,
        reason: e.to_string(),
    })?
}

/// Forget finished workflows older than `retention`, now and every minute.
async fn prune_periodically(store: Arc<dyn Store>, retention: Duration) {
    loop {
        let pruner = store.clone();
        let cutoff = std::time::SystemTime::now().checked_sub(retention).unwrap_or(std::time::UNIX_EPOCH);
        match tokio::task::spawn_blocking(move || pruner.prune(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!("pruned {n} finished workflows older than {}", humantime::format_duration(retention))
            }
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("pruning stopped: {e}"),
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
        let running = engine
            .workflows()
            .await
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
