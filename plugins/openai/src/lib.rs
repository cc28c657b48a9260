//! `llm/v1` through an OpenAI-compatible HTTP API: OpenAI itself, and the
//! servers that speak its API (vLLM, llama.cpp's server, LM Studio,
//! OpenRouter, …).
//!
//! The methods, params and results are the Ollama bridge's (`content`,
//! `model`, `tokens_used`, `message`, `embedding`/`embeddings`), with the
//! backend's `usage` (`prompt_tokens`, `completion_tokens`,
//! `total_tokens`), so a workflow moves between backends by configuration
//! alone. `chat` passes `tools` and `tool_choice` through and answers the
//! model's `tool_calls`; `generate` is a one-message chat; `vision` sends
//! image parts. Generations stream: each piece of text goes to the task's
//! subscribers through `progress`.
//!
//! The plugin reaches the backend only through the host's `http-fetch`, at
//! `config("base_url")` (default `https://api.openai.com/v1`), which its
//! manifest must grant. It never holds the API key: the host adds it
//! (`[headers."ORIGIN"] Authorization = "Bearer {secret:NAME}"` in the
//! manifest) and removes it from the answers. `config("name")` names the
//! backend in error messages (default `openai`).

use base64::Engine as _;
use gleitzeit_plugin_sdk::host::{self, FetchError, HttpRequest};
use gleitzeit_plugin_sdk::llm::{self, Embed, Generate, Vision, max_tokens, stream, temperature};
use gleitzeit_plugin_sdk::{Context, Provider, RpcError, Value, export_provider, json};
use schemars::JsonSchema;
use serde::Deserialize;

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Error codes of this provider: the SDK's table's `LLM_*`.
mod codes {
    pub use gleitzeit_plugin_sdk::codes::{
        LLM_DENIED as DENIED, LLM_MALFORMED as MALFORMED, LLM_MODEL_NOT_FOUND as MODEL_NOT_FOUND,
        LLM_RATE_LIMITED as RATE_LIMITED, LLM_REJECTED as REJECTED, LLM_UNAUTHORIZED as UNAUTHORIZED,
        LLM_UNAVAILABLE as UNAVAILABLE,
    };
}

/// How long to wait after a 429 or 503 without `Retry-After`.
const DEFAULT_RETRY_AFTER_S: f64 = 1.0;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Chat {
    /// `[{role, content}]` as the chat completions API takes them (content
    /// may be a list of parts); an Ollama-style `images` list on a message
    /// becomes image parts.
    messages: Vec<Value>,
    model: Option<String>,
    /// Tools the model may call, passed through.
    tools: Option<Value>,
    tool_choice: Option<Value>,
    /// `"json"` (a JSON object) or a JSON schema, as the Ollama bridge takes it.
    format: Option<Value>,
    #[serde(default = "stream")]
    stream: bool,
    #[serde(default = "temperature")]
    temperature: f64,
    #[serde(default = "max_tokens")]
    max_tokens: u32,
    /// Extra request fields (top_p, seed, stop, …), passed as given.
    #[serde(default)]
    options: serde_json::Map<String, Value>,
}

fn chat(_: &Context, p: Chat) -> Result<Value, RpcError> {
    if p.messages.is_empty() {
        return Err(RpcError::invalid_params("'messages' must hold at least one message"));
    }
    let model = p.model.unwrap_or_else(|| config_or("default_model", "gpt-4o-mini"));
    let messages: Vec<Value> = p.messages.into_iter().map(with_image_parts).collect();
    let mut body = request(&model, messages, p.temperature, p.max_tokens, p.options);
    set_optional(&mut body, "tools", p.tools);
    set_optional(&mut body, "tool_choice", p.tool_choice);
    set_optional(&mut body, "response_format", p.format.map(response_format));
    completion(body, p.stream, &model)
}

fn generate(_: &Context, p: Generate) -> Result<Value, RpcError> {
    let model = p.model.unwrap_or_else(|| config_or("default_model", "gpt-4o-mini"));
    let mut messages = Vec::new();
    if let Some(system) = p.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    messages.push(user_message(&p.prompt, &p.images.unwrap_or_default()));
    let mut body = request(&model, messages, p.temperature, p.max_tokens, p.options);
    set_optional(&mut body, "response_format", p.format.map(response_format));
    completion(body, p.stream, &model)
}

