//! Event handlers: what each client → server event does and answers.
//!
//! Every event answers through its ack when the client asks for one, and
//! also with the original system's reply events where it had them. Failures
//! are JSON-RPC 2.0 error objects (ack `{error}` and an `error` event); a bad
//! payload never takes the server down.

use super::SocketTransport;
use super::remote::RemoteProvider;
use super::wire::{self, Fields, Payload, RpcError, errors, object};
use crate::auth::{Action, Caller};
use crate::model::{MethodSpec, ProviderSpec};
use crate::schema::ParamsSchema;
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use socketioxide::handler::FromMessageParts;
use std::sync::Arc;

/// Most calls a remote provider gets at once unless it says otherwise.
const DEFAULT_MAX_CONCURRENT: u64 = 32;
const MAX_CONCURRENT_LIMIT: u64 = 10_000;
/// Most methods one provider or protocol declaration may name.
const MAX_METHODS: usize = 1000;

/// Answer an event: the ack (when asked for) and, on failure, an `error`
/// event as the original server sent.
fn answer(transport: &SocketTransport, socket: &SocketRef, ack: Reply, outcome: Result<Value, RpcError>) {
    let outcome = outcome.and_then(|value| match wire::encoded_len(&value) {
        len if len > crate::daemon::MAX_REPLY_BYTES => Err(RpcError::new(
            errors::TOO_LARGE,
            format!(
                "the answer is {len} bytes; answers are limited to {} bytes (256 MiB)",
                crate::daemon::MAX_REPLY_BYTES
            ),
        )),
        _ => Ok(value),
    });
    let reply = match outcome {
        Ok(value) => value,
        Err(error) => {
            tracing::debug!(socket = %socket.id, "request failed: {}", error.message);
            let reply = error.to_reply();
            transport.send_counted(socket, super::counted_len(&reply), || socket.emit("error", &reply).is_ok());
            reply
        }
    };
    if ack.asked {
        transport.send_counted(socket, super::counted_len(&reply), || ack.sender.send(&reply).is_ok());
    }
}

/// A request's ack, and whether the client asked for one: an ack nobody
/// asked for is not sent, so it must not count as queued either.
pub struct Reply {
    sender: AckSender,
    asked: bool,
}

impl FromMessageParts<socketioxide::adapter::LocalAdapter> for Reply {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        socket: &Arc<socketioxide::socket::Socket>,
        packet: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        let sender = AckSender::from_message_parts(socket, packet, ack_id)?;
        Ok(Reply { sender, asked: ack_id.is_some() })
    }
}

fn payload(event: &str, data: Payload) -> Result<Map<String, Value>, RpcError> {
    object(event, data.0)
}

/// Registers every handler. It runs as a connect *middleware*, before the
/// host confirms the connection: socketioxide spawns the connect handler, so
/// handlers registered there could miss a client's first, immediate request.
pub async fn register_handlers(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    socket.on("register_protocol", register_protocol);
    socket.on("register_provider", register_provider);
    socket.on("method_result", method_result);
    socket.on("task_progress", task_progress);
    socket.on("submit_workflow", submit_workflow);
    socket.on("submit_task", submit_task);
    socket.on("get_workflow", get_workflow);
    socket.on("list_workflows", list_workflows);
    socket.on("cancel_workflow", cancel_workflow);
    socket.on("rerun_workflow", rerun_workflow);
    socket.on("add_schedule", add_schedule);
    socket.on("list_schedules", list_schedules);
    socket.on("remove_schedule", remove_schedule);
    socket.on("subscribe", subscribe);
    socket.on("unsubscribe", unsubscribe);
    socket.on("list_providers", list_providers);
    socket.on("list_protocols", list_protocols);
    socket.on("list_plugins", list_plugins);
    socket.on("list_hosts", list_hosts);
    socket.on_fallback(unknown_event);
    socket.on_disconnect(disconnected);
    Ok(())
}

/// A refused handshake: the client gets a CONNECT_ERROR whose message is
/// this (the JSON-RPC error's message and code).
#[derive(Debug)]
pub struct Refusal(RpcError);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.0.message, self.0.code)
    }
}

