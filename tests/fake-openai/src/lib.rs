//! A test server of OpenAI's HTTP API as its API reference documents it:
//! `POST /v1/chat/completions` (one object, or server-sent events with
//! `"stream": true`, usage in a last chunk with `stream_options.
//! include_usage`, then `data: [DONE]`), `POST /v1/embeddings`,
//! `GET /v1/models`. Every request must carry `Authorization: Bearer KEY`;
//! otherwise it answers 401 in the API's error shape.
//!
//! No hosted model can be reached from our build machines, so the
//! OpenAI-compatible `llm/v1` plugin is tested against this. Answers are
//! deterministic: a chat answers "MODEL replies to N message(s): LAST", one
//! word per streamed chunk, with usage counted in words. Model names are
//! test hooks: `echo-headers` answers the request's headers, `rate-limited`
//! answers 429 with `Retry-After: 1` to every other request for it (the
//! first, the third, …), `broken-stream` stops its stream without `[DONE]`,
//! `tool-caller` calls the first tool it is given. With [`Options::limit`]
//! it also limits chat completions as hosted APIs do: more than N in any
//! window answers 429 with the `Retry-After` that lets the next through.
//!
//! It is test support, never part of the product.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// At most this many chat completions in any window of this length.
    pub limit: Option<(usize, Duration)>,
}

/// What the server has seen, for tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    /// Requests for the model `rate-limited`.
    pub rate_limited_asked: AtomicUsize,
    /// Answers of 429.
    pub limited: AtomicUsize,
}

struct Server {
    key: String,
    stats: Arc<Stats>,
    options: Options,
    /// When the chat completions in the current window were answered.
    recent: Mutex<VecDeque<Instant>>,
}

/// The API's routes for API key `key`, and the counters they update.
pub fn router(key: &str) -> (Router, Arc<Stats>) {
    router_with(key, Options::default())
}

/// [`router`] with `options`.
pub fn router_with(key: &str, options: Options) -> (Router, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let server = Arc::new(Server { key: key.to_owned(), stats: stats.clone(), options, recent: Mutex::default() });
    let router = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .with_state(server);
    (router, stats)
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })))
        .into_response()
}

/// The refusal of a request without the key, as the API answers it (it
/// shows only the key's end).
fn refused(server: &Server, headers: &HeaderMap) -> Option<Response> {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(key) if key == server.key => None,
        Some(key) => {
            let end: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            let message = format!(
                "Incorrect API key provided: ****{end}. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            Some(error(StatusCode::UNAUTHORIZED, "invalid_request_error", &message))
        }
        None => Some(error(StatusCode::UNAUTHORIZED, "invalid_request_error", "You didn't provide an API key.")),
    }
}

