//! Engine behaviour with an in-process test provider (`t/v1`) whose methods
//! succeed, fail, sleep or flake on request and record what ran.
//!
//! The engine's timers and deadlines are on tokio's clock, so most tests run on a paused
//! one (`start_paused`): timeouts, backoffs and waits for providers pass
//! at once and exactly, not on a loaded machine's wall clock.

use super::*;
use crate::model::{TaskStatus, WorkflowStatus, codes};
use crate::registry::CallFuture;
use crate::registry::tests::{FnProvider, spec};
use crate::registry::{Call, Registry};
use crate::report::{TaskReport, Usage};
use crate::store::TaskRecord;
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
struct Probe {
    order: Mutex<Vec<String>>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

fn start(concurrency: usize) -> (Engine, Arc<Probe>) {
    start_with(EngineConfig { concurrency, default_timeout: Duration::from_secs(10), ..EngineConfig::default() })
}

fn start_with(config: EngineConfig) -> (Engine, Arc<Probe>) {
    start_limited(config, None)
}

/// The test provider, its protocol limited to `limit` if given.
fn start_limited(config: EngineConfig, limit: Option<crate::rate::RateLimit>) -> (Engine, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let seen = probe.clone();
    let provider = FnProvider {
        id: "test".into(),
        spec: spec("t/v1", &["ok", "fail", "flaky", "sleep"]),
        f: move |call: Call| -> CallFuture {
            let probe = seen.clone();
            Box::pin(async move {
                probe.order.lock().unwrap().push(call.task_id.clone());
                let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
                probe.peak.fetch_max(now, Ordering::SeqCst);
                let out = behave(&call).await;
                probe.running.fetch_sub(1, Ordering::SeqCst);
                out
            })
        },
    };
    let registry = Arc::new(Registry::new());
    registry.register(Arc::new(provider));
    if let Some(limit) = limit {
        registry.limit_protocol("t/v1", limit);
    }
    (Engine::start(registry, config), probe)
}

async fn behave(call: &Call) -> Result<Value, TaskError> {
    let p = &call.params;
    match call.method.as_str() {
        "ok" => Ok(Value::clone(p)),
        "fail" => Err(TaskError::new(codes::INVALID_PARAMS, "bad params")),
        "flaky" if u64::from(call.attempt) < p["n"].as_u64().unwrap_or(1) => {
            Err(TaskError::new(codes::SERVER_ERROR, format!("attempt {}", call.attempt)).retryable())
        }
        "flaky" => Ok(json!({"attempt": call.attempt})),
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(p["ms"].as_u64().unwrap_or(10))).await;
            Ok(json!("slept"))
        }
        other => Err(TaskError::new(codes::METHOD_NOT_FOUND, other.to_owned())),
    }
}

fn workflow(yaml: &str) -> Workflow {
    crate::workflow::parse("test.yaml", yaml.as_bytes(), crate::workflow::Format::Yaml).unwrap()
}

fn task<'a>(report: &'a RunReport, id: &str) -> &'a TaskReport {
    report.tasks.iter().find(|t| t.id == id).unwrap()
}

#[tokio::test(start_paused = true)]
async fn dispatch_follows_priority_then_arrival_with_concurrency_one() {
    let (engine, probe) = start(1);
    let report = engine
        .run(workflow(
            r#"
name: priorities
tasks:
  - {id: low, protocol: t/v1, method: ok, priority: low}
  - {id: normal, protocol: t/v1, method: ok}
  - {id: urgent-1, protocol: t/v1, method: ok, priority: urgent}
  - {id: high, protocol: t/v1, method: ok, priority: high}
  - {id: urgent-2, protocol: t/v1, method: ok, priority: urgent}
"#,
        ))
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Completed);
    assert_eq!(*probe.order.lock().unwrap(), ["urgent-1", "urgent-2", "high", "normal", "low"]);
}

#[tokio::test(start_paused = true)]
async fn max_parallel_and_host_concurrency_bound_running_tasks() {
    let (engine, probe) = start(100);
    let tasks: String =
        (0..12).map(|i| format!("  - {{id: s{i}, protocol: t/v1, method: sleep, params: {{ms: 20}}}}\n")).collect();
    let report = engine.run(workflow(&format!("name: p\nmax_parallel: 3\ntasks:\n{tasks}"))).await.unwrap();
    assert_eq!(report.summary.completed, 12);
    assert_eq!(probe.peak.load(Ordering::SeqCst), 3, "max_parallel caps the workflow");

    let (engine, probe) = start(4);
    let wf = |name: &str| workflow(&format!("name: {name}\ntasks:\n{tasks}"));
    let (a, b) = tokio::join!(engine.run(wf("a")), engine.run(wf("b")));
    assert_eq!(a.unwrap().summary.completed + b.unwrap().summary.completed, 24);
    assert_eq!(probe.peak.load(Ordering::SeqCst), 4, "the host limit spans workflows");
}

#[tokio::test(start_paused = true)]
async fn the_usage_results_report_is_kept_per_call_and_summed_per_task_workflow_and_model() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: tokens
tasks:
  - {id: a, protocol: t/v1, method: ok, params: {model: m1, usage: {prompt_tokens: 3, completion_tokens: 4, total_tokens: 7}}}
  - {id: each, protocol: t/v1, method: ok, for_each: [1, 2], params: {model: m2, usage: {prompt_tokens: 1, completion_tokens: 1}}}
  - {id: plain, protocol: t/v1, method: ok, params: {usage: "not counts"}}
"#,
        ))
        .await
        .unwrap();
    let usage = |p, c, t| Some(Usage { prompt_tokens: p, completion_tokens: c, total_tokens: t });
    let call = &task(&report, "a").history[0];
    assert_eq!((call.usage, call.model.as_deref()), (usage(3, 4, 7), Some("m1")));
    assert_eq!(task(&report, "a").usage, usage(3, 4, 7));
    assert_eq!(task(&report, "each").usage, usage(2, 2, 4), "a for_each task sums its items'");
    assert_eq!(task(&report, "each[0]").usage, usage(1, 1, 2), "a missing total is the sum");
    assert_eq!(task(&report, "plain").usage, None);
    assert_eq!(report.usage, usage(5, 6, 11), "items counted once");
    assert!(report.to_text().ends_with("; 11 tokens (5 prompt, 6 completion)"), "{}", report.to_text());
    let stats = engine.stats().await.unwrap();
    let of = |model: &str| stats.tokens.get(&("t/v1".to_owned(), "test".to_owned(), model.to_owned())).copied();
    assert_eq!((of("m1"), of("m2")), (usage(3, 4, 7), usage(2, 2, 4)));
}

