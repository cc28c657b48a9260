//! A 500-item `for_each` of `chat` calls through the bundled openai plugin
//! against the test server of OpenAI's API (tests/fake-openai) limited, as
//! hosted APIs are, to 300 requests in any minute (more answers 429 with
//! Retry-After). The host's `rate_limit` says 300 a minute. Reported: the
//! rate the calls ran at (items a minute over the whole run), its ratio
//! to the limit, and the 429s and failed tasks (both must be 0).
//!
//! Run: `cargo bench -p gleitzeit --bench rate` (about 100 s;
//! `-- --quick` for 100 items against 60 in any 12 s, about 20 s).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const KEY: &str = "sk-bench-0123456789";

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (items, per_window, window) =
        if quick { (100, 60, Duration::from_secs(12)) } else { (500, 300, Duration::from_secs(60)) };
    let per_minute = (per_window as f64 * 60.0 / window.as_secs_f64()).round() as u32;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (router, stats) = fake_openai::router_with(KEY, fake_openai::Options { limit: Some((per_window, window)) });
    runtime.spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut set = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["secret", "set", "openai", "--data-dir", data.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut set.stdin.take().unwrap(), KEY.as_bytes()).unwrap();
    assert!(set.wait().unwrap().success());
    let origin = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("gleitzeit.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[manifests.openai]\nenabled = true\nrate_limit = {{ requests_per_minute = {per_minute} }}\n\
             allowed_hosts = [\"{origin}\"]\n[manifests.openai.headers.\"{origin}\"]\nAuthorization = \"Bearer {{secret:openai}}\"\n\
             [manifests.openai.config]\nbase_url = \"{origin}/v1\"\n[manifests.ollama]\nenabled = false\n"
        ),
    )
    .unwrap();
    let list: Vec<usize> = (0..items).collect();
    let workflow = dir.path().join("batch.json");
    let task = json!({"id": "ask", "protocol": "llm/v1", "method": "chat", "for_each": list,
        "params": {"stream": false, "messages": [{"role": "user", "content": "item ${item}"}]}});
    std::fs::write(&workflow, json!({"name": "rate bench", "tasks": [task]}).to_string()).unwrap();
    let results = dir.path().join("results.json");

    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", workflow.to_str().unwrap(), "--output-file", results.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap(), "--plugins", dir.path().join("none").to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let wall = started.elapsed();
    let report: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    let failed = report["summary"]["failed"].as_u64().unwrap_or(u64::MAX);
    // The first call starts at once and the last (items - 1) intervals
    // later: the rate is over those intervals (the process's start and the
    // last call's answer are in the wall time too, a fraction of a second).
    let rate = (items - 1) as f64 / wall.as_secs_f64() * 60.0;
    println!(
        "rate limit {per_minute}/min, {items} items: {:.1} s, {rate:.1} calls/min ({:.3} of the limit), {} 429s, {failed} failed, exit {status}",
        wall.as_secs_f64(),
        rate / f64::from(per_minute),
        stats.limited.load(Ordering::SeqCst),
    );
}
