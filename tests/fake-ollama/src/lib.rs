//! A test server of Ollama's HTTP API, as documented in ollama/ollama
//! `docs/api.md`: `POST /api/generate`, `POST /api/chat` (NDJSON streams by
//! default, one object with `"stream": false`), `POST /api/embed`,
//! `GET /api/tags`, `GET /api/version` and `GET /`.
//!
//! Ollama cannot be installed on our build machines, so the `llm/v1` plugin
//! is tested against this. Its answers are deterministic so tests can check
//! them: `generate` answers "MODEL answers: PROMPT", `chat` answers
//! "MODEL replies to N message(s): LAST", one word per streamed chunk, and
//! embeddings are unit vectors derived from the text. Errors take Ollama's
//! shape, `{"error": "..."}`: an unknown model is a 404 naming it. Two model
//! names are test hooks: `overloaded` answers 503 and `garbled` answers text
//! that is not JSON.
//!
//! It is test support, never part of the product.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Wait before the first byte of every generate/chat/embed answer (model
    /// load and prompt evaluation).
    pub latency: Duration,
    /// Wait between streamed chunks.
    pub chunk_delay: Duration,
    /// The models it has pulled (`name:tag`).
    pub models: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            // llama3.2 is what the original system's examples ask for.
            models: ["llama3:latest", "llama3.2:latest", "llava:latest", "nomic-embed-text:latest"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// What the server has seen, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    /// The most requests in flight at once.
    pub peak: AtomicUsize,
}

struct Server {
    options: Options,
    stats: Arc<Stats>,
}

/// Length of the embeddings (as nomic-embed-text's).
const DIMENSIONS: usize = 768;

/// The API's routes and the counters they update.
pub fn router(options: Options) -> (Router, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let server = Arc::new(Server { options, stats: stats.clone() });
    let router = Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/version", get(|| async { axum::Json(json!({"version": "0.0.0-fake"})) }))
        .route("/api/tags", get(tags))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
        .with_state(server);
    (router, stats)
}

/// Serve on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, options: Options) -> std::io::Result<()> {
    axum::serve(listener, router(options).0).await
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Counts a request while it is being answered.
struct Counted(Arc<Stats>);

impl Counted {
    fn new(stats: &Arc<Stats>) -> Self {
        stats.requests.fetch_add(1, Ordering::SeqCst);
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        Self(stats.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The request body as JSON and its known model, or the error Ollama gives.
fn parse(server: &Server, body: &str) -> Result<(Value, String), Box<Response>> {
    let request: Value = serde_json::from_str(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &format!("invalid request body: {e}"))))?;
    let model = match request.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => return Err(Box::new(error(StatusCode::BAD_REQUEST, "model is required"))),
    };
    match model.as_str() {
        "overloaded" => return Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, "server busy, please try again"))),
        "garbled" => return Err(Box::new((StatusCode::OK, "<html>this is not json").into_response())),
        _ => {}
    }
    let full = if model.contains(':') { model.clone() } else { format!("{model}:latest") };
    if !server.options.models.contains(&full) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("model \"{model}\" not found, try pulling it first"),
        )));
    }
    Ok((request, model))
}