/// On the real clock: the limiter counts in real time.
#[tokio::test]
async fn a_rate_limit_spaces_calls_and_holds_tasks_without_failing_them() {
    let limit = crate::rate::RateLimit { requests_per_minute: Some(1200), tokens_per_minute: None }; // 50 ms apart
    let config = EngineConfig { concurrency: 8, default_timeout: Duration::from_secs(30), ..EngineConfig::default() };
    let (engine, _) = start_limited(config, Some(limit));
    let yaml = "name: limited\ntasks:\n  - {id: fan, protocol: t/v1, method: ok, for_each: [1, 2, 3, 4, 5, 6]}\n";
    let submitted = engine.submit(workflow(yaml)).await.unwrap();
    let id = submitted.workflow_id.clone();
    // While it runs, a held task says why.
    let mut seen_why = None;
    while seen_why.is_none() {
        let Some(report) = engine.workflow(&id).await.unwrap() else { break };
        seen_why = report.tasks.iter().find_map(|t| t.waiting_for.clone());
        if report.status != WorkflowStatus::Running {
            break;
        }
        tokio::task::yield_now().await;
    }
    let report = submitted.done.await.unwrap();
    assert_eq!(report.summary.completed, 7, "{report:?}");
    assert!(report.tasks.iter().all(|t| t.attempts <= 1), "a wait is not an attempt");
    let why = seen_why.expect("a held task says why");
    assert!(why.contains("rate limit of t/v1: 1200 requests per minute"), "{why}");
    let mut starts: Vec<_> = (0..6).map(|i| task(&report, &format!("fan[{i}]")).history[0].started_at).collect();
    starts.sort();
    for pair in starts.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert!(gap >= Duration::from_millis(45), "calls {gap:?} apart, not 50 ms");
    }
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_key_bounds_its_calls_across_workflows() {
    let (engine, probe) = start(16);
    let yaml = |name: &str| {
        format!(
            "name: {name}\ninputs: {{customer: string}}\ntasks:\n  - {{id: fan, protocol: t/v1, method: sleep, params: {{ms: 50}}, for_each: [1, 2, 3, 4], concurrency: {{key: \"c-${{inputs.customer}}\", max: 2}}}}\n  - {{id: free, protocol: t/v1, method: sleep, params: {{ms: 50}}}}\n"
        )
    };
    let bind = |name: &str, customer: &str| {
        let mut w = workflow(&yaml(name));
        let values = serde_json::Map::from_iter([("customer".to_owned(), json!(customer))]);
        crate::workflow::inputs::bind("test.yaml", &mut w, values).unwrap();
        w
    };
    let (a, b) = (engine.submit(bind("a", "acme")).await.unwrap(), engine.submit(bind("b", "acme")).await.unwrap());
    let (a, b) = (a.done.await.unwrap(), b.done.await.unwrap());
    assert_eq!((a.summary.completed, b.summary.completed), (6, 6));
    // Two of acme's at once across both workflows, plus the two free tasks.
    assert_eq!(probe.peak.load(Ordering::SeqCst), 4, "the key's two, and the two tasks without a key");
    // Another customer's key is its own.
    let (c, d) = (engine.submit(bind("c", "acme")).await.unwrap(), engine.submit(bind("d", "initech")).await.unwrap());
    let (c, d) = (c.done.await.unwrap(), d.done.await.unwrap());
    assert_eq!((c.summary.completed, d.summary.completed), (6, 6));
    assert_eq!(probe.peak.load(Ordering::SeqCst), 6, "acme's two, initech's two, the two free ones");
}

#[tokio::test]
async fn a_cached_call_is_answered_from_the_cache_within_its_ttl() {
    let (engine, probe) = start(8);
    let yaml = |prompt: &str| {
        format!(
            "name: cached\ncache: {{ttl: 60}}\ntasks:\n  - {{id: ask, protocol: t/v1, method: ok, params: {{prompt: {prompt}}}}}\n  - {{id: fresh, protocol: t/v1, method: ok, cache: false, params: {{prompt: {prompt}}}}}\n"
        )
    };
    let first = engine.run(workflow(&yaml("a"))).await.unwrap();
    assert!(!task(&first, "ask").cached);
    let second = engine.run(workflow(&yaml("a"))).await.unwrap();
    let ask = task(&second, "ask");
    assert!(ask.cached, "{ask:?}");
    assert_eq!(ask.result, Some(json!({"prompt": "a"})));
    assert_eq!((&*ask.history[0].provider, ask.history[0].cached), ("cache", true));
    assert!(!task(&second, "fresh").cached, "cache: false runs every time");
    let calls = |id: &str| probe.order.lock().unwrap().iter().filter(|t| *t == id).count();
    assert_eq!((calls("ask"), calls("fresh")), (1, 2));
    let third = engine.run(workflow(&yaml("b"))).await.unwrap();
    assert!(!task(&third, "ask").cached, "other params, another key");
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.cache.get("t/v1"), Some(&(1, 2)), "one hit, two misses");
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_errors_only_and_within_max_attempts() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: retries
tasks:
  - {id: recovers, protocol: t/v1, method: flaky, params: {n: 3}, retry: {max_attempts: 3, base_delay: 0.01, backoff: fixed}}
  - {id: gives-up, protocol: t/v1, method: flaky, params: {n: 9}, retry: {max_attempts: 3, base_delay: 0.01, backoff: linear}}
  - {id: invalid, protocol: t/v1, method: fail, retry: {max_attempts: 5, base_delay: 0.01}}
  - {id: no-policy, protocol: t/v1, method: flaky, params: {n: 2}}
"#,
        ))
        .await
        .unwrap();
    let status = |id| (task(&report, id).status, task(&report, id).attempts);
    assert_eq!(status("recovers"), (TaskStatus::Completed, 3));
    assert_eq!(task(&report, "recovers").result, Some(json!({"attempt": 3})));
    assert_eq!(status("gives-up"), (TaskStatus::Failed, 3));
    assert_eq!(task(&report, "gives-up").error.as_ref().unwrap().message, "attempt 3");
    assert_eq!(status("invalid"), (TaskStatus::Failed, 1), "non-retryable errors fail at once");
    assert_eq!(status("no-policy"), (TaskStatus::Failed, 1), "no retry block, no retry");

    // Each call is in the task's history: which provider, when, how long,
    // and why it failed.
    let history = &task(&report, "recovers").history;
    assert_eq!(history.iter().map(|c| c.attempt).collect::<Vec<_>>(), [1, 2, 3], "{history:?}");
    assert!(history.iter().all(|c| &*c.provider == "test" && c.duration_ms.is_some_and(|ms| ms >= 0.0)));
    let errors: Vec<_> = history.iter().map(|c| c.error.as_ref().map(|e| e.message.as_str())).collect();
    assert_eq!(errors, [Some("attempt 1"), Some("attempt 2"), None]);
    assert!(history.windows(2).all(|w| w[0].started_at <= w[1].started_at), "oldest first");
    assert_eq!(task(&report, "invalid").history.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_skips_its_dependents_while_other_branches_finish() {
    let (engine, probe) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: isolation
tasks:
  - {id: boom, protocol: t/v1, method: fail}
  - {id: after, protocol: t/v1, method: ok, dependencies: [boom]}
  - {id: later, protocol: t/v1, method: ok, dependencies: [after, side]}
  - {id: side, protocol: t/v1, method: sleep, params: {ms: 30}}
  - {id: side-next, protocol: t/v1, method: ok, dependencies: [side]}
"#,
        ))
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed);
    let statuses: Vec<_> = report.tasks.iter().map(|t| (t.id.as_str(), t.status)).collect();
    assert_eq!(
        statuses,
        [
            ("boom", TaskStatus::Failed),
            ("after", TaskStatus::Skipped),
            ("later", TaskStatus::Skipped),
            ("side", TaskStatus::Completed),
            ("side-next", TaskStatus::Completed),
        ]
    );
    assert_eq!(task(&report, "later").error.as_ref().unwrap().message, "not run: dependency 'boom' failed");
    let mut ran = probe.order.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["boom", "side", "side-next"]);
}