/// Admit a connection only with a token the host knows (unless
/// authentication is off): the CONNECT `auth` payload's `token`, or an
/// `Authorization: Bearer` header of the handshake. The caller is kept with
/// the socket for every later event.
pub async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(transport): State<Arc<SocketTransport>>,
) -> Result<(), Refusal> {
    let from_payload = auth.ok().and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_owned));
    let token = match from_payload {
        Some(token) => Some(token),
        None => crate::daemon::bearer(&socket.req_parts().headers).map_err(Refusal)?,
    };
    let caller =
        transport.core.policy().authenticate(token.as_deref()).map_err(|e| Refusal(transport.refused(&socket, &e)))?;
    tracing::debug!(socket = %socket.id, token = caller.name(), "connected");
    socket.extensions.insert(caller);
    Ok(())
}

/// Greets the client as the original host did.
pub async fn on_connect(socket: SocketRef, State(transport): State<Arc<SocketTransport>>) {
    transport.opened(&socket);
    let _ = socket
        .emit("connected", &json!({ "message": "Connected to the Gleitzeit host", "sid": socket.id.to_string() }));
}

async fn unknown_event(
    socket: SocketRef,
    Event(event): Event,
    ack: Reply,
    State(transport): State<Arc<SocketTransport>>,
) {
    // The name is the client's: echo only the start of it.
    let name = crate::text::excerpt(&event);
    let message = format!("unknown event '{name}'; see docs/protocol.md for the events the host understands");
    answer(&transport, &socket, ack, Err(RpcError::new(errors::METHOD_NOT_FOUND, message)));
}

async fn disconnected(socket: SocketRef, State(transport): State<Arc<SocketTransport>>) {
    transport.forget_socket(&socket.id.to_string());
}

/// `{protocol: {name, version, description?, methods: {NAME: {description}}}}`
async fn register_protocol(
    socket: SocketRef,
    data: Payload,
    ack: Reply,
    State(transport): State<Arc<SocketTransport>>,
) {
    let outcome = (|| {
        let caller = transport.caller(&socket, Action::Serve)?;
        let map = payload("register_protocol", data)?;
        let fields = Fields { event: "register_protocol", map: &map };
        let protocol = fields.object("protocol")?;
        let inner = protocol.as_object().cloned().unwrap_or_default();
        let spec = Fields { event: "register_protocol.protocol", map: &inner };
        let name = spec.string("name")?;
        let version = spec.string("version")?;
        let protocol_id = format!("{name}/{version}");
        check_protocol_id("register_protocol", &protocol_id)?;
        caller.may_serve(&protocol_id).map_err(|e| transport.refused(&socket, &e))?;
        let methods: Vec<Declared> = match inner.get("methods") {
            Some(Value::Object(methods)) => methods
                .iter()
                .map(|(name, m)| Declared {
                    name: name.clone(),
                    description: m.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    schema: m.get("params_schema").cloned(),
                })
                .collect(),
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).map(Declared::named).collect(),
            _ => Vec::new(),
        };
        let methods = method_specs("register_protocol", "protocol.methods", methods)?;
        transport.declare_protocol(&socket.id.to_string(), &protocol_id, methods);
        let reply = json!({ "protocol_id": protocol_id, "message": format!("Protocol {protocol_id} registered") });
        let _ = socket.emit("protocol_registered", &reply);
        Ok(reply)
    })();
    answer(&transport, &socket, ack, outcome);
}

