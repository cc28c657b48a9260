//! Durable state: one suite both stores pass (SQLite in a temporary file,
//! a real `redis-server` that `.ci/run` installs), and daemons killed with
//! SIGKILL mid-run that resume and lose nothing finished.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use gleitzeit::listing::ListQuery;
use gleitzeit::model::{TaskStatus, Workflow, WorkflowStatus};
use gleitzeit::report::{Attempt, RunReport, TaskReport, Usage};
use gleitzeit::schedule::Schedule;
use gleitzeit::store::redis::RedisStore;
use gleitzeit::store::sqlite::SqliteStore;
use gleitzeit::store::{Claim, HostId, Record, Store, StoreSpec, TaskRecord};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn workflow(id: &str) -> Workflow {
    let yaml = format!(
        "id: {id}\nname: stored {id}\ntimeout: 60\ntasks:\n  - {{id: a, protocol: echo/v1, method: echo, params: {{message: hi}}, retry: {{max_attempts: 3, base_delay: 0.5}}}}\n  - {{id: b, protocol: echo/v1, method: echo, dependencies: [a], params: {{message: \"${{a.result.echoed}}\"}}, priority: high, timeout: 5}}\n"
    );
    gleitzeit::workflow::parse("test.yaml", yaml.as_bytes(), gleitzeit::workflow::Format::Yaml).unwrap()
}

/// A workflow with a `schedule:` block of `cron` (Berlin time), its runs
/// echoing their topic and due time.
fn scheduled(id: &str, cron: &str) -> Workflow {
    let yaml = format!(
        "name: scheduled {id}\ninputs: {{at: string, topic: {{type: string, default: weather}}}}\nschedule: {{cron: '{cron}', timezone: Europe/Berlin, id: {id}, due_input: at, inputs: {{topic: news}}}}\ntasks:\n  - {{id: a, protocol: echo/v1, method: echo, params: {{message: '${{inputs.topic}} at ${{inputs.at}}'}}}}\n"
    );
    gleitzeit::workflow::parse("test.yaml", yaml.as_bytes(), gleitzeit::workflow::Format::Yaml).unwrap()
}

fn task(workflow_id: &str, task_id: &str, status: TaskStatus, attempts: u32) -> TaskRecord {
    TaskRecord {
        workflow_id: workflow_id.into(),
        task_id: task_id.into(),
        status,
        attempts,
        started_at: Some(SystemTime::now()),
        finished_at: status.is_final().then(SystemTime::now),
        result: (status == TaskStatus::Completed).then(|| serde_json::json!({"echoed": "hi"})),
        error: None,
        retry_at: None,
        params: Some(Arc::new(serde_json::json!({"message": format!("{task_id} of {workflow_id}")}))),
        history: (1..=attempts)
            .map(|attempt| Attempt {
                attempt,
                provider: "wasm:echo".into(),
                started_at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
                duration_ms: Some(2.5),
                error: None,
                // Usage is kept with each call, by every store.
                usage: Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: attempt.into(),
                    total_tokens: 3 + u64::from(attempt),
                }),
                model: Some("llama3.2".into()),
                cached: false,
            })
            .collect(),
        items: None,
        taken_from: None,
    }
}

fn report(workflow_id: &str, finished_at: SystemTime) -> Arc<RunReport> {
    owned_report(workflow_id, finished_at, None)
}

fn owned_report(workflow_id: &str, finished_at: SystemTime, owner: Option<&str>) -> Arc<RunReport> {
    let task = TaskReport {
        id: "a".into(),
        name: "a".into(),
        protocol: "echo/v1".into(),
        method: "echo".into(),
        dependencies: Vec::new(),
        status: TaskStatus::Completed,
        attempts: 1,
        started_at: Some(finished_at),
        finished_at: Some(finished_at),
        queued_ms: Some(0.1),
        duration_ms: Some(1.0),
        result: Some(serde_json::json!({"echoed": "hi"})),
        error: None,
        params: Some(Arc::new(serde_json::json!({"message": "hi"}))),
        history: Vec::new(),
        parent: None,
        item: None,
        items: None,
        usage: Some(Usage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 }),
        waiting_for: None,
        cached: false,
        taken_from: None,
    };
    let mut report =
        RunReport::new(workflow_id.into(), "stored".into(), finished_at, Duration::from_millis(2), vec![task]);
    report.finished_at = Some(finished_at);
    report.owner = owner.map(str::to_owned);
    Arc::new(report)
}