#[tokio::test(start_paused = true)]
async fn a_diamond_runs_every_task_exactly_once_with_substitution() {
    let (engine, probe) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: diamond
tasks:
  - {id: top, protocol: t/v1, method: ok, params: {n: 2, words: [a, b]}}
  - {id: left, protocol: t/v1, method: ok, dependencies: [top], params: {v: "${top.result.n}"}}
  - {id: right, protocol: t/v1, method: ok, dependencies: [top], params: {v: "w=${top.result.words[1]}"}}
  - {id: bottom, protocol: t/v1, method: ok, dependencies: [left, right], params: {l: "${left.result.v}", r: "${right.result.v}"}}
"#,
        ))
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Completed);
    assert_eq!(task(&report, "bottom").result, Some(json!({"l": 2, "r": "w=b"})));
    assert_eq!(probe.order.lock().unwrap().len(), 4);
    // The report shows the params each task was called with.
    assert_eq!(task(&report, "bottom").params.as_deref(), Some(&json!({"l": 2, "r": "w=b"})), "references resolved");
    assert_eq!(
        task(&report, "top").params.as_deref(),
        Some(&json!({"n": 2, "words": ["a", "b"]})),
        "static params as written"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_path_fails_the_task_and_names_the_path() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: missing
tasks:
  - {id: a, protocol: t/v1, method: ok, params: {x: 1}}
  - {id: b, protocol: t/v1, method: ok, dependencies: [a], params: {v: "${a.result.y}"}}
"#,
        ))
        .await
        .unwrap();
    let b = task(&report, "b");
    assert_eq!((b.status, b.attempts), (TaskStatus::Failed, 0));
    assert!(b.params.is_none() && b.history.is_empty(), "never called: {b:?}");
    let error = b.error.as_ref().unwrap();
    assert_eq!(error.code, codes::SUBSTITUTION);
    assert!(
        error.message.contains("path 'result.y' not found in the result of task 'a' (no field 'y')"),
        "{}",
        error.message
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_time_out_and_are_retried() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: timeouts
tasks:
  - {id: slow, protocol: t/v1, method: sleep, params: {ms: 5000}, timeout: 0.05, retry: {max_attempts: 2, base_delay: 0.01}}
"#,
        ))
        .await
        .unwrap();
    let slow = task(&report, "slow");
    assert_eq!((slow.status, slow.attempts), (TaskStatus::Failed, 2));
    assert_eq!(slow.error.as_ref().unwrap().code, codes::TIMEOUT);
    assert!(report.duration_ms < 2000.0, "{}", report.duration_ms);
}

#[tokio::test(start_paused = true)]
async fn a_workflow_timeout_cancels_what_is_left() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: deadline
timeout: 0.1
tasks:
  - {id: quick, protocol: t/v1, method: ok}
  - {id: slow, protocol: t/v1, method: sleep, params: {ms: 5000}}
  - {id: after, protocol: t/v1, method: ok, dependencies: [slow]}
"#,
        ))
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed);
    assert_eq!(task(&report, "quick").status, TaskStatus::Completed);
    for id in ["slow", "after"] {
        assert_eq!(task(&report, id).status, TaskStatus::Cancelled, "{id}");
        assert_eq!(task(&report, id).error.as_ref().unwrap().code, codes::CANCELLED);
    }
    assert!(report.duration_ms < 2000.0);
}

#[tokio::test(start_paused = true)]
async fn a_protocol_without_provider_fails_its_task() {
    let (engine, _) = start(8);
    let report = engine.run(workflow("name: x\ntasks:\n  - {id: a, protocol: nope/v1, method: m}\n")).await.unwrap();
    let a = task(&report, "a");
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(a.error.as_ref().unwrap().code, codes::NO_PROVIDER);
}

/// A provider with `slots` call slots, taken when a call starts.
struct Limited {
    id: Arc<str>,
    spec: crate::model::ProviderSpec,
    slots: usize,
    busy: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl crate::registry::Provider for Limited {
    fn id(&self) -> &Arc<str> {
        &self.id
    }
    fn spec(&self) -> &crate::model::ProviderSpec {
        &self.spec
    }
    fn call(&self, _call: Call) -> CallFuture {
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let busy = self.busy.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            busy.fetch_sub(1, Ordering::SeqCst);
            Ok(json!("done"))
        })
    }
    fn free_slots(&self) -> Option<usize> {
        Some(self.slots.saturating_sub(self.busy.load(Ordering::SeqCst)))
    }
}

fn fan_out(protocol: &str, n: usize) -> Workflow {
    let tasks: String = (0..n).map(|i| format!("  - {{id: t{i}, protocol: {protocol}, method: ok}}\n")).collect();
    workflow(&format!("name: fan\ntasks:\n{tasks}"))
}

#[tokio::test(start_paused = true)]
async fn a_busy_provider_parks_tasks_until_a_slot_frees() {
    let peak = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(Registry::new());
    registry.register(Arc::new(Limited {
        id: "limited".into(),
        spec: spec("l/v1", &["ok"]),
        slots: 3,
        busy: Arc::default(),
        peak: peak.clone(),
    }));
    let engine = Engine::start(registry, EngineConfig::default());
    let report = engine.run(fan_out("l/v1", 40)).await.unwrap();
    assert_eq!(report.summary.completed, 40);
    assert_eq!(peak.load(Ordering::SeqCst), 3, "never more calls than slots");
}

