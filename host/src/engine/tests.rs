//! Engine behaviour with an in-process test provider (`t/v1`) whose methods
//! succeed, fail, sleep or flake on request and record what ran.

use super::*;
use crate::model::{TaskStatus, WorkflowStatus};
use crate::registry::CallFuture;
use crate::registry::tests::{FnProvider, spec};
use crate::report::TaskReport;
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
    let config = EngineConfig {
        concurrency,
        default_timeout: Duration::from_secs(10),
    };
    (Engine::start(registry, config), probe)
}

async fn behave(call: &Call) -> Result<Value, TaskError> {
    let p = &call.params;
    match call.method.as_str() {
        "ok" => Ok(p.clone()),
        "fail" => Err(TaskError::new(codes::INVALID_PARAMS, "bad params")),
        "flaky" if u64::from(call.attempt) < p["n"].as_u64().unwrap_or(1) => Err(TaskError::new(
            codes::SERVER_ERROR,
            format!("attempt {}", call.attempt),
        )
        .retryable()),
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

#[tokio::test]
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
    assert_eq!(
        *probe.order.lock().unwrap(),
        ["urgent-1", "urgent-2", "high", "normal", "low"]
    );
}

#[tokio::test]
async fn max_parallel_and_host_concurrency_bound_running_tasks() {
    let (engine, probe) = start(100);
    let tasks: String = (0..12)
        .map(|i| format!("  - {{id: s{i}, protocol: t/v1, method: sleep, params: {{ms: 20}}}}\n"))
        .collect();
    let report = engine
        .run(workflow(&format!(
            "name: p\nmax_parallel: 3\ntasks:\n{tasks}"
        )))
        .await
        .unwrap();
    assert_eq!(report.summary.completed, 12);
    assert_eq!(
        probe.peak.load(Ordering::SeqCst),
        3,
        "max_parallel caps the workflow"
    );

    let (engine, probe) = start(4);
    let wf = |name: &str| workflow(&format!("name: {name}\ntasks:\n{tasks}"));
    let (a, b) = tokio::join!(engine.run(wf("a")), engine.run(wf("b")));
    assert_eq!(
        a.unwrap().summary.completed + b.unwrap().summary.completed,
        24
    );
    assert_eq!(
        probe.peak.load(Ordering::SeqCst),
        4,
        "the host limit spans workflows"
    );
}

#[tokio::test]
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
    assert_eq!(
        task(&report, "recovers").result,
        Some(json!({"attempt": 3}))
    );
    assert_eq!(status("gives-up"), (TaskStatus::Failed, 3));
    assert_eq!(
        task(&report, "gives-up").error.as_ref().unwrap().message,
        "attempt 3"
    );
    assert_eq!(
        status("invalid"),
        (TaskStatus::Failed, 1),
        "non-retryable errors fail at once"
    );
    assert_eq!(
        status("no-policy"),
        (TaskStatus::Failed, 1),
        "no retry block, no retry"
    );
}

#[tokio::test]
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
    let statuses: Vec<_> = report
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.status))
        .collect();
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
    assert_eq!(
        task(&report, "later").error.as_ref().unwrap().message,
        "not run: dependency 'boom' failed"
    );
    let mut ran = probe.order.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["boom", "side", "side-next"]);
}

#[tokio::test]
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
    assert_eq!(
        task(&report, "bottom").result,
        Some(json!({"l": 2, "r": "w=b"}))
    );
    assert_eq!(probe.order.lock().unwrap().len(), 4);
}

#[tokio::test]
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
    let error = b.error.as_ref().unwrap();
    assert_eq!(error.code, codes::SUBSTITUTION);
    assert!(
        error
            .message
            .contains("path 'result.y' not found in the result of task 'a' (no field 'y')"),
        "{}",
        error.message
    );
}

#[tokio::test]
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

#[tokio::test]
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
        assert_eq!(
            task(&report, id).error.as_ref().unwrap().code,
            codes::CANCELLED
        );
    }
    assert!(report.duration_ms < 2000.0);
}

#[tokio::test]
async fn a_protocol_without_provider_fails_its_task() {
    let (engine, _) = start(8);
    let report = engine
        .run(workflow(
            "name: x\ntasks:\n  - {id: a, protocol: nope/v1, method: m}\n",
        ))
        .await
        .unwrap();
    let a = task(&report, "a");
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(a.error.as_ref().unwrap().code, codes::NO_PROVIDER);
}
