//! The Socket.IO transport (socketioxide on axum): remote providers
//! register and answer `execute_method` calls; clients submit and query
//! workflows and receive their events. The wire protocol is in
//! `docs/protocol.md`.
//!
//! It owns the sockets, their outboxes and the remote providers they
//! registered ([`SocketTransport`]); what a request does is the [`Core`]'s.

mod handlers;
mod outbound;
mod remote;
mod wire;

use super::core::Core;
use super::events::Described;
use crate::auth::{Action, AuthError, Caller};
use crate::locks::lock;
use crate::model::MethodSpec;
use crate::plugins::PluginEvent;
use crate::registry::Provider as _;
use remote::RemoteProvider;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use outbound::{Connection, Metered, MeteredListener};

/// The Socket.IO transport's state: the core it calls, and what it keeps
/// per socket.
pub struct SocketTransport {
    pub(super) core: Arc<Core>,
    sockets: Sockets,
}

/// What the transport keeps per socket.
#[derive(Default)]
struct Sockets {
    /// Remote providers by the socket that registered them.
    remotes: Mutex<HashMap<String, Vec<Arc<RemoteProvider>>>>,
    /// Methods declared with `register_protocol`, by socket and protocol.
    declared: Mutex<HashMap<(String, String), Vec<MethodSpec>>>,
    /// What each socket has been sent and has read.
    outboxes: outbound::Outboxes,
    /// Provider ids by the token that first registered each (with
    /// authentication on), for the daemon's lifetime: a brief disconnect
    /// does not free an id for another token.
    provider_claims: Mutex<HashMap<String, String>>,
}

/// The room of a workflow's events: its submitter and subscribers, until
/// the workflow completes (then they leave it).
fn room(workflow_id: &str) -> String {
    format!("{WORKFLOW_ROOM}{workflow_id}")
}

const WORKFLOW_ROOM: &str = "workflow:";

/// Most workflows one connection may subscribe to at once: each is a room
/// the host keeps until the workflow completes or the client unsubscribes.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

/// Whether `socket` is in `room`.
fn joined(socket: &socketioxide::extract::SocketRef, room: &str) -> bool {
    socket.rooms().iter().any(|r| *r == room)
}

/// The workflows `socket` follows now.
fn workflows_followed(socket: &socketioxide::extract::SocketRef) -> usize {
    socket.rooms().iter().filter(|room| room.starts_with(WORKFLOW_ROOM)).count()
}

/// The room of provider and plugin changes: those who subscribed to them.
/// (Workflow ids cannot contain ':', so no workflow's room is this one.)
const PROVIDERS_ROOM: &str = "providers";

/// The Socket.IO layer for the router, and the handle that emits.
pub fn layer(transport: &Arc<SocketTransport>) -> (socketioxide::layer::SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        // One limit for every transport (see `rpc`): what exceeds the
        // request limit but not this is refused with an error, not dropped.
        .max_payload(wire::TRANSPORT_MAX_BYTES as u64)
        .ws_max_message_size(wire::TRANSPORT_MAX_BYTES)
        .ws_max_frame_size(wire::TRANSPORT_MAX_BYTES)
        // Packets queued per socket before emits fail: a submitter of a large
        // workflow receives several events per task in a burst, and a full
        // buffer would drop them (and acks) silently.
        .max_buffer_size(1 << 20)
        .with_state(transport.clone())
        .build_layer();
    io.ns("/", handlers::on_connect.with(handlers::register_handlers).with(handlers::authenticate));
    announce_plugin_changes(&transport.core, io.clone());
    (layer, io)
}