#[tokio::test(start_paused = true)]
async fn with_wait_for_providers_tasks_wait_for_a_provider_to_register() {
    let registry = Arc::new(Registry::new());
    let config = EngineConfig { wait_for_providers: true, ..EngineConfig::default() };
    let engine = Engine::start(registry.clone(), config);
    let submitted = engine.submit(fan_out("l/v1", 5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let snapshot = engine.workflow(&submitted.workflow_id).await.unwrap().unwrap();
    assert_eq!(snapshot.status, WorkflowStatus::Running);
    assert_eq!(snapshot.summary.unfinished, 5);
    let peak = Arc::new(AtomicUsize::new(0));
    registry.register(Arc::new(Limited {
        id: "limited".into(),
        spec: spec("l/v1", &["ok"]),
        slots: 2,
        busy: Arc::default(),
        peak,
    }));
    engine.providers_changed();
    let report = tokio::time::timeout(Duration::from_secs(5), submitted.done).await.unwrap().unwrap();
    assert_eq!(report.summary.completed, 5);
}

#[tokio::test(start_paused = true)]
async fn tasks_wait_for_a_missing_provider_at_most_their_timeout() {
    let registry = Arc::new(Registry::new());
    let config = EngineConfig { wait_for_providers: true, ..EngineConfig::default() };
    let engine = Engine::start(registry.clone(), config);
    let submitted = engine
        .submit(workflow(
            "name: w\ntasks:\n  - {id: gone, protocol: gone/v1, method: ok, timeout: 0.2}\n  - {id: late, protocol: l/v1, method: ok, timeout: 0.5}\n",
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak = Arc::new(AtomicUsize::new(0));
    registry.register(Arc::new(Limited {
        id: "limited".into(),
        spec: spec("l/v1", &["ok"]),
        slots: 1,
        busy: Arc::default(),
        peak,
    }));
    engine.providers_changed();
    let report = tokio::time::timeout(Duration::from_secs(5), submitted.done).await.unwrap().unwrap();
    let gone = task(&report, "gone");
    assert_eq!(gone.status, TaskStatus::Failed);
    let error = gone.error.as_ref().unwrap();
    assert_eq!(error.code, codes::NO_PROVIDER);
    assert_eq!(error.message, "no provider served protocol 'gone/v1' within the task's timeout of 0.2s");
    assert_eq!(gone.attempts, 0);
    assert_eq!(task(&report, "late").status, TaskStatus::Completed, "a provider that comes in time serves");
}

#[tokio::test(start_paused = true)]
async fn a_protocol_that_loses_its_last_provider_fails_its_parked_tasks_after_their_timeout() {
    let registry = Arc::new(Registry::new());
    let busy = Arc::new(AtomicUsize::new(1)); // its one slot stays taken
    let provider = Limited {
        id: "limited".into(),
        spec: spec("l/v1", &["ok"]),
        slots: 1,
        busy: busy.clone(),
        peak: Arc::new(AtomicUsize::new(0)),
    };
    registry.register(Arc::new(provider));
    let config = EngineConfig { wait_for_providers: true, ..EngineConfig::default() };
    let engine = Engine::start(registry.clone(), config);
    let submitted = engine
        .submit(workflow("name: w\ntasks:\n  - {id: a, protocol: l/v1, method: ok, timeout: 0.2}\n"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let snapshot = engine.workflow(&submitted.workflow_id).await.unwrap().unwrap();
    assert_eq!(snapshot.summary.unfinished, 1, "a busy provider is no reason to give up");
    assert!(registry.unregister("limited"));
    engine.providers_changed();
    let started = tokio::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(5), submitted.done).await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited for a provider first");
    assert_eq!(task(&report, "a").error.as_ref().unwrap().code, codes::NO_PROVIDER);
}

#[tokio::test(start_paused = true)]
async fn workflows_can_be_listed_queried_and_cancelled() {
    let (engine, _) = start(8);
    let slow =
        workflow("name: slow\nid: slow-1\ntasks:\n  - {id: s, protocol: t/v1, method: sleep, params: {ms: 5000}}\n");
    let submitted = engine.submit(slow.clone()).await.unwrap();
    assert_eq!(engine.submit(slow).await.err(), Some(EngineError::DuplicateId("slow-1".into())));
    let listed = engine.workflows().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].workflow_id.as_str(), listed[0].status), ("slow-1", WorkflowStatus::Running));
    assert!(engine.cancel("slow-1").await.unwrap());
    assert!(!engine.cancel("no-such").await.unwrap());
    let report = submitted.done.await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Cancelled);
    assert_eq!(report.tasks[0].status, TaskStatus::Cancelled);
    let call = &report.tasks[0].history[0];
    assert_eq!(call.error.as_ref().map(|e| e.code), Some(codes::CANCELLED), "the running call ends cancelled");
    assert!(call.duration_ms.is_some(), "{call:?}");
    let kept = engine.workflow("slow-1").await.unwrap().unwrap();
    assert_eq!(kept.status, WorkflowStatus::Cancelled, "finished workflows stay queryable");
    let again =
        workflow("name: again\nid: slow-1\ntasks:\n  - {id: s, protocol: t/v1, method: sleep, params: {ms: 1}}\n");
    assert_eq!(engine.submit(again).await.err(), Some(EngineError::FinishedId("slow-1".into())), "never overwritten");
    assert_eq!(engine.workflows().await.unwrap().len(), 1, "listed once");
    assert!(engine.workflow("other").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_vanished_provider_requeues_without_using_attempts_but_not_forever() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let registry = Arc::new(Registry::new());
    registry.register(Arc::new(FnProvider {
        id: "flaky-peer".into(),
        spec: spec("p/v1", &["once", "never"]),
        f: move |call: Call| -> CallFuture {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let lost = TaskError::new(codes::SERVER_ERROR, "provider disconnected").requeue();
                match call.method.as_str() {
                    "once" if n == 0 => Err(lost),
                    "once" => Ok(json!({"attempt": call.attempt})),
                    _ => Err(lost),
                }
            })
        },
    }));
    let engine = Engine::start(registry, EngineConfig::default());
    let report = engine.run(workflow("name: r\ntasks:\n  - {id: a, protocol: p/v1, method: once}\n")).await.unwrap();
    assert_eq!(report.tasks[0].status, TaskStatus::Completed);
    assert_eq!(report.tasks[0].result, Some(json!({"attempt": 1})), "the lost attempt was not counted");
    let calls_made: Vec<_> = report.tasks[0].history.iter().map(|c| (c.attempt, c.error.is_some())).collect();
    assert_eq!(calls_made, [(1, true), (1, false)], "the lost call is listed, under the same number");
    calls.store(0, Ordering::SeqCst);
    let report = engine.run(workflow("name: r2\ntasks:\n  - {id: b, protocol: p/v1, method: never}\n")).await.unwrap();
    assert_eq!(report.tasks[0].status, TaskStatus::Failed);
    assert_eq!(calls.load(Ordering::SeqCst), 4, "one attempt plus three re-queues");
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_every_transition_and_the_end() {
    let registry = Arc::new(Registry::new());
    registry.register(Arc::new(FnProvider {
        id: "t".into(),
        spec: spec("t/v1", &["ok"]),
        f: |call: Call| -> CallFuture { Box::pin(async move { Ok(Value::clone(&call.params)) }) },
    }));
    let (engine, mut events) = Engine::start_observed(registry, EngineConfig::default());
    let report = engine
        .run(workflow("name: o\ntasks:\n  - {id: a, protocol: t/v1, method: ok, params: {x: 1}}\n  - {id: b, protocol: t/v1, method: ok, dependencies: [a]}\n"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            EngineEvent::WorkflowStarted(w) => seen.push(format!("start {} {}", w.name, w.task_count)),
            EngineEvent::Task(e) => seen.push(format!("{} {}", e.task_id, e.status)),
            EngineEvent::WorkflowFinished(r) => seen.push(format!("done {}", r.status.name())),
            EngineEvent::Progress(p) => seen.push(format!("{} progress", p.task_id)),
        }
    }
    assert_eq!(seen, ["start o 2", "a running", "a completed", "b running", "b completed", "done completed"]);
    assert_eq!(report.status, WorkflowStatus::Completed);
}

/// With a store, every event leaves through the journal: a provider's
/// first progress chunk (sent the moment it is called) still arrives after
/// the `running` status of its attempt, and a cancellation is answered only
/// once the store has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_store_progress_follows_running_and_cancels_are_stored_first() {
    let registry = Arc::new(Registry::new());
    registry.register(Arc::new(FnProvider {
        id: "t".into(),
        spec: spec("t/v1", &["chatty", "sleep"]),
        f: |call: Call| -> CallFuture {
            if let Some(progress) = &call.progress {
                progress(json!("first words"));
            }
            Box::pin(async move { behave(&Call { method: "sleep".into(), ..call }).await })
        },
    }));
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn crate::store::Store> =
        Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let (engine, mut events) = Engine::start_durable(registry, EngineConfig::default(), store.clone()).unwrap();
    let tasks: String =
        (0..20).map(|i| format!("  - {{id: t{i}, protocol: t/v1, method: chatty, params: {{ms: 1}}}}\n")).collect();
    engine.run(workflow(&format!("name: p\ntasks:\n{tasks}"))).await.unwrap();
    let mut running = std::collections::HashSet::new();
    while let Ok(event) = events.try_recv() {
        match event {
            EngineEvent::Task(e) if e.status == TaskStatus::Running => {
                running.insert(e.task_id);
            }
            EngineEvent::Progress(p) => assert!(running.contains(&p.task_id), "{} progress before running", p.task_id),
            _ => {}
        }
    }
    assert_eq!(running.len(), 20);

    let submitted = engine
        .submit(workflow(
            "id: long\nname: c\ntasks:\n  - {id: a, protocol: t/v1, method: chatty, params: {ms: 10000}}\n",
        ))
        .await
        .unwrap();
    assert!(engine.cancel(&submitted.workflow_id).await.unwrap());
    let stored = store.report("long").unwrap().expect("stored before the answer");
    assert_eq!(stored.status, WorkflowStatus::Cancelled);
}