/// `{provider_id, protocol_id, supported_methods, name?, description?, max_concurrent?}`
async fn register_provider(
    socket: SocketRef,
    data: Payload,
    ack: Reply,
    io: SocketIo,
    State(transport): State<Arc<SocketTransport>>,
) {
    let outcome = (|| {
        let caller = transport.caller(&socket, Action::Serve)?;
        let map = payload("register_provider", data)?;
        let fields = Fields { event: "register_provider", map: &map };
        let provider_id = fields.string("provider_id")?;
        let protocol_id = fields.string("protocol_id")?;
        check_protocol_id("register_provider", &protocol_id)?;
        transport.may_register(&caller, &provider_id, &protocol_id).map_err(|e| transport.refused(&socket, &e))?;
        let sid = socket.id.to_string();
        let methods = match fields.strings("supported_methods", "methods")? {
            Some(names) if !names.is_empty() => {
                let mut schemas = match map.get("params_schemas") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(schemas)) => schemas.clone(),
                    Some(_) => {
                        return Err(RpcError::new(
                            errors::INVALID_PARAMS,
                            "register_provider: field 'params_schemas' must be an object of method name to JSON Schema",
                        ));
                    }
                };
                let declared: Vec<Declared> = (names.iter())
                    .map(|name| Declared { schema: schemas.remove(name), ..Declared::named(name) })
                    .collect();
                if let Some(stray) = schemas.keys().next() {
                    return Err(RpcError::new(
                        errors::INVALID_PARAMS,
                        format!(
                            "register_provider: 'params_schemas' names method '{}', which 'supported_methods' does not list",
                            crate::text::excerpt(stray)
                        ),
                    ));
                }
                method_specs("register_provider", "supported_methods", declared)?
            }
            _ => transport.declared_methods(&sid, &protocol_id).ok_or_else(|| {
                RpcError::new(
                    errors::INVALID_PARAMS,
                    "register_provider: field 'supported_methods' must list the methods served (or register_protocol first)",
                )
            })?,
        };
        let max_concurrent =
            fields.optional_count("max_concurrent", MAX_CONCURRENT_LIMIT)?.unwrap_or(DEFAULT_MAX_CONCURRENT);
        let spec = ProviderSpec {
            protocol: protocol_id.clone(),
            name: fields.optional_string("name")?.unwrap_or_else(|| provider_id.clone()),
            version: "remote".into(),
            description: fields.optional_string("description")?.unwrap_or_default(),
            methods,
        };
        let method_names: Vec<String> = spec.methods.iter().map(|m| m.name.clone()).collect();
        let provider = RemoteProvider::new(provider_id.clone(), spec, socket.clone(), max_concurrent as usize);
        transport.add_remote(&sid, Arc::new(provider))?;
        let message = format!("Provider {provider_id} registered for {protocol_id}");
        let reply = json!({ "provider_id": provider_id, "protocol_id": protocol_id, "message": message });
        let _ = socket.emit("provider_registered", &reply);
        let available =
            json!({ "provider_id": provider_id, "protocol_id": protocol_id, "supported_methods": method_names });
        tokio::spawn(async move { io.to(super::PROVIDERS_ROOM).emit("provider_available", &available).await });
        Ok(reply)
    })();
    answer(&transport, &socket, ack, outcome);
}

fn check_protocol_id(event: &str, protocol_id: &str) -> Result<(), RpcError> {
    if crate::ids::is_protocol(protocol_id) {
        return Ok(());
    }
    let shown = crate::text::excerpt(protocol_id);
    Err(RpcError::new(
        errors::INVALID_PARAMS,
        format!("{event}: protocol_id '{shown}' is not of the form name/version (e.g. echo/v1)"),
    ))
}

/// A method as a remote provider declares it.
struct Declared {
    name: String,
    description: String,
    schema: Option<Value>,
}

impl Declared {
    fn named(name: &str) -> Self {
        Self { name: name.to_owned(), description: String::new(), schema: None }
    }
}

/// Declared methods: each name a method name (as in workflows), at most
/// [`MAX_METHODS`] of them, each schema a JSON Schema the host can compile.
fn method_specs(event: &str, field: &str, methods: Vec<Declared>) -> Result<Vec<MethodSpec>, RpcError> {
    if methods.len() > MAX_METHODS {
        return Err(RpcError::new(
            errors::INVALID_PARAMS,
            format!("{event}: field '{field}' names {} methods; at most {MAX_METHODS} are allowed", methods.len()),
        ));
    }
    if let Some(bad) = methods.iter().find(|m| !crate::ids::is_method(&m.name)) {
        return Err(RpcError::new(
            errors::INVALID_PARAMS,
            format!(
                "{event}: method '{}' in '{field}' is not a method name: a letter, then letters, digits, '_', '.', '/', ':' or '-', at most 200 bytes",
                crate::text::excerpt(&bad.name)
            ),
        ));
    }
    methods
        .into_iter()
        .map(|m| {
            let params_schema = (m.schema.map(ParamsSchema::compile).transpose())
                .map_err(|e| RpcError::new(errors::INVALID_PARAMS, format!("{event}: method '{}': {e}", m.name)))?;
            Ok(MethodSpec { name: m.name, description: m.description, params_schema })
        })
        .collect()
}

