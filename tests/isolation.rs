//! One user cannot stop the host for the others: while one client token
//! does something hostile, another token's one-task workflow completes
//! within 5 s, the daemon's memory stays within its documented bound, and
//! the same holds after a restart on the same store.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};
use support::api::Api;
use support::{Served, serve};

/// A client token named `name`, made in `data_dir` with the CLI.
fn client_token(data_dir: &str, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["token", "create", "--name", name, "--role", "client", "--data-dir", data_dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A daemon on a data directory of its own, with two client tokens.
struct Shared {
    /// Its data directory: bind it (`data: _data`) for as long as the
    /// daemon runs, or it is deleted under it.
    data: tempfile::TempDir,
    host: Served,
    alice: String,
    bob: String,
}

impl Shared {
    fn start(args: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_str().unwrap().to_owned();
        let host = serve(&[&["--data-dir", dir.as_str()], args].concat());
        let (alice, bob) = (client_token(&dir, "alice"), client_token(&dir, "bob"));
        Self { data, host, alice, bob }
    }
}

/// The daemon's resident memory, in MiB.
fn rss_mib(host: &Served) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// Bob's one-task workflow, submitted and finished within 5 s.
async fn bob_is_served(api: &Api, bob: &str) {
    let one = json!({"name": "bob's", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "echo",
                                                 "params": {"message": "still here"}}]});
    let served = async {
        let id = api.submit(bob, &one).await;
        api.finished(bob, &id).await
    };
    let report = tokio::time::timeout(Duration::from_secs(5), served).await.expect("bob is served within 5 s");
    assert_eq!(report["status"], "completed", "{report}");
}

/// A 1 MiB input quoted by each of 1,000 echo calls (`delay` ones that
/// take `seconds`, two at a time, if given): about 1 MiB of request that
/// would hold 2 MiB per item (params and result).
fn amplifying(id: &str, seconds: Option<f64>) -> Value {
    let mut each = json!({"id": "each", "protocol": "echo/v1", "method": "echo",
                          "for_each": (0..1000).collect::<Vec<_>>(), "params": {"message": "${inputs.s}"}});
    if let Some(seconds) = seconds {
        each["method"] = json!("delay");
        each["params"]["seconds"] = json!(seconds);
        each["max_parallel"] = json!(2);
    }
    json!({"id": id, "name": "amplifying",
           "inputs": {"s": {"type": "string", "default": "x".repeat(1 << 20)}}, "tasks": [each]})
}

/// The documented bound (docs/security.md, "Limits and quotas"): one
/// workflow at its byte limit (128 MB) grows the daemon by at most 1 GiB.
const MAX_GROWTH_MIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_amplifying_workflow_ends_at_its_limit_and_others_are_served_across_a_restart() {
    let Shared { data, host, alice, bob } = Shared::start(&[]);
    let api = Api::of(&host);
    bob_is_served(&api, &bob).await;
    let baseline = rss_mib(&host);

    // Without limits this made gigabytes of records the store refused
    // forever, and every other user's calls waited behind them.
    api.submit(&alice, &amplifying("amplifying", None)).await;
    let mut peak = baseline;
    let started = Instant::now();
    let report = loop {
        bob_is_served(&api, &bob).await;
        peak = peak.max(rss_mib(&host));
        let report = api.get("/api/v1/workflows/amplifying", &alice).await.body;
        if report["status"] != "running" {
            break report;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "it never ended: {}", report["summary"]);
    };
    assert_eq!(report["status"], "failed", "{}", report["summary"]);
    let failure = report["failure"].as_str().unwrap();
    assert!(failure.contains("the limit is 128.0 MiB (max_workflow_mb)"), "{failure}");
    assert!(report["summary"]["cancelled"].as_u64().unwrap() > 900, "the rest was not run: {}", report["summary"]);
    assert!(peak < baseline + MAX_GROWTH_MIB, "resident memory grew from {baseline} MiB to {peak} MiB");
    let ready = api.send(api.request("GET", "/api/v1/ready", None)).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);

    // Killed while a second one runs, then started with a lower limit: the
    // store holds a workflow past it, which ends at once, and bob is served.
    api.submit(&alice, &amplifying("again", Some(0.2))).await;
    loop {
        let report = api.get("/api/v1/workflows/again", &alice).await.body;
        // Ten items hold 21 MiB with the document: past the next limit.
        if report["summary"]["completed"].as_u64().unwrap_or(0) >= 10 {
            break;
        }
        assert!(report["status"] == "running", "{}", report["summary"]);
    }
    drop(host); // SIGKILL
    let dir = data.path().to_str().unwrap();
    let host = serve(&["--data-dir", dir, "--max-workflow-mb", "16"]);
    let api = Api::of(&host);
    bob_is_served(&api, &bob).await;
    let again = api.finished(&alice, "again").await;
    assert_eq!(again["status"], "failed", "{}", again["summary"]);
    let failure = again["failure"].as_str().unwrap();
    assert!(failure.contains("what it held when it was resumed") && failure.contains("16.0 MiB"), "{failure}");
    bob_is_served(&api, &bob).await;
}