// `for_each`: one task per item, made when the task is ready.

#[tokio::test(start_paused = true)]
async fn for_each_makes_one_task_per_item_and_hands_their_results_on_in_order() {
    let (engine, probe) = start(8);
    let report = engine
        .run(workflow(
            r##"
name: fan-out
tasks:
  - {id: topics, protocol: t/v1, method: ok, params: {items: [owls, bats, eels]}}
  - id: write
    protocol: t/v1
    method: ok
    dependencies: [topics]
    for_each: "${topics.result.items}"
    params: {topic: "${item}", n: "${item_index}", text: "#${item_index}: ${item}"}
  - {id: gather, protocol: t/v1, method: ok, dependencies: [write], params: {all: "${write.result}", second: "${write.result[1].topic}"}}
"##,
        ))
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Completed, "{report:?}");
    for (i, topic) in ["owls", "bats", "eels"].iter().enumerate() {
        let item = task(&report, &format!("write[{i}]"));
        assert_eq!(item.status, TaskStatus::Completed);
        assert_eq!(item.parent.as_deref(), Some("write"));
        assert_eq!(item.result, Some(json!({"topic": topic, "n": i, "text": format!("#{i}: {topic}")})));
        assert_eq!(item.params.as_deref(), item.result.as_ref(), "the report shows the resolved params");
    }
    let write = task(&report, "write");
    assert_eq!((write.status, write.attempts), (TaskStatus::Completed, 0), "the task itself calls nothing");
    let results: Vec<Value> = (0..3).map(|i| task(&report, &format!("write[{i}]")).result.clone().unwrap()).collect();
    assert_eq!(write.result, Some(Value::Array(results.clone())), "the items' results in item order");
    assert_eq!(task(&report, "gather").result, Some(json!({"all": results, "second": "bats"})));
    assert_eq!(report.summary.total, 6);
    let ran = probe.order.lock().unwrap().clone();
    assert_eq!(ran.len(), 5, "topics, three items, gather: {ran:?}");
}

#[tokio::test(start_paused = true)]
async fn for_each_max_parallel_bounds_its_items_only() {
    let (engine, probe) = start(100);
    let report = engine
        .run(workflow(
            r#"
name: bounded
tasks:
  - {id: fan, protocol: t/v1, method: sleep, for_each: [1, 2, 3, 4, 5, 6, 7], max_parallel: 2, params: {ms: 20}}
"#,
        ))
        .await
        .unwrap();
    assert_eq!(report.summary.completed, 8);
    assert_eq!(probe.peak.load(Ordering::SeqCst), 2);
    let ran = probe.order.lock().unwrap().clone();
    let expected: Vec<String> = (0..7).map(|i| format!("fan[{i}]")).collect();
    assert_eq!(ran, expected, "items start in order");
}

#[tokio::test(start_paused = true)]
async fn failed_items_fail_the_task_unless_it_allows_failures() {
    let (engine, _) = start(8);
    // `flaky` fails (retryably) until attempt n.
    let report = engine
        .run(workflow(
            r#"
name: items fail
tasks:
  - {id: strict, protocol: t/v1, method: flaky, for_each: [1, 9, 1, 9, 9, 9], params: {n: "${item}"}}
  - {id: after-strict, protocol: t/v1, method: ok, dependencies: [strict]}
  - {id: lenient, protocol: t/v1, method: flaky, for_each: [1, 2, 9], allow_failures: true, params: {n: "${item}"}, retry: {max_attempts: 2, base_delay: 0.01, jitter: false}}
  - {id: after-lenient, protocol: t/v1, method: ok, dependencies: [lenient], params: {got: "${lenient.result}"}}
"#,
        ))
        .await
        .unwrap();
    let strict = task(&report, "strict");
    assert_eq!(strict.status, TaskStatus::Failed);
    let error = strict.error.as_ref().unwrap();
    assert_eq!(error.code, codes::ITEMS_FAILED);
    assert_eq!(
        error.message,
        "4 of 6 items failed: strict[1]: attempt 1; strict[3]: attempt 1; strict[4]: attempt 1; and 1 more"
    );
    assert_eq!(task(&report, "after-strict").status, TaskStatus::Skipped);
    assert_eq!(task(&report, "strict[2]").status, TaskStatus::Completed, "the other items ran");

    let lenient = task(&report, "lenient");
    assert_eq!(lenient.status, TaskStatus::Completed);
    assert_eq!(task(&report, "lenient[1]").attempts, 2, "each item retries on its own");
    let got = &task(&report, "after-lenient").result.as_ref().unwrap()["got"];
    assert_eq!(got[0], json!({"attempt": 1}));
    assert_eq!(got[1], json!({"attempt": 2}));
    assert_eq!(got[2]["failed"], true, "{got}");
    assert_eq!(got[2]["status"], "failed");
    assert_eq!(got[2]["error"]["message"], "attempt 2");
    assert_eq!(report.status, WorkflowStatus::Failed, "strict failed");
    assert_eq!(report.summary.failed, 6, "strict, four of its items and one of lenient's");
}

