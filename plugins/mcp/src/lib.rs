//! `mcp/v1`: tools, resources and prompts of Model Context Protocol servers.
//!
//! Speaks MCP's Streamable HTTP transport: JSON-RPC 2.0 over HTTP POST, each
//! answer either JSON or a stream of server-sent events, the session in the
//! `Mcp-Session-Id` header. Every call opens its own session (`initialize`,
//! `notifications/initialized`, the request, then `DELETE`), since no state
//! survives from one task to the next.
//!
//! The servers are named in `config("servers")`, a JSON object of
//! `name: url`. The host adds stdio servers (`[mcp_stdio.NAME]` in the
//! manifest) to it as local endpoints it bridges. Every URL must be granted
//! in `allowed_hosts`; the bridged ones are granted by the host.

use gleitzeit_plugin_sdk::host::{self, FetchError, HttpRequest};
use gleitzeit_plugin_sdk::{Context, Provider, RpcError, Value, export_provider, json};
use schemars::JsonSchema;
use serde::Deserialize;

/// The protocol revision asked for; the server's answer decides.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// Pages of a list followed at most.
const MAX_PAGES: usize = 100;

/// Error codes of this provider: the SDK's table's `MCP_*`.
mod codes {
    pub use gleitzeit_plugin_sdk::codes::{
        MCP_DENIED as DENIED, MCP_MALFORMED as MALFORMED, MCP_SERVER_ERROR as SERVER_ERROR,
        MCP_TOOL_ERROR as TOOL_ERROR, MCP_UNAVAILABLE as UNAVAILABLE,
    };
}

/// The configured servers, `name -> url`, in name order.
fn servers() -> Result<Vec<(String, String)>, RpcError> {
    let Some(text) = host::config("servers") else {
        return Err(RpcError::invalid_params(
            "no MCP servers are configured: set [config.servers] (name = \"http://host:port/mcp\") or [mcp_stdio.NAME] in the plugin's manifest",
        ));
    };
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| RpcError::invalid_params(format!("config 'servers' must be a table of name = url: {e}")))?;
    map.into_iter()
        .map(|(name, url)| match url {
            Value::String(url) => Ok((name, url)),
            other => Err(RpcError::invalid_params(format!("config servers.{name} must be a URL string, not {other}"))),
        })
        .collect()
}

/// The server a call names, or the only one.
fn server(name: Option<&str>) -> Result<(String, String), RpcError> {
    let all = servers()?;
    let names = || all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => {
            all.iter().find(|(n, _)| n == name).cloned().ok_or_else(|| {
                RpcError::invalid_params(format!("no MCP server named '{name}' (configured: {})", names()))
            })
        }
        None if all.len() == 1 => Ok(all[0].clone()),
        None => Err(RpcError::invalid_params(format!("name the server with 'server' (configured: {})", names()))),
    }
}

/// One MCP session with one server.
struct Session {
    server: String,
    url: String,
    id: Option<String>,
    version: String,
    next_id: u64,
    info: Value,
}