/// `tasks` echo calls, each behind a condition that costs far more than a
/// condition's budget: half compare every one of 15,000 items with every
/// other (225 million comparisons; 24 s of the scheduler's thread before
/// conditions had a budget), half map each item to a copy of a 1 MiB
/// string doubled.
fn costly_conditions(id: &str, tasks: usize) -> Value {
    let square = "${inputs.xs}.map(x, ${inputs.xs}.filter(y, y == x).size()).size() > 0";
    let copies = "${inputs.xs}.map(x, ${inputs.s} + ${inputs.s}).size() > 0";
    let tasks: Vec<Value> = (0..tasks)
        .map(|i| {
            json!({"id": format!("t{i}"), "protocol": "echo/v1", "method": "echo",
                        "when": if i % 2 == 0 { square } else { copies }, "params": {"message": i}})
        })
        .collect();
    json!({"id": id, "name": "costly", "tasks": tasks,
           "inputs": {"xs": {"type": "array", "default": (0..15_000).collect::<Vec<_>>()},
                      "s": {"type": "string", "default": "x".repeat(1 << 20)}}})
}

/// Conditions have a budget and are evaluated off the scheduler's thread,
/// one at a time per owner: while one token's costly conditions are
/// evaluated, another token's workflows, with and without a condition of
/// their own, complete within 5 s; each costly condition fails its task
/// naming the budget it spent; memory stays within its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_costly_conditions_fail_at_their_budget_and_others_are_served() {
    let Shared { data: _data, host, alice, bob } = Shared::start(&[]);
    let api = Api::of(&host);
    bob_is_served(&api, &bob).await;
    let baseline = rss_mib(&host);
    let checked = json!({"name": "bob's checked", "inputs": {"n": {"type": "integer", "default": 2}},
                         "tasks": [{"id": "a", "protocol": "echo/v1", "method": "echo", "when": "${inputs.n} > 1",
                                    "params": {"message": "checked"}}]});

    // A chain of 650 operators overflowed the evaluating thread's stack,
    // aborting the daemon (and again on each restart, resuming it).
    let chain = json!({"name": "chain", "tasks": [{"id": "t", "protocol": "echo/v1", "method": "echo",
                        "when": format!("1{} > 0", "+1".repeat(650)), "params": {"message": "x"}}]});
    let refused = api.post_json("/api/v1/workflows", &alice, &chain).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(refused.body["message"].as_str().unwrap().contains("the limit is 100"), "{refused:?}");
    api.submit(&alice, &costly_conditions("costly", 4)).await;
    let mut peak = baseline;
    let started = Instant::now();
    let report = loop {
        bob_is_served(&api, &bob).await;
        let served = async { api.finished(&bob, &api.submit(&bob, &checked).await).await };
        let report =
            tokio::time::timeout(Duration::from_secs(5), served).await.expect("bob's condition waits for no one");
        assert_eq!(report["tasks"][0]["status"], "completed", "{report}");
        peak = peak.max(rss_mib(&host));
        let report = api.get("/api/v1/workflows/costly", &alice).await.body;
        if report["status"] != "running" {
            break report;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "it never ended: {}", report["summary"]);
    };
    assert_eq!(report["status"], "failed", "{}", report["summary"]);
    for (i, task) in report["tasks"].as_array().unwrap().iter().enumerate() {
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(task["error"]["code"], -32041, "{task}");
        let message = task["error"]["message"].as_str().unwrap();
        let budget = if i % 2 == 0 { "more than 10000000 steps" } else { "more than 64 MiB of values" };
        assert!(message.contains(budget) && message.contains("the budget of a condition"), "{message}");
    }
    assert!(peak < baseline + 512, "resident memory grew from {baseline} MiB to {peak} MiB");
}