#[tokio::test(start_paused = true)]
async fn tolerated_item_failures_leave_the_workflow_completed() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            "name: lenient\ntasks:\n  - {id: l, protocol: t/v1, method: flaky, for_each: [1, 5], allow_failures: true, params: {n: \"${item}\"}}\n",
        ))
        .await
        .unwrap();
    assert_eq!(task(&report, "l[1]").status, TaskStatus::Failed);
    assert_eq!(report.status, WorkflowStatus::Completed, "the failure was allowed");
}

#[tokio::test(start_paused = true)]
async fn for_each_over_what_is_not_a_list_fails_naming_the_path_and_an_empty_list_completes() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: not a list
tasks:
  - {id: src, protocol: t/v1, method: ok, params: {items: "owls, bats", none: []}}
  - {id: bad, protocol: t/v1, method: ok, dependencies: [src], for_each: "${src.result.items}"}
  - {id: missing, protocol: t/v1, method: ok, dependencies: [src], for_each: "${src.result.list}"}
  - {id: empty, protocol: t/v1, method: ok, dependencies: [src], for_each: "${src.result.none}"}
  - {id: after-empty, protocol: t/v1, method: ok, dependencies: [empty], params: {got: "${empty.result}"}}
"#,
        ))
        .await
        .unwrap();
    let bad = task(&report, "bad").error.clone().unwrap();
    assert_eq!(
        (bad.code, bad.message.as_str()),
        (codes::NOT_A_LIST, "for_each: '${src.result.items}' gave a string, not a list of items")
    );
    let missing = task(&report, "missing").error.clone().unwrap();
    assert_eq!(missing.code, codes::SUBSTITUTION);
    assert!(
        missing.message.contains("path 'result.list' not found in the result of task 'src'"),
        "{}",
        missing.message
    );
    assert_eq!(task(&report, "empty").result, Some(json!([])));
    assert_eq!(task(&report, "after-empty").result, Some(json!({"got": []})));
}

/// A workflow stopped mid-fan-out is taken up from its records: the same
/// items (kept with the task), finished items not run again.
#[tokio::test(start_paused = true)]
async fn a_restored_fan_out_runs_only_its_unfinished_items() {
    let (engine, probe) = start(8);
    let wf = workflow(
        r#"
id: resumed
name: resumed
tasks:
  - {id: fan, protocol: t/v1, method: ok, for_each: [a, b, c, d], max_parallel: 1, params: {v: "${item}"}}
  - {id: after, protocol: t/v1, method: ok, dependencies: [fan], params: {all: "${fan.result}"}}
"#,
    );
    let record = |task_id: &str, status: TaskStatus, result: Option<Value>, items: Option<Vec<Value>>| TaskRecord {
        workflow_id: "resumed".into(),
        task_id: task_id.into(),
        status,
        attempts: u32::from(status != TaskStatus::Pending),
        started_at: Some(std::time::SystemTime::now()),
        finished_at: status.is_final().then(std::time::SystemTime::now),
        result,
        error: None,
        retry_at: None,
        params: None,
        history: Vec::new(),
        items: items.map(Arc::new),
        taken_from: None,
    };
    // As stored: items kept as they were then (not as the document lists
    // them), the first done, the second running when the host stopped.
    let items = vec![json!("a"), json!("B"), json!("c"), json!("d")];
    let saved = crate::store::Saved {
        workflow: wf,
        submitted_at: std::time::SystemTime::now(),
        tasks: vec![
            record("fan[0]", TaskStatus::Completed, Some(json!({"v": "kept"})), None),
            record("fan[1]", TaskStatus::Running, None, None),
            record("fan", TaskStatus::Running, None, Some(items)),
        ],
        cancel_requested: false,
    };
    let report = engine.restore(saved).unwrap().await.unwrap();
    assert_eq!(report.status, WorkflowStatus::Completed, "{report:?}");
    assert_eq!(*probe.order.lock().unwrap(), ["fan[1]", "fan[2]", "fan[3]", "after"]);
    assert_eq!(
        task(&report, "after").result,
        Some(json!({"all": [{"v": "kept"}, {"v": "B"}, {"v": "c"}, {"v": "d"}]}))
    );
}

// `when`: conditions over earlier results and inputs.

// On the real clock: it waits on the blocking pool (the store, conditions
// or file reads), which a paused clock would skip ahead of.
#[tokio::test]
async fn a_false_condition_skips_the_task_and_its_dependents_without_failing() {
    let (engine, probe) = start(8);
    let mut wf = workflow(
        r#"
name: conditions
inputs: {threshold: {type: integer, default: 2}}
tasks:
  - {id: detect, protocol: t/v1, method: ok, params: {language: de, score: 3}}
  - {id: translate, protocol: t/v1, method: ok, dependencies: [detect], when: '${detect.result.language} != "en"'}
  - {id: keep, protocol: t/v1, method: ok, dependencies: [detect], when: '${detect.result.language} == "en"'}
  - {id: after-keep, protocol: t/v1, method: ok, dependencies: [keep]}
  - {id: strong, protocol: t/v1, method: ok, dependencies: [detect], when: "${detect.result.score} > ${inputs.threshold}"}
  - {id: odd, protocol: t/v1, method: ok, dependencies: [detect], when: "${detect.result.score} + 1"}
"#,
    );
    crate::workflow::inputs::bind("test", &mut wf, Default::default()).unwrap();
    let report = engine.run(wf).await.unwrap();
    let status = |id| task(&report, id).status;
    assert_eq!(status("translate"), TaskStatus::Completed);
    assert_eq!(status("strong"), TaskStatus::Completed);
    let keep = task(&report, "keep");
    assert_eq!((keep.status, keep.attempts), (TaskStatus::Skipped, 0));
    let error = keep.error.as_ref().unwrap();
    assert_eq!(
        (error.code, error.message.as_str()),
        (codes::CONDITION_FALSE, "condition false: ${detect.result.language} == \"en\"")
    );
    let after = task(&report, "after-keep").error.clone().unwrap();
    assert_eq!(
        (after.code, after.message.as_str()),
        (codes::CONDITION_FALSE, "not run: dependency 'keep' was skipped (condition false)")
    );
    let odd = task(&report, "odd");
    assert_eq!(odd.status, TaskStatus::Failed);
    assert_eq!(odd.error.as_ref().unwrap().code, codes::CONDITION_FAILED);
    assert_eq!(odd.error.as_ref().unwrap().message, "when: gave Int(4), not true or false");
    assert_eq!(report.status, WorkflowStatus::Failed, "odd failed");
    let mut ran = probe.order.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["detect", "strong", "translate"]);

    let report = engine
        .run(workflow(
            "name: skip only\ntasks:\n  - {id: a, protocol: t/v1, method: ok, params: {n: 1}}\n  - {id: b, protocol: t/v1, method: ok, dependencies: [a], when: \"${a.result.n} > 5\"}\n",
        ))
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Completed, "a false condition is no failure");
    assert_eq!(report.summary.skipped, 1);
}

