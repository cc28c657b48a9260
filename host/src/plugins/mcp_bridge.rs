//! Bridges for MCP servers that speak stdio (most of them): the host runs the
//! command a manifest names under `[mcp_stdio.NAME]` and serves it to the
//! plugin as MCP's Streamable HTTP on a loopback port, so the plugin still
//! reaches only a granted endpoint and never starts a process itself.
//!
//! One bridge serves one server process, started at the first request and
//! again after it exits. The bridge owns the MCP session with the process:
//! it initializes the process once and answers each plugin call's
//! `initialize` with the process's own answer, renumbers request ids so
//! concurrent calls never collide, passes progress notifications on to the
//! call that asked for them (as server-sent events), and refuses requests the
//! process sends to its client (sampling, roots), which a bridge cannot
//! answer. A bridge is
//! dropped with the plugin version that owns it; the process is killed then.
//!
//! Only the plugin it was made for may use a bridge: the host adds the
//! bridge's secret to that plugin's requests (the plugin never sees it), and
//! any other request, from another local process say, gets 401.
//!
//! It does not interpret tools, resources or prompts: that is the plugin's.

use super::grants::{Grants, StdioServer};
use super::origins::HostPattern;
use crate::codes;
use crate::locks::lock;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// How long a starting server may take to answer `initialize` (a first
/// `npx` run may unpack its package).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running bridge: its loopback URL while it lives.
pub struct Bridge {
    pub name: String,
    pub url: String,
    /// `http://127.0.0.1:PORT`, for the plugin's grants.
    pub origin: String,
    /// What requests must carry as `Authorization: Bearer`.
    pub secret: String,
    server: AbortHandle,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bridge({} at {})", self.name, self.url)
    }
}

/// Start `grants`' bridges; grant their endpoints and announce them to the
/// plugin in `config("servers")` (a JSON object of name: url). The grants
/// that result, and the bridges, which stop when the last handle on them
/// is dropped (with the plugin version that holds them).
pub async fn attach(plugin: &str, mut grants: Grants) -> Result<(Grants, Vec<Arc<Bridge>>), String> {
    if grants.mcp_stdio.is_empty() {
        return Ok((grants, Vec::new()));
    }
    let mut servers = match grants.config.get("servers") {
        Some(text) => serde_json::from_str::<serde_json::Map<String, Value>>(text)
            .map_err(|e| format!("config.servers must be a table of name = url: {e}"))?,
        None => serde_json::Map::new(),
    };
    let (mut endpoints, mut bridges) = (Vec::new(), Vec::new());
    for (name, spec) in std::mem::take(&mut grants.mcp_stdio) {
        let bridge = start(plugin, &name, spec).await?;
        servers.insert(name, json!(bridge.url));
        endpoints.push((bridge.origin.parse::<HostPattern>()?, bridge.secret.clone()));
        bridges.push(Arc::new(bridge));
    }
    grants.config.insert("servers".into(), Value::Object(servers).to_string());
    grants.outbound = grants.outbound.with_endpoints(endpoints)?;
    Ok((grants, bridges))
}

/// Listen on a loopback port for `spec`; the process starts on demand.
pub async fn start(plugin: &str, name: &str, spec: StdioServer) -> Result<Bridge, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("mcp_stdio.{name}: cannot listen on a loopback port: {e}"))?;
    let port = listener.local_addr().map_err(|e| format!("mcp_stdio.{name}: {e}"))?.port();
    let secret = crate::auth::random_hex().map_err(|e| format!("mcp_stdio.{name}: cannot draw a secret: {e}"))?;
    let state = Arc::new(Shared {
        secret: secret.clone(),
        label: format!("{plugin}/{name}"),
        spec,
        process: tokio::sync::Mutex::new(None),
        pending: Arc::default(),
        next_id: AtomicU64::new(1),
    });
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::post(post)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { StatusCode::OK }),
        )
        .with_state(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let origin = format!("http://127.0.0.1:{port}");
    tracing::info!("MCP bridge {plugin}/{name} on {origin}/mcp");
    Ok(Bridge { name: name.to_owned(), url: format!("{origin}/mcp"), origin, secret, server: server.abort_handle() })
}

/// Requests waiting for the process: where their answer (and, for a call
/// that asked for progress, the progress notifications) go.
#[derive(Default)]
struct Waiting {
    replies: HashMap<u64, mpsc::UnboundedSender<Value>>,
    /// Progress token (as JSON text) → the request it belongs to.
    progress: HashMap<String, u64>,
}