/// A workflow with id `id` of `calls` `delay` calls of `seconds` (at most
/// 10) one after the other.
fn delayed(id: &str, calls: usize, seconds: f64) -> Value {
    json!({"id": id, "name": "delayed", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "delay",
                                                   "for_each": (0..calls).collect::<Vec<_>>(), "max_parallel": 1,
                                                   "params": {"seconds": seconds}}]})
}

/// Workflow and schedule ids are each client token's own (the host keeps
/// them as TOKEN:ID): another token can neither learn that one exists (it
/// gets what it gets for an id nobody uses) nor take it first (the same
/// id is simply its own), and after a restart each is read back as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_each_tokens_own_so_none_can_be_detected_or_taken_first() {
    let Shared { data, host, alice, bob } = Shared::start(&[]);
    let api = Api::of(&host);
    assert_eq!(api.submit(&alice, &delayed("running", 12, 10.0)).await, "alice:running");
    let done = api.submit(&alice, &delayed("done", 1, 0.0)).await;
    assert_eq!(api.finished(&alice, &done).await["status"], "completed");
    let yearly = "name: nightly\ntasks:\n  - {id: a, protocol: echo/v1, method: echo, params: {message: hi}}\n";
    let add_nightly = |token: &str| {
        let request = api.request("POST", "/api/v1/schedules?cron=0%200%201%201%20*&id=nightly", Some(token));
        api.send(request.header("Content-Type", "application/yaml").body(yearly))
    };
    assert_eq!(add_nightly(&alice).await.body["schedule_id"], "alice:nightly");

    // What bob is told of alice's ids is what he is told of unused ones.
    let unused = api.get("/api/v1/workflows/unused", &bob).await;
    assert_eq!(unused.status, 404, "{unused:?}");
    for id in ["running", "alice:running", "done", "alice:done"] {
        let answer = api.get(&format!("/api/v1/workflows/{id}"), &bob).await;
        assert_eq!(answer.status, 404, "{id}: {answer:?}");
        assert_eq!(answer.body["message"], format!("no workflow '{id}'"), "{answer:?}");
        let cancel = api.send(api.request("POST", &format!("/api/v1/workflows/{id}/cancel"), Some(&bob))).await;
        assert_eq!(cancel.status, 404, "{id}: {cancel:?}");
    }
    for id in ["nightly", "alice:nightly"] {
        assert_eq!(api.get(&format!("/api/v1/schedules/{id}"), &bob).await.status, 404, "{id}");
    }
    // The same ids are bob's own, taken by nobody.
    for id in ["running", "done"] {
        let his = api.submit(&bob, &delayed(id, 1, 0.0)).await;
        assert_eq!(his, format!("bob:{id}"));
        assert_eq!(api.finished(&bob, id).await["status"], "completed");
    }
    assert_eq!(add_nightly(&bob).await.body["schedule_id"], "bob:nightly");

    // Alice's are as they were, by either name, and so after a restart.
    let running = api.get("/api/v1/workflows/running", &alice).await.body;
    assert_eq!((running["workflow_id"].as_str(), running["status"].as_str()), (Some("alice:running"), Some("running")));
    assert_eq!(api.get("/api/v1/workflows/alice:done", &alice).await.body["status"], "completed");
    drop(host); // SIGKILL
    let host = serve(&["--data-dir", data.path().to_str().unwrap()]);
    let api = Api::of(&host);
    assert_eq!(api.get("/api/v1/workflows/done", &alice).await.body["status"], "completed");
    assert_eq!(api.get("/api/v1/workflows/done", &bob).await.body["workflow_id"], "bob:done");
    let schedules = api.get("/api/v1/schedules", &alice).await.body;
    assert_eq!(schedules["schedules"][0]["schedule_id"], "alice:nightly", "{schedules}");
    let cancelled = api.send(api.request("POST", "/api/v1/workflows/running/cancel", Some(&alice))).await;
    assert_eq!((cancelled.status, cancelled.body["cancelled"].clone()), (200, json!(true)), "resumed: {cancelled:?}");
    assert_eq!(cancelled.body["workflow_id"], "alice:running", "answered as the host keeps it");
    let removed = api.send(api.request("DELETE", "/api/v1/schedules/nightly", Some(&alice))).await;
    assert_eq!(removed.body["schedule_id"], "alice:nightly", "{removed:?}");
}