// On the real clock: it waits on the blocking pool (the store, conditions
// or file reads), which a paused clock would skip ahead of.
#[tokio::test]
async fn a_condition_is_checked_once_not_per_retry_and_guards_a_fan_out() {
    let (engine, probe) = start(8);
    let report = engine
        .run(workflow(
            r#"
name: once
tasks:
  - {id: a, protocol: t/v1, method: ok, params: {go: true, list: [1, 2]}}
  - {id: f, protocol: t/v1, method: flaky, dependencies: [a], when: "${a.result.go}", params: {n: 2}, retry: {max_attempts: 2, base_delay: 0.01}}
  - {id: fan, protocol: t/v1, method: ok, dependencies: [a], when: "!${a.result.go}", for_each: "${a.result.list}"}
"#,
        ))
        .await
        .unwrap();
    assert_eq!((task(&report, "f").status, task(&report, "f").attempts), (TaskStatus::Completed, 2));
    assert_eq!(task(&report, "fan").status, TaskStatus::Skipped);
    assert!(report.tasks.iter().all(|t| t.parent.is_none()), "a skipped for_each makes no items");
    assert_eq!(probe.order.lock().unwrap().len(), 3);
}

/// Files are listed and read off the scheduler's thread, and a read holds
/// one of the host's call slots until it is done, or fails: with one slot,
/// every item still runs, one after the other, and an unreadable file
/// fails only its own item.
// On the real clock: it waits on the blocking pool (the store, conditions
// or file reads), which a paused clock would skip ahead of.
#[tokio::test]
async fn file_reads_hold_a_call_slot_and_give_it_back() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [("a.txt", &b"ay"[..]), ("b.txt", &[0xff, 0xfe][..]), ("c.txt", &b"sea"[..])] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let mut dirs = crate::files::FileDirs::default();
    dirs.allow("notes", dir.path()).unwrap();
    let config = EngineConfig {
        concurrency: 1,
        default_timeout: Duration::from_secs(10),
        file_dirs: Arc::new(dirs),
        ..EngineConfig::default()
    };
    let (engine, probe) = start_with(config);
    let run = |n: usize| {
        workflow(&format!(
            r#"
name: files {n}
tasks:
  - id: read
    protocol: t/v1
    method: ok
    for_each: {{files: "*.txt", dir: notes}}
    allow_failures: true
    params: {{text: "${{item.text}}"}}
"#
        ))
    };
    let both = async { tokio::join!(engine.run(run(1)), engine.run(run(2))) };
    let (first, second) = tokio::time::timeout(Duration::from_secs(60), both).await.expect("a slot was lost");
    for report in [first.unwrap(), second.unwrap()] {
        let texts: Vec<&Option<Value>> = (0..3).map(|i| &task(&report, &format!("read[{i}]")).result).collect();
        assert_eq!(texts[0], &Some(json!({"text": "ay"})), "{report:?}");
        assert_eq!(texts[2], &Some(json!({"text": "sea"})), "{report:?}");
        let unreadable = task(&report, "read[1]");
        assert_eq!(unreadable.status, TaskStatus::Failed);
        assert!(unreadable.error.as_ref().unwrap().message.contains("is not UTF-8 text"), "{unreadable:?}");
    }
    assert_eq!(probe.peak.load(Ordering::SeqCst), 1, "one slot");
    assert_eq!(engine.stats().await.unwrap().running, 0, "every slot given back");
}

// Limits: what one workflow may hold.

fn limited(max_tasks: usize, max_bytes: usize) -> (Engine, Arc<Probe>) {
    let limits = WorkflowLimits { max_tasks, max_bytes };
    start_with(EngineConfig { concurrency: 8, default_timeout: Duration::from_secs(10), limits, ..Default::default() })
}

/// A for_each whose items' params quote a large input: each resolved copy
/// counts, and the workflow ends, failed and saying why, once they pass
/// its limit, while a small workflow beside it completes.
#[tokio::test(start_paused = true)]
async fn a_workflow_past_its_bytes_ends_failed_naming_the_limit_and_others_go_on() {
    let (engine, probe) = limited(1000, 1 << 20);
    let big = "x".repeat(100 * 1024);
    let fan = workflow(&format!(
        "name: fan\ninputs: {{s: {{type: string, default: \"{big}\"}}}}\ntasks:\n  - id: each\n    protocol: t/v1\n    method: ok\n    for_each: {}\n    max_parallel: 1\n    params: {{s: \"${{inputs.s}}\"}}\n",
        serde_json::to_string(&(0..50).collect::<Vec<_>>()).unwrap()
    ));
    let small = workflow("name: small\ntasks:\n  - {id: a, protocol: t/v1, method: ok, params: {n: 1}}\n");
    let (fan, small) = tokio::join!(engine.run(fan), engine.run(small));
    assert_eq!(small.unwrap().status, WorkflowStatus::Completed);
    let fan = fan.unwrap();
    assert_eq!(fan.status, WorkflowStatus::Failed);
    let failure = fan.failure.as_deref().unwrap();
    assert!(failure.contains("limit is 1.0 MiB (max_workflow_mb)"), "{failure}");
    let over = fan.tasks.iter().find(|t| t.error.as_ref().is_some_and(|e| e.code == codes::WORKFLOW_LIMIT));
    assert!(over.is_some(), "a task names the limit");
    // Each item held 200 KiB (its params, then its result): about five fit.
    let calls = probe.order.lock().unwrap().len();
    assert!((3..=6).contains(&calls), "{calls} calls");
    assert!(fan.tasks.iter().all(|t| t.status.is_final()));
}

#[tokio::test(start_paused = true)]
async fn a_for_each_past_the_task_limit_fails_before_expanding() {
    let (engine, probe) = limited(10, 1 << 20);
    let report = engine
        .run(workflow("name: many\ntasks:\n  - {id: each, protocol: t/v1, method: ok, for_each: [1,2,3,4,5,6,7,8,9,10], params: {n: \"${item}\"}}\n"))
        .await
        .unwrap();
    let error = task(&report, "each").error.clone().unwrap();
    assert_eq!(error.code, codes::WORKFLOW_LIMIT);
    assert!(
        error.message.contains("would make 11 tasks in this workflow; the limit is 10 (max_workflow_tasks)"),
        "{}",
        error.message
    );
    assert_eq!(report.tasks.len(), 1, "no item task was made");
    assert!(probe.order.lock().unwrap().is_empty());

    let too_big = workflow(&format!(
        "name: big\ntasks:\n  - {{id: a, protocol: t/v1, method: ok, params: {{s: {}}}}}\n",
        "y".repeat(2 << 20)
    ));
    match engine.submit(too_big).await {
        Err(EngineError::TooLarge(message)) => assert!(message.contains("max_workflow_mb"), "{message}"),
        other => panic!("a document past the limit is refused, not {:?}", other.map(|s| s.workflow_id)),
    }
}