fn vision(_: &Context, mut p: Vision) -> Result<Value, RpcError> {
    let images = p.take_images()?;
    let model =
        p.model.or_else(|| host::config("vision_model")).unwrap_or_else(|| config_or("default_model", "gpt-4o-mini"));
    let count = images.len();
    let body = request(&model, vec![user_message(&p.prompt, &images)], p.temperature, p.max_tokens, p.options);
    let mut result = completion(body, p.stream, &model)?;
    result["images"] = json!(count);
    Ok(result)
}

fn embed(_: &Context, p: Embed) -> Result<Value, RpcError> {
    p.check()?;
    let model = p.model.unwrap_or_else(|| config_or("embed_model", "text-embedding-3-small"));
    let answer = send(host::post_json(&url("/embeddings"), &json!({ "model": model, "input": p.text })), &model)?;
    let data = answer["data"].as_array().filter(|d| !d.is_empty()).ok_or_else(|| malformed(&answer))?;
    let embeddings: Vec<Value> = data.iter().map(|d| d["embedding"].clone()).collect();
    let dimensions = embeddings[0].as_array().map_or(0, Vec::len);
    let usage = usage(&answer["usage"]);
    let mut result = json!({
        "model": answer["model"].as_str().unwrap_or(&model),
        "embeddings": embeddings,
        "dimensions": dimensions,
        "tokens_used": usage["total_tokens"],
        "usage": usage,
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
    let answer = send(host::get(&url("/models")), "")?;
    let models = answer["data"].as_array().ok_or_else(|| malformed(&answer))?;
    let names: Vec<&str> = models.iter().filter_map(|m| m["id"].as_str()).collect();
    Ok(json!({ "models": names, "count": names.len(), "details": models }))
}

/// A chat completions request.
fn request(
    model: &str,
    messages: Vec<Value>,
    temperature: f64,
    max_tokens: u32,
    mut extra: serde_json::Map<String, Value>,
) -> Value {
    extra.insert("model".into(), json!(model));
    extra.insert("messages".into(), Value::Array(messages));
    extra.insert("temperature".into(), json!(temperature));
    extra.insert("max_tokens".into(), json!(max_tokens));
    Value::Object(extra)
}

/// A user message with `images` (base64) as image parts.
fn user_message(prompt: &str, images: &[String]) -> Value {
    if images.is_empty() {
        return json!({ "role": "user", "content": prompt });
    }
    let mut parts = vec![json!({ "type": "text", "text": prompt })];
    parts.extend(images.iter().map(|image| image_part(image)));
    json!({ "role": "user", "content": parts })
}

/// An Ollama-style message (`images` beside `content`) as the chat API's
/// parts; other messages as they are.
fn with_image_parts(mut message: Value) -> Value {
    let Some(Value::Array(images)) = message.as_object_mut().and_then(|m| m.remove("images")) else {
        return message;
    };
    let text = message["content"].as_str().unwrap_or_default().to_owned();
    let mut parts = vec![json!({ "type": "text", "text": text })];
    parts.extend(images.iter().filter_map(Value::as_str).map(image_part));
    message["content"] = Value::Array(parts);
    message
}

/// A base64 image as an `image_url` part (a data URL of its media type).
fn image_part(base64: &str) -> Value {
    let head = base64::engine::general_purpose::STANDARD.decode(base64.get(..16).unwrap_or(base64)).unwrap_or_default();
    let media = if head.starts_with(&[0xFF, 0xD8]) {
        "image/jpeg"
    } else if head.starts_with(b"GIF8") {
        "image/gif"
    } else if head.get(8..12) == Some(b"WEBP") {
        "image/webp"
    } else {
        "image/png"
    };
    json!({ "type": "image_url", "image_url": { "url": format!("data:{media};base64,{base64}") } })
}

/// The Ollama bridge's `format` as the chat API's `response_format`.
fn response_format(format: Value) -> Value {
    match format {
        Value::String(s) if s == "json" => json!({ "type": "json_object" }),
        schema => json!({ "type": "json_schema", "json_schema": { "name": "answer", "schema": schema } }),
    }
}

fn config_or(key: &str, fallback: &str) -> String {
    host::config(key).unwrap_or_else(|| fallback.to_owned())
}

fn base_url() -> String {
    config_or("base_url", DEFAULT_BASE_URL)
}

fn backend() -> String {
    config_or("name", "openai")
}

fn url(path: &str) -> String {
    format!("{}{path}", base_url().trim_end_matches('/'))
}

fn set_optional(body: &mut Value, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        body[key] = value;
    }
}

/// The backend's usage (absent counts are 0).
fn usage(reported: &Value) -> Value {
    let count = |key: &str| reported[key].as_u64().unwrap_or(0);
    llm::usage(count("prompt_tokens"), count("completion_tokens"), reported["total_tokens"].as_u64())
}

/// Run a chat completion, streamed or not, into the bridges' result shape.
fn completion(mut body: Value, stream: bool, model: &str) -> Result<Value, RpcError> {
    body["stream"] = json!(stream);
    let finished = if stream {
        body["stream_options"] = json!({ "include_usage": true });
        streamed(&body, model)?
    } else {
        let answer = send(host::post_json(&url("/chat/completions"), &body), model)?;
        let choice = &answer["choices"][0];
        let message = choice["message"].as_object().ok_or_else(|| malformed(&answer))?;
        Finished {
            text: message.get("content").and_then(Value::as_str).unwrap_or_default().to_owned(),
            tool_calls: message.get("tool_calls").cloned().filter(|c| !c.is_null()),
            finish_reason: choice["finish_reason"].clone(),
            model: answer["model"].as_str().unwrap_or(model).to_owned(),
            usage: usage(&answer["usage"]),
        }
    };
    Ok(finished.into_result())
}

/// A finished completion.
struct Finished {
    text: String,
    tool_calls: Option<Value>,
    finish_reason: Value,
    model: String,
    usage: Value,
}

impl Finished {
    fn into_result(self) -> Value {
        let mut message = json!({ "role": "assistant", "content": self.text });
        let mut result = json!({
            "content": self.text,
            "model": self.model,
            "tokens_used": self.usage["total_tokens"],
            "usage": self.usage,
            "done_reason": self.finish_reason,
            "finish_reason": self.finish_reason,
        });
        if let Some(calls) = self.tool_calls {
            message["tool_calls"] = calls.clone();
            result["tool_calls"] = calls;
        }
        result["message"] = message;
        result
    }
}

/// Read a streamed completion (server-sent events): each piece of text to
/// `progress`, tool calls gathered by index, the usage from the last event.
fn streamed(body: &Value, model: &str) -> Result<Finished, RpcError> {
    let response = host::fetch_stream(&host::post_json(&url("/chat/completions"), body)).map_err(host_error)?;
    if response.status != 200 {
        let text: Vec<String> = host::lines(response.body).filter_map(Result::ok).collect();
        return Err(status_error(response.status, &response.headers, &text.join("\n"), model));
    }
    let mut finished = Finished {
        text: String::new(),
        tool_calls: None,
        finish_reason: Value::Null,
        model: model.to_owned(),
        usage: usage(&Value::Null),
    };
    let mut calls: Vec<Value> = Vec::new();
    for line in host::lines(response.body) {
        // A body that stops mid-way failed on the way, like a lost connection.
        let line = line.map_err(|text| host_error(FetchError::Failed(text)))?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            if !calls.is_empty() {
                finished.tool_calls = Some(Value::Array(calls));
            }
            return Ok(finished);
        }
        let event: Value = serde_json::from_str(data).map_err(|_| malformed_text(data))?;
        if let Some(error) = event.get("error") {
            let said = error["message"].as_str().unwrap_or("an error");
            return Err(unavailable(format!("{} stopped the generation: {said}", backend())));
        }
        if let Some(name) = event["model"].as_str() {
            finished.model = name.to_owned();
        }
        if event["usage"].is_object() {
            finished.usage = usage(&event["usage"]);
        }
        let Some(choice) = event["choices"].get(0) else { continue };
        if !choice["finish_reason"].is_null() {
            finished.finish_reason = choice["finish_reason"].clone();
        }
        if let Some(part) = choice["delta"]["content"].as_str().filter(|p| !p.is_empty()) {
            host::progress(&json!({ "content": part }));
            finished.text.push_str(part);
        }
        for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            merge_tool_call(&mut calls, call);
        }
    }
    Err(RpcError::new(codes::MALFORMED, format!("{}'s stream ended without [DONE]", backend())).retryable(true))
}