/// `{id, result}` / `{id, error}` / a JSON-RPC 2.0 response: the answer to an
/// `execute_method` call, for clients that cannot answer acks.
async fn method_result(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = (|| {
        transport.caller(&socket, Action::Serve)?;
        let map = payload("method_result", data)?;
        let id = match map.get("id") {
            Some(Value::String(id)) => id.clone(),
            _ => return Err(RpcError::new(errors::INVALID_PARAMS, "method_result: field 'id' must be the call's id")),
        };
        if transport.deliver(&socket.id.to_string(), &id, Value::Object(map)) {
            Ok(json!({ "id": id, "accepted": true }))
        } else {
            Err(RpcError::new(errors::NOT_FOUND, format!("method_result: no call '{id}' is waiting for an answer")))
        }
    })();
    answer(&transport, &socket, ack, outcome);
}

/// `{id, chunk}`: partial output of a running call, for the task's subscribers.
async fn task_progress(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = (|| {
        transport.caller(&socket, Action::Serve)?;
        let map = payload("task_progress", data)?;
        let Some(Value::String(id)) = map.get("id") else {
            return Err(RpcError::new(errors::INVALID_PARAMS, "task_progress: field 'id' must be the call's id"));
        };
        let chunk = map.get("chunk").cloned().unwrap_or(Value::Null);
        if transport.progress(&socket.id.to_string(), id, chunk) {
            Ok(json!({ "id": id, "accepted": true }))
        } else {
            Err(RpcError::new(errors::NOT_FOUND, format!("task_progress: no call '{id}' is running")))
        }
    })();
    answer(&transport, &socket, ack, outcome);
}

/// Submit as `caller`, with `socket` in the workflow's room first so that
/// it misses none of its events; a refused submission leaves the room again
/// (unless it was there before: an earlier submission or a subscription).
async fn submit_joined(
    socket: &SocketRef,
    transport: &SocketTransport,
    caller: &Caller,
    workflow: crate::model::Workflow,
) -> Result<(String, usize), RpcError> {
    let task_count = workflow.tasks.len();
    let room = super::room(&workflow.id);
    let joined_before = super::joined(socket, &room);
    socket.join(room.clone());
    let submitted = transport.core.submit(caller, workflow).await.inspect_err(|_| {
        if !joined_before {
            socket.leave(room);
        }
    })?;
    Ok((submitted.workflow_id, task_count))
}

