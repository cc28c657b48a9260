//! `llm/v1`: large language models through Ollama's HTTP API.
//!
//! Methods and params follow the original Gleitzeit provider: `generate`,
//! `chat`, `vision`, `embed`, `list_models`. Results keep its keys
//! (`content`, `model`, `tokens_used`; `embedding`/`embeddings`,
//! `dimensions`) plus `usage` (as the OpenAI-compatible bridge reports it)
//! and Ollama's own counts and timings. Generations stream:
//! each piece of text goes to the task's subscribers through `progress` while
//! the answer is written, and the result holds the whole text.
//!
//! The plugin reaches Ollama only through the host's `http-fetch`, at
//! `config("base_url")` (default `http://127.0.0.1:11434`), which the
//! plugin's manifest must grant.

use gleitzeit_plugin_sdk::host::{self, FetchError, HttpRequest};
use gleitzeit_plugin_sdk::llm::{self, Embed, Generate, Vision, max_tokens, stream, temperature};
use gleitzeit_plugin_sdk::{Context, Provider, RpcError, Value, export_provider, json};
use schemars::JsonSchema;
use serde::Deserialize;

const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434";

/// Error codes of this provider: the SDK's table's `LLM_*`.
mod codes {
    pub use gleitzeit_plugin_sdk::codes::{
        LLM_DENIED as DENIED, LLM_MALFORMED as MALFORMED, LLM_MODEL_NOT_FOUND as MODEL_NOT_FOUND,
        LLM_REJECTED as REJECTED, LLM_UNAVAILABLE as UNAVAILABLE,
    };
}

/// Ollama's `options`: the extra ones given (top_p, seed, stop, ...) with
/// the original's `temperature` and `max_tokens` (Ollama's `num_predict`).
fn options(temperature: f64, max_tokens: u32, mut extra: serde_json::Map<String, Value>) -> Value {
    extra.insert("temperature".into(), json!(temperature));
    extra.insert("num_predict".into(), json!(max_tokens));
    Value::Object(extra)
}

