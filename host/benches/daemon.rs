//! Daemon benchmark; prints a table of medians over several rounds.
//!
//! 10,000 echo tasks submitted over Socket.IO to an in-process `serve`:
//! 1. through one remote provider written in Rust with `gleitzeit::client`,
//!    connected over loopback;
//! 2. through the bundled WASM echo in the same daemon;
//! 3. the bundled WASM echo again while a Prometheus-like client scrapes
//!    `/metrics` every 100 ms (the bound: at most 5 % slower);
//! 4. baseline: the same WASM tasks single-shot (validation and the engine
//!    in-process, as `gleitzeit run` does after reading the file), for the
//!    daemon's overhead: the Socket.IO transfer of the workflow and of two
//!    events per task to the submitter.
//!
//! Run: `cargo bench -p gleitzeit --bench daemon` (`-- --quick` for 3 rounds,
//! `-- --store` for a daemon on a SQLite store, as `gleitzeit serve` runs by
//! default).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

mod support;

use gleitzeit::client::Client;
use gleitzeit::daemon::{ServeConfig, serve};
use gleitzeit::engine::{Engine, EngineConfig};
use gleitzeit::plugins::{PluginSet, RuntimeConfig, WasmRuntime};
use gleitzeit::registry::Registry;
use gleitzeit::report::RunReport;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TASKS: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let stored = std::env::args().any(|a| a == "--store");
    let data = tempfile::tempdir().unwrap();
    let store = stored.then(|| {
        Arc::new(gleitzeit::store::sqlite::SqliteStore::open(&data.path().join("bench.db")).unwrap())
            as Arc<dyn gleitzeit::store::Store>
    });
    let rounds = if quick { 3 } else { 7 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let registry = Arc::new(Registry::new());
        let runtime = Arc::new(WasmRuntime::new(RuntimeConfig::default()).unwrap());
        let empty = std::env::temp_dir().join("gleitzeit-bench-no-plugins");
        let (plugins, _) = PluginSet::load(runtime, registry.clone(), &empty, Default::default()).await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Authentication on, as by default: every connection shows a token.
        let token = gleitzeit::auth::ensure_local_token(data.path()).unwrap();
        let mut policy = gleitzeit::auth::Policy::open();
        policy.tokens = Some(gleitzeit::auth::Tokens::new(&[], &token, data.path()).unwrap());
        let config = ServeConfig {
            engine: EngineConfig::default(),
            grace: Duration::from_secs(1),
            store,
            cluster: None,
            retention: Duration::from_secs(3600),
            policy: Arc::new(policy),
            max_streams: gleitzeit::daemon::MAX_STREAMS,
            max_streams_per_token: gleitzeit::daemon::DEFAULT_STREAMS_PER_TOKEN,
            max_workflows_per_token: gleitzeit::daemon::DEFAULT_WORKFLOWS_PER_TOKEN,
            max_schedules_per_token: gleitzeit::daemon::DEFAULT_SCHEDULES_PER_TOKEN,
            min_schedule_interval: gleitzeit::daemon::DEFAULT_MIN_SCHEDULE_INTERVAL,
        };
        tokio::spawn(serve(config, listener, registry.clone(), plugins, std::future::pending()));
        tokio::spawn(remote_echo(url.clone(), token.clone()));
        let mut submitter = Client::connect(&url, Some(&token)).await.unwrap();
        wait_for_protocol(&submitter, "bench/v1").await;
        run(&mut submitter, "bench/v1", 100).await; // warm-up

        let kept = if stored { "SQLite store" } else { "no store" };
        println!("gleitzeit daemon benchmark ({kept}): {TASKS} echo tasks per round, medians of {rounds} rounds");
        println!();
        println!("| path | median wall | tasks/s | median task latency |");
        println!("|---|---:|---:|---:|");
        let (mut remote, mut wasm, mut scraped, mut single) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let engine = Engine::start(registry.clone(), EngineConfig::default());
        let scrapes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Made once: building a client (its TLS roots) is not a scrape's cost.
        let http = reqwest::Client::new();
        // Interleaved, so drift on a noisy machine hits all four alike.
        for _ in 0..rounds {
            remote.push(run(&mut submitter, "bench/v1", TASKS).await);
            wasm.push(run(&mut submitter, "echo/v1", TASKS).await);
            let scraper = tokio::spawn(scrape_every_100ms(http.clone(), url.clone(), token.clone(), scrapes.clone()));
            scraped.push(run(&mut submitter, "echo/v1", TASKS).await);
            scraper.abort();
            single.push(single_shot(&engine, &registry).await);
        }
        let (remote, wasm, scraped, single) = (medians(&remote), medians(&wasm), medians(&scraped), medians(&single));
        row("daemon, one remote provider (Rust client, loopback)", &remote);
        row("daemon, WASM echo", &wasm);
        row("daemon, WASM echo, /metrics scraped every 100 ms", &scraped);
        row("single-shot engine, WASM echo (baseline)", &single);
        println!(
            "|  daemon / single-shot wall-time ratio (WASM): {:.2}x | | | |",
            wasm.0.as_secs_f64() / single.0.as_secs_f64()
        );
        println!(
            "|  scraped / unscraped wall-time ratio (WASM): {:.3}x ({} scrapes in all) | | | |",
            scraped.0.as_secs_f64() / wasm.0.as_secs_f64(),
            scrapes.load(std::sync::atomic::Ordering::Relaxed)
        );
    });
}