/// `{workflow: {...}, inputs?: {NAME: value}}`
async fn submit_workflow(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let caller = transport.caller(&socket, Action::Submit)?;
        let map = payload("submit_workflow", data)?;
        let fields = Fields { event: "submit_workflow", map: &map };
        let (tree, inputs) = (fields.object("workflow")?, fields.optional_object("inputs")?);
        let workflow = transport.core.validated("submit_workflow: workflow", tree, inputs)?;
        let (workflow_id, task_count) = submit_joined(&socket, &transport, &caller, workflow).await?;
        let message = format!("Workflow {workflow_id} submitted with {task_count} tasks");
        let reply = json!({ "workflow_id": workflow_id, "task_count": task_count, "message": message });
        let _ = socket.emit("workflow_submitted", &reply);
        Ok(reply)
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// `{task: {..., workflow_id?}}`: a one-task workflow that runs at once.
async fn submit_task(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let caller = transport.caller(&socket, Action::Submit)?;
        let map = payload("submit_task", data)?;
        let task = Fields { event: "submit_task", map: &map }.object("task")?;
        let workflow = transport.core.validated(
            "submit_task",
            crate::daemon::requests::one_task_tree(task),
            Default::default(),
        )?;
        let task_id = workflow.tasks[0].id.clone();
        let (workflow_id, _) = submit_joined(&socket, &transport, &caller, workflow).await?;
        let message = format!("Task {task_id} submitted");
        let reply = json!({ "task_id": task_id, "workflow_id": workflow_id, "message": message });
        let _ = socket.emit("task_submitted", &reply);
        Ok(reply)
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

fn workflow_id(event: &str, data: Payload) -> Result<String, RpcError> {
    let map = payload(event, data)?;
    Fields { event, map: &map }.string("workflow_id")
}

/// `{workflow_id}`: the workflow's report (running or finished).
async fn get_workflow(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let Some(_slot) = transport.request_slot(&socket).await else { return };
    let outcome = async {
        let caller = transport.caller(&socket, Action::Read)?;
        let id = workflow_id("get_workflow", data)?;
        match transport.core.report(&caller, &id).await? {
            Some(report) => serde_json::to_value(&report).map_err(RpcError::internal),
            None => Err(RpcError::new(errors::NOT_FOUND, format!("get_workflow: no workflow '{id}'"))),
        }
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// `{status?, name?, since?, until?, cursor?, limit?}`: the workflows the
/// caller may see, newest submitted first (see `listing`); `next_cursor`
/// continues the list.
async fn list_workflows(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let Some(_slot) = transport.request_slot(&socket).await else { return };
    let outcome = async {
        let caller = transport.caller(&socket, Action::Read)?;
        // The original's clients send no payload at all.
        let map = match data.0 {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let query = crate::daemon::requests::list_query(&map, LISTED_BY_DEFAULT)
            .map_err(|e| RpcError { message: format!("list_workflows: {}", e.message), ..e })?;
        let listed = transport.core.list(&caller, query).await?;
        let next = listed.next.map(|c| c.encode());
        Ok(json!({ "workflows": listed.workflows, "next_cursor": next }))
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// Workflows `list_workflows` shows when the request names no limit (as
/// many as the original listed).
const LISTED_BY_DEFAULT: usize = crate::listing::MAX_PAGE;

/// `{workflow_id}`
async fn cancel_workflow(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let caller = transport.caller(&socket, Action::Cancel)?;
        let id = workflow_id("cancel_workflow", data)?;
        if let Some(workflow_id) = transport.core.cancel(&caller, &id).await? {
            Ok(json!({ "workflow_id": workflow_id, "cancelled": true }))
        } else {
            Err(RpcError::new(errors::NOT_FOUND, format!("cancel_workflow: no running workflow '{id}'")))
        }
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// `{workflow_id, from?}`: a new workflow from a failed or cancelled one
/// (see `daemon::rerun`); answers `{workflow_id, rerun_of, task_count}`.
async fn rerun_workflow(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let caller = transport.caller(&socket, Action::Submit)?;
        let map = payload("rerun_workflow", data)?;
        let fields = Fields { event: "rerun_workflow", map: &map };
        let id = fields.string("workflow_id")?;
        let from = fields.optional_string("from")?;
        let rerun = transport.core.rerun(&caller, &id, from.as_deref()).await?;
        let task_count = rerun.task_count;
        Ok(json!({ "workflow_id": rerun.submitted.workflow_id, "rerun_of": rerun.rerun_of, "task_count": task_count }))
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// `{workflow: {...}, schedule?: {cron?, timezone?, inputs?, due_input?,
/// id?}, replace?}`: keep the workflow's schedule (its `schedule:` block,
/// with `schedule`'s fields over it); the host starts its runs.
async fn add_schedule(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let caller = transport.caller(&socket, Action::Submit)?;
        let map = payload("add_schedule", data)?;
        let fields = Fields { event: "add_schedule", map: &map };
        let (tree, overrides, replace) =
            (fields.object("workflow")?, fields.optional_object("schedule")?, fields.flag("replace")?);
        let info = transport.core.add_schedule(&caller, "add_schedule: workflow", tree, overrides, replace).await?;
        serde_json::to_value(info).map_err(RpcError::internal)
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// The schedules the caller may see, by id.
async fn list_schedules(socket: SocketRef, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let caller = transport.caller(&socket, Action::Read)?;
        Ok(json!({ "schedules": transport.core.schedules(&caller).await }))
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// `{schedule_id}`: forget a schedule (runs it started go on).
async fn remove_schedule(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let caller = transport.caller(&socket, Action::Cancel)?;
        let map = payload("remove_schedule", data)?;
        let id = Fields { event: "remove_schedule", map: &map }.string("schedule_id")?;
        if let Some(schedule_id) = transport.core.remove_schedule(&caller, &id).await? {
            Ok(json!({ "schedule_id": schedule_id, "removed": true }))
        } else {
            Err(RpcError::new(
                errors::NOT_FOUND,
                format!("remove_schedule: no schedule '{}'", crate::text::excerpt(&id)),
            ))
        }
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

/// What `subscribe` and `unsubscribe` name: `{workflow_id}` (that workflow's
/// events) or `{providers: true}` (providers and plugins coming and going).
enum Topic {
    Workflow(String),
    Providers,
}

impl Topic {
    fn parse(event: &str, data: Payload) -> Result<Self, RpcError> {
        let map = payload(event, data)?;
        if map.get("providers") == Some(&Value::Bool(true)) {
            return Ok(Topic::Providers);
        }
        let id = Fields { event, map: &map }.string("workflow_id").map_err(|e| RpcError {
            message: format!("{}; or send {{\"providers\": true}} for provider changes", e.message),
            ..e
        })?;
        Ok(Topic::Workflow(id))
    }

    fn room(&self) -> String {
        match self {
            Topic::Workflow(id) => super::room(id),
            Topic::Providers => super::PROVIDERS_ROOM.to_owned(),
        }
    }

    fn reply(&self, subscribed: bool) -> Value {
        match self {
            Topic::Workflow(id) => json!({ "workflow_id": id, "subscribed": subscribed }),
            Topic::Providers => json!({ "providers": true, "subscribed": subscribed }),
        }
    }
}

async fn subscribe(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = async {
        let topic = Topic::parse("subscribe", data)?;
        let workflow_id = match &topic {
            Topic::Providers => {
                transport.caller(&socket, Action::Observe)?;
                socket.join(topic.room());
                return Ok(topic.reply(true));
            }
            // With tokens, only an existing workflow of the caller's: an id
            // subscribed to in advance could become another user's.
            Topic::Workflow(id) => match transport.caller(&socket, Action::Read)? {
                Caller::Anyone => id.clone(),
                caller => match transport.core.report(&caller, id).await? {
                    Some(report) => report.workflow_id,
                    None => return Err(RpcError::new(errors::NOT_FOUND, format!("subscribe: no workflow '{id}'"))),
                },
            },
        };
        let room = super::room(&workflow_id);
        let followed = super::workflows_followed(&socket);
        if followed >= super::MAX_SUBSCRIPTIONS && !super::joined(&socket, &room) {
            let message = format!(
                "subscribe: this connection follows {followed} workflows, the most one connection may; \
                 unsubscribe from one first (a workflow's subscription ends when it completes)"
            );
            return Err(RpcError::new(errors::BUSY, message));
        }
        socket.join(room);
        // Joined first: a workflow no socket follows is forgotten.
        transport.core.membership.follow(&workflow_id).await;
        Ok(topic.reply(true))
    }
    .await;
    answer(&transport, &socket, ack, outcome);
}

async fn unsubscribe(socket: SocketRef, data: Payload, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = Topic::parse("unsubscribe", data).map(|topic| {
        if let (Topic::Workflow(id), Ok(caller)) = (&topic, transport.caller(&socket, Action::Read)) {
            socket.leave(super::room(&caller.own_id(id)));
        }
        socket.leave(topic.room());
        topic.reply(false)
    });
    answer(&transport, &socket, ack, outcome);
}

async fn list_providers(socket: SocketRef, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome =
        transport.caller(&socket, Action::Observe).map(|_| json!({ "providers": transport.core.providers() }));
    answer(&transport, &socket, ack, outcome);
}

async fn list_protocols(socket: SocketRef, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome =
        transport.caller(&socket, Action::ListProtocols).map(|_| json!({ "protocols": transport.core.protocols() }));
    answer(&transport, &socket, ack, outcome);
}

async fn list_hosts(socket: SocketRef, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = match transport.caller(&socket, Action::Observe) {
        Ok(_) => transport.core.hosts().await.map(|hosts| json!({ "hosts": hosts })),
        Err(e) => Err(e),
    };
    answer(&transport, &socket, ack, outcome);
}

async fn list_plugins(socket: SocketRef, ack: Reply, State(transport): State<Arc<SocketTransport>>) {
    let outcome = transport.caller(&socket, Action::Observe).map(|_| json!(transport.core.plugins()));
    answer(&transport, &socket, ack, outcome);
}