/// A store that refuses for good any batch with a task record whose result
/// holds "refuse me", and otherwise is SQLite.
struct Picky(crate::store::sqlite::SqliteStore);

impl crate::store::Store for Picky {
    fn target(&self) -> String {
        self.0.target()
    }
    fn write(&self, records: &[crate::store::Record]) -> Result<(), crate::store::StoreError> {
        let refused = |r: &crate::store::Record| match r {
            crate::store::Record::Task(t) => t.result.as_ref().is_some_and(|v| v.to_string().contains("refuse me")),
            _ => false,
        };
        if records.iter().any(refused) {
            return Err(crate::store::StoreError::Refused {
                target: self.target(),
                action: "store a task",
                reason: "string or blob too big".into(),
            });
        }
        self.0.write(records)
    }
    fn unfinished(&self) -> Result<crate::store::Unfinished, crate::store::StoreError> {
        self.0.unfinished()
    }
    fn has(&self, id: &str) -> Result<bool, crate::store::StoreError> {
        self.0.has(id)
    }
    fn claim(&self, id: &str) -> Result<crate::store::Claim, crate::store::StoreError> {
        self.0.claim(id)
    }
    fn release(&self, id: &str) -> Result<(), crate::store::StoreError> {
        self.0.release(id)
    }
    fn report(&self, id: &str) -> Result<Option<RunReport>, crate::store::StoreError> {
        self.0.report(id)
    }
    fn list(&self, query: &crate::listing::ListQuery) -> Result<crate::listing::Listed, crate::store::StoreError> {
        self.0.list(query)
    }
    fn prune(&self, before: std::time::SystemTime) -> Result<usize, crate::store::StoreError> {
        self.0.prune(before)
    }
    fn schedules(&self) -> Result<crate::store::SavedSchedules, crate::store::StoreError> {
        self.0.schedules()
    }
    fn put_schedule(&self, schedule: &crate::schedule::Schedule) -> Result<(), crate::store::StoreError> {
        self.0.put_schedule(schedule)
    }
    fn update_schedule(&self, schedule: &crate::schedule::Schedule) -> Result<bool, crate::store::StoreError> {
        self.0.update_schedule(schedule)
    }
    fn remove_schedule(&self, id: &str) -> Result<bool, crate::store::StoreError> {
        self.0.remove_schedule(id)
    }
    fn document(&self, id: &str) -> Result<Option<Workflow>, crate::store::StoreError> {
        self.0.document(id)
    }
    fn cached(&self, key: &str) -> Result<Option<String>, crate::store::StoreError> {
        self.0.cached(key)
    }
    fn cache(&self, key: &str, result: &str, expires: std::time::SystemTime) -> Result<(), crate::store::StoreError> {
        self.0.cache(key, result, expires)
    }
}

/// A record the store refuses for good is not retried: its workflow ends,
/// failed, with a small record in its place, and the workflows written in
/// the same batches are stored and answered.
// On the real clock: it waits on the blocking pool (the store, conditions
// or file reads), which a paused clock would skip ahead of.
#[tokio::test]
async fn a_record_the_store_refuses_ends_its_workflow_and_holds_up_no_other() {
    let registry = Arc::new(Registry::new());
    registry.register(Arc::new(FnProvider {
        id: "t".into(),
        spec: spec("t/v1", &["ok", "sleep"]),
        f: |call: Call| -> CallFuture { Box::pin(async move { behave(&call).await }) },
    }));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let store: Arc<dyn crate::store::Store> = Arc::new(Picky(sqlite));
    let (engine, _events) = Engine::start_durable(registry, EngineConfig::default(), store.clone()).unwrap();
    let bad = workflow(
        "id: bad\nname: bad\ntasks:\n  - {id: a, protocol: t/v1, method: ok, params: {m: refuse me}}\n  - {id: b, protocol: t/v1, method: sleep, params: {ms: 5000}}\n  - {id: c, protocol: t/v1, method: ok, dependencies: [a], params: {m: \"${a.result.m}!\"}}\n",
    );
    let good = |i: usize| {
        workflow(&format!(
            "id: good{i}\nname: good\ntasks:\n  - {{id: a, protocol: t/v1, method: ok, params: {{n: {i}}}}}\n"
        ))
    };
    let bad = engine.submit(bad).await.unwrap();
    let goods: Vec<_> = futures_util::future::join_all((0..20).map(|i| engine.run(good(i)))).await;
    assert!(goods.iter().all(|r| r.as_ref().unwrap().status == WorkflowStatus::Completed));
    let report = tokio::time::timeout(Duration::from_secs(10), bad.done).await.expect("it ends at once").unwrap();
    assert_eq!(report.status, WorkflowStatus::Failed);
    assert!(report.failure.as_deref().unwrap().contains("string or blob too big"), "{:?}", report.failure);
    assert_eq!(task(&report, "a").status, TaskStatus::Failed);
    assert_eq!(task(&report, "a").result, None);
    assert_eq!(task(&report, "b").status, TaskStatus::Cancelled, "the rest is not run");
    let stored = store.report("bad").unwrap().expect("its report is stored");
    assert_eq!(stored.status, WorkflowStatus::Failed);
    assert!(store.report("good19").unwrap().is_some());
    assert!(engine.store_failing().is_none(), "a refusal is not a failing store");
}

/// A workflow id claimed in the store and then refused (here by its
/// owner's quota) is given back, also when the submitter stopped waiting
/// while the claim was being made: the id is free for the next submission.
// On the real clock: the claim waits on the blocking pool.
#[tokio::test]
async fn a_refused_or_abandoned_submission_gives_its_claim_back() {
    let registry = Arc::new(Registry::new());
    registry.register(Arc::new(FnProvider {
        id: "t".into(),
        spec: spec("t/v1", &["ok"]),
        f: |call: Call| -> CallFuture { Box::pin(async move { behave(&call).await }) },
    }));
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn crate::store::Store> =
        Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let (engine, _events) = Engine::start_durable(registry, EngineConfig::default(), store.clone()).unwrap();
    let mut owned = workflow("name: w\nid: w-1\ntasks:\n  - {id: a, protocol: t/v1, method: ok}\n");
    owned.owner = Some("alice".into());
    match engine.submit_within(owned.clone(), Some(0)).await {
        Err(EngineError::Busy(_)) => {}
        other => panic!("a quota of 0 refuses, not {:?}", other.map(|s| s.workflow_id)),
    }
    // The submitter goes away while the claim is being made.
    let abandoned = tokio::spawn({
        let (engine, owned) = (engine.clone(), owned.clone());
        async move { engine.submit_within(owned, Some(0)).await.map(|s| s.workflow_id) }
    });
    tokio::task::yield_now().await;
    abandoned.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        match engine.submit(owned.clone()).await {
            Ok(submitted) => break submitted.done.await.unwrap(),
            Err(EngineError::DuplicateId(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the id stayed claimed: {e}"),
        }
    };
    assert_eq!(report.status, WorkflowStatus::Completed);
}