/// Read `/metrics` every 100 ms, as a busy Prometheus would, counting the
/// scrapes that answered.
async fn scrape_every_100ms(
    client: reqwest::Client,
    url: String,
    token: String,
    scrapes: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let answer = client.get(format!("{url}/metrics")).bearer_auth(&token).send().await;
        if let Ok(answer) = answer
            && answer.status().is_success()
            && answer.bytes().await.is_ok_and(|body| body.starts_with(b"# HELP"))
        {
            scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// (median wall time, median task latency) of several rounds.
fn medians(rounds: &[(Duration, Duration)]) -> (Duration, Duration) {
    let walls: Vec<Duration> = rounds.iter().map(|r| r.0).collect();
    let latencies: Vec<Duration> = rounds.iter().map(|r| r.1).collect();
    (median(&walls), median(&latencies))
}

fn row(name: &str, (wall, latency): &(Duration, Duration)) {
    println!(
        "| {name} | {:.1} ms | {:.0} | {:.2} ms |",
        wall.as_secs_f64() * 1000.0,
        TASKS as f64 / wall.as_secs_f64(),
        latency.as_secs_f64() * 1000.0
    );
}

/// A remote provider of bench/v1 that echoes, answering through acks.
async fn remote_echo(url: String, token: String) {
    let mut client = Client::connect(&url, Some(&token)).await.unwrap();
    let registration = json!({
        "provider_id": "bench-remote", "protocol_id": "bench/v1",
        "supported_methods": ["echo"], "max_concurrent": 512,
    });
    client.call("register_provider", &registration, TIMEOUT).await.unwrap();
    while let Some(event) = client.next_event().await {
        if let (true, Some(id)) = (event.name == "execute_method", event.ack) {
            let answer = json!({ "result": { "echoed": event.data["params"]["message"] } });
            client.ack(id, &answer).unwrap();
        }
    }
}

async fn wait_for_protocol(client: &Client, protocol: &str) {
    for _ in 0..100 {
        let reply = client.call("list_protocols", &json!({}), TIMEOUT).await.unwrap();
        if reply["protocols"].as_array().unwrap().iter().any(|p| p["protocol_id"] == protocol) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{protocol} never registered");
}

fn fan_out(protocol: &str, n: usize) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "protocol": protocol, "method": "echo", "params": {"message": i}}))
        .collect();
    json!({"name": "bench", "tasks": tasks})
}

/// Submit one fan-out over Socket.IO; wall time from submission to the
/// `workflow_completed` event, and the median task latency.
async fn run(client: &mut Client, protocol: &str, n: usize) -> (Duration, Duration) {
    let (wall, report) = support::submit_and_wait(client, &fan_out(protocol, n), TIMEOUT).await;
    assert_eq!(report.summary.completed, n);
    (wall, median_latency(&report))
}

/// What `gleitzeit run` does with a parsed file: validate (also against the
/// registry) and run, in process.
async fn single_shot(engine: &Engine, registry: &Registry) -> (Duration, Duration) {
    let tree = fan_out("echo/v1", TASKS);
    let started = Instant::now();
    let workflow = gleitzeit::workflow::from_value("bench", tree).unwrap();
    gleitzeit::workflow::check_catalog("bench", &workflow, registry).unwrap();
    let report = engine.run(workflow).await.unwrap();
    (started.elapsed(), median_latency(&report))
}

fn median_latency(report: &RunReport) -> Duration {
    let mut ms: Vec<f64> = report.tasks.iter().filter_map(|t| t.duration_ms).collect();
    ms.sort_by(f64::total_cmp);
    Duration::from_secs_f64(ms[ms.len() / 2] / 1000.0)
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}
