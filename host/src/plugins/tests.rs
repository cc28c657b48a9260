//! The bundled echo component through the real runtime: loading checks,
//! results, error mapping and deadlines.

use super::*;
use crate::model::codes;
use crate::registry::{Call, Provider};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn runtime() -> Arc<WasmRuntime> {
    Arc::new(WasmRuntime::new(RuntimeConfig { max_instances: 16, ..RuntimeConfig::default() }).unwrap())
}

async fn echo() -> WasmProvider {
    let plugin = bundled(&runtime().await, &Default::default()).await.into_iter().next().unwrap().unwrap();
    WasmProvider::new(Arc::new(plugin))
}

fn call(method: &str, params: Value, attempt: u32, within: Duration) -> Call {
    Call {
        owner: None,
        task_id: "t".into(),
        workflow_id: Some("wf".into()),
        attempt,
        method: method.into(),
        params: params.into(),
        deadline: Instant::now() + within,
        progress: None,
    }
}

#[tokio::test]
async fn the_bundled_echo_describes_itself() {
    let echo = echo().await;
    assert_eq!(&**echo.id(), "wasm:echo");
    let spec = echo.spec();
    assert_eq!(spec.protocol, "echo/v1");
    let methods: Vec<&str> = spec.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(methods, ["echo", "ping", "timestamp", "delay", "error", "flaky"]);
    assert_eq!(echo.plugin().source, PluginSource::Bundled);
}

#[tokio::test]
async fn calls_return_results_and_json_rpc_errors() {
    let echo = echo().await;
    let second = Duration::from_secs(5);
    let out = echo.call(call("echo", json!({"message": {"a": [1, 2]}}), 1, second)).await.unwrap();
    assert_eq!(out["echoed"], json!({"a": [1, 2]}));

    let err = echo.call(call("echo", json!({"msg": 1}), 1, second)).await.unwrap_err();
    assert_eq!((err.code, err.retryable), (codes::INVALID_PARAMS, false));
    assert!(err.message.contains("method 'echo': invalid params: missing field `message`"), "{}", err.message);

    let err = echo.call(call("shout", json!({}), 1, second)).await.unwrap_err();
    assert_eq!(err.code, codes::METHOD_NOT_FOUND);

    let err = echo.call(call("flaky", json!({"succeed_on_attempt": 2}), 1, second)).await.unwrap_err();
    assert!(err.retryable, "{err}");
    let ok = echo.call(call("flaky", json!({"succeed_on_attempt": 2}), 2, second)).await.unwrap();
    assert_eq!(ok["attempt"], 2);

    let err = echo
        .call(call("error", json!({"type": "runtime", "message": "x", "retryable": true}), 1, second))
        .await
        .unwrap_err();
    assert_eq!((err.code, err.message.as_str(), err.retryable), (-32000, "RuntimeError: x", true));
}

#[tokio::test]
async fn a_call_is_stopped_at_its_deadline() {
    let echo = echo().await;
    let started = Instant::now();
    let err = echo.call(call("delay", json!({"seconds": 5}), 1, Duration::from_millis(100))).await.unwrap_err();
    assert_eq!((err.code, err.retryable), (codes::TIMEOUT, true), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn broken_files_fail_at_the_right_step() {
    let rt = runtime().await;
    let load = |bytes: &[u8]| {
        load_bytes(&rt, "bad", PluginSource::File("bad.wasm".into()), bytes.to_vec(), rt.default_grants())
    };

    let err = load(b"not wasm at all").await.err().unwrap();
    assert!(matches!(err, LoadError::Plugin { step: LoadStep::Compile, .. }), "{err}");
    assert!(err.to_string().starts_with("plugin 'bad' (bad.wasm) is not a valid component"), "{err}");

    // A valid but empty core module is not a component.
    let err = load(b"\0asm\x01\0\0\0").await.err().unwrap();
    assert!(matches!(err, LoadError::Plugin { step: LoadStep::Compile, .. }), "{err}");

    // A valid, empty component exports nothing of our world.
    let err = load(b"\0asm\x0d\0\x01\0").await.err().unwrap();
    assert!(matches!(err, LoadError::Plugin { step: LoadStep::Link, .. }), "{err}");
    assert!(err.to_string().contains("does not fit the gleitzeit:provider world"), "{err}");
}

/// A new version of a plugin compiles only what changed: the functions it
/// shares with the version before come from the function cache.
#[tokio::test]
async fn a_changed_plugin_reuses_the_functions_compiled_before() {
    let runtime = runtime().await;
    let (_, echo, _) = loader::embedded::BUNDLED[0];
    let load = |bytes: Vec<u8>| load_bytes(&runtime, "echo", PluginSource::Bundled, bytes, runtime.default_grants());
    let first = load(echo.to_vec()).await.unwrap();
    let reused = runtime.functions_reused();
    let mut changed = echo.to_vec();
    changed.extend_from_slice(&[0, 4, 3, b'v', b'e', b'r']); // a custom section "ver"
    let second = load(changed).await.unwrap();
    assert_ne!(first.hash, second.hash);
    assert!(runtime.functions_reused() > reused, "no function of the first version was reused");
    let answer =
        WasmProvider::new(Arc::new(second)).call(call("echo", json!({"message": 1}), 1, Duration::from_secs(10)));
    assert_eq!(answer.await.unwrap()["echoed"], 1);
}