/// Whether `answer` is a 429 naming `setting`.
fn refused_naming(answer: &support::api::Answer, setting: &str) -> bool {
    answer.status == 429 && answer.body["message"].as_str().is_some_and(|m| m.contains(setting))
}

/// Per-token quotas: one client token at its quota of event streams,
/// running workflows and schedules is refused, naming the quota (and a
/// schedule more frequent than the host's minimum interval), while
/// another token opens, runs and adds as before; and many requests for one
/// large report build a few at a time, so memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_at_its_quotas_leaves_the_others_their_share() {
    let Shared { data: _data, host, alice, bob } = Shared::start(&[
        "--max-streams-per-token",
        "5",
        "--max-workflows-per-token",
        "3",
        "--max-schedules-per-token",
        "10",
        "--min-schedule-interval",
        "1m",
    ]);
    let api = Api::of(&host);

    let mut streams = Vec::new();
    for _ in 0..5 {
        let stream = api.request("GET", "/api/v1/events", Some(&alice)).send().await.unwrap();
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let refused = api.get("/api/v1/events", &alice).await;
    assert!(refused_naming(&refused, "max_streams_per_token"), "{refused:?}");
    let bobs = api.request("GET", "/api/v1/events", Some(&bob)).send().await.unwrap();
    assert_eq!(bobs.status(), 200, "another token still opens a stream");
    drop(streams);

    let slow = json!({"name": "slow", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "delay",
                                                 "params": {"seconds": 10}}]});
    for _ in 0..3 {
        api.submit(&alice, &slow).await;
    }
    let refused = api.post_json("/api/v1/workflows", &alice, &slow).await;
    assert!(refused_naming(&refused, "max_workflows_per_token"), "{refused:?}");
    bob_is_served(&api, &bob).await;

    let yearly = |n: usize| {
        json!({"name": format!("yearly {n}"), "id": format!("y{n}"), "schedule": {"cron": "0 0 1 1 *"},
               "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]})
    };
    for n in 0..10 {
        let added = api.post_json("/api/v1/schedules", &alice, &yearly(n)).await;
        assert_eq!(added.status, 201, "{added:?}");
    }
    let every_second = json!({"name": "busy", "schedule": {"cron": "* * * * * *"},
                              "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]});
    let refused = api.post_json("/api/v1/schedules", &bob, &every_second).await;
    let says = refused.body["message"].as_str().unwrap_or_default();
    assert!(
        refused.status == 422 && says.contains("every 1s") && says.contains("min_schedule_interval"),
        "{refused:?}"
    );
    let refused = api.post_json("/api/v1/schedules", &alice, &yearly(10)).await;
    assert!(refused_naming(&refused, "max_schedules_per_token"), "{refused:?}");
    let bobs = api
        .post_json(
            "/api/v1/schedules",
            &bob,
            &json!({"name": "bob's yearly", "schedule": {"cron": "0 0 1 1 *"},
        "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]}),
        )
        .await;
    assert_eq!(bobs.status, 201, "{bobs:?}");

    // A 10 MB result read 40 times at once by one token.
    let big = json!({"id": "big", "name": "big", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "echo",
                                                             "params": {"message": "y".repeat(10 << 20)}}]});
    let id = api.submit(&bob, &big).await;
    api.finished(&bob, &id).await;
    let baseline = rss_mib(&host);
    let path = format!("/api/v1/workflows/{id}/results");
    let reads = (0..40).map(|_| api.get(&path, &bob));
    let sampler = async {
        let mut peak = 0;
        for _ in 0..100 {
            peak = peak.max(rss_mib(&host));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    };
    let (answers, peak) = tokio::join!(futures_util::future::join_all(reads), sampler);
    assert!(answers.iter().all(|a| a.status == 200));
    assert!(peak < baseline + 300, "40 reads of a 10 MB report grew the daemon from {baseline} to {peak} MiB");
}

/// Connections that never send a whole request header (nothing at all, a
/// partial request line, or headers a byte every 2 s) are closed within
/// the documented 30 s, and `/health` and a token holder's workflow keep
/// being served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_whole_header_are_closed_and_others_are_served() {
    use std::io::{Read, Write};
    rlimit::increase_nofile_limit(8192).unwrap();
    let Shared { data: _data, host, bob, .. } = Shared::start(&[]);
    let api = Api::of(&host);
    let addr = host.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for n in 0..1500 {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        if n % 3 == 0 {
            stream.write_all(b"GET /api/v1/health HTT").unwrap();
        }
        idle.push(stream);
    }
    let trickling = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            let started = Instant::now();
            for byte in
                b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle()
            {
                if stream.write_all(&[*byte]).is_err() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            unreachable!()
        }
    });
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), api.send(api.request("GET", "/api/v1/health", None)));
    assert_eq!(health.await.expect("health answers within 5 s").status, 200);
    bob_is_served(&api, &bob).await;

    // Each idle connection is closed by the host: a read sees its end.
    let deadline = started + Duration::from_secs(60);
    for stream in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        stream.set_read_timeout(Some(left)).unwrap();
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte);
        assert!(matches!(read, Ok(0) | Err(_)), "an idle connection was answered: {read:?}");
    }
    let closed_after = started.elapsed();
    assert!(closed_after < Duration::from_secs(50), "idle connections were closed after {closed_after:?}");
    let trickled = tokio::task::spawn_blocking(move || trickling.join().unwrap()).await.unwrap();
    assert!(trickled < Duration::from_secs(50), "a header trickled for {trickled:?}");
}