impl Session {
    /// `initialize`, then `notifications/initialized`.
    fn open(server: &str, url: &str) -> Result<Self, RpcError> {
        let mut session = Self {
            server: server.to_owned(),
            url: url.to_owned(),
            id: None,
            version: PROTOCOL_VERSION.to_owned(),
            next_id: 1,
            info: Value::Null,
        };
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "gleitzeit", "version": env!("CARGO_PKG_VERSION")},
        });
        let info = session.request("initialize", params)?;
        if let Some(version) = info["protocolVersion"].as_str() {
            session.version = version.to_owned();
        }
        session.info = info;
        session.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), None)?;
        Ok(session)
    }

    fn request(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let reply =
            self.post(&message, Some(id))?.ok_or_else(|| self.malformed(&format!("no answer to '{method}'")))?;
        if let Some(error) = reply.get("error") {
            let message = error["message"].as_str().unwrap_or("unknown error");
            return Err(RpcError::new(
                codes::SERVER_ERROR,
                format!("MCP server '{}' refused '{method}': {message}", self.server),
            )
            .with_data(json!({"server": self.server, "error": error})));
        }
        reply.get("result").cloned().ok_or_else(|| self.malformed(&reply.to_string()))
    }

    /// A list request, following `nextCursor` pages.
    fn list(&mut self, method: &str, key: &str) -> Result<Vec<Value>, RpcError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = self.request(method, params)?;
            items.extend(page[key].as_array().cloned().unwrap_or_default());
            cursor = page["nextCursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        Ok(items)
    }

    /// POST one message; the answer with `expect` as its id, if one is due.
    /// Progress and log notifications on the way go to `progress`.
    fn post(&mut self, message: &Value, expect: Option<u64>) -> Result<Option<Value>, RpcError> {
        let mut request = host::post_json(&self.url, message);
        request.headers.push(("accept".into(), "application/json, text/event-stream".into()));
        self.with_session(&mut request);
        let response = host::fetch_stream(&request).map_err(|e| self.host_error(e))?;
        if let Some((_, id)) = response.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id")) {
            self.id = Some(id.clone());
        }
        let event_stream = response
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v.starts_with("text/event-stream"));
        let mut lines = host::lines(response.body);
        match response.status {
            202 => return Ok(None),
            200 => {}
            status => {
                let body: Vec<String> = lines.by_ref().take(20).filter_map(Result::ok).collect();
                return Err(self.status_error(status, &body.join("\n")));
            }
        }
        if event_stream {
            return self.read_events(&mut lines, expect);
        }
        let body: Result<Vec<String>, String> = lines.collect();
        let body = body.map_err(|text| self.host_error(FetchError::Failed(text)))?.join("\n");
        if expect.is_none() && body.trim().is_empty() {
            return Ok(None);
        }
        let value: Value = serde_json::from_str(&body).map_err(|_| self.malformed(&body))?;
        let found = match value {
            Value::Array(batch) => batch.into_iter().find(|m| m["id"] == json!(expect)),
            single => Some(single),
        };
        Ok(found)
    }

    /// Server-sent events until the answer to `expect` (then stop reading);
    /// progress and log notifications on the way go to the task's subscribers.
    fn read_events(&self, lines: &mut host::Lines, expect: Option<u64>) -> Result<Option<Value>, RpcError> {
        let mut data = String::new();
        for line in lines {
            let line = line.map_err(|text| self.host_error(FetchError::Failed(text)))?;
            if let Some(part) = line.strip_prefix("data:") {
                data.push_str(part.strip_prefix(' ').unwrap_or(part));
                data.push('\n');
                continue;
            }
            if !line.is_empty() || data.is_empty() {
                continue; // event:, id:, retry:, comments
            }
            let message: Value = serde_json::from_str(&data).map_err(|_| self.malformed(&data))?;
            data.clear();
            if expect.is_some() && message["id"] == json!(expect) {
                return Ok(Some(message));
            }
            let params = &message["params"];
            match message["method"].as_str() {
                Some("notifications/progress") => host::progress(&json!({
                    "server": self.server, "progress": params["progress"], "total": params["total"], "message": params["message"],
                })),
                Some("notifications/message") => {
                    host::progress(&json!({"server": self.server, "level": params["level"], "log": params["data"]}));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    fn with_session(&self, request: &mut HttpRequest) {
        if let Some(id) = &self.id {
            request.headers.push(("mcp-session-id".into(), id.clone()));
            request.headers.push(("mcp-protocol-version".into(), self.version.clone()));
        }
    }

    /// End the session; servers may refuse (405), which is fine.
    fn close(self) {
        if self.id.is_some() {
            let mut request = HttpRequest {
                method: "DELETE".into(),
                url: self.url.clone(),
                headers: Vec::new(),
                body: None,
                timeout_ms: Some(2000),
            };
            self.with_session(&mut request);
            let _ = host::fetch(&request);
        }
    }

    fn host_error(&self, error: FetchError) -> RpcError {
        if let FetchError::Denied(message) = error {
            return RpcError::new(codes::DENIED, message);
        }
        let message = error.text();
        RpcError::new(
            codes::UNAVAILABLE,
            format!("MCP server '{}' at {} is not reachable: {message}", self.server, self.url),
        )
        .retryable(true)
    }

    fn status_error(&self, status: u16, body: &str) -> RpcError {
        let error = RpcError::new(
            codes::UNAVAILABLE,
            format!("MCP server '{}' answered {status}: {}", self.server, excerpt(body)),
        )
        .with_data(json!({"server": self.server, "status": status}));
        error.retryable(status >= 500)
    }

    fn malformed(&self, text: &str) -> RpcError {
        RpcError::new(
            codes::MALFORMED,
            format!("MCP server '{}' answered what MCP does not describe: {}", self.server, excerpt(text)),
        )
    }
}

/// The start of a service's answer, quoted, for error messages.
fn excerpt(text: &str) -> String {
    gleitzeit_plugin_sdk::excerpt(text, 160)
}

/// Open a session with the named (or only) server, run `work`, close it.
fn with_server<T>(name: Option<&str>, work: impl FnOnce(&mut Session) -> Result<T, RpcError>) -> Result<T, RpcError> {
    let (server, url) = server(name)?;
    let mut session = Session::open(&server, &url)?;
    let outcome = work(&mut session);
    session.close();
    outcome
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct OnServer {
    server: Option<String>,
}

fn list_tools(_: &Context, p: OnServer) -> Result<Value, RpcError> {
    with_server(p.server.as_deref(), |s| Ok(json!({"server": s.server, "tools": s.list("tools/list", "tools")?})))
}

fn list_resources(_: &Context, p: OnServer) -> Result<Value, RpcError> {
    with_server(p.server.as_deref(), |s| {
        Ok(json!({"server": s.server, "resources": s.list("resources/list", "resources")?}))
    })
}

fn list_prompts(_: &Context, p: OnServer) -> Result<Value, RpcError> {
    with_server(p.server.as_deref(), |s| Ok(json!({"server": s.server, "prompts": s.list("prompts/list", "prompts")?})))
}

fn server_info(_: &Context, p: OnServer) -> Result<Value, RpcError> {
    with_server(p.server.as_deref(), |s| {
        let mut info = s.info.clone();
        info["server"] = json!(s.server);
        info["url"] = json!(s.url);
        Ok(info)
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Nothing {}

fn list_servers(_: &Context, _: Nothing) -> Result<Value, RpcError> {
    let servers: Vec<Value> = servers()?.into_iter().map(|(name, url)| json!({"name": name, "url": url})).collect();
    Ok(json!({ "servers": servers }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CallTool {
    server: Option<String>,
    name: String,
    #[serde(default)]
    arguments: serde_json::Map<String, Value>,
}

fn call_tool(_: &Context, p: CallTool) -> Result<Value, RpcError> {
    let arguments = Value::Object(p.arguments);
    with_server(p.server.as_deref(), |s| tool_result(s, &p.name, arguments))
}

/// `tool.NAME` with the arguments as params, on the only server.
fn tool_shorthand(ctx: &Context, arguments: serde_json::Map<String, Value>) -> Result<Value, RpcError> {
    let name = ctx.method.trim_start_matches("tool.").to_owned();
    with_server(None, |s| tool_result(s, &name, Value::Object(arguments)))
}

/// Call a tool; `isError` becomes the task's error, with the tool's text.
/// The call asks for progress notifications, which reach subscribers.
fn tool_result(session: &mut Session, name: &str, arguments: Value) -> Result<Value, RpcError> {
    let params =
        json!({"name": name, "arguments": arguments, "_meta": {"progressToken": format!("{}-{name}", session.server)}});
    let result = session.request("tools/call", params)?;
    let text = texts(&result["content"]);
    if result["isError"] == true {
        let message = format!("tool '{name}' on MCP server '{}' failed: {text}", session.server);
        return Err(RpcError::new(codes::TOOL_ERROR, message).with_data(result));
    }
    let value = tool_value(result.get("structuredContent"), &text);
    let mut out =
        json!({"server": session.server, "tool": name, "content": result["content"], "text": text, "result": value});
    if let Some(structured) = result.get("structuredContent") {
        out["structured"] = structured.clone();
    }
    Ok(out)
}

/// What the tool answered, as a value: its structured content (unwrapped
/// where the server wrapped a plain value as `{"result": …}`, as FastMCP
/// and MCP's Python SDK do), else its text read as JSON, else the text.
/// The original system's `${tool.result}` read this.
fn tool_value(structured: Option<&Value>, text: &str) -> Value {
    match structured {
        Some(Value::Object(map)) if map.len() == 1 && map.contains_key("result") => map["result"].clone(),
        Some(structured) => structured.clone(),
        None => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

/// The text items of MCP content, joined by newlines.
fn texts(content: &Value) -> String {
    let items = content.as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n")
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadResource {
    server: Option<String>,
    uri: String,
}

fn read_resource(_: &Context, p: ReadResource) -> Result<Value, RpcError> {
    with_server(p.server.as_deref(), |s| {
        let result = s.request("resources/read", json!({"uri": p.uri}))?;
        Ok(
            json!({"server": s.server, "uri": p.uri, "contents": result["contents"], "text": texts(&result["contents"])}),
        )
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetPrompt {
    server: Option<String>,
    name: String,
    #[serde(default)]
    arguments: serde_json::Map<String, Value>,
}

fn get_prompt(_: &Context, p: GetPrompt) -> Result<Value, RpcError> {
    with_server(p.server.as_deref(), |s| {
        let result = s.request("prompts/get", json!({"name": p.name, "arguments": p.arguments}))?;
        let messages = result["messages"].as_array().cloned().unwrap_or_default();
        let text: Vec<String> = messages.iter().map(|m| texts(&json!([m["content"]]))).collect();
        Ok(json!({
            "server": s.server, "prompt": p.name, "description": result["description"],
            "messages": messages, "text": text.join("\n"),
        }))
    })
}

fn provider() -> Provider {
    Provider::new("mcp/v1", "mcp", env!("CARGO_PKG_VERSION"))
        .description("Tools, resources and prompts of MCP servers")
        .method("list_servers", "The configured MCP servers", list_servers)
        .method("server_info", "A server's name, version, capabilities and instructions", server_info)
        .method("list_tools", "A server's tools with their input schemas", list_tools)
        .method("call_tool", "Call a tool: {server?, name, arguments}", call_tool)
        .method("list_resources", "A server's resources", list_resources)
        .method("read_resource", "Read a resource by URI: {server?, uri}", read_resource)
        .method("list_prompts", "A server's prompts", list_prompts)
        .method("get_prompt", "Fill in a prompt: {server?, name, arguments}", get_prompt)
        .method(
            "tool.*",
            "tool.NAME: call tool NAME with the params as its arguments (one server configured)",
            tool_shorthand,
        )
}

export_provider!(provider);
