//! Hot reload latency: from the rename of a new version of a plugin into the
//! watched directory to the first task served by that version; p50 and p95
//! over 20 swaps. Three cases: a changed Rust plugin (echo; each version new,
//! so compiled), and Python and JavaScript plugins (textstats, built from
//! `plugin-sdk/*/examples` with the SDKs' build commands) whose two versions
//! are already in the compiled-plugin cache. Then each plugin's call cost:
//! one task at a time, median of 50 calls.
//!
//! Run: `cargo bench -p gleitzeit --bench reload` (`-- --quick` for 5
//! swaps). The Python and JS builds need componentize-py and the JS SDK's
//! npm packages (`scripts/test.sh` installs both).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

use gleitzeit::plugins::{PluginSet, RuntimeConfig, WasmRuntime};
use gleitzeit::registry::{Call, Registry, Selection};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CALLS: usize = 50;

/// The component `bytes` with a custom section marking version `n`: a new
/// file, a new hash, the same behaviour.
fn version(bytes: &[u8], n: usize) -> Vec<u8> {
    let name = b"gleitzeit-bench-version";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut bytes = bytes.to_vec();
    bytes.push(0); // custom section
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A plugin of the benchmark: its component, and one task for it.
struct Case {
    label: &'static str,
    component: Vec<u8>,
    protocol: &'static str,
    method: &'static str,
    params: Value,
    /// Each swap brings a version never seen (compiled), or one of two
    /// versions both already in the cache.
    cached: bool,
}

/// Build an example plugin with its SDK's build command into `out`.
fn built(command: &mut Command, out: &Path) -> Vec<u8> {
    let status = command.arg("-o").arg(out).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "building {} failed (are the SDK's tools installed?)", out.display());
    std::fs::read(out).unwrap()
}

fn cases(work: &Path) -> Vec<Case> {
    let echo = std::fs::read(root().join("target/wasm/wasm32-wasip2/release/echo.wasm")).unwrap();
    let python = built(
        Command::new("python3")
            .args(["-m", "gleitzeit_plugin.build", "build"])
            .arg(root().join("plugin-sdk/python/examples/textstats"))
            .env("PYTHONPATH", root().join("plugin-sdk/python")),
        &work.join("textstats-py.wasm"),
    );
    let js = built(
        Command::new("node")
            .arg(root().join("plugin-sdk/js/build.js"))
            .arg("build")
            .arg(root().join("plugin-sdk/js/examples/textstats")),
        &work.join("textstats-js.wasm"),
    );
    let text = json!({"text": "one two two three three three"});
    vec![
        Case {
            label: "Rust (echo), changed",
            component: echo,
            protocol: "echo/v1",
            method: "echo",
            params: json!({"message": 1}),
            cached: false,
        },
        Case {
            label: "Python (textstats), cached",
            component: python,
            protocol: "textstats/v1",
            method: "count",
            params: text.clone(),
            cached: true,
        },
        Case {
            label: "JavaScript (textstats), cached",
            component: js,
            protocol: "textstats/v1",
            method: "count",
            params: text,
            cached: true,
        },
    ]
}

fn hash_of(set: &PluginSet) -> Option<String> {
    set.statuses().into_iter().find(|s| s.name == "swap" && s.protocol_id.is_some()).and_then(|s| s.hash)
}

async fn call(registry: &Registry, case: &Case) {
    let Selection::Provider(provider) = registry.select(case.protocol) else { panic!("no {}", case.protocol) };
    let call = Call {
        owner: None,
        task_id: "t".into(),
        workflow_id: None,
        attempt: 1,
        method: case.method.into(),
        params: case.params.clone().into(),
        deadline: Instant::now() + Duration::from_secs(30),
        progress: None,
    };
    provider.call(call).await.unwrap();
}

/// Swap versions of `case` into a watched directory; the latencies from
/// rename to first task served, and the cost of a call.
async fn measure(case: &Case, swaps: usize) -> (Duration, Vec<Duration>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::new());
    let config = RuntimeConfig { cache_dir: Some(cache.path().to_owned()), ..RuntimeConfig::default() };
    let runtime = Arc::new(WasmRuntime::new(config).unwrap());
    let plugins = dir.path().join("plugins");
    let (set, _) = PluginSet::load(runtime, registry.clone(), &plugins, Default::default()).await.unwrap();
    let _watcher = set.watch().unwrap();
    let mut first = Duration::ZERO;
    let mut latencies = Vec::new();
    // Swap 0 (and 1, for two cached versions) warm up: they fill the cache.
    let warm_up = if case.cached { 2 } else { 1 };
    for n in 0..swaps + warm_up {
        let n_version = if case.cached { n % 2 } else { n };
        let staging = dir.path().join("swap.partial");
        std::fs::write(&staging, version(&case.component, n_version)).unwrap();
        let before = hash_of(&set);
        let started = Instant::now();
        std::fs::rename(&staging, plugins.join("swap.wasm")).unwrap();
        while hash_of(&set) == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        call(&registry, case).await;
        match n {
            0 => first = started.elapsed(),
            n if n >= warm_up => latencies.push(started.elapsed()),
            _ => {}
        }
    }
    let mut calls: Vec<Duration> = Vec::new();
    for _ in 0..CALLS {
        let started = Instant::now();
        call(&registry, case).await;
        calls.push(started.elapsed());
    }
    calls.sort();
    latencies.sort();
    (first, latencies, calls[CALLS / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let swaps = if std::env::args().any(|a| a == "--quick") { 5 } else { 20 };
    let work = tempfile::tempdir().unwrap();
    let cases = cases(work.path());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "gleitzeit reload benchmark: {swaps} swaps per plugin (rename into the watched directory → first task served), {} cores\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| plugin | component | first load (compiled) | p50 | p95 | min | max | one call (median of {CALLS}) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for case in &cases {
        let (first, latencies, call) = rt.block_on(measure(case, swaps));
        let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "| {} | {:.1} MB | {} | {} | {} | {} | {} | {:.2} ms |",
            case.label,
            case.component.len() as f64 / 1e6,
            ms(first),
            ms(p(0.5)),
            ms(p(0.95)),
            ms(p(0.0)),
            ms(p(1.0)),
            call.as_secs_f64() * 1000.0
        );
    }
}