/// What every store must do.
fn suite(open: &dyn Fn() -> Arc<dyn Store>) {
    let store = open();
    let now = SystemTime::now();
    let (w1, mut w2, mut w3) = (workflow("w1"), workflow("w2"), workflow("w3"));
    w2.owner = Some("alice".into());
    w3.owner = Some("bob".into());
    store
        .write(&[
            Record::Accepted { workflow: Box::new(w1.clone()), submitted_at: now },
            Record::Accepted { workflow: Box::new(w2.clone()), submitted_at: now + Duration::from_secs(1) },
            Record::Task(Box::new(task("w1", "a", TaskStatus::Running, 1))),
            Record::Task(Box::new(task("w1", "a", TaskStatus::Completed, 1))),
            Record::Task(Box::new(task("w2", "a", TaskStatus::Running, 2))),
        ])
        .unwrap();

    // Reopened, the unfinished workflows come back as accepted, with each
    // task's last state.
    drop(store);
    let store = open();
    let saved = store.unfinished().unwrap().saved;
    assert_eq!(saved.iter().map(|s| s.workflow.id.as_str()).collect::<Vec<_>>(), ["w1", "w2"], "oldest first");
    assert_eq!(saved[0].workflow, w1, "the workflow round-trips exactly");
    assert_eq!(saved[1].workflow, w2, "with its owner");
    let a = &saved[0].tasks;
    assert_eq!((a.len(), a[0].status, a[0].attempts), (1, TaskStatus::Completed, 1), "the last state wins: {a:?}");
    assert_eq!(a[0].result, Some(serde_json::json!({"echoed": "hi"})));
    assert_eq!(saved[1].tasks[0].status, TaskStatus::Running);
    assert_eq!(saved[1].tasks[0].attempts, 2);
    let expected = task("w2", "a", TaskStatus::Running, 2);
    assert_eq!(saved[1].tasks[0].history, expected.history, "each call is kept");
    assert_eq!(saved[1].tasks[0].params, expected.params, "with the params it was called with");
    let drift = saved[0].submitted_at.duration_since(now).unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_millis(1), "times keep sub-millisecond precision: {drift:?}");

    // Finishing moves a workflow from unfinished to finished.
    let old = now - Duration::from_secs(3600);
    store
        .write(&[
            Record::Finished(report("w1", now)),
            Record::Accepted { workflow: Box::new(w3), submitted_at: old },
            Record::Finished(owned_report("w3", old, Some("bob"))),
        ])
        .unwrap();
    let saved = store.unfinished().unwrap().saved;
    assert_eq!(saved.iter().map(|s| s.workflow.id.as_str()).collect::<Vec<_>>(), ["w2"]);
    // A report is stored without its tasks' outcomes, read back from their
    // records: the result, the params and every call.
    let w1_report = store.report("w1").unwrap().unwrap();
    assert_eq!(w1_report.tasks[0].result, Some(serde_json::json!({"echoed": "hi"})));
    let recorded = task("w1", "a", TaskStatus::Completed, 1);
    assert_eq!((&w1_report.tasks[0].params, &w1_report.tasks[0].history), (&recorded.params, &recorded.history));
    assert_eq!(w1_report.summary.completed, 1);
    let usage = Some(Usage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 });
    assert_eq!((w1_report.tasks[0].usage, w1_report.usage), (usage, usage), "tokens kept with the report");
    assert!(store.report("w2").unwrap().is_none(), "no report before it finishes");
    assert!(store.report("nope").unwrap().is_none());
    assert!(store.has("w1").unwrap() && store.has("w2").unwrap(), "finished and unfinished ids are held");
    assert!(!store.has("nope").unwrap());
    // Cached results: kept until they expire, replaced by a newer one.
    store.cache("k1", "{\"content\":\"hi\"}", now + Duration::from_secs(60)).unwrap();
    store.cache("gone", "1", now - Duration::from_secs(1)).unwrap();
    assert_eq!(store.cached("k1").unwrap().as_deref(), Some("{\"content\":\"hi\"}"));
    assert_eq!(store.cached("gone").unwrap(), None, "expired");
    assert_eq!(store.cached("never").unwrap(), None);
    store.cache("k1", "2", now + Duration::from_secs(60)).unwrap();
    assert_eq!(store.cached("k1").unwrap().as_deref(), Some("2"));
    let list = |query: ListQuery| -> Vec<String> {
        store.list(&query).unwrap().workflows.into_iter().map(|s| s.workflow_id).collect()
    };
    let all = ListQuery { limit: 10, ..ListQuery::default() };
    assert_eq!(list(all.clone()), ["w2", "w1", "w3"], "newest submitted first, running ones too");
    let first = store.list(&ListQuery { limit: 1, ..all.clone() }).unwrap();
    assert_eq!(first.workflows.len(), 1);
    let next = first.next.expect("more after the first page");
    assert_eq!(list(ListQuery { after: Some(next), limit: 2, ..all.clone() }), ["w1", "w3"]);
    assert!(store.list(&ListQuery { limit: 3, ..all.clone() }).unwrap().next.is_none(), "the last page says so");
    assert_eq!(list(ListQuery { owner: Some("bob".into()), ..all.clone() }), ["w3"]);
    assert_eq!(list(ListQuery { owner: Some("alice".into()), ..all.clone() }), ["w2"]);
    assert_eq!(list(ListQuery { status: Some(WorkflowStatus::Running), ..all.clone() }), ["w2"]);
    assert_eq!(list(ListQuery { status: Some(WorkflowStatus::Completed), ..all.clone() }), ["w1", "w3"]);
    assert_eq!(list(ListQuery { name: Some("STORED W".into()), ..all.clone() }), ["w2", "w1", "w3"]);
    assert_eq!(list(ListQuery { name: Some("w3".into()), ..all.clone() }), ["w3"]);
    let window = ListQuery {
        since: Some(now - Duration::from_secs(60)),
        until: Some(now + Duration::from_secs(1)),
        ..all.clone()
    };
    assert_eq!(list(window), ["w1"], "since is inclusive, until exclusive");
    let w1 = store.list(&all).unwrap().workflows.into_iter().find(|s| s.workflow_id == "w1").unwrap();
    assert_eq!(
        (w1.status, w1.summary.map(|s| s.total), w1.duration_ms.is_some()),
        (WorkflowStatus::Completed, Some(1), true)
    );
    assert!(w1.finished_at.is_some() && w1.submitted_at.is_some());

    // A finished workflow's id used again starts from nothing.
    store
        .write(&[Record::Accepted { workflow: Box::new(workflow("w1")), submitted_at: now + Duration::from_secs(2) }])
        .unwrap();
    let again = store.unfinished().unwrap().saved.into_iter().find(|s| s.workflow.id == "w1").unwrap();
    assert!(again.tasks.is_empty(), "no task state of the earlier run: {:?}", again.tasks);
    assert!(store.report("w1").unwrap().is_none(), "running again, so no report");
    store.write(&[Record::Finished(report("w1", now))]).unwrap();

    // Retention forgets what finished before the cutoff, nothing else.
    assert_eq!(store.prune(now - Duration::from_secs(60)).unwrap(), 1);
    assert!(store.report("w3").unwrap().is_none());
    assert!(
        list(ListQuery { owner: Some("bob".into()), ..all.clone() }).is_empty(),
        "pruned from its owner's list too"
    );
    assert!(store.report("w1").unwrap().is_some());
    assert_eq!(store.unfinished().unwrap().saved.len(), 1);

    // Schedules: kept whole with their owner and due times, replaced by id,
    // removed.
    let mut morning = Schedule::new(scheduled("morning", "0 7 * * *"), now).unwrap();
    morning.workflow.owner = Some("alice".into());
    store.put_schedule(&morning).unwrap();
    store.put_schedule(&Schedule::new(scheduled("evening", "0 19 * * *"), now).unwrap()).unwrap();
    morning.last_due = Some(now - Duration::from_secs(3600));
    morning.last_run = Some("morning-20261201T060000Z".into());
    store.put_schedule(&morning).unwrap();
    drop(store);
    let store = open();
    let saved = store.schedules().unwrap();
    assert!(saved.unreadable.is_empty(), "{:?}", saved.unreadable);
    let ids: Vec<&str> = saved.readable.iter().map(Schedule::id).collect();
    assert_eq!(ids, ["evening", "morning"]);
    let kept = &saved.readable[1];
    assert_eq!((&kept.workflow, &kept.spec), (&morning.workflow, &morning.spec), "the workflow and block round-trip");
    assert_eq!(kept.workflow.owner.as_deref(), Some("alice"));
    assert_eq!(kept.last_run, morning.last_run);
    let drift = kept.last_due.unwrap().duration_since(morning.last_due.unwrap()).unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_millis(1), "{drift:?}");
    let evening = saved.readable[0].clone();
    assert!(store.remove_schedule("evening").unwrap());
    assert!(!store.remove_schedule("evening").unwrap(), "removed once");
    assert!(!store.update_schedule(&evening).unwrap(), "a due time handled does not bring a removed schedule back");
    assert!(store.update_schedule(&morning).unwrap());
    assert_eq!(store.schedules().unwrap().readable.len(), 1);

    // Claims: an id is granted once, until its workflow is accepted or the
    // claim given back; a stored workflow's id is never granted.
    assert_eq!(store.claim("fresh").unwrap(), Claim::Granted);
    assert_eq!(store.claim("fresh").unwrap(), Claim::Running, "a second claimant is refused");
    store.release("fresh").unwrap();
    assert_eq!(store.claim("fresh").unwrap(), Claim::Granted, "given back, it is free again");
    store.write(&[Record::Accepted { workflow: Box::new(workflow("fresh")), submitted_at: now }]).unwrap();
    assert_eq!(store.claim("fresh").unwrap(), Claim::Running, "accepted, it runs under the id");
    store.release("fresh").unwrap();
    assert_eq!(store.claim("fresh").unwrap(), Claim::Running, "giving back a claim frees no stored workflow");
    store.write(&[Record::Finished(report("fresh", now))]).unwrap();
    assert_eq!(store.claim("fresh").unwrap(), Claim::Finished);
    assert_eq!(store.claim("w1").unwrap(), Claim::Finished);
    assert!(store.report("fresh").unwrap().is_some(), "a refused claim touches nothing");

    // Claimed at once by many, it is granted to one.
    let granted = std::thread::scope(|scope| {
        let claims: Vec<_> = (0..8).map(|_| scope.spawn(|| store.claim("contended").unwrap())).collect();
        claims.into_iter().map(|c| c.join().unwrap()).filter(|c| *c == Claim::Granted).count()
    });
    assert_eq!(granted, 1);
}

