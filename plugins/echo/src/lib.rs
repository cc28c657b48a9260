//! `echo/v1`: the test and debug provider, with the original system's methods
//! and result shapes, plus `flaky` for deterministic retry tests.

use gleitzeit_plugin_sdk::{Context, Provider, RpcError, Value, export_provider, json};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PROVIDER_ID: &str = "echo-wasm";
/// The original capped `delay` at 10 s; so do we.
const MAX_DELAY_SECONDS: f64 = 10.0;

#[derive(Deserialize, JsonSchema)]
struct EchoParams {
    message: Value,
}

#[derive(Deserialize, JsonSchema)]
struct PingParams {
    message: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
struct NoParams {}

#[derive(Deserialize, JsonSchema)]
struct DelayParams {
    seconds: f64,
    message: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
struct ErrorParams {
    #[serde(rename = "type", default = "default_error_type")]
    kind: String,
    message: Option<String>,
    #[serde(default)]
    retryable: bool,
}

fn default_error_type() -> String {
    "generic".to_owned()
}

#[derive(Deserialize, JsonSchema)]
struct FlakyParams {
    succeed_on_attempt: u32,
    message: Option<String>,
}

fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn echo(_: &Context, p: EchoParams) -> Result<Value, RpcError> {
    Ok(json!({ "echoed": p.message, "provider_id": PROVIDER_ID, "timestamp": unix_seconds() }))
}

fn ping(_: &Context, p: PingParams) -> Result<Value, RpcError> {
    let response = p.message.unwrap_or_else(|| "pong".to_owned());
    Ok(json!({ "response": response, "provider_id": PROVIDER_ID, "timestamp": unix_seconds() }))
}

fn timestamp(_: &Context, _: NoParams) -> Result<Value, RpcError> {
    Ok(json!({ "timestamp": unix_seconds(), "provider_id": PROVIDER_ID }))
}

fn delay(_: &Context, p: DelayParams) -> Result<Value, RpcError> {
    if !(0.0..=MAX_DELAY_SECONDS).contains(&p.seconds) {
        return Err(RpcError::invalid_params(format!(
            "'seconds' must be between 0 and {MAX_DELAY_SECONDS}, got {}",
            p.seconds
        )));
    }
    std::thread::sleep(Duration::from_secs_f64(p.seconds));
    Ok(json!({
        "delayed_seconds": p.seconds,
        "message": p.message.unwrap_or_else(|| format!("Delayed for {} seconds", p.seconds)),
        "provider_id": PROVIDER_ID,
        "timestamp": unix_seconds(),
    }))
}

fn error(_: &Context, p: ErrorParams) -> Result<Value, RpcError> {
    let message = p.message.unwrap_or_else(|| "Test error".to_owned());
    let err = match p.kind.as_str() {
        "value" => RpcError::invalid_params(format!("ValueError: {message}")),
        "runtime" => RpcError::new(-32000, format!("RuntimeError: {message}")),
        "generic" => RpcError::internal(format!("Exception: {message}")),
        other => {
            return Err(RpcError::invalid_params(format!("'type' must be value, runtime or generic, got '{other}'")));
        }
    };
    Err(err.retryable(p.retryable))
}

fn flaky(ctx: &Context, p: FlakyParams) -> Result<Value, RpcError> {
    if ctx.attempt < p.succeed_on_attempt {
        return Err(RpcError::transient(format!(
            "flaky: attempt {} fails, attempt {} will succeed",
            ctx.attempt, p.succeed_on_attempt
        )));
    }
    Ok(json!({
        "attempt": ctx.attempt,
        "message": p.message.unwrap_or_else(|| "succeeded".to_owned()),
        "provider_id": PROVIDER_ID,
    }))
}

fn provider() -> Provider {
    Provider::new("echo/v1", "echo", env!("CARGO_PKG_VERSION"))
        .description("Echo and test methods")
        .method("echo", "Return the message", echo)
        .method("ping", "Answer with the message or 'pong'", ping)
        .method("timestamp", "The current Unix time", timestamp)
        .method("delay", "Wait 'seconds' (at most 10), then answer", delay)
        .method("error", "Fail with a value, runtime or generic error", error)
        .method("flaky", "Fail (retryably) until attempt 'succeed_on_attempt'", flaky)
}

export_provider!(provider);
