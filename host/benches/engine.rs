//! Engine benchmarks; prints a table of medians over several rounds.
//!
//! 1. 10,000 independent echo tasks through the whole engine and real WASM
//!    instances, against the same engine with a native in-process echo as
//!    baseline (the ratio is the cost of WASM).
//! 2. validate + levels of a 100,000-task DAG (from its JSON tree).
//! 3. instantiate + call of the echo component alone.
//! 4. the same 10,000 tasks with the SQLite store on, against in-memory in
//!    the same process.
//! 5. `fan`: 10,000 echo tasks as one `for_each` over 10,000 items against
//!    the same tasks written out, native echo (the engine's own costs),
//!    in memory and with the SQLite store.
//! 6. `when`: 10,000 echo tasks each behind a `when:` condition against the
//!    same tasks without one (native echo), and one condition that spends
//!    its whole budget of steps: the longest a condition can take.
//! 7. `soak` (only when named): a million tasks with the store, 100 rounds
//!    of 10,000; the first and last ten rounds' speed and the memory then.
//!
//! Run: `cargo bench -p gleitzeit --bench engine` (add `-- --quick` for fewer rounds).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

use gleitzeit::engine::{Engine, EngineConfig};
use gleitzeit::model::{ProviderSpec, TaskStatus, Workflow};
use gleitzeit::plugins::{self, RuntimeConfig, WasmProvider, WasmRuntime};
use gleitzeit::registry::{Call, CallFuture, Provider, Registry};
use gleitzeit::resolver::Dag;
use gleitzeit::store::Store;
use gleitzeit::store::sqlite::SqliteStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The same allocator as the `gleitzeit` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TASKS: usize = 10_000;
const DAG_TASKS: usize = 100_000;
const CALLS: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `engine`, `dag` or `calls` runs only that part (for profiling).
    let only = |part: &str| {
        !args.iter().any(|a| ["engine", "dag", "calls", "store", "fan", "when", "soak"].contains(&a.as_str()))
            || args.iter().any(|a| a == part)
    };
    let rounds = if quick { 3 } else { 7 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let echo = rt.block_on(load_echo());

    println!(
        "gleitzeit engine benchmark: medians of {rounds} rounds, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| benchmark | median | per task | tasks/s | median task latency |");
    println!("|---|---:|---:|---:|---:|");

    if only("engine") {
        let wasm = rt.block_on(engine_rounds(rounds, echo.clone(), None));
        let native =
            rt.block_on(engine_rounds(rounds, Arc::new(NativeEcho("native:echo".into(), echo.spec().clone())), None));
        row(&format!("{TASKS} echo tasks, engine + WASM"), &wasm);
        row(&format!("{TASKS} echo tasks, engine + native echo (baseline)"), &native);
        println!(
            "|  WASM/native wall-time ratio: {:.2}x | | | | |",
            wasm.wall.as_secs_f64() / native.wall.as_secs_f64()
        );
    }
    if only("dag") {
        let dag = median(&(0..rounds).map(|_| validate_dag()).collect::<Vec<_>>());
        println!("| validate + levels, {DAG_TASKS}-task DAG | {} | {} | - | - |", ms(dag), us(dag / DAG_TASKS as u32));
    }
    if only("store") {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
        let memory = rt.block_on(engine_rounds(rounds, echo.clone(), None));
        let stored = rt.block_on(engine_rounds(rounds, echo.clone(), Some(store)));
        row(&format!("{TASKS} echo tasks, engine + WASM, in memory (baseline)"), &memory);
        row(&format!("{TASKS} echo tasks, engine + WASM, SQLite store"), &stored);
        println!(
            "|  store/in-memory wall-time ratio: {:.2}x | | | | |",
            stored.wall.as_secs_f64() / memory.wall.as_secs_f64()
        );
    }
    if only("fan") {
        let native: Arc<dyn Provider> = Arc::new(NativeEcho("native:echo".into(), echo.spec().clone()));
        for (place, store) in [("in memory", false), ("SQLite store", true)] {
            let dir = tempfile::tempdir().unwrap();
            let store = |file: &str| -> Option<Arc<dyn Store>> {
                store.then(|| Arc::new(SqliteStore::open(&dir.path().join(file)).unwrap()) as Arc<dyn Store>)
            };
            let written = rt.block_on(engine_rounds_of(rounds, native.clone(), store("written.db"), fan_out));
            let expanded = rt.block_on(engine_rounds_of(rounds, native.clone(), store("expanded.db"), for_each));
            row(&format!("{TASKS} tasks written out, native echo, {place} (baseline)"), &written);
            row(&format!("1 for_each over {TASKS} items, native echo, {place}"), &expanded);
            println!(
                "|  for_each/written-out wall-time ratio: {:.2}x | | | | |",
                expanded.wall.as_secs_f64() / written.wall.as_secs_f64()
            );
        }
    }
    if only("when") {
        let native: Arc<dyn Provider> = Arc::new(NativeEcho("native:echo".into(), echo.spec().clone()));
        let plain = rt.block_on(engine_rounds_of(rounds, native.clone(), None, fan_out));
        let guarded = rt.block_on(engine_rounds_of(rounds, native, None, guarded));
        row(&format!("{TASKS} tasks written out, native echo (baseline)"), &plain);
        row(&format!("{TASKS} tasks each behind a when, native echo"), &guarded);
        println!(
            "|  when/plain wall-time ratio: {:.2}x | | | | |",
            guarded.wall.as_secs_f64() / plain.wall.as_secs_f64()
        );
        let spent = median(&(0..rounds).map(|_| spend_a_condition_budget()).collect::<Vec<_>>());
        println!("| one condition spending its budget of steps | {} | - | - | - |", ms(spent));
    }
    if args.iter().any(|a| a == "soak") {
        rt.block_on(soak(echo.clone()));
    }
    if only("calls") {
        let calls = rt.block_on(call_rounds(rounds, &echo));
        println!(
            "| instantiate + call echo component, sequential | {} | {} | {:.0} | - |",
            ms(calls * CALLS as u32),
            us(calls),
            1.0 / calls.as_secs_f64()
        );
    }
}