async fn tags(State(server): State<Arc<Server>>) -> Response {
    let models: Vec<Value> = server
        .options
        .models
        .iter()
        .map(|name| {
            let family = name.split(':').next().unwrap_or(name);
            json!({
                "name": name, "model": name, "modified_at": created_at(),
                "size": 4_661_224_676u64, "digest": format!("{:064x}", fnv(name.as_bytes())),
                "details": {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                            "parameter_size": "8.0B", "quantization_level": "Q4_0"},
            })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

async fn generate(State(server): State<Arc<Server>>, body: String) -> Response {
    let counted = Counted::new(&server.stats);
    let (request, model) = match parse(&server, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let prompt = request["prompt"].as_str().unwrap_or("");
    let mut text = format!("{model} answers: {prompt}");
    if let Some(system) = request["system"].as_str() {
        text = format!("[{system}] {text}");
    }
    if let Some(images) = request["images"].as_array() {
        let bytes: Result<usize, _> = images
            .iter()
            .map(|i| base64::engine::general_purpose::STANDARD.decode(i.as_str().unwrap_or("")).map(|b| b.len()))
            .sum();
        match bytes {
            Ok(bytes) => text = format!("{model} sees {} image(s) of {bytes} bytes: {prompt}", images.len()),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("illegal base64 data in images: {e}")),
        }
    }
    if request["format"] == "json" || request["format"].is_object() {
        text = json!({ "answer": text }).to_string();
    }
    let reply = Reply::new(&server.options, &request, model, prompt, text);
    reply.send(&request, counted, |piece| json!({"response": piece}))
}

async fn chat(State(server): State<Arc<Server>>, body: String) -> Response {
    let counted = Counted::new(&server.stats);
    let (request, model) = match parse(&server, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let Some(messages) = request["messages"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "messages is required");
    };
    let last = messages.last().and_then(|m| m["content"].as_str()).unwrap_or("").to_owned();
    let text = format!("{model} replies to {} message(s): {last}", messages.len());
    let prompt: String = messages.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join(" ");
    let reply = Reply::new(&server.options, &request, model, &prompt, text);
    reply.send(&request, counted, |piece| json!({"message": {"role": "assistant", "content": piece}}))
}

async fn embed(State(server): State<Arc<Server>>, body: String) -> Response {
    let _counted = Counted::new(&server.stats);
    let (request, model) = match parse(&server, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => return error(StatusCode::BAD_REQUEST, "input must be a string or a list of strings"),
    };
    let started = Instant::now();
    tokio::time::sleep(server.options.latency).await;
    let embeddings: Vec<Vec<f64>> = inputs.iter().map(|text| vector(text)).collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    axum::Json(json!({
        "model": model,
        "embeddings": embeddings,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": 1_000_000,
        "prompt_eval_count": tokens,
    }))
    .into_response()
}

/// An answer being generated: its words, and the stats of the final object.
struct Reply {
    model: String,
    words: Vec<String>,
    done_reason: &'static str,
    prompt_tokens: usize,
    latency: Duration,
    chunk_delay: Duration,
    started: Instant,
}

impl Reply {
    fn new(options: &Options, request: &Value, model: String, prompt: &str, text: String) -> Self {
        let mut words: Vec<String> = text.split(' ').map(|w| format!("{w} ")).collect();
        let limit = request["options"]["num_predict"].as_u64().map_or(usize::MAX, |n| n as usize);
        let done_reason = if words.len() > limit { "length" } else { "stop" };
        words.truncate(limit);
        if let Some(last) = words.last_mut() {
            last.pop();
        }
        Self {
            model,
            words,
            done_reason,
            prompt_tokens: prompt.split_whitespace().count(),
            latency: options.latency,
            chunk_delay: options.chunk_delay,
            started: Instant::now(),
        }
    }

    /// The object that ends a stream (or is the whole answer), with
    /// Ollama's timing fields in nanoseconds.
    fn last(&self, mut object: Value) -> Value {
        let total = self.started.elapsed().as_nanos() as u64;
        let fields = json!({
            "model": self.model, "created_at": created_at(), "done": true, "done_reason": self.done_reason,
            "context": [1, 2, 3], "total_duration": total, "load_duration": 1_000_000u64,
            "prompt_eval_count": self.prompt_tokens, "prompt_eval_duration": self.latency.as_nanos() as u64,
            "eval_count": self.words.len(), "eval_duration": total.saturating_sub(self.latency.as_nanos() as u64),
        });
        if let (Value::Object(object), Value::Object(fields)) = (&mut object, fields) {
            object.extend(fields);
        }
        object
    }

    /// Stream the words as NDJSON (Ollama's default) or answer once.
    fn send(self, request: &Value, counted: Counted, shape: fn(&str) -> Value) -> Response {
        if request["stream"] == false {
            let answer = async move {
                let _counted = counted;
                tokio::time::sleep(self.latency).await;
                Ok::<_, std::convert::Infallible>(self.last(shape(&self.words.concat())).to_string())
            };
            return Body::from_stream(futures_util::stream::once(answer)).into_response().with_type("application/json");
        }
        let state = (self, 0usize, Some(counted));
        let lines = futures_util::stream::unfold(state, move |(reply, i, counted)| async move {
            let counted = counted?;
            tokio::time::sleep(if i == 0 { reply.latency } else { reply.chunk_delay }).await;
            let line = match reply.words.get(i) {
                Some(word) => {
                    let mut object = shape(word);
                    object["model"] = Value::String(reply.model.clone());
                    object["created_at"] = Value::String(created_at());
                    object["done"] = Value::Bool(false);
                    format!("{object}\n")
                }
                None => {
                    let line = format!("{}\n", reply.last(shape("")));
                    return Some((Ok::<_, std::convert::Infallible>(line), (reply, i + 1, None)));
                }
            };
            Some((Ok(line), (reply, i + 1, Some(counted))))
        });
        Body::from_stream(lines.boxed()).into_response().with_type("application/x-ndjson")
    }
}

trait WithType {
    fn with_type(self, content_type: &'static str) -> Response;
}

impl WithType for Response {
    fn with_type(mut self, content_type: &'static str) -> Response {
        self.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(content_type));
        self
    }
}

/// A unit vector derived from the text: equal texts embed equally.
fn vector(text: &str) -> Vec<f64> {
    let mut state = fnv(text.as_bytes()) | 1;
    let raw: Vec<f64> = (0..DIMENSIONS)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Now as RFC 3339 UTC, as Ollama writes `created_at`.
fn created_at() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
}
