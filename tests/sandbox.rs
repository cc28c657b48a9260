//! The plugin sandbox with a hostile plugin built from source
//! (tests/fixtures/plugins/hostile): endless loops end at their deadline,
//! memory bombs at their limit, panics and oversized results become task
//! errors, nothing is granted by default, and manifests are checked.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use support::root;

/// A plugins directory holding the hostile plugin and, if given, its manifest.
fn plugins_dir(manifest: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(support::component("hostile"), dir.path().join("hostile.wasm")).unwrap();
    if let Some(text) = manifest {
        std::fs::write(dir.path().join("hostile.toml"), text).unwrap();
    }
    dir
}

fn run(plugins: &Path, workflow: &str) -> (Output, Value) {
    let file = plugins.join("workflow.yaml");
    std::fs::write(&file, workflow).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", file.to_str().unwrap(), "--plugins", plugins.to_str().unwrap(), "--output", "json"])
        .env_remove("GLEITZEIT_LOG")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap()
}

fn error_of(report: &Value, id: &str) -> (i64, String) {
    let error = &task(report, id)["error"];
    (error["code"].as_i64().unwrap(), error["message"].as_str().unwrap().to_owned())
}

#[test]
fn hostile_calls_become_task_errors_and_the_rest_keeps_serving() {
    let dir = plugins_dir(Some("memory_mb = 256\n[config]\nmood = \"grumpy\"\n"));
    let (out, report) = run(
        dir.path(),
        r#"
name: hostile
tasks:
  - {id: spin, protocol: hostile/v1, method: spin, timeout: 0.3}
  - {id: hog, protocol: hostile/v1, method: hog}
  - {id: panic, protocol: hostile/v1, method: panic}
  - {id: huge, protocol: hostile/v1, method: huge, params: {bytes: 20000000}}
  - {id: snoop, protocol: hostile/v1, method: snoop}
  - {id: config, protocol: hostile/v1, method: config, params: {key: mood}}
  - {id: unset, protocol: hostile/v1, method: config, params: {key: other}}
  - {id: fine, protocol: echo/v1, method: echo, params: {message: still serving}}
"#,
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let (code, message) = error_of(&report, "spin");
    assert_eq!(code, -32001, "{message}");
    let took = task(&report, "spin")["duration_ms"].as_f64().unwrap();
    assert!((300.0..400.0).contains(&took), "an endless loop ends within 100 ms of its deadline, took {took} ms");

    let (code, message) = error_of(&report, "hog");
    assert_eq!(code, -32004);
    assert!(message.contains("trapped in 'hog'") && message.contains("memory allocation of"), "{message}");

    let (code, message) = error_of(&report, "panic");
    assert_eq!(code, -32004);
    assert!(message.contains("boom from the hostile plugin"), "the panic message reaches the task: {message}");
    assert!(!message.contains('\n'), "one line: {message}");

    let (code, message) = error_of(&report, "huge");
    assert_eq!(code, -32007);
    assert!(message.contains("results are limited to 16777216 bytes"), "{message}");

    let snoop = &task(&report, "snoop")["result"];
    assert_eq!(snoop["env_home"], Value::Null, "no environment: {snoop}");
    assert_eq!(snoop["env_count"], 0);
    assert!(snoop["file"]["Err"].is_string() && snoop["dir"]["Err"].is_string(), "no files: {snoop}");

    assert_eq!(task(&report, "config")["result"]["value"], "grumpy");
    assert_eq!(task(&report, "unset")["result"]["value"], Value::Null);
    assert_eq!(task(&report, "fine")["status"], "completed");
}

#[test]
fn the_manifest_sets_the_memory_limit() {
    // A 12 MB result and its JSON copy fit in the default 64 MiB, not in 16.
    let workflow = "name: m\ntasks:\n  - {id: big, protocol: hostile/v1, method: huge, params: {bytes: 12000000}}\n";
    let (out, report) = run(plugins_dir(None).path(), workflow);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(task(&report, "big")["result"].as_str().map(str::len), Some(12_000_000));
    let (_, report) = run(plugins_dir(Some("memory_mb = 16\n")).path(), workflow);
    let (code, message) = error_of(&report, "big");
    assert_eq!(code, -32004, "{message}");
    assert!(message.contains("memory allocation of"), "{message}");
}

#[test]
fn a_manifest_timeout_caps_every_call() {
    let dir = plugins_dir(Some("timeout_s = 0.2\n"));
    let (_, report) =
        run(dir.path(), "name: t\ntasks:\n  - {id: spin, protocol: hostile/v1, method: spin, timeout: 60}\n");
    assert_eq!(error_of(&report, "spin").0, -32001);
    let took = task(&report, "spin")["duration_ms"].as_f64().unwrap();
    assert!((200.0..300.0).contains(&took), "stopped at the plugin's 0.2 s, took {took} ms");
}

#[test]
fn manifest_mistakes_are_reported_and_the_plugin_is_not_loaded() {
    for (manifest, expected) in [
        ("memroy_mb = 64\n", "unknown field `memroy_mb`"),
        ("memory_mb = 0\n", "memory_mb must be from 1 to 4096, got 0"),
        ("max_concurrency = 0\n", "max_concurrency must be from 1 to 1000, got 0"),
        ("[config]\nnested = { a = 1 }\n", "config.nested must be a string, number or boolean"),
    ] {
        let dir = plugins_dir(Some(manifest));
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["run", "workflows/hello.yaml", "--plugins", dir.path().to_str().unwrap()])
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "other plugins still serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("plugin 'hostile'") && stderr.contains("has an invalid manifest"), "{stderr}");
        assert!(stderr.contains("hostile.toml") && stderr.contains(expected), "{manifest}: {stderr}");
    }
}

#[test]
fn the_manifest_shown_in_the_docs_is_accepted() {
    let doc = std::fs::read_to_string(root().join("docs/plugins.md")).unwrap();
    let manifest = support::fenced_blocks(&doc, "toml").into_iter().next().unwrap();
    let dir = plugins_dir(Some(&manifest));
    let (out, report) = run(
        dir.path(),
        "name: d\ntasks:\n  - {id: c, protocol: hostile/v1, method: config, params: {key: temperature}}\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(task(&report, "c")["result"]["value"], "0.7");
}