#[test]
fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("gleitzeit.db");
    suite(&|| Arc::new(SqliteStore::open(&path).unwrap()));
}

/// Only the owner may read the store: the database, its WAL and the
/// directory made for it, also when the file was made readable before.
#[test]
fn the_sqlite_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("gleitzeit.db");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .write(&[Record::Accepted { workflow: Box::new(workflow("w")), submitted_at: SystemTime::now() }])
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("data/gleitzeit.db-wal")), 0o600);
        assert_eq!(mode(&dir.path().join("data")), 0o700);
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    SqliteStore::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600, "an existing file is made private");
}

#[test]
fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gleitzeit.db");
    std::fs::write(&path, b"this is not a database, but somebody's notes".repeat(200)).unwrap();
    let Err(error) = SqliteStore::open(&path) else { panic!("opened a file that is not a database") };
    let message = error.to_string();
    assert!(message.starts_with(&format!("cannot open the store sqlite:{}", path.display())), "{message}");
    assert!(message.contains("not a database"), "{message}");
    assert!(std::fs::read(&path).unwrap().starts_with(b"this is not a database"), "the file is left as it was");
}

#[test]
fn redis_passes_the_suite() {
    let server = support::redis_server();
    let data = tempfile::tempdir().unwrap();
    suite(&|| Arc::new(RedisStore::open(&server.url, HostId::claim(data.path()).unwrap()).unwrap()));
}

/// A host whose lock went to another host (it was paused past the lock's
/// lease, say) never writes again: its writes are refused inside the
/// store's own transaction, not merely logged.
#[test]
fn a_redis_host_that_lost_its_lock_writes_no_more() {
    let server = support::redis_server();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = RedisStore::open(&server.url, HostId::claim(a_dir.path()).unwrap()).unwrap();
    let accepted = |id: &str| Record::Accepted { workflow: Box::new(workflow(id)), submitted_at: SystemTime::now() };
    a.write(&[accepted("before")]).unwrap();
    // The lock lapses and host b takes it.
    let b_host = HostId::claim(b_dir.path()).unwrap();
    let mut redis = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
    redis::cmd("SET").arg("gleitzeit:host").arg(&b_host.id).exec(&mut redis).unwrap();
    let b = RedisStore::open(&server.url, b_host).unwrap();
    let refused = a.write(&[accepted("after")]).unwrap_err().to_string();
    assert!(refused.contains("another gleitzeit host took the store's lock"), "{refused}");
    assert!(!b.has("after").unwrap(), "nothing of the refused batch landed");
    b.write(&[accepted("by-b")]).unwrap();
    assert!(b.has("by-b").unwrap() && b.has("before").unwrap());
    // Host b stops and its lock lapses: host a, whose writes are stale by
    // now, still writes nothing, records or anything else.
    drop(b);
    redis::cmd("DEL").arg("gleitzeit:host").exec(&mut redis).unwrap();
    assert!(a.write(&[accepted("later")]).is_err(), "a host that lost the store never takes it back");
    assert!(a.put_schedule(&Schedule::new(scheduled("late", "0 7 * * *"), SystemTime::now()).unwrap()).is_err());
    assert!(a.claim("later").is_err());
    let reader = RedisStore::open(&server.url, HostId::claim(b_dir.path()).unwrap()).unwrap();
    assert!(!reader.has("later").unwrap() && reader.schedules().unwrap().readable.is_empty());
}