type Pending = Arc<Mutex<Waiting>>;

struct Shared {
    /// The bearer token requests must show.
    secret: String,
    label: String,
    spec: StdioServer,
    process: tokio::sync::Mutex<Option<Process>>,
    pending: Pending,
    next_id: AtomicU64,
}

/// A live server process and the tasks that talk to it.
struct Process {
    _child: Child,
    to_server: mpsc::UnboundedSender<String>,
    /// Its answer to our `initialize`.
    init: Value,
    exited: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Process {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn rpc_error(id: &Value, code: i32, message: String) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})).into_response()
}

/// An internal-error reply to request `id`.
fn rpc_error_value(id: &Value, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": codes::INTERNAL_ERROR, "message": message}})
}

async fn post(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let shown = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let authorized =
        shown.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|s| crate::auth::same_secret(s, &shared.secret));
    if !authorized {
        tracing::warn!("MCP bridge {}: refused a request without its secret", shared.label);
        return (StatusCode::UNAUTHORIZED, "this bridge serves only the plugin it was made for").into_response();
    }
    let Ok(message) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, rpc_error(&Value::Null, codes::PARSE_ERROR, "parse error: not JSON".into()))
            .into_response();
    };
    let id = message.get("id").cloned();
    let method = message["method"].as_str().unwrap_or("");
    let (to_server, init) = match shared.running().await {
        Ok(running) => running,
        Err(e) => return rpc_error(id.as_ref().unwrap_or(&Value::Null), codes::INTERNAL_ERROR, e),
    };
    match (id, method) {
        (Some(id), "initialize") => {
            let mut response = axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": init})).into_response();
            let session = format!("{:032x}", fastrand::u128(..));
            if let Ok(value) = session.parse() {
                response.headers_mut().insert("mcp-session-id", value);
            }
            response
        }
        (None, "notifications/initialized") => StatusCode::ACCEPTED.into_response(),
        (None, _) => {
            let _ = to_server.send(message.to_string());
            StatusCode::ACCEPTED.into_response()
        }
        (Some(id), _) => shared.forward(to_server, message, id).await,
    }
}

impl Shared {
    /// The live process, started (and initialized) if there is none.
    async fn running(&self) -> Result<(mpsc::UnboundedSender<String>, Value), String> {
        let mut process = self.process.lock().await;
        if process.as_ref().is_none_or(|p| p.exited.load(Ordering::SeqCst)) {
            *process = Some(self.spawn().await?);
        }
        let process = process.as_ref().ok_or("the MCP server is not running")?;
        Ok((process.to_server.clone(), process.init.clone()))
    }

    /// Send a request under a fresh id and answer with the reply under the
    /// caller's id: as JSON, or, if the request asked for progress, as
    /// server-sent events carrying the progress notifications, then the reply.
    async fn forward(&self, to_server: mpsc::UnboundedSender<String>, mut message: Value, id: Value) -> Response {
        let ours = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (reply, mut answers) = mpsc::unbounded_channel();
        let token = message["params"]["_meta"].get("progressToken").map(Value::to_string);
        {
            let mut waiting = lock(&self.pending);
            waiting.replies.insert(ours, reply);
            if let Some(token) = &token {
                waiting.progress.insert(token.clone(), ours);
            }
        }
        message["id"] = json!(ours);
        if to_server.send(message.to_string()).is_err() {
            lock(&self.pending).replies.remove(&ours);
            return rpc_error(&id, codes::INTERNAL_ERROR, format!("MCP server {} is not running", self.label));
        }
        let gone = rpc_error_value(&id, format!("MCP server {} exited before answering", self.label));
        if token.is_none() {
            return match answers.recv().await {
                Some(mut reply) => {
                    reply["id"] = id;
                    axum::Json(reply).into_response()
                }
                None => axum::Json(gone).into_response(),
            };
        }
        let events = futures_util::stream::unfold(Some(answers), move |answers| {
            let (id, gone) = (id.clone(), gone.clone());
            async move {
                let mut answers = answers?;
                let (message, more) = match answers.recv().await {
                    Some(mut message) if message.get("method").is_none() => {
                        message["id"] = id;
                        (message, None)
                    }
                    Some(notification) => (notification, Some(answers)),
                    None => (gone, None),
                };
                Some((Ok::<_, std::convert::Infallible>(format!("event: message\ndata: {message}\n\n")), more))
            }
        });
        let mut response = axum::body::Body::from_stream(events).into_response();
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/event-stream"));
        response
    }

