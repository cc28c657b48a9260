//! Hot reload latency: from the rename of a new version of a plugin into the
//! watched directory to the first task served by that version; p50 and p95
//! over 20 swaps.
//!
//! Run: `cargo bench -p gleitzeit --bench reload`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

use gleitzeit::plugins::{PluginSet, RuntimeConfig, WasmRuntime};
use gleitzeit::registry::{Call, Registry, Selection};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SWAPS: usize = 20;

/// The echo component with a custom section marking version `n`: a new
/// file, a new hash, the same behaviour.
fn version(echo: &[u8], n: usize) -> Vec<u8> {
    let name = b"gleitzeit-bench-version";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut bytes = echo.to_vec();
    bytes.push(0); // custom section
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

fn hash_of(set: &PluginSet) -> Option<String> {
    set.statuses().into_iter().find(|s| s.name == "swap" && s.protocol_id.is_some()).and_then(|s| s.hash)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let echo =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/wasm32-wasip2/release/echo.wasm"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let registry = Arc::new(Registry::new());
        let runtime = Arc::new(WasmRuntime::new(RuntimeConfig::default()).unwrap());
        let (set, _) = PluginSet::load(runtime, registry.clone(), dir.path(), Default::default()).await.unwrap();
        let _watcher = set.watch().unwrap();
        let mut latencies = Vec::new();
        for n in 0..=SWAPS {
            let staging = dir.path().join(".swap.partial");
            std::fs::write(&staging, version(&echo, n)).unwrap();
            let before = hash_of(&set);
            let started = Instant::now();
            std::fs::rename(&staging, dir.path().join("swap.wasm")).unwrap();
            while hash_of(&set) == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let Selection::Provider(provider) = registry.select("echo/v1") else { panic!("no echo/v1") };
            let call = Call {
                task_id: "t".into(),
                workflow_id: None,
                attempt: 1,
                method: "echo".into(),
                params: json!({"message": n}).into(),
                deadline: Instant::now() + Duration::from_secs(10),
                progress: None,
            };
            provider.call(call).await.unwrap();
            if n > 0 {
                latencies.push(started.elapsed()); // the first load is a warm-up
            }
        }
        latencies.sort();
        let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
        println!("gleitzeit reload benchmark: {SWAPS} swaps of the echo plugin (rename into the watched directory → first task served)");
        println!();
        println!("| p50 | p95 | min | max |");
        println!("|---:|---:|---:|---:|");
        println!("| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |", p(0.5), p(0.95), p(0.0), p(1.0));
    });
}