async fn models(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    server.stats.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = refused(&server, &headers) {
        return refusal;
    }
    let data: Vec<Value> = ["gpt-4o-mini", "text-embedding-3-small"]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fake" }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

async fn chat(State(server): State<Arc<Server>>, headers: HeaderMap, body: String) -> Response {
    server.stats.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = refused(&server, &headers) {
        return refusal;
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request.",
        );
    };
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let Some(messages) = request["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "'messages' is a required property");
    };
    if let Some(wait) = over_limit(&server) {
        server.stats.limited.fetch_add(1, Ordering::SeqCst);
        let mut limited = error(StatusCode::TOO_MANY_REQUESTS, "requests", "Rate limit reached for requests");
        let seconds = wait.as_secs_f64().ceil().max(1.0).to_string();
        limited.headers_mut().insert("retry-after", seconds.parse().unwrap_or_else(|_| unreachable!()));
        return limited;
    }
    if model == "rate-limited" && server.stats.rate_limited_asked.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
        server.stats.limited.fetch_add(1, Ordering::SeqCst);
        let mut limited = error(StatusCode::TOO_MANY_REQUESTS, "requests", "Rate limit reached for requests");
        limited.headers_mut().insert("retry-after", "1".parse().unwrap_or_else(|_| unreachable!()));
        return limited;
    }
    let text_of = |m: &Value| match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let images = parts.iter().filter(|p| p["type"] == "image_url").count();
            let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            format!("{} (with {images} image(s))", text.join(" "))
        }
        _ => String::new(),
    };
    let prompt_tokens: u64 = messages.iter().map(|m| words(&text_of(m))).sum();
    let answer = if model == "echo-headers" {
        let mut seen: Vec<String> =
            headers.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?"))).collect();
        seen.sort();
        seen.join("\n")
    } else {
        format!("{model} replies to {} message(s): {}", messages.len(), text_of(&messages[messages.len() - 1]))
    };
    let tool_calls = (model == "tool-caller")
        .then(|| request["tools"][0]["function"]["name"].as_str().map(str::to_owned))
        .flatten()
        .map(|name| json!([{ "id": "call_1", "type": "function", "function": { "name": name, "arguments": "{\"q\": 1}" } }]));
    let usage = json!({ "prompt_tokens": prompt_tokens, "completion_tokens": words(&answer), "total_tokens": prompt_tokens + words(&answer) });
    if request["stream"] == true {
        return stream(&model, &answer, tool_calls, usage, request["stream_options"]["include_usage"] == true);
    }
    let mut message = json!({ "role": "assistant", "content": answer });
    let mut finish = "stop";
    if let Some(calls) = tool_calls {
        message = json!({ "role": "assistant", "content": null, "tool_calls": calls });
        finish = "tool_calls";
    }
    axum::Json(json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": usage,
    }))
    .into_response()
}

/// How long until a request would be let through, if [`Options::limit`]
/// refuses this one; else the request counts in the window.
fn over_limit(server: &Server) -> Option<Duration> {
    let (most, window) = server.options.limit?;
    let now = Instant::now();
    let mut recent = server.recent.lock().unwrap_or_else(|e| e.into_inner());
    while recent.front().is_some_and(|at| now.duration_since(*at) >= window) {
        recent.pop_front();
    }
    if recent.len() >= most {
        return recent.front().map(|oldest| window.saturating_sub(now.duration_since(*oldest)));
    }
    recent.push_back(now);
    None
}

/// The answer as server-sent events, one word per chunk.
fn stream(model: &str, answer: &str, tool_calls: Option<Value>, usage: Value, include_usage: bool) -> Response {
    let chunk = |delta: Value, finish: Value| {
        let event = json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] });
        format!("data: {event}\n\n")
    };
    let mut events = vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null)];
    let pieces: Vec<String> = answer.split_inclusive(' ').map(str::to_owned).collect();
    let broken = model == "broken-stream";
    for piece in &pieces {
        events.push(chunk(json!({ "content": piece }), Value::Null));
    }
    if let Some(Value::Array(calls)) = tool_calls {
        for (index, call) in calls.iter().enumerate() {
            let head = json!({ "index": index, "id": call["id"], "type": "function", "function": { "name": call["function"]["name"], "arguments": "" } });
            let args = json!({ "index": index, "function": { "arguments": call["function"]["arguments"] } });
            events.push(chunk(json!({ "tool_calls": [head] }), Value::Null));
            events.push(chunk(json!({ "tool_calls": [args] }), Value::Null));
        }
    }
    if broken {
        events.truncate(2);
    } else {
        events.push(chunk(json!({}), json!("stop")));
        if include_usage {
            let last = json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage });
            events.push(format!("data: {last}\n\n"));
        }
        events.push("data: [DONE]\n\n".to_owned());
    }
    let body = futures_util::stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn embeddings(State(server): State<Arc<Server>>, headers: HeaderMap, body: String) -> Response {
    server.stats.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = refused(&server, &headers) {
        return refusal;
    }
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => return error(StatusCode::BAD_REQUEST, "invalid_request_error", "'input' is a required property"),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({ "object": "embedding", "index": i, "embedding": [text.len() as f64, 1.0, 0.0] }))
        .collect();
    let tokens: u64 = inputs.iter().map(|t| words(t)).sum();
    axum::Json(json!({ "object": "list", "data": data, "model": request["model"],
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens } }))
    .into_response()
}