/// Add a streamed tool call's piece to the call of its index: the first
/// piece has its id and name, later ones more of its arguments.
fn merge_tool_call(calls: &mut Vec<Value>, piece: &Value) {
    let index = piece["index"].as_u64().unwrap_or(0) as usize;
    while calls.len() <= index {
        calls.push(json!({ "type": "function", "function": { "name": "", "arguments": "" } }));
    }
    let call = &mut calls[index];
    if let Some(id) = piece["id"].as_str() {
        call["id"] = json!(id);
    }
    if let Some(name) = piece["function"]["name"].as_str() {
        call["function"]["name"] = json!(name);
    }
    if let Some(more) = piece["function"]["arguments"].as_str() {
        let so_far = call["function"]["arguments"].as_str().unwrap_or_default().to_owned();
        call["function"]["arguments"] = json!(so_far + more);
    }
}

fn send(request: HttpRequest, model: &str) -> Result<Value, RpcError> {
    let response = host::fetch(&request).map_err(host_error)?;
    let text = String::from_utf8_lossy(&response.body);
    if response.status != 200 {
        return Err(status_error(response.status, &response.headers, &text, model));
    }
    serde_json::from_str(&text).map_err(|_| malformed_text(&text))
}

fn unavailable(message: String) -> RpcError {
    RpcError::new(codes::UNAVAILABLE, message).retryable(true)
}