#[test]
fn an_unreachable_redis_is_an_error_at_open() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let Err(error) = RedisStore::open(&url, HostId::claim(data.path()).unwrap()) else {
        panic!("opened a Redis that is not there")
    };
    assert!(error.to_string().starts_with(&format!("the store {url} failed to read the cluster layout")), "{error}");
}

#[test]
fn store_specs_parse() {
    assert_eq!("memory".parse::<StoreSpec>(), Ok(StoreSpec::Memory));
    assert_eq!("sqlite:/tmp/x.db".parse::<StoreSpec>(), Ok(StoreSpec::Sqlite("/tmp/x.db".into())));
    assert_eq!("sqlite:///tmp/x.db".parse::<StoreSpec>(), Ok(StoreSpec::Sqlite("/tmp/x.db".into())));
    assert_eq!(
        "redis://127.0.0.1:6379/2".parse::<StoreSpec>(),
        Ok(StoreSpec::Redis("redis://127.0.0.1:6379/2".into()))
    );
    assert!("postgres://x".parse::<StoreSpec>().unwrap_err().contains("is not a store"));
}

/// A `gleitzeit serve` on a store; killed with SIGKILL when dropped.
type Host = support::Served;

fn host(store: &[&str]) -> Host {
    support::serve(&[&["--concurrency", "25"], store].concat())
}

/// The workflow's report once it is no longer running (within a minute).
fn when_finished(host: &Host, id: &str) -> Value {
    until(&format!("workflow {id} to finish"), || status(host, id), |report| report["status"] != "running")
}

fn cli(host: &Host, args: &[&str]) -> std::process::Output {
    host.cli(args)
}