    async fn spawn(&self) -> Result<Process, String> {
        let label = &self.label;
        let (program, args) = self.spec.command.split_first().ok_or("no command")?;
        let mut command = Command::new(program);
        command.args(args).envs(&self.spec.env).kill_on_drop(true);
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(cwd) = &self.spec.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start MCP server {label} ({program}): {e}"))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(format!("MCP server {label}: no pipes to the process"));
        };
        tracing::info!(server = %label, "started {}", self.spec.command.join(" "));
        let (to_server, mut outgoing) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(line) = outgoing.recv().await {
                if stdin.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader =
            tokio::spawn(read_server(label.clone(), stdout, self.pending.clone(), to_server.clone(), exited.clone()));
        let logger = tokio::spawn(log_stderr(label.clone(), stderr));
        let tasks = vec![writer.abort_handle(), reader.abort_handle(), logger.abort_handle()];
        let init = self.initialize(&to_server).await?;
        let _ = to_server.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
        Ok(Process { _child: child, to_server, init, exited, tasks })
    }

    async fn initialize(&self, to_server: &mpsc::UnboundedSender<String>) -> Result<Value, String> {
        let ours = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (reply, mut answers) = mpsc::unbounded_channel();
        lock(&self.pending).replies.insert(ours, reply);
        let request = json!({"jsonrpc": "2.0", "id": ours, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "gleitzeit-bridge", "version": env!("CARGO_PKG_VERSION")}}});
        let _ = to_server.send(request.to_string());
        let label = &self.label;
        let reply = match tokio::time::timeout(START_TIMEOUT, answers.recv()).await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                return Err(format!("MCP server {label} exited during initialize (see its stderr in the log)"));
            }
            Err(_) => return Err(format!("MCP server {label} did not answer initialize within {START_TIMEOUT:?}")),
        };
        reply.get("result").cloned().ok_or_else(|| format!("MCP server {label} refused initialize: {}", reply["error"]))
    }
}

/// Route the process's answers to their callers; refuse its own requests.
async fn read_server(
    label: String,
    stdout: tokio::process::ChildStdout,
    pending: Pending,
    to_server: mpsc::UnboundedSender<String>,
    exited: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(server = %label, "not JSON-RPC on stdout: {line}");
            continue;
        };
        let id = message.get("id").and_then(Value::as_u64);
        match (id, message.get("method")) {
            (Some(id), None) => {
                let mut waiting = lock(&pending);
                waiting.progress.retain(|_, request| *request != id);
                if let Some(reply) = waiting.replies.remove(&id) {
                    let _ = reply.send(message);
                }
            }
            (None, Some(method)) if method == "notifications/progress" => {
                let token = message["params"].get("progressToken").map(Value::to_string).unwrap_or_default();
                let waiting = lock(&pending);
                let request = waiting.progress.get(&token).and_then(|request| waiting.replies.get(request));
                if let Some(request) = request {
                    let _ = request.send(message);
                }
            }
            (Some(_), Some(method)) => {
                let refusal = json!({"jsonrpc": "2.0", "id": message["id"], "error": {"code": codes::METHOD_NOT_FOUND,
                    "message": format!("the gleitzeit bridge does not answer {method}")}});
                let _ = to_server.send(refusal.to_string());
            }
            _ => tracing::debug!(server = %label, "notification: {line}"),
        }
    }
    exited.store(true, Ordering::SeqCst);
    // Callers still waiting learn that the process is gone.
    *lock(&pending) = Waiting::default();
    tracing::info!(server = %label, "exited");
}

async fn log_stderr(label: String, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "mcp", server = %label, "{line}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Another local process that finds the bridge's port gets 401; only
    /// the secret the host adds to its plugin's requests is let through.
    #[tokio::test]
    async fn a_bridge_refuses_requests_without_its_secret() {
        let spec = StdioServer { command: vec!["false".into()], env: std::collections::BTreeMap::new(), cwd: None };
        let bridge = start("mcp", "x", spec).await.unwrap();
        let client = reqwest::Client::new();
        let ping = r#"{"jsonrpc": "2.0", "id": 1, "method": "ping"}"#;
        let status = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status().as_u16() };
        assert_eq!(status(client.post(&bridge.url).body(ping)).await, 401);
        assert_eq!(status(client.post(&bridge.url).bearer_auth("guessed").body(ping)).await, 401);
        // With the secret the request reaches the bridge (whose process, `false`, cannot start).
        assert_eq!(status(client.post(&bridge.url).bearer_auth(&bridge.secret).body(ping)).await, 200);
    }
}
