//! A 500-item `for_each` of `chat` calls through the bundled openai plugin
//! against the test server of OpenAI's API (tests/fake-openai) limited, as
//! hosted APIs are, to 300 requests in any minute (more answers 429 with
//! Retry-After). The host's `rate_limit` says 300 a minute. Reported: the
//! rate the calls ran at (items a minute over the whole run), its ratio
//! to the limit, and the 429s and failed tasks (both must be 0).
//!
//! Then the cost of a cache hit against a call: 200 `chat` tasks with
//! `cache: {ttl: 1h}` against the same server unlimited (it answers at
//! once), run twice on one SQLite store: the first run calls, the second
//! is answered from the cache; medians of the per-task wall time over
//! 3 rounds of both.
//!
//! Run: `cargo bench -p gleitzeit --bench rate` (about 2 minutes;
//! `-- --quick` for 100 items against 60 in any 12 s, about 30 s).

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
    // The rate over the calls: from the first call's start to the last's,
    // (items - 1) intervals (the wall time adds the process's start).
    let starts: Vec<std::time::SystemTime> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["history"][0]["started_at"].as_str())
        .map(|at| humantime::parse_rfc3339_weak(at).unwrap())
        .collect();
    let (first, last) = (starts.iter().min().unwrap(), starts.iter().max().unwrap());
    let span = last.duration_since(*first).unwrap().as_secs_f64();
    let rate = (starts.len() - 1) as f64 / span * 60.0;
    cache_cost(dir.path(), &config, quick);
    println!(
        "rate limit {per_minute}/min, {items} items: {:.1} s (process), calls {span:.1} s apart end to end, {rate:.1} calls/min ({:.3} of the limit), {} 429s, {failed} failed, exit {status}",
        wall.as_secs_f64(),
        rate / f64::from(per_minute),
        stats.limited.load(Ordering::SeqCst),
    );
}

/// One run of `tasks` cached chat calls on `store`: the workflow's wall
/// time per task, and whether every task came from the cache.
fn cached_run(dir: &std::path::Path, config: &std::path::Path, store: &str, round: usize) -> (f64, bool) {
    const TASKS: usize = 200;
    let list: Vec<usize> = (0..TASKS).collect();
    let task = json!({"id": "ask", "protocol": "llm/v1", "method": "chat", "for_each": list,
        "params": {"stream": false, "messages": [{"role": "user", "content": format!("round {round} item ${{item}}")}]}});
    let workflow = dir.join("cached.json");
    std::fs::write(&workflow, json!({"name": "cache bench", "cache": {"ttl": 3600}, "tasks": [task]}).to_string())
        .unwrap();
    let results = dir.join("cached-results.json");
    let status = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", workflow.to_str().unwrap(), "--output-file", results.to_str().unwrap(), "--store", store])
        .args(["--config", config.to_str().unwrap(), "--plugins", dir.join("none").to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let report: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    let items: Vec<&Value> = report["tasks"].as_array().unwrap().iter().filter(|t| t["parent"] == "ask").collect();
    let all_cached = items.iter().all(|t| t["cached"] == true);
    (report["duration_ms"].as_f64().unwrap() / TASKS as f64, all_cached)
}

/// Per-task wall time of calls against cache hits (see the module doc).
fn cache_cost(dir: &std::path::Path, config: &std::path::Path, quick: bool) {
    // The same host without the rate limit, against an unlimited server.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (router, _) = fake_openai::router(KEY);
    runtime.spawn(async move { axum::serve(listener, router).await });
    let text = std::fs::read_to_string(config).unwrap();
    let old_port =
        text.split("http://127.0.0.1:").nth(1).and_then(|rest| rest.split(['"', '/']).next()).unwrap().to_owned();
    let unlimited = text.replace(&format!("127.0.0.1:{old_port}"), &format!("127.0.0.1:{port}"));
    let unlimited: String =
        unlimited.lines().filter(|l| !l.starts_with("rate_limit")).map(|l| format!("{l}\n")).collect();
    let config = dir.join("unlimited.toml");
    std::fs::write(&config, unlimited).unwrap();
    let store = format!("sqlite:{}", dir.join("cache.db").display());
    let (mut calls, mut hits) = (Vec::new(), Vec::new());
    for round in 0..if quick { 1 } else { 3 } {
        let (call, called_cached) = cached_run(dir, &config, &store, round);
        let (hit, hit_cached) = cached_run(dir, &config, &store, round);
        assert!(!called_cached && hit_cached, "the first run calls, the second hits");
        calls.push(call);
        hits.push(hit);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (call, hit) = (median(calls), median(hits));
    println!(
        "cache: a call {call:.3} ms per task, a hit {hit:.3} ms per task ({:.2} of a call), 200 tasks a run",
        hit / call
    );
}