struct EngineRun {
    wall: Duration,
    latency: Duration,
}

fn row(name: &str, r: &EngineRun) {
    let per_task = r.wall / TASKS as u32;
    println!(
        "| {name} | {} | {} | {:.0} | {} |",
        ms(r.wall),
        us(per_task),
        TASKS as f64 / r.wall.as_secs_f64(),
        us(r.latency)
    );
}

async fn load_echo() -> Arc<WasmProvider> {
    let runtime = Arc::new(WasmRuntime::new(RuntimeConfig::default()).unwrap());
    let plugin = plugins::bundled(&runtime, &Default::default()).await.into_iter().next().unwrap().unwrap();
    Arc::new(WasmProvider::new(Arc::new(plugin)))
}

/// Median wall time and median per-task latency (dispatch to completion),
/// with every state change written to `store` if given.
async fn engine_rounds(rounds: usize, provider: Arc<dyn Provider>, store: Option<Arc<dyn Store>>) -> EngineRun {
    engine_rounds_of(rounds, provider, store, fan_out).await
}

/// [`engine_rounds`] of the workflows `make(TASKS)` gives (each makes
/// TASKS calls).
async fn engine_rounds_of(
    rounds: usize,
    provider: Arc<dyn Provider>,
    store: Option<Arc<dyn Store>>,
    make: fn(usize) -> Workflow,
) -> EngineRun {
    let registry = Arc::new(Registry::new());
    registry.register(provider);
    let config = EngineConfig { concurrency: 256, ..EngineConfig::default() };
    let engine = match store {
        None => Engine::start(registry, config),
        Some(store) => Engine::start_durable(registry, config, store).unwrap().0,
    };
    engine.run(make(100)).await.unwrap(); // warm-up
    let mut walls = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let workflow = make(TASKS);
        let started = Instant::now();
        let report = engine.run(workflow).await.unwrap();
        walls.push(started.elapsed());
        let calling = || report.tasks.iter().filter(|t| t.items.is_none());
        assert_eq!(calling().count(), TASKS);
        let mut task_ms: Vec<f64> = calling().filter_map(|t| t.duration_ms).collect();
        task_ms.sort_by(f64::total_cmp);
        latencies.push(Duration::from_secs_f64(task_ms[task_ms.len() / 2] / 1000.0));
        assert!(report.tasks.iter().all(|t| t.status == TaskStatus::Completed));
    }
    EngineRun { wall: median(&walls), latency: median(&latencies) }
}

/// A million tasks through one engine with a SQLite store and, as the
/// daemon does, no finished reports kept in memory.
async fn soak(provider: Arc<dyn Provider>) {
    const ROUNDS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soak.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let registry = Arc::new(Registry::new());
    registry.register(provider);
    let config = EngineConfig { concurrency: 256, keep_finished: 0, ..EngineConfig::default() };
    let engine = Engine::start_durable(registry, config, store).unwrap().0;
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    };
    let mut walls = Vec::new();
    let mut memory = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let report = engine.run(fan_out(TASKS)).await.unwrap();
        walls.push(started.elapsed());
        assert_eq!(report.summary.completed, TASKS);
        memory.push(rss());
    }
    let rate = |w: &[Duration]| TASKS as f64 / median(w).as_secs_f64();
    let size = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / (1024.0 * 1024.0);
    println!(
        "| soak: {} tasks with the SQLite store | rounds 1-10: {:.0} tasks/s, RSS {:.0} MiB | rounds 91-100: {:.0} tasks/s, RSS {:.0} MiB | store file {size:.0} MiB | |",
        ROUNDS * TASKS,
        rate(&walls[..10]),
        memory[9],
        rate(&walls[90..]),
        memory[ROUNDS - 1]
    );
}