impl SocketTransport {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core, sockets: Sockets::default() }
    }

    /// Sockets connected now.
    pub fn connected(&self) -> usize {
        self.sockets.outboxes.count()
    }

    /// A socket connected (called from the connect handler, once it counts
    /// as connected): open its outbox on the connection it came on.
    fn opened(&self, socket: &socketioxide::extract::SocketRef) {
        let parts = socket.req_parts();
        let websocket = parts.uri.query().is_some_and(|q| query_param(q, "transport") == Some("websocket"));
        let connection = parts.extensions.get::<axum::extract::ConnectInfo<Connection>>();
        let sid = socket.id.to_string();
        self.sockets.outboxes.open(&sid, connection.map(|c| c.0.meter.clone()), websocket);
        // It may have gone already; `forget_socket` has run then, or runs later.
        if !socket.connected() {
            self.sockets.outboxes.close(&sid);
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
        let slot = self.sockets.outboxes.slot(&socket.id.to_string()).await?;
        (socket.connected() && self.admit_bytes(socket, 0)).then_some(slot)
    }

    /// Send `bytes` with `send` if `socket`'s outbox admits them; what was
    /// not sent after all is not counted.
    fn send_counted(&self, socket: &socketioxide::extract::SocketRef, bytes: usize, send: impl FnOnce() -> bool) {
        if self.admit_bytes(socket, bytes) && !send() {
            self.sockets.outboxes.refund(&socket.id.to_string(), bytes);
        }
    }

    /// Whether `bytes` more may be queued for `socket`; a socket that left
    /// too much unread is disconnected instead (what was queued for it is
    /// freed).
    fn admit_bytes(&self, socket: &socketioxide::extract::SocketRef, bytes: usize) -> bool {
        match self.sockets.outboxes.admit(&socket.id.to_string(), bytes) {
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
        let caller = match (socket.extensions.get::<Caller>(), &self.core.policy().tokens) {
            (Some(caller), _) => Ok(caller),
            (None, None) => Ok(Caller::Anyone),
            // Every socket that passed the handshake has one: fail closed.
            (None, Some(_)) => Err(AuthError::NoToken),
        };
        caller.and_then(|caller| caller.may(action).map(|()| caller)).map_err(|e| self.refused(socket, &e))
    }

    /// Log a refusal with the peer's address, and make it the answer.
    fn refused(&self, socket: &socketioxide::extract::SocketRef, error: &AuthError) -> wire::RpcError {
        super::refused(socket.req_parts(), error)
    }

    /// Refuse `caller` registering `provider_id` for `protocol` unless its
    /// token serves the protocol, no WASM plugin has it reserved, and the id
    /// is not another token's.
    fn may_register(&self, caller: &Caller, provider_id: &str, protocol: &str) -> Result<(), AuthError> {
        caller.may_serve(protocol)?;
        if self.core.wasm_serves(protocol) && !self.core.policy().remote_may_serve.iter().any(|p| p == protocol) {
            return Err(AuthError::ProtocolReserved { protocol: protocol.to_owned() });
        }
        let (Some(owner), false) = (caller.owner(), caller.sees_all()) else { return Ok(()) };
        let mut claims = lock(&self.sockets.provider_claims);
        match claims.get(provider_id) {
            Some(first) if *first != owner => Err(AuthError::ProviderIdTaken { provider_id: provider_id.to_owned() }),
            Some(_) => Ok(()),
            None => {
                claims.insert(provider_id.to_owned(), owner);
                Ok(())
            }
        }
    }

    fn declare_protocol(&self, sid: &str, protocol: &str, methods: Vec<MethodSpec>) {
        lock(&self.sockets.declared).insert((sid.to_owned(), protocol.to_owned()), methods);
    }

    fn declared_methods(&self, sid: &str, protocol: &str) -> Option<Vec<MethodSpec>> {
        lock(&self.sockets.declared).get(&(sid.to_owned(), protocol.to_owned())).cloned().filter(|m| !m.is_empty())
    }

    fn add_remote(&self, sid: &str, provider: Arc<RemoteProvider>) -> Result<(), wire::RpcError> {
        let mut remotes = lock(&self.sockets.remotes);
        let own = remotes.get(sid).is_some_and(|list| list.iter().any(|p| p.id() == provider.id()));
        if !own && self.core.registry.providers().iter().any(|p| p.id() == provider.id()) {
            return Err(wire::RpcError::new(
                wire::errors::CONFLICT,
                format!(
                    "register_provider: provider_id '{}' is already registered by another connection",
                    provider.id()
                ),
            ));
        }
        let list = remotes.entry(sid.to_owned()).or_default();
        if let Some(old) = list.iter().position(|p| p.id() == provider.id()) {
            let old = list.remove(old);
            self.core.registry.unregister(old.id());
            old.close();
        }
        self.core.registry.register(provider.clone());
        list.push(provider);
        drop(remotes);
        self.core.engine().providers_changed();
        Ok(())
    }

    /// A socket disconnected: its providers leave; their calls in flight go
    /// back to the queue.
    fn forget_socket(&self, sid: &str) {
        self.sockets.outboxes.close(sid);
        let providers = lock(&self.sockets.remotes).remove(sid).unwrap_or_default();
        for provider in providers {
            tracing::info!(provider = &**provider.id(), "remote provider disconnected");
            self.core.registry.unregister(provider.id());
            provider.close();
        }
        lock(&self.sockets.declared).retain(|(socket, _), _| socket != sid);
    }

    fn progress(&self, sid: &str, call_id: &str, chunk: Value) -> bool {
        let remotes = lock(&self.sockets.remotes);
        remotes.get(sid).is_some_and(|list| list.iter().any(|p| p.progress(call_id, chunk.clone())))
    }

    fn deliver(&self, sid: &str, call_id: &str, reply: Value) -> bool {
        let remotes = lock(&self.sockets.remotes);
        remotes.get(sid).is_some_and(|list| list.iter().any(|p| p.deliver(call_id, reply.clone())))
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
pub async fn meter_transports(
    axum::extract::State(sockets): axum::extract::State<Arc<SocketTransport>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let query = request.uri().query().unwrap_or_default();
    let connection = request.extensions().get::<axum::extract::ConnectInfo<Connection>>();
    if let (Some(sid), Some(transport), Some(connection)) =
        (query_param(query, "sid"), query_param(query, "transport"), connection)
    {
        let meter = connection.0.meter.clone();
        match transport {
            "websocket" => sockets.sockets.outboxes.upgraded(sid, meter),
            _ if request.method() == axum::http::Method::GET => sockets.sockets.outboxes.polled_on(sid, meter),
            _ => {}
        }
    }
    next.run(request).await
}

/// Tell the subscribers of provider changes when a plugin loads, fails or
/// goes, and let parked tasks try the new providers.
fn announce_plugin_changes(core: &Core, io: SocketIo) {
    let engine = core.engine().clone();
    core.plugins.on_change(move |event| {
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
fn emit_to_room(
    io: &SocketIo,
    transport: &SocketTransport,
    room: String,
    event: &str,
    payload: &impl serde::Serialize,
) {
    let sockets = io.to(room).sockets();
    if sockets.is_empty() {
        return;
    }
    let bytes = counted_len(payload);
    for socket in sockets {
        transport.send_counted(&socket, bytes, || socket.emit(event, payload).is_ok());
    }
}

/// Whether any socket follows workflow `workflow_id` here.
pub fn followed(io: &SocketIo, workflow_id: &str) -> bool {
    !io.to(room(workflow_id)).sockets().is_empty()
}

/// Send an engine event to the sockets in its workflow's room; after the
/// last (`workflow_completed`) they leave the room, which nothing more is
/// sent to.
pub async fn forward(io: &SocketIo, transport: &SocketTransport, described: &Described<'_>) {
    let room = room(described.workflow_id);
    match described.counted {
        true => emit_to_room(io, transport, room.clone(), described.name, &described.payload),
        // A few ids: sent to the room at once, uncounted (an outbox's
        // balance cannot bank what it did not count).
        false => {
            let _ = io.to(room.clone()).emit(described.name, &described.payload).await;
        }
    }
    if described.name == "workflow_completed" {
        let _ = io.to(room.clone()).leave(room).await;
    }
}