/// The host's refusal or a failed connection.
fn host_error(error: FetchError) -> RpcError {
    if let FetchError::Denied(message) = error {
        return RpcError::new(codes::DENIED, message);
    }
    unavailable(format!("{} at {} is not reachable: {}", backend(), base_url(), error.text()))
}

/// An answer other than 200, in the API's `{"error": {"message"}}` shape or
/// not. 429 and 5xx are retryable after the backend's `Retry-After`.
fn status_error(status: u16, headers: &[(String, String)], body: &str, model: &str) -> RpcError {
    let said = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().or(v["error"].as_str()).map(str::to_owned))
        .unwrap_or_else(|| excerpt(body));
    let (name, base) = (backend(), base_url());
    let retry_after = || {
        let given = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| v.trim().parse::<f64>().ok());
        given.unwrap_or(DEFAULT_RETRY_AFTER_S)
    };
    match status {
        401 | 403 => RpcError::new(
            codes::UNAUTHORIZED,
            format!("{name} at {base} refused the credentials ({status}: {said}); check the secret its manifest's headers name (gleitzeit secret list)"),
        )
        .with_data(json!({ "status": status, "backend": name })),
        404 if said.contains("model") => RpcError::new(
            codes::MODEL_NOT_FOUND,
            format!("model '{model}' is not available at {name} ({said})"),
        )
        .with_data(json!({ "model": model, "status": status, "backend": name })),
        429 => {
            let wait = retry_after();
            RpcError::new(codes::RATE_LIMITED, format!("{name} is rate limiting: {said} (retry after {wait} s)"))
                .with_data(json!({ "status": status, "backend": name, "retry_after": wait }))
                .retryable(true)
        }
        500.. => {
            let mut data = json!({ "status": status, "backend": name });
            if status == 503 {
                data["retry_after"] = json!(retry_after());
            }
            unavailable(format!("{name} answered {status}: {said}")).with_data(data)
        }
        _ => RpcError::new(codes::REJECTED, format!("{name} refused the request ({status}): {said}"))
            .with_data(json!({ "status": status, "backend": name })),
    }
}

fn malformed(object: &Value) -> RpcError {
    malformed_text(&object.to_string())
}

fn malformed_text(text: &str) -> RpcError {
    RpcError::new(codes::MALFORMED, format!("{}'s answer is not what its API describes: {}", backend(), excerpt(text)))
}

/// The start of a service's answer, quoted, for error messages.
fn excerpt(text: &str) -> String {
    gleitzeit_plugin_sdk::excerpt(text, 120)
}

fn provider() -> Provider {
    Provider::new("llm/v1", "openai", env!("CARGO_PKG_VERSION"))
        .description("LLMs through an OpenAI-compatible HTTP API")
        .method("chat", "Answer a conversation of messages, tools passed through (streams pieces as progress)", chat)
        .method("generate", "Complete a prompt, as a one-message chat (streams pieces as progress)", generate)
        .method("vision", "Describe or answer about images (base64, or a file in a granted directory)", vision)
        .method("embed", "Embed a text or a list of texts", embed)
        .method("list_models", "The models the backend offers", list_models)
}

export_provider!(provider);
