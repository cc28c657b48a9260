//! 1,000 concurrent `llm/v1` `generate` calls through the bundled ollama
//! plugin against the test server of Ollama's API (tests/fake-ollama),
//! which answers each after 1 s: the wall time, and the peak OS threads and
//! resident memory of the `gleitzeit run` process. A run of one call is the
//! baseline (process start, plugin compilation, one round trip).
//!
//! Run: `cargo bench -p gleitzeit --bench llm` (`-- --quick` for 1 round).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CALLS: usize = 1000;
const LATENCY: Duration = Duration::from_secs(1);

/// What one `gleitzeit run` took.
struct Sample {
    process_wall: Duration,
    workflow_wall: Duration,
    peak_threads: u64,
    peak_rss_mib: f64,
}

/// A field of /proc/PID/status (`Threads`, `VmRSS` in kB, ...).
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn run(dir: &Path, port: u16, calls: usize) -> Sample {
    let tasks: Vec<Value> = (0..calls)
        .map(|i| json!({"id": format!("g{i}"), "protocol": "llm/v1", "method": "generate", "params": {"prompt": format!("call {i}")}}))
        .collect();
    let workflow = dir.join(format!("bench-{calls}.json"));
    std::fs::write(&workflow, json!({"name": "llm bench", "tasks": tasks}).to_string()).unwrap();
    let config = dir.join("gleitzeit.toml");
    std::fs::write(
        &config,
        format!("[manifests.ollama]\nallowed_hosts = [\"http://127.0.0.1:{port}\"]\nconfig = {{ base_url = \"http://127.0.0.1:{port}\" }}\n"),
    )
    .unwrap();
    let results = dir.join("results.json");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", workflow.to_str().unwrap(), "--output-file", results.to_str().unwrap()])
        .args(["--concurrency", &calls.to_string()])
        .args(["--config", config.to_str().unwrap(), "--plugins", dir.join("no-plugins").to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (mut peak_threads, mut peak_rss_kib) = (0, 0);
    while child.try_wait().unwrap().is_none() {
        peak_threads = peak_threads.max(status_field(pid, "Threads:").unwrap_or(0));
        peak_rss_kib = peak_rss_kib.max(status_field(pid, "VmHWM:").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    let process_wall = started.elapsed();
    let report: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    assert_eq!(report["summary"]["completed"], calls, "every call completed: {}", report["summary"]);
    let workflow_wall = Duration::from_secs_f64(report["duration_ms"].as_f64().unwrap() / 1000.0);
    Sample { process_wall, workflow_wall, peak_threads, peak_rss_mib: peak_rss_kib as f64 / 1024.0 }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let rounds = if std::env::args().any(|a| a == "--quick") { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = fake_ollama::Options { latency: LATENCY, ..Default::default() };
    let (router, stats) = fake_ollama::router(options);
    runtime.spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().unwrap();

    println!(
        "| calls at once (server answers after {LATENCY:?}) | workflow wall | process wall | peak threads | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for calls in [1, CALLS] {
        stats.peak.store(0, Ordering::SeqCst);
        let samples: Vec<Sample> = (0..rounds).map(|_| run(dir.path(), port, calls)).collect();
        let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        println!(
            "| {calls} (server saw {} at once) | {:.2} s | {:.2} s | {:.0} | {:.0} MiB |",
            stats.peak.load(Ordering::SeqCst),
            pick(|s| s.workflow_wall.as_secs_f64()),
            pick(|s| s.process_wall.as_secs_f64()),
            pick(|s| s.peak_threads as f64),
            pick(|s| s.peak_rss_mib),
        );
    }
}