fn fan_out(n: usize) -> Workflow {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "protocol": "echo/v1", "method": "echo", "params": {"message": i}}))
        .collect();
    gleitzeit::workflow::from_value("bench", json!({"name": "fan-out", "tasks": tasks})).unwrap()
}

/// The same calls as [`fan_out`], as one task over `n` items.
fn for_each(n: usize) -> Workflow {
    let task = json!({"id": "t", "protocol": "echo/v1", "method": "echo", "for_each": (0..n).collect::<Vec<_>>(), "params": {"message": "${item}"}});
    gleitzeit::workflow::from_value("bench", json!({"name": "for-each", "tasks": [task]})).unwrap()
}

/// [`fan_out`] with each task behind a condition over an input.
fn guarded(n: usize) -> Workflow {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "protocol": "echo/v1", "method": "echo", "when": "${inputs.n} > 0", "params": {"message": i}}))
        .collect();
    let inputs = json!({"n": {"type": "integer", "default": 1}});
    gleitzeit::workflow::from_value("bench", json!({"name": "guarded", "inputs": inputs, "tasks": tasks})).unwrap()
}

/// The quadratic condition over 15,000 items, until its budget
/// of steps is spent.
fn spend_a_condition_budget() -> Duration {
    use gleitzeit::resolver::Root;
    use gleitzeit::resolver::condition::{Condition, ConditionError, OverBudget};
    let xs = json!((0..15_000).collect::<Vec<_>>());
    let condition = Condition::parse("${inputs.xs}.map(x, ${inputs.xs}.filter(y, y == x).size()).size() > 0").unwrap();
    let started = Instant::now();
    let verdict = condition.evaluate(|root| matches!(root, Root::Input(_)).then_some(&xs));
    assert_eq!(verdict, Err(ConditionError::OverBudget(OverBudget::Steps)));
    started.elapsed()
}

/// A 100k-task DAG: each task depends on up to three of the 50 tasks before it.
fn validate_dag() -> Duration {
    let mut rng = fastrand::Rng::with_seed(7);
    let tasks: Vec<Value> = (0..DAG_TASKS)
        .map(|i| {
            let deps: Vec<String> = (0..rng.usize(0..=3.min(i))).map(|_| format!("t{}", i - 1 - rng.usize(0..i.min(50)))).collect();
            json!({"id": format!("t{i}"), "protocol": "echo/v1", "method": "echo", "dependencies": deps,
                   "params": {"message": if deps.is_empty() { json!(i) } else { json!(format!("${{{}.result.echoed}}", deps[0])) }}})
        })
        .collect();
    let tree = json!({"name": "dag", "tasks": tasks});
    let started = Instant::now();
    let workflow = gleitzeit::workflow::from_value("bench", tree).unwrap();
    let ids: Vec<&str> = workflow.tasks.iter().map(|t| t.id.as_str()).collect();
    let dag = Dag::from_ids(&ids, |t| workflow.tasks[t].dependencies.iter().map(String::as_str).collect());
    let levels = dag.levels().unwrap();
    let took = started.elapsed();
    assert!(!levels.is_empty());
    took
}

/// Median time of one instantiate + call, calls made one after another.
async fn call_rounds(rounds: usize, echo: &WasmProvider) -> Duration {
    let mut medians = Vec::new();
    for _ in 0..rounds {
        let mut times = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let call = Call {
                owner: None,
                task_id: format!("t{i}"),
                workflow_id: None,
                attempt: 1,
                method: "echo".into(),
                params: json!({"message": "hello"}).into(),
                deadline: Instant::now() + Duration::from_secs(10),
                progress: None,
            };
            let started = Instant::now();
            echo.call(call).await.unwrap();
            times.push(started.elapsed());
        }
        medians.push(median(&times));
    }
    median(&medians)
}

/// The echo method in native Rust, for the baseline.
struct NativeEcho(Arc<str>, ProviderSpec);

impl Provider for NativeEcho {
    fn id(&self) -> &Arc<str> {
        &self.0
    }
    fn spec(&self) -> &ProviderSpec {
        &self.1
    }
    fn call(&self, call: Call) -> CallFuture {
        Box::pin(async move { Ok(json!({"echoed": call.params["message"], "provider_id": "native"})) })
    }
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