fn generate(_: &Context, p: Generate) -> Result<Value, RpcError> {
    let model = p.model.unwrap_or_else(|| default_model("default_model", "llama3"));
    let mut body =
        json!({ "model": model, "prompt": p.prompt, "options": options(p.temperature, p.max_tokens, p.options) });
    set_optional(&mut body, "system", p.system.map(Value::String));
    set_optional(&mut body, "format", p.format);
    set_optional(&mut body, "images", p.images.map(|i| json!(i)));
    let last = complete("/api/generate", body, p.stream, &model, |object| object["response"].as_str())?;
    Ok(completion(&model, last.text, &last.object))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Chat {
    /// `[{role, content, images?}]`, as Ollama takes them.
    messages: Vec<Value>,
    model: Option<String>,
    format: Option<Value>,
    #[serde(default = "stream")]
    stream: bool,
    #[serde(default = "temperature")]
    temperature: f64,
    #[serde(default = "max_tokens")]
    max_tokens: u32,
    /// Extra Ollama `options`, passed as given.
    #[serde(default)]
    options: serde_json::Map<String, Value>,
}

fn chat(_: &Context, p: Chat) -> Result<Value, RpcError> {
    if p.messages.is_empty() {
        return Err(RpcError::invalid_params("'messages' must hold at least one message"));
    }
    let model = p.model.unwrap_or_else(|| default_model("default_model", "llama3"));
    let mut body =
        json!({ "model": model, "messages": p.messages, "options": options(p.temperature, p.max_tokens, p.options) });
    set_optional(&mut body, "format", p.format);
    let last = complete("/api/chat", body, p.stream, &model, |object| object["message"]["content"].as_str())?;
    let mut result = completion(&model, last.text.clone(), &last.object);
    result["message"] = json!({ "role": "assistant", "content": last.text });
    Ok(result)
}

fn vision(_: &Context, mut p: Vision) -> Result<Value, RpcError> {
    let images = p.take_images()?;
    let model = p.model.unwrap_or_else(|| default_model("vision_model", "llava"));
    let body = json!({ "model": model, "prompt": p.prompt, "images": images, "options": options(p.temperature, p.max_tokens, p.options) });
    let last = complete("/api/generate", body, p.stream, &model, |object| object["response"].as_str())?;
    let mut result = completion(&model, last.text, &last.object);
    result["images"] = json!(images.len());
    Ok(result)
}

fn embed(_: &Context, p: Embed) -> Result<Value, RpcError> {
    p.check()?;
    let model = p.model.unwrap_or_else(|| default_model("embed_model", "nomic-embed-text"));
    let answer = request_json("/api/embed", json!({ "model": model, "input": p.text }), &model)?;
    let embeddings = answer["embeddings"].as_array().filter(|e| !e.is_empty()).ok_or_else(|| malformed(&answer))?;
    let dimensions = embeddings[0].as_array().map_or(0, Vec::len);
    let mut result = json!({
        "model": answer["model"].as_str().unwrap_or(&model),
        "embeddings": embeddings,
        "dimensions": dimensions,
        "tokens_used": answer["prompt_eval_count"],
        "total_duration": answer["total_duration"],
        "load_duration": answer["load_duration"],
    });
    if p.text.is_string() {
        result["embedding"] = embeddings[0].clone();
    }
    Ok(result)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Nothing {}

fn list_models(_: &Context, _: Nothing) -> Result<Value, RpcError> {
    let answer = send(host::get(&url("/api/tags")), "")?;
    let models = answer["models"].as_array().ok_or_else(|| malformed(&answer))?;
    let names: Vec<&str> = models.iter().filter_map(|m| m["name"].as_str()).collect();
    Ok(json!({ "models": names, "count": names.len(), "details": models }))
}

/// `config(key)`, else the built-in default model.
fn default_model(key: &str, fallback: &str) -> String {
    host::config(key).unwrap_or_else(|| fallback.to_owned())
}

fn url(path: &str) -> String {
    let base = host::config("base_url").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    format!("{}{path}", base.trim_end_matches('/'))
}

fn set_optional(body: &mut Value, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        body[key] = value;
    }
}

/// The result of a generation: the text under the original's keys, plus
/// Ollama's counts and timings (nanoseconds).
fn completion(model: &str, content: String, last: &Value) -> Value {
    let count = |key: &str| last[key].as_u64().unwrap_or(0);
    let (prompt, completion) = (count("prompt_eval_count"), count("eval_count"));
    json!({
        "content": content,
        "model": last["model"].as_str().unwrap_or(model),
        "tokens_used": prompt + completion,
        // The OpenAI-compatible bridge's names, so usage reads the same on both.
        "usage": llm::usage(prompt, completion, None),
        "done_reason": last["done_reason"],
        "prompt_eval_count": last["prompt_eval_count"],
        "eval_count": last["eval_count"],
        "total_duration": last["total_duration"],
        "load_duration": last["load_duration"],
        "prompt_eval_duration": last["prompt_eval_duration"],
        "eval_duration": last["eval_duration"],
    })
}

/// A finished generation: the whole text and Ollama's final object.
struct Finished {
    text: String,
    object: Value,
}

/// Run a generating endpoint. Streaming, each piece goes to `progress` as
/// it arrives; either way the whole text comes back with the last object.
fn complete(
    path: &str,
    mut body: Value,
    stream: bool,
    model: &str,
    piece: fn(&Value) -> Option<&str>,
) -> Result<Finished, RpcError> {
    body["stream"] = json!(stream);
    if !stream {
        let object = request_json(path, body, model)?;
        let text = piece(&object).ok_or_else(|| malformed(&object))?.to_owned();
        return Ok(Finished { text, object });
    }
    let response = host::fetch_stream(&host::post_json(&url(path), &body)).map_err(host_error)?;
    if response.status != 200 {
        let text: Vec<String> = host::lines(response.body).filter_map(Result::ok).collect();
        return Err(status_error(response.status, &text.join("\n"), model));
    }
    let mut text = String::new();
    for line in host::lines(response.body) {
        // A body that stops mid-way failed on the way, like a lost connection.
        let line = line.map_err(|text| host_error(FetchError::Failed(text)))?;
        if line.trim().is_empty() {
            continue;
        }
        let object: Value = serde_json::from_str(&line).map_err(|_| malformed_text(&line))?;
        if let Some(error) = object["error"].as_str() {
            return Err(RpcError::new(codes::UNAVAILABLE, format!("Ollama stopped the generation: {error}")));
        }
        let part = piece(&object).ok_or_else(|| malformed(&object))?;
        if object["done"] == true {
            text.push_str(part);
            return Ok(Finished { text, object });
        }
        if !part.is_empty() {
            host::progress(&json!({ "content": part }));
            text.push_str(part);
        }
    }
    Err(RpcError::new(codes::MALFORMED, "Ollama's stream ended without its final object").retryable(true))
}

/// POST `body` as JSON and read one JSON answer.
fn request_json(path: &str, body: Value, model: &str) -> Result<Value, RpcError> {
    send(host::post_json(&url(path), &body), model)
}

fn send(request: HttpRequest, model: &str) -> Result<Value, RpcError> {
    let response = host::fetch(&request).map_err(host_error)?;
    let text = String::from_utf8_lossy(&response.body);
    if response.status != 200 {
        return Err(status_error(response.status, &text, model));
    }
    serde_json::from_str(&text).map_err(|_| malformed_text(&text))
}

/// The host's refusal or a failed connection.
fn host_error(error: FetchError) -> RpcError {
    if let FetchError::Denied(message) = error {
        return RpcError::new(codes::DENIED, message);
    }
    let base = host::config("base_url").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let message = error.text();
    RpcError::new(codes::UNAVAILABLE, format!("Ollama at {base} is not reachable: {message}")).retryable(true)
}

/// An answer other than 200, in Ollama's `{"error": "..."}` shape or not.
fn status_error(status: u16, body: &str, model: &str) -> RpcError {
    let said = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| excerpt(body));
    match status {
        404 if said.contains("not found") => RpcError::new(
            codes::MODEL_NOT_FOUND,
            format!("model '{model}' is not available in Ollama ({said}); pull it with `ollama pull {model}`"),
        )
        .with_data(json!({ "model": model, "status": status })),
        500.. => RpcError::new(codes::UNAVAILABLE, format!("Ollama answered {status}: {said}"))
            .with_data(json!({ "status": status }))
            .retryable(true),
        _ => RpcError::new(codes::REJECTED, format!("Ollama refused the request ({status}): {said}"))
            .with_data(json!({ "status": status })),
    }
}

fn malformed(object: &Value) -> RpcError {
    malformed_text(&object.to_string())
}

fn malformed_text(text: &str) -> RpcError {
    RpcError::new(codes::MALFORMED, format!("Ollama's answer is not what its API describes: {}", excerpt(text)))
}

/// The start of a service's answer, quoted, for error messages.
fn excerpt(text: &str) -> String {
    gleitzeit_plugin_sdk::excerpt(text, 120)
}

fn provider() -> Provider {
    Provider::new("llm/v1", "ollama", env!("CARGO_PKG_VERSION"))
        .description("LLMs through Ollama's HTTP API")
        .method("generate", "Complete a prompt (streams pieces as progress)", generate)
        .method("chat", "Answer a conversation of messages (streams pieces as progress)", chat)
        .method("vision", "Describe or answer about images (base64, or a file in a granted directory)", vision)
        .method("embed", "Embed a text or a list of texts", embed)
        .method("list_models", "The models Ollama has", list_models)
}

export_provider!(provider);