/// Eight 60 MB bodies sent at once are read a couple at a time (the host
/// reads at most 128 MB of bodies at once), so the daemon's memory stays
/// bounded, and another token is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_bodies_at_once_are_read_a_few_at_a_time() {
    let Shared { data: _data, host, alice, bob } = Shared::start(&[]);
    let api = Api::of(&host);
    bob_is_served(&api, &bob).await;
    let baseline = rss_mib(&host);
    // Valid JSON that takes memory to parse: one long string.
    let body = format!(r#"{{"name": "big", "tasks": [], "description": "{}"}}"#, "z".repeat(60 << 20));
    let sends = (0..8).map(|_| {
        api.request("POST", "/api/v1/workflows", Some(&alice))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
    });
    let sampler = async {
        let mut peak = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            peak = peak.max(rss_mib(&host));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bob_is_served(&api, &bob).await;
        peak
    };
    let (answers, peak) = tokio::join!(futures_util::future::join_all(sends), sampler);
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|r| r.status().is_client_error())), "refused as invalid");
    assert!(peak < baseline + 800, "eight 60 MB bodies grew the daemon from {baseline} to {peak} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_follows_a_bounded_number_of_workflows_and_leaves_those_that_complete() {
    let host = serve(&["--auth", "off"]);
    let mut client = gleitzeit::client::Client::connect(&host.url, None).await.unwrap();
    let wait = Duration::from_secs(30);
    let most = gleitzeit::daemon::MAX_SUBSCRIPTIONS;
    for i in 0..most - 1 {
        let answer = client.call("subscribe", &json!({ "workflow_id": format!("w{i}") }), wait).await.unwrap();
        assert_eq!(answer["subscribed"], true, "{answer}");
    }
    // A submission follows its workflow until it completes, then leaves it.
    let workflow = json!({"name": "one", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": "m"}}]});
    let submitted = client.call("submit_workflow", &json!({ "workflow": workflow }), wait).await.unwrap();
    let id = submitted["workflow_id"].as_str().unwrap().to_owned();
    while let Some(event) = client.next_event().await {
        if event.name == "workflow_completed" && event.data["workflow_id"] == id.as_str() {
            break;
        }
    }
    let last = client.call("subscribe", &json!({ "workflow_id": "last" }), wait).await.unwrap();
    assert_eq!(last["subscribed"], true, "the completed workflow's place is free again: {last}");
    let over = client.call("subscribe", &json!({ "workflow_id": "over" }), wait).await.unwrap();
    assert_eq!(over["error"]["code"], -32017, "{over}");
    let message = over["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("follows {most} workflows")), "{message}");
    // Again for one already followed; another after an unsubscription.
    let again = client.call("subscribe", &json!({ "workflow_id": "w0" }), wait).await.unwrap();
    assert_eq!(again["subscribed"], true, "{again}");
    client.call("unsubscribe", &json!({ "workflow_id": "w0" }), wait).await.unwrap();
    let after = client.call("subscribe", &json!({ "workflow_id": "over" }), wait).await.unwrap();
    assert_eq!(after["subscribed"], true, "{after}");
}