fn status(host: &Host, id: &str) -> Value {
    let out = cli(host, &["workflow", "status", id, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

const TASKS: usize = 1000;

/// 1,000 short `delay` tasks, each answering with its own message: 4 s of
/// work at concurrency 25, so that three kills with restarts in between
/// (about 1.3 s of pauses plus the restarts) land before the end even on a
/// fast machine. Written out, or (`Shape::FanOut`) as one `for_each` task
/// over 1,000 items.
fn delay_workflow(dir: &std::path::Path, id: &str, shape: Shape) -> std::path::PathBuf {
    let tasks: Vec<Value> = match shape {
        Shape::Tasks => (0..TASKS)
            .map(|i| json!({"id": format!("t{i}"), "protocol": "echo/v1", "method": "delay", "params": {"seconds": 0.1, "message": format!("task {i}")}}))
            .collect(),
        Shape::FanOut => vec![json!({
            "id": "fan", "protocol": "echo/v1", "method": "delay",
            "for_each": (0..TASKS).collect::<Vec<_>>(),
            "params": {"seconds": 0.1, "message": "task ${item}"},
        })],
    };
    let path = dir.join(format!("{id}.json"));
    std::fs::write(&path, json!({"id": id, "name": "kill me", "tasks": tasks}).to_string()).unwrap();
    path
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Tasks,
    FanOut,
}

/// The tasks that made calls: all of them, or the items of a fan-out.
fn calling_tasks(report: &Value) -> Vec<&Value> {
    let tasks = report["tasks"].as_array().unwrap().iter();
    tasks.filter(|t| t["id"] != "fan").collect()
}

fn completed(report: &Value) -> Vec<(String, Value)> {
    let tasks = report["tasks"].as_array().unwrap();
    tasks
        .iter()
        .filter(|t| t["status"] == "completed")
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["result"].clone()))
        .collect()
}

/// Kill the host with SIGKILL at several points of a 1,000-task workflow,
/// restart it on the same store each time; the workflow completes, every
/// task once, and nothing seen finished is lost. Returns the workflow id.
fn survives_sigkill(store: &[&str], shape: Shape) -> String {
    let dir = tempfile::tempdir().unwrap();
    let id = "kill-9";
    let file = delay_workflow(dir.path(), id, shape);
    let mut daemon = host(store);
    let out = cli(&daemon, &["workflow", "submit", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "acknowledged: {}", String::from_utf8_lossy(&out.stderr));
    let mut seen: Vec<(String, Value)> = Vec::new();
    for pause in [400, 250, 600] {
        std::thread::sleep(Duration::from_millis(pause));
        let before = completed(&status(&daemon, id));
        assert!(before.len() >= seen.len(), "nothing finished went missing");
        seen = before;
        drop(daemon); // SIGKILL
        daemon = host(store);
        let after: std::collections::HashMap<String, Value> = completed(&status(&daemon, id)).into_iter().collect();
        for (task, result) in &seen {
            assert_eq!(after.get(task), Some(result), "task {task} was seen completed before the kill");
        }
    }
    assert!(seen.len() < TASKS, "the kills came before the end (saw {} done)", seen.len());
    let report = when_finished(&daemon, id);
    assert_eq!(report["status"], "completed", "{}", report["summary"]);
    let calling = calling_tasks(&report);
    assert_eq!(calling.len(), TASKS);
    for (i, task) in calling.iter().enumerate() {
        assert_eq!(task["result"]["message"], format!("task {i}"), "{task}");
    }
    if shape == Shape::FanOut {
        let fan = &report["tasks"][0];
        assert_eq!((&fan["id"], &fan["status"]), (&json!("fan"), &json!("completed")));
        let results: Vec<&Value> = calling.iter().map(|t| &t["result"]).collect();
        assert_eq!(fan["result"].as_array().unwrap().iter().collect::<Vec<_>>(), results, "in item order");
    }
    let results: std::collections::HashMap<String, Value> = completed(&report).into_iter().collect();
    for (task, result) in &seen {
        assert_eq!(results.get(task), Some(result), "task {task} kept its first result");
    }
    // Each task's history ends with the call that served it; calls cut off
    // by a kill are listed as such.
    let histories: Vec<&Vec<Value>> = calling.iter().map(|t| t["history"].as_array().unwrap()).collect();
    for history in &histories {
        let last = history.last().unwrap();
        assert!(
            last["provider"] == "wasm:echo" && last["error"].is_null() && last["duration_ms"].is_number(),
            "{last}"
        );
    }
    let interrupted = histories.iter().flat_map(|h| h.iter()).filter(|call| {
        call["error"]["message"].as_str().is_some_and(|m| m.starts_with("the host stopped during this call"))
    });
    assert!(interrupted.count() > 0, "the kills cut off running calls");
    id.to_owned()
}

/// From the store's own event log (task id, status): every task reached
/// `completed` exactly once (a fan-out's task too).
fn assert_each_completed_once(events: Vec<(String, String)>, shape: Shape) {
    let mut count = std::collections::HashMap::new();
    for (task, status) in events {
        if status == "completed" {
            *count.entry(task).or_insert(0) += 1;
        }
    }
    assert_eq!(count.len(), TASKS + usize::from(shape == Shape::FanOut));
    assert!(count.values().all(|&n| n == 1), "every task completed exactly once in the store");
}

#[test]
fn a_sqlite_host_killed_mid_run_resumes_and_loses_nothing() {
    sqlite_survives_sigkill(Shape::Tasks);
}

#[test]
fn a_sqlite_host_killed_mid_fan_out_resumes_and_loses_nothing() {
    sqlite_survives_sigkill(Shape::FanOut);
}

fn sqlite_survives_sigkill(shape: Shape) {
    let data = tempfile::tempdir().unwrap();
    let id = survives_sigkill(&["--data-dir", data.path().to_str().unwrap()], shape);
    let db = data.path().join("gleitzeit.db");
    let out = Command::new("python3")
        .args(["-c", "import json,sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(json.dumps(c.execute('select task_id, status from task_events where workflow_id=?', (sys.argv[2],)).fetchall()))"])
        .args([db.to_str().unwrap(), &id])
        .output()
        .unwrap();
    let events: Vec<(String, String)> = serde_json::from_slice::<Vec<(String, String)>>(&out.stdout)
        .unwrap()
        .into_iter()
        .map(|(task, status)| (task, serde_json::from_str::<String>(&status).unwrap()))
        .collect();
    assert_each_completed_once(events, shape);
}

#[test]
fn a_redis_host_killed_mid_run_resumes_and_loses_nothing() {
    let redis = support::redis_server();
    let data = tempfile::tempdir().unwrap();
    let id = survives_sigkill(&["--store", &redis.url, "--data-dir", data.path().to_str().unwrap()], Shape::Tasks);
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--raw", "LRANGE", &format!("gleitzeit:workflow:{id}:events"), "0", "-1"])
        .output()
        .unwrap();
    let events: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            (event["task_id"].as_str().unwrap().to_owned(), event["status"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_each_completed_once(events, Shape::Tasks);
}

/// `gleitzeit serve ARGS` must refuse to start (exit 2); its stderr.
fn refused_start(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_store_that_cannot_be_read_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("gleitzeit.db"), b"not a database at all ".repeat(100)).unwrap();
    let stderr = refused_start(&["--data-dir", data.path().to_str().unwrap()]);
    assert!(stderr.contains("cannot open the store sqlite:") && stderr.contains("not a database"), "{stderr}");
    assert!(stderr.contains("not starting over a store that cannot be read"), "{stderr}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let stderr =
        refused_start(&["--store", &format!("redis://127.0.0.1:{port}"), "--data-dir", data.path().to_str().unwrap()]);
    assert!(stderr.contains(&format!("the store redis://127.0.0.1:{port} failed")), "{stderr}");
}

/// Redis stops answering mid-run (SIGSTOP: as if the network went away),
/// then comes back: the daemon says so, holds back what it could not store,
/// and finishes once Redis answers again.
#[test]
fn a_redis_outage_mid_run_delays_but_loses_nothing() {
    let redis = support::redis_server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.json");
    let tasks: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("t{i}"), "protocol": "echo/v1", "method": "delay", "params": {"seconds": 0.1, "message": format!("task {i}")}}))
        .collect();
    std::fs::write(&file, json!({"id": "outage", "name": "outage", "tasks": tasks}).to_string()).unwrap();
    let daemon =
        support::serve(&["--concurrency", "4", "--store", &redis.url, "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(cli(&daemon, &["workflow", "submit", file.to_str().unwrap()]).status.code(), Some(0));
    let pid = redis.child.id().to_string();
    std::thread::sleep(Duration::from_millis(200));
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // Readiness says so once a write has failed (past the 5 s Redis timeout).
    until(
        "readiness to report the failing store",
        || ready(&daemon),
        |(code, body)| code == "503" && body.contains("failing to take writes"),
    );
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let report = when_finished(&daemon, "outage");
    until("readiness once the store takes writes", || ready(&daemon), |(code, _)| code == "200");
    assert_eq!(report["summary"]["completed"], 40);
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--raw", "HGET", "gleitzeit:workflow:outage", "report"])
        .output()
        .unwrap();
    let stored: RunReport = serde_json::from_slice(&out.stdout).expect("the report is stored");
    assert_eq!(stored.summary.completed, 40);
    let failed = daemon.log_line("failed to write records");
    assert!(failed.contains("nothing that depends on them is reported"), "{failed}");
    daemon.log_line("took the waiting records");
}

/// `/api/v1/ready`: its HTTP status and body, by curl.
fn ready(host: &Host) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", &format!("{}/api/v1/ready", host.url)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// SIGTERM stops the host within its grace period even while its store
/// takes no writes (the running workflow it waits for cannot be listed:
/// the listing waits for the writes before it).
#[test]
fn sigterm_stops_a_host_whose_store_takes_no_writes() {
    let redis = support::redis_server();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = host(&["--store", &redis.url, "--grace", "2", "--data-dir", dir.path().to_str().unwrap()]);
    let file = dir.path().join("w.json");
    let slow = json!({"id": "slow", "name": "slow", "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "delay", "params": {"seconds": 1}}]});
    std::fs::write(&file, slow.to_string()).unwrap();
    assert_eq!(cli(&daemon, &["workflow", "submit", file.to_str().unwrap()]).status.code(), Some(0));
    let pid = redis.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // Its task's records cannot be written: readiness says so (past the
    // 5 s Redis timeout).
    until(
        "readiness to report the failing store",
        || ready(&daemon),
        |(code, body)| code == "503" && body.contains("failing to take writes"),
    );
    assert!(Command::new("kill").args(["-TERM", &daemon.child.id().to_string()]).status().unwrap().success());
    let signalled = Instant::now();
    while daemon.child.try_wait().unwrap().is_none() {
        assert!(signalled.elapsed() < Duration::from_secs(15), "the host did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
}

/// Finished workflows are read back from the store after a restart (also
/// one recorded by `gleitzeit run --store`), a retry timer survives a kill,
/// and retention prunes what is old.
#[test]
fn finished_work_outlives_the_host_until_retention_prunes_it() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("gleitzeit.db");
    let (out, run) = support::run_json(&["workflows/hello.yaml", "--store", &format!("sqlite:{}", db.display())]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let hello = run["workflow_id"].as_str().unwrap().to_owned();

    let store = ["--data-dir", data.path().to_str().unwrap()];
    let daemon = host(&store);
    assert_eq!(status(&daemon, &hello)["tasks"], run["tasks"], "the stored report is the run's report");
    let out = cli(&daemon, &["workflow", "results", &hello, "--output", "json"]);
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["greet"]["result"]["echoed"], "Hello from Gleitzeit", "{results}");
    let document = data.path().join("hello.json");
    let out = cli(&daemon, &["workflow", "status", &hello, "--output-file", document.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let written: Value = serde_json::from_slice(&std::fs::read(&document).unwrap()).unwrap();
    assert_eq!(written["tasks"].as_array().unwrap().len(), 3);
    assert!(written["tasks"][0]["attempts"].is_number() && written["tasks"][0]["duration_ms"].is_number());

    // A task waiting for its retry when the host dies waits out the rest of
    // its delay after the restart.
    let flaky = data.path().join("flaky.json");
    let workflow = json!({"id": "flaky", "name": "flaky", "tasks": [{"id": "f", "protocol": "echo/v1", "method": "flaky",
        "params": {"succeed_on_attempt": 2}, "retry": {"max_attempts": 3, "backoff": "fixed", "base_delay": 1.5, "jitter": false}}]});
    std::fs::write(&flaky, workflow.to_string()).unwrap();
    let submitted = Instant::now();
    assert_eq!(cli(&daemon, &["workflow", "submit", flaky.to_str().unwrap()]).status.code(), Some(0));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&daemon, "flaky")["tasks"][0]["status"], "pending", "waiting for its retry");
    drop(daemon); // SIGKILL
    let daemon = host(&store);
    let report = when_finished(&daemon, "flaky");
    assert_eq!(report["tasks"][0]["result"]["attempt"], 2, "{report}");
    assert!(submitted.elapsed() >= Duration::from_millis(1500), "the retry kept its delay");
    let out = cli(&daemon, &["workflow", "list", "--output", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|w| w["workflow_id"].as_str()).collect();
    assert!(ids.contains(&hello.as_str()) && ids.contains(&"flaky"), "{ids:?}");
    drop(daemon);

    let daemon = host(&["--data-dir", data.path().to_str().unwrap(), "--retention", "1ms"]);
    let pruned = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        cli(&daemon, &["workflow", "status", &hello]).status.code() == Some(2)
    });
    assert!(pruned, "a workflow past its retention is forgotten");
}

#[test]
fn two_hosts_cannot_share_a_sqlite_store() {
    let data = tempfile::tempdir().unwrap();
    let _first = host(&["--data-dir", data.path().to_str().unwrap()]);
    let stderr = refused_start(&["--data-dir", data.path().to_str().unwrap()]);
    assert!(stderr.contains("another process (another gleitzeit host?) is using it"), "{stderr}");
}

/// The acknowledgement of a submission means it is stored: a host killed
/// right after it still has the workflow when it comes back.
#[test]
fn an_acknowledged_workflow_survives_an_immediate_kill() {
    let data = tempfile::tempdir().unwrap();
    let store = ["--data-dir", data.path().to_str().unwrap()];
    let file = delay_workflow(data.path(), "acked", Shape::Tasks);
    let daemon = host(&store);
    assert_eq!(cli(&daemon, &["workflow", "submit", file.to_str().unwrap()]).status.code(), Some(0));
    drop(daemon); // SIGKILL, at once
    let daemon = host(&store);
    let report = status(&daemon, "acked");
    assert_eq!(report["tasks"].as_array().unwrap().len(), TASKS, "{}", report["summary"]);
}

#[test]
fn two_hosts_cannot_share_a_redis_store() {
    let redis = support::redis_server();
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _first = host(&["--store", &redis.url, "--data-dir", first.path().to_str().unwrap()]);
    let stderr = refused_start(&["--store", &redis.url, "--data-dir", second.path().to_str().unwrap()]);
    assert!(stderr.contains("another gleitzeit host") && stderr.contains("holds it"), "{stderr}");
}

/// A finished workflow's id submitted again is refused on every store, while
/// its report is kept: nothing stored is overwritten, and it is listed once.
#[test]
fn a_finished_workflows_id_is_not_taken_again() {
    let redis = support::redis_server();
    let (data, redis_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stores = [
        vec!["--store".to_owned(), "memory".to_owned()],
        vec!["--data-dir".to_owned(), data.path().display().to_string()],
        vec!["--store".to_owned(), redis.url.clone(), "--data-dir".to_owned(), redis_data.path().display().to_string()],
    ];
    for store in stores {
        let store: Vec<&str> = store.iter().map(String::as_str).collect();
        let daemon = host(&store);
        let first = data.path().join("first.yaml");
        std::fs::write(&first, "id: only-once\nname: first\ntasks:\n  - {id: a, protocol: echo/v1, method: echo, params: {message: first}}\n").unwrap();
        let second = data.path().join("second.yaml");
        std::fs::write(&second, "id: only-once\nname: second\ntasks:\n  - {id: a, protocol: echo/v1, method: echo, params: {message: second}}\n").unwrap();
        let out = cli(&daemon, &["workflow", "submit", first.to_str().unwrap(), "--wait"]);
        assert_eq!(out.status.code(), Some(0), "{store:?}: {}", String::from_utf8_lossy(&out.stderr));

        let out = cli(&daemon, &["workflow", "submit", second.to_str().unwrap(), "--wait"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{store:?}: {stderr}");
        assert!(stderr.contains("a workflow with id 'only-once' has finished"), "{store:?}: {stderr}");
        let report = status(&daemon, "only-once");
        assert_eq!(report["tasks"][0]["result"]["echoed"], "first", "{store:?}: the stored result stays");
        let out = cli(&daemon, &["workflow", "list", "--output", "json"]);
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids = listed.as_array().unwrap().iter().filter(|w| w["workflow_id"] == "only-once").count();
        assert_eq!(ids, 1, "{store:?}: listed once: {listed}");
    }
}

/// A file of schema version 1 (before workflows had owners) is brought up
/// to date on open, its workflows kept (owned by no token: admins see them).
#[test]
fn a_version_1_sqlite_file_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = rusqlite::Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta VALUES ('schema_version', '1');
         CREATE TABLE workflows (id TEXT PRIMARY KEY, name TEXT NOT NULL, document TEXT NOT NULL,
             status TEXT NOT NULL, submitted_at REAL NOT NULL, finished_at REAL, report TEXT);",
    )
    .unwrap();
    let report = serde_json::to_string(&*report("old", SystemTime::now())).unwrap();
    old.execute("INSERT INTO workflows VALUES ('old', 'stored', '{}', '\"completed\"', 1.0, 2.0, ?1)", [report])
        .unwrap();
    drop(old);
    let store = SqliteStore::open(&path).unwrap();
    let listed = store.list(&ListQuery { limit: 10, ..ListQuery::default() }).unwrap().workflows;
    assert_eq!((listed.len(), listed[0].workflow_id.as_str(), listed[0].owner.as_deref()), (1, "old", None));
    assert_eq!(listed[0].status, WorkflowStatus::Completed);
    assert!(
        store
            .list(&ListQuery { owner: Some("alice".into()), limit: 10, ..ListQuery::default() })
            .unwrap()
            .workflows
            .is_empty()
    );
    drop(store);
    let version: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, "4");
    assert!(store_has_no_schedules(&path), "version 3 added the schedules table");
    let whole = SqliteStore::open(&path).unwrap().report("old").unwrap().unwrap();
    assert_eq!(whole.tasks[0].result, Some(serde_json::json!({"echoed": "hi"})), "a report stored whole reads so");
    assert_eq!(whole.tasks[0].params.as_deref(), Some(&serde_json::json!({"message": "hi"})));
}

fn store_has_no_schedules(path: &std::path::Path) -> bool {
    SqliteStore::open(path).unwrap().schedules().unwrap().readable.is_empty()
}

/// One stored workflow that cannot be read (here, a document from a layout
/// this version does not know) is set aside, visibly; the host starts and
/// finishes the others.
#[test]
fn an_unreadable_stored_workflow_is_set_aside_and_the_rest_resume() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("gleitzeit.db");
    let store = SqliteStore::open(&db).unwrap();
    let now = SystemTime::now();
    store
        .write(&[
            Record::Accepted { workflow: Box::new(workflow("good")), submitted_at: now },
            Record::Accepted { workflow: Box::new(workflow("bad")), submitted_at: now },
        ])
        .unwrap();
    drop(store);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE workflows SET document = '{\"name\": \"bad\", \"stages\": []}' WHERE id = 'bad'", [])
        .unwrap();

    let host = support::serve(&["--data-dir", data.path().to_str().unwrap()]);
    let good = when_finished(&host, "good");
    assert_eq!(good["status"], "completed", "{good}");
    let bad = status(&host, "bad");
    assert_eq!(bad["status"], "failed", "{bad}");
    let error = bad["failure"].as_str().unwrap();
    assert!(error.starts_with("set aside when the host started") && error.contains("stages"), "{error}");
}

fn cli_json(host: &Host, args: &[&str]) -> Value {
    let out = cli(host, &[args, &["--output", "json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The runs of schedule `id` the host lists, by id (oldest due first).
fn runs_of(host: &Host, id: &str) -> Vec<String> {
    let listed = cli_json(host, &["workflow", "list"]);
    let prefix = format!("{id}-");
    let mut runs: Vec<String> = (listed.as_array().unwrap().iter())
        .filter_map(|w| w["workflow_id"].as_str().filter(|w| w.starts_with(&prefix)).map(str::to_owned))
        .collect();
    runs.sort();
    runs
}

fn schedule_info(host: &Host, id: &str) -> Value {
    let listed = cli_json(host, &["schedule", "list"]);
    listed.as_array().unwrap().iter().find(|s| s["schedule_id"] == id).cloned().unwrap_or(Value::Null)
}

/// Wait (a minute at most) until `ready` holds of what `probe` reads.
fn until<T: std::fmt::Debug>(what: &str, probe: impl FnMut() -> T, ready: impl Fn(&T) -> bool) -> T {
    support::until(what, support::PATIENCE, probe, ready)
}

/// Due times missed while the host was down run once, for the latest of
/// them; and never twice: not after another restart, not when the run had
/// started before a crash that lost the due time (the run's id, derived
/// from the due time, is taken).
#[test]
fn missed_due_times_run_once_for_the_latest_only() {
    let data = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&data.path().join("gleitzeit.db")).unwrap();
    let now = SystemTime::now();
    let three_days_ago = now - Duration::from_secs(3 * 86_400);
    // Daily at 04:15, handled last three days ago: three due times missed
    // since. (Daily, so that no due time falls within the test but once in
    // a few thousand runs.)
    let mut early = Schedule::new(scheduled("early", "15 4 * * *"), three_days_ago).unwrap();
    early.last_due = Some(three_days_ago);
    // Daily: its latest run started, then the host died before it wrote
    // the due time down.
    let daily = Schedule::new(scheduled("daily", "30 5 * * *"), three_days_ago).unwrap();
    let cadence = daily.spec.cadence().unwrap();
    let latest = cadence.latest_until(now).unwrap();
    let started = daily.run_at(&cadence, latest).unwrap();
    store.put_schedule(&early).unwrap();
    store.put_schedule(&daily).unwrap();
    store
        .write(&[
            Record::Accepted { workflow: Box::new(started.clone()), submitted_at: latest },
            Record::Finished(report(&started.id, latest)),
        ])
        .unwrap();
    drop(store);
    let data_dir = data.path().to_str().unwrap();
    let host = support::serve(&["--data-dir", data_dir]);

    let runs = until("the latest early run", || runs_of(&host, "early"), |runs| !runs.is_empty());
    let early_cadence = early.spec.cadence().unwrap();
    let expected: Vec<String> =
        [now, SystemTime::now()].map(|t| early.run_id(early_cadence.latest_until(t).unwrap())).into();
    assert_eq!(runs.len(), 1, "one run for three missed due times: {runs:?}");
    assert!(expected.contains(&runs[0]), "the latest due time's: {runs:?}, {expected:?}");
    let report = when_finished(&host, &runs[0]);
    assert_eq!(report["status"], "completed", "{report}");
    let echoed = report["tasks"][0]["result"]["echoed"].as_str().unwrap();
    assert!(echoed.starts_with("news at ") && echoed.contains("T04:15:00+0"), "its inputs and due time: {echoed}");
    assert_eq!(runs_of(&host, "daily"), std::slice::from_ref(&started.id), "the daily run was not started again");
    let daily_info = schedule_info(&host, "daily");
    assert_eq!(daily_info["last_run"], started.id.as_str(), "{daily_info}");
    assert_eq!(daily_info["last_due"], cadence.local_text(latest), "{daily_info}");

    // Restarted: nothing more runs. A schedule due every second shows
    // when the loop has looked at all of them once.
    drop(host);
    let host = support::serve(&["--data-dir", data_dir]);
    let probe = support::root().join("workflows/scheduled.yaml");
    let added = cli(&host, &["schedule", "add", probe.to_str().unwrap(), "--cron", "* * * * * *", "--id", "probe"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    until("a probe run", || runs_of(&host, "probe"), |runs| !runs.is_empty());
    assert_eq!(runs_of(&host, "daily"), std::slice::from_ref(&started.id));
    assert_eq!(runs_of(&host, "early").len(), 1 + usize::from(expected[0] != expected[1]));
}

/// A host killed with SIGKILL while a schedule runs every two seconds:
/// after the restart, of the due times it missed at most one runs (the
/// latest), none twice, and the schedule goes on; removed, it stops.
#[test]
fn a_killed_host_resumes_its_schedule_without_running_a_due_time_twice() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let host = support::serve(&["--data-dir", data_dir]);
    let file = support::root().join("workflows/scheduled.yaml");
    let added = cli(&host, &["schedule", "add", file.to_str().unwrap(), "--cron", "*/2 * * * * *", "--id", "every2"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    until("two runs", || runs_of(&host, "every2"), |runs| runs.len() >= 2);
    drop(host); // SIGKILL
    let killed = SystemTime::now();
    std::thread::sleep(Duration::from_secs(5)); // the downtime: two or three due times
    let restarted = SystemTime::now();
    let host = support::serve(&["--data-dir", data_dir]);
    let due_of = |run: &str| {
        let stamp = &run[run.len() - "YYYYMMDDTHHMMSSZ".len()..]; // after the run key
        let text = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &stamp[0..4],
            &stamp[4..6],
            &stamp[6..8],
            &stamp[9..11],
            &stamp[11..13],
            &stamp[13..15]
        );
        humantime::parse_rfc3339(&text).unwrap()
    };
    let after = |t: SystemTime| move |runs: &Vec<String>| runs.iter().any(|r| due_of(r) > t);
    let runs = until("a run after the restart", || runs_of(&host, "every2"), after(restarted));
    let missed: Vec<&String> = runs.iter().filter(|r| due_of(r) > killed && due_of(r) <= restarted).collect();
    assert!(missed.len() <= 1, "at most one of the missed due times runs: {runs:?}");
    for run in &runs {
        assert_eq!(when_finished(&host, run)["status"], "completed", "{run}");
    }
    let removed = cli(&host, &["schedule", "remove", "every2"]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    std::thread::sleep(Duration::from_millis(500)); // a run taken up just before may still start
    let count = runs_of(&host, "every2").len();
    std::thread::sleep(Duration::from_secs(3)); // a window for a run that must not start
    assert_eq!(runs_of(&host, "every2").len(), count, "removed, it starts no more");
    assert_eq!(schedule_info(&host, "every2"), Value::Null);
}

/// A due time that comes while the schedule's last run is still running is
/// skipped: runs of one schedule never overlap.
#[test]
fn a_schedule_does_not_start_a_run_while_its_last_one_runs() {
    let host = host(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    let slow = "name: slow\ntasks:\n  - {id: wait, protocol: echo/v1, method: delay, params: {seconds: 2.5}}\n";
    std::fs::write(&file, slow).unwrap();
    let added = cli(&host, &["schedule", "add", file.to_str().unwrap(), "--cron", "* * * * * *"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let runs = until("three runs", || runs_of(&host, "slow"), |runs| runs.len() >= 3);
    let reports: Vec<Value> = runs.iter().take(3).map(|run| when_finished(&host, run)).collect();
    let time = |report: &Value, field: &str| humantime::parse_rfc3339(report[field].as_str().unwrap()).unwrap();
    for pair in reports.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        assert!(time(later, "started_at") >= time(earlier, "finished_at"), "overlapping runs: {earlier}\n{later}");
    }
}
