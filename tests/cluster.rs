//! Several `gleitzeit serve --cluster` processes on one real `redis-server`
//! (docs/cluster.md): any host serves any client, a killed or paused host's
//! workflows finish on another, and a host whose lease lapsed writes
//! nothing more. The invariants are checked from what Redis holds, not
//! from logs: every task has exactly one final state change, and once
//! another host wrote for a workflow, the host that lost it never does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use support::api::{Api, Stream};
use support::process::Proc;
use support::servers::free_port;
use support::{Daemon, PATIENCE, RedisServer, Served, redis_server, redis_server_with, until};

/// Short, so that the tests wait little for a takeover; long enough for a
/// loaded CI machine to renew it (every third of it).
const LEASE: &str = "2s";

fn host(redis: &RedisServer) -> Served {
    Daemon::new().args(&["--store", &redis.url, "--cluster", "--lease", LEASE]).start()
}

/// The events Redis holds for a workflow, in the order they were written.
fn stored_events(redis: &RedisServer, workflow_id: &str) -> Vec<Value> {
    let mut c = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    let events: Vec<String> =
        redis::Commands::lrange(&mut c, format!("gleitzeit:workflow:{workflow_id}:events"), 0, -1).unwrap();
    events.iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

/// The invariants: each task ended once, and a host that lost the
/// workflow to another wrote nothing for it after.
fn check_stored(redis: &RedisServer, workflow_id: &str, tasks: usize) -> Vec<Value> {
    let events = stored_events(redis, workflow_id);
    let mut finals: std::collections::HashMap<&str, usize> = Default::default();
    for event in &events {
        if ["completed", "failed", "skipped", "cancelled"].contains(&event["status"].as_str().unwrap()) {
            *finals.entry(event["task_id"].as_str().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(finals.len(), tasks, "every task ended: {events:#?}");
    assert!(finals.values().all(|&n| n == 1), "no task ended twice: {finals:?}");
    let mut drivers: Vec<(&str, u64)> = Vec::new();
    for event in &events {
        let driver = (event["host"].as_str().unwrap(), event["epoch"].as_u64().unwrap());
        if drivers.last() != Some(&driver) {
            assert!(!drivers.contains(&driver), "{driver:?} wrote again after another host took over: {events:#?}");
            drivers.push(driver);
        }
    }
    events
}

async fn status(api: &Api, token: &str, id: &str) -> Value {
    api.get(&format!("/api/v1/workflows/{id}"), token).await.body
}

/// Task `task`'s state in a report.
fn task<'r>(report: &'r Value, task: &str) -> &'r Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == task).unwrap()
}

/// Wait until `api`'s host shows task `task` of workflow `id` running.
async fn until_running(api: &Api, token: &str, id: &str, task_id: &str) {
    let started = std::time::Instant::now();
    loop {
        if task(&status(api, token, id).await, task_id)["status"] == "running" {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "{task_id} never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A work/v1 provider (tests/python/work_provider.py, python-socketio)
/// connected to `host`, four calls at once, answering `n + 1`.
fn work_provider(host: &Served, id: &str) -> Proc {
    work_provider_with(host, id, &[("MAX_CONCURRENT", "4"), ("INCREMENT", "1")])
}

/// A work/v1 provider connected to `host`, with the settings `env` of
/// tests/python/work_provider.py (MAX_CONCURRENT, SECONDS, SAY_EACH, …).
fn work_provider_with(host: &Served, id: &str, env: &[(&str, &str)]) -> Proc {
    let mut command = Command::new("python3");
    command
        .arg(support::root().join("tests/python/work_provider.py"))
        .env("GLEITZEIT_SERVER", &host.url)
        .env("GLEITZEIT_TOKEN", &host.token)
        .env("PROVIDER_ID", id)
        .envs(env.iter().copied());
    let provider = Proc::spawn(command);
    provider.wait_for("registered");
    provider
}

/// Wait until `api`'s host offers `protocol` (served elsewhere).
async fn until_served(api: &Api, token: &str, protocol: &str) {
    let started = std::time::Instant::now();
    loop {
        let listed = api.get("/api/v1/protocols", token).await.body;
        if listed["protocols"].as_array().unwrap().iter().any(|p| p["protocol_id"] == protocol) {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "{protocol} never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn chain(delay: f64) -> Value {
    json!({
        "name": "chain",
        "tasks": [
            {"id": "first", "protocol": "echo/v1", "method": "delay", "params": {"seconds": delay}},
            {"id": "fan", "protocol": "echo/v1", "method": "echo", "dependencies": ["first"],
             "for_each": [1, 2, 3, 4], "params": {"message": "item ${item}"}},
            {"id": "last", "protocol": "echo/v1", "method": "echo", "dependencies": ["fan"],
             "params": {"message": "after ${first.delayed_seconds}"}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_owner_s_workflow_finishes_on_another_host_each_task_ending_once() {
    let redis = redis_server();
    let (mut owner, second, third) = (host(&redis), host(&redis), host(&redis));
    let (at_owner, at_third) = (Api::of(&owner), Api::of(&third));
    let id = at_owner.submit(&owner.token, &chain(3.0)).await;
    until_running(&at_third, &third.token, &id, "first").await;
    owner.child.kill().unwrap();
    owner.child.wait().unwrap();

    // A client of the third host follows it to the end, whoever drives it.
    let report = at_third.finished(&third.token, &id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    let last = at_third.get(&format!("/api/v1/workflows/{id}/tasks/last"), &third.token).await;
    assert_eq!(last.body["result"]["echoed"], "after 3.0", "results pass across hosts: {last:?}");
    let events = check_stored(&redis, &id, 7);
    let hosts: std::collections::HashSet<&str> = events.iter().map(|e| e["host"].as_str().unwrap()).collect();
    assert_eq!(hosts.len(), 2, "the owner, then the host that took it over: {events:#?}");

    // The register marks the killed host gone.
    let listed = until(
        "the killed host is marked gone",
        PATIENCE,
        || serde_json::from_slice::<Value>(&second.cli(&["host", "list", "--output", "json"]).stdout).unwrap(),
        |listed| listed.as_array().unwrap().iter().any(|h| h["status"] == "gone"),
    );
    let up = listed.as_array().unwrap().iter().filter(|h| h["status"] == "up").count();
    assert_eq!(up, 2, "{listed:#}");
}

/// `chains` chains of `length` work/v1 tasks, each task's `n` the result
/// of the one before it.
fn chains(chains: usize, length: usize) -> Value {
    let mut tasks = Vec::new();
    for c in 0..chains {
        for i in 0..length {
            let (id, previous) = (format!("c{c}-{i}"), format!("c{c}-{}", i.wrapping_sub(1)));
            tasks.push(match i {
                0 => json!({"id": id, "protocol": "work/v1", "method": "job", "params": {"n": 0}}),
                _ => json!({"id": id, "protocol": "work/v1", "method": "job", "dependencies": [previous],
                            "params": {"n": format!("${{{previous}.n}}")}}),
            });
        }
    }
    json!({"name": "chains", "tasks": tasks})
}

/// Three hosts, and a work/v1 provider on the second and the third.
fn front_and_providers() -> (RedisServer, [Served; 3], [Proc; 2]) {
    let redis = redis_server();
    let hosts = [host(&redis), host(&redis), host(&redis)];
    let providers = [work_provider(&hosts[1], "second"), work_provider(&hosts[2], "third")];
    (redis, hosts, providers)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_tasks_pass_their_results_between_hosts() {
    let (redis, [front, second, third], _providers) = front_and_providers();
    let at_front = Api::of(&front);
    until_served(&at_front, &front.token, "work/v1").await;

    // A thousand tasks with dependencies, submitted where no provider of
    // theirs is: each result goes back to the front host and into the
    // next task's params.
    let id = at_front.submit(&front.token, &chains(10, 100)).await;
    let report = at_front.finished(&front.token, &id).await;
    assert_eq!(report["status"], "completed", "{}", report["summary"]);
    let results = at_front.get(&format!("/api/v1/workflows/{id}/results"), &front.token).await.body;
    for c in 0..10 {
        assert_eq!(results["results"][format!("c{c}-99")]["n"], 100, "{}", results["results"][format!("c{c}-99")]);
    }

    // Each host's /metrics: its own part, and the cluster's queue, empty now.
    let front_figures = metrics(&at_front, &front.token).await;
    assert_eq!(figure(&front_figures, "gleitzeit_cluster_hosts{status=\"up\"}"), 3.0, "{front_figures}");
    assert!(figure(&front_figures, "gleitzeit_cluster_tasks_offered_total") >= 1000.0, "{front_figures}");
    assert_eq!(figure(&front_figures, "gleitzeit_cluster_tasks_waiting{protocol=\"work/v1\"}"), 0.0);
    assert_eq!(figure(&front_figures, "gleitzeit_cluster_tasks_served_total"), 0.0, "no provider at the front");
    let mut served = 0.0;
    for host in [&second, &third] {
        served += figure(&metrics(&Api::of(host), &host.token).await, "gleitzeit_cluster_tasks_served_total");
    }
    assert!(served >= 1000.0, "the others ran them: {served}");

    // The answered offers are trimmed from their stream (at the next beat).
    let mut c = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    until(
        "the offers trimmed",
        PATIENCE,
        || redis::cmd("XLEN").arg("gleitzeit:tasks:work/v1").query::<u64>(&mut c).unwrap(),
        |n| *n == 0,
    );
}

/// The calls of a cancelled workflow that no host took yet are withdrawn:
/// the host that takes them later skips them, and they never run.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_workflow_s_calls_no_host_took_yet_never_run() {
    let redis = redis_server();
    let (front, side, back) = (host(&redis), host(&redis), host(&redis));
    let provider = work_provider_with(&back, "slow", &[("MAX_CONCURRENT", "1"), ("SECONDS", "1"), ("SAY_EACH", "1")]);
    let (at_front, at_side) = (Api::of(&front), Api::of(&side));
    until_served(&at_front, &front.token, "work/v1").await;
    until_served(&at_side, &side.token, "work/v1").await;
    // Entries that hold no offer that can be read are acknowledged too, or
    // they would stay pending and stop the stream's trimming there.
    let mut c = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    for junk in ["not json", "[]"] {
        let _: String =
            redis::cmd("XADD").arg("gleitzeit:tasks:work/v1").arg("*").arg("offers").arg(junk).query(&mut c).unwrap();
    }
    let jobs = |from: usize| {
        json!({"name": "fan", "tasks": [{"id": "jobs", "protocol": "work/v1", "method": "job",
            "for_each": (from..from + 3).collect::<Vec<_>>(), "params": {"n": "${item}"}}]})
    };
    // Another host's one-second call keeps the provider's one slot, so the
    // call the front host offers waits in the stream...
    let other = at_side.submit(&side.token, &jobs(0)).await;
    provider.wait_for("started 0");
    let offered = at_front.submit(&front.token, &jobs(100)).await;
    let untaken = || {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> =
            redis::cmd("XINFO").arg("GROUPS").arg("gleitzeit:tasks:work/v1").query(&mut c).unwrap();
        groups[0]["lag"].clone()
    };
    until("the front host's call offered and not taken", PATIENCE, untaken, |lag| *lag == redis::Value::Int(1));
    // ...when its workflow is cancelled: no host runs it.
    let cancelled = at_front.post_json(&format!("/api/v1/workflows/{offered}/cancel"), &front.token, &json!({})).await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(at_side.finished(&side.token, &other).await["status"], "completed");

    // Every offer is taken (and skipped) or answered, then nothing more runs.
    until(
        "the queue taken and acknowledged",
        PATIENCE,
        || {
            let groups: Vec<std::collections::HashMap<String, redis::Value>> =
                redis::cmd("XINFO").arg("GROUPS").arg("gleitzeit:tasks:work/v1").query(&mut c).unwrap();
            (groups[0]["lag"].clone(), groups[0]["pending"].clone())
        },
        |(lag, pending)| *lag == redis::Value::Int(0) && *pending == redis::Value::Int(0),
    );
    let ran: Vec<String> = provider.lines_so_far().into_iter().filter(|line| line.starts_with("started 10")).collect();
    assert!(ran.is_empty(), "the cancelled workflow's calls ran: {ran:?}");
    let report = status(&at_front, &front.token, &offered).await;
    assert_eq!(report["status"], "cancelled", "{report:#}");
}

/// A scrape while Redis hangs (SIGSTOP) answers with the host's own
/// figures, without the cluster's, instead of waiting for Redis.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_answer_while_redis_hangs() {
    let redis = redis_server();
    let lone = Daemon::new().args(&["--store", &redis.url, "--cluster", "--lease", "30s"]).start();
    let api = Api::of(&lone);
    assert!(metrics(&api, &lone.token).await.contains("gleitzeit_cluster_hosts"));
    let pid = redis.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // Well within the 5 s a Redis command is waited for.
    let scraped = tokio::time::timeout(Duration::from_millis(4500), metrics(&api, &lone.token)).await;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let scraped = scraped.expect("a scrape within 4.5 s while Redis hangs");
    assert!(scraped.contains("gleitzeit_tasks_running"), "{scraped}");
    assert!(!scraped.contains("gleitzeit_cluster_hosts"), "{scraped}");
}

/// A host's `/metrics`, as text.
async fn metrics(api: &Api, token: &str) -> String {
    let answer = api.get_text("/metrics", token).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1
}

/// The value of the series `series` (name and labels as written).
fn figure(metrics: &str, series: &str) -> f64 {
    let line = metrics.lines().find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    line.unwrap_or_else(|| panic!("no {series} in {metrics}")).rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_spreads_over_every_host_s_providers_and_survives_one_s_host() {
    let (redis, [front, _second, mut third], [_second_s, third_s]) = front_and_providers();
    let _rusty = rust_provider(&front, "front").await;
    let at_front = Api::of(&front);
    // The front serves work/v1 itself; wait until it knows the others do.
    let started = std::time::Instant::now();
    while !at_front.get("/api/v1/providers", &front.token).await.body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["provider_id"] == "cluster:work/v1")
    {
        assert!(started.elapsed() < PATIENCE, "the front never heard of the others' work/v1 providers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A fan-out spreads over the providers of all three hosts; one
    // provider's host dies mid-run, and the tasks it had taken run again
    // elsewhere, each ending once.
    let fan = json!({"name": "fan", "tasks": [{"id": "jobs", "protocol": "work/v1", "method": "job",
        "for_each": (0..1000).collect::<Vec<_>>(), "params": {"n": "${item}"}}]});
    let id = at_front.submit(&front.token, &fan).await;
    let queued = std::time::Instant::now();
    while figure(&metrics(&at_front, &front.token).await, "gleitzeit_cluster_tasks_waiting{protocol=\"work/v1\"}")
        == 0.0
    {
        assert!(queued.elapsed() < PATIENCE, "/metrics never showed the cluster's queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    third_s.wait_for("executed 50");
    third.child.kill().unwrap();
    let report = at_front.finished(&front.token, &id).await;
    assert_eq!(report["status"], "completed", "{}", report["summary"]);
    let results = at_front.get(&format!("/api/v1/workflows/{id}/results"), &front.token).await.body;
    let items = results["results"]["jobs"].as_array().unwrap();
    let by = |provider: &str| items.iter().filter(|r| r["provider"] == provider).count();
    let spread = format!("front {}, second {}, third {}", by("front"), by("second"), by("third"));
    assert!(by("front") > 0 && by("second") > 0 && by("third") > 0, "spread: {spread}");
    assert_eq!(by("front") + by("second") + by("third"), 1000, "{spread}");
    check_stored(&redis, &id, 1001);
}

/// A work/v1 provider on our own Rust client, connected to `host`: two
/// calls at once, each answered after 20 ms with `n` and its id.
async fn rust_provider(host: &Served, id: &str) -> tokio::task::JoinHandle<()> {
    use gleitzeit::client::Client;
    let mut client = Client::connect(&host.url, Some(&host.token)).await.unwrap();
    let registration = json!({"provider_id": id, "protocol_id": "work/v1", "supported_methods": ["job"],
                              "max_concurrent": 2});
    let reply = client.call("register_provider", &registration, Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply["provider_id"], id, "{reply}");
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let id = id.to_owned();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = client.next_event() => {
                    let Some(event) = event else { return };
                    if let (true, Some(ack)) = (event.name == "execute_method", event.ack) {
                        let (answers, n, id) = (answers.clone(), event.data["params"]["n"].clone(), id.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let _ = answers.send((ack, json!({"result": {"n": n, "provider": id}})));
                        });
                    }
                }
                Some((ack, answer)) = answered.recv() => client.ack(ack, &answer).unwrap(),
            }
        }
    })
}

/// The dashboard of one host lists every host of the cluster, in a real
/// headless Chromium (tests/python/dashboard_hosts.py), and the open page
/// shows a killed host turn `gone` while the others stay `up`.
#[test]
fn the_dashboard_lists_the_hosts_and_shows_one_gone() {
    use std::io::Write;
    let redis = redis_server();
    let [first, second, mut third] = [host(&redis), host(&redis), host(&redis)];
    let ids = [&first, &second, &third].map(|h| std::fs::read_to_string(h.data_dir.join("host-id")).unwrap());
    let mut page = Command::new("python3");
    page.arg(support::root().join("tests/python/dashboard_hosts.py"))
        .env("GLEITZEIT_SERVER", &first.url)
        .env("GLEITZEIT_TOKEN", &first.token)
        .env("UP", format!("{},{}", ids[0].trim(), ids[1].trim()))
        .env("GONE", ids[2].trim())
        .env("ADDRESSES", [&first, &second, &third].map(|h| h.url.as_str()).join(","))
        .stdin(std::process::Stdio::piped());
    let mut page = Proc::spawn(page);
    page.wait_for("listed");
    third.child.kill().unwrap();
    writeln!(page.process.0.stdin.as_mut().unwrap(), "killed").unwrap();
    page.wait_for("ok");
    // Its browser closes before it ends.
    assert!(page.process.0.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_stopped_gracefully_gives_its_lease_back_and_its_work_goes_on() {
    let redis = redis_server();
    let leaving = Daemon::new().args(&["--store", &redis.url, "--cluster", "--lease", "30s", "--grace", "0.1"]).start();
    let other = host(&redis);
    let (at_leaving, at_other) = (Api::of(&leaving), Api::of(&other));
    let id = at_leaving.submit(&leaving.token, &chain(3.0)).await;
    until_running(&at_other, &other.token, &id, "first").await;
    let mut leaving = leaving;
    let pid = leaving.pid().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(leaving.child.wait().unwrap().success());
    // Its lease of 30 s is gone at once, so the other takes over now.
    let mut c = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    let leases: Vec<String> = redis::Commands::keys(&mut c, "gleitzeit:lease:*").unwrap();
    assert_eq!(leases.len(), 1, "only the other's lease is left: {leases:?}");
    let report = at_other.finished(&other.token, &id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    check_stored(&redis, &id, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_paused_past_its_lease_writes_nothing_more_and_stops() {
    let redis = redis_server();
    let (mut paused, other) = (host(&redis), host(&redis));
    let (at_paused, at_other) = (Api::of(&paused), Api::of(&other));
    let id = at_paused.submit(&paused.token, &chain(2.0)).await;
    until_running(&at_other, &other.token, &id, "first").await;
    let pid = paused.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());

    // Another host takes it over and finishes it while the first sleeps.
    let report = at_other.finished(&other.token, &id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());

    // Woken, it finds its lease gone: it stops, and nothing it still had
    // to write lands.
    let exited = until("the paused host stops", PATIENCE, || paused.child.try_wait().unwrap(), Option::is_some);
    assert!(!exited.unwrap().success());
    assert!(paused.log().contains("lease"), "it says why: {}", paused.log());
    let events = check_stored(&redis, &id, 7);
    assert_ne!(events.first().unwrap()["host"], events.last().unwrap()["host"], "taken over: {events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restarted_mid_run_loses_nothing() {
    let mut redis = redis_server_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (first, second) = (host(&redis), host(&redis));
    let (at_first, at_second) = (Api::of(&first), Api::of(&second));
    let id = at_first.submit(&first.token, &chain(2.0)).await;
    until_running(&at_second, &second.token, &id, "first").await;
    redis.restart();
    // Both hosts ride it out (it was back within their lease), and the
    // workflow goes on where it was.
    let report = at_second.finished(&second.token, &id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    let events = check_stored(&redis, &id, 7);
    assert!(events.iter().all(|e| e["host"] == events[0]["host"]), "no takeover: {events:#?}");
    let listed = serde_json::from_slice::<Value>(&second.cli(&["host", "list", "--output", "json"]).stdout).unwrap();
    assert!(listed.as_array().unwrap().iter().all(|h| h["status"] == "up"), "{listed:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_whose_clock_is_off_by_minutes_takes_no_lease() {
    let redis = redis_server();
    // Its wall clock (the one a clock set wrong is); its monotonic clock
    // ticks on (which no setting of the time changes).
    // libfaketime preloaded into the host itself: the `faketime` program
    // would run it as its child, which outlives a kill of `faketime`.
    let library = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|arch| Some(arch.ok()?.path().join("faketime/libfaketime.so.1")))
        .find(|library| library.exists())
        .expect("libfaketime (.ci/run installs the faketime package)");
    let skewed = |offset: &str| {
        Daemon::new()
            .args(&["--store", &redis.url, "--cluster", "--lease", LEASE])
            .env("LD_PRELOAD", library.to_str().unwrap())
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .start()
    };
    let (ahead, behind, honest) = (skewed("+10m"), skewed("-10m"), host(&redis));
    let (at_ahead, at_honest) = (Api::of(&ahead), Api::of(&honest));
    let from_ahead = at_ahead.submit(&ahead.token, &chain(3.0)).await;
    let from_honest = at_honest.submit(&honest.token, &chain(3.0)).await;
    for id in [&from_ahead, &from_honest] {
        assert_eq!(at_honest.finished(&honest.token, id).await["status"], "completed");
        let events = check_stored(&redis, id, 7);
        assert!(events.iter().all(|e| e["host"] == events[0]["host"]), "nobody took it over: {events:#?}");
    }
    // Redis's clock says when each was last seen, whatever its own says.
    let listed = serde_json::from_slice::<Value>(&behind.cli(&["host", "list", "--output", "json"]).stdout).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut skews = Vec::new();
    for seen in listed.as_array().unwrap() {
        assert_eq!(seen["status"], "up", "{listed:#}");
        let at = |field: &str| chrono::DateTime::parse_from_rfc3339(seen[field].as_str().unwrap()).unwrap().timestamp();
        assert!((now - at("last_seen")).abs() < 30, "last seen by Redis's clock: {seen}");
        // When it started, by its own clock: two of them are off.
        skews.push((at("started_at") - now) / 60);
    }
    skews.sort_unstable();
    assert!(skews[0] < -5 && skews[1].abs() < 2 && skews[2] > 5, "the clocks really are off: {skews:?} min");
}

/// How many hosts hear the cluster's events channel now.
fn hearing_events(redis: &RedisServer) -> i64 {
    let mut c = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    let (_, hearing): (String, i64) =
        redis::cmd("PUBSUB").arg("NUMSUB").arg("gleitzeit:bus:events").query(&mut c).unwrap();
    hearing
}

#[tokio::test(flavor = "multi_thread")]
async fn any_host_streams_reads_and_cancels_another_host_s_workflow() {
    let redis = redis_server();
    let (driver, other) = (host(&redis), host(&redis));
    let (at_driver, at_other) = (Api::of(&driver), Api::of(&other));

    // Nobody follows anything from another host: no host hears the events.
    let id = at_driver.submit(&driver.token, &chain(2.0)).await;
    assert_eq!(hearing_events(&redis), 0);
    // A python-socketio client of the other host follows it: that host
    // hears the events from its subscription on, until the workflow ends.
    let follower = Command::new("python3")
        .arg(support::root().join("tests/python/follow.py"))
        .arg(&id)
        .env("GLEITZEIT_SERVER", &other.url)
        .env("GLEITZEIT_TOKEN", &other.token)
        .output()
        .unwrap();
    assert!(follower.status.success(), "{}", String::from_utf8_lossy(&follower.stderr));
    let followed: Vec<(String, Option<String>)> = serde_json::from_slice(&follower.stdout).unwrap();
    let ended: Vec<&str> =
        followed.iter().filter(|(e, _)| e == "task_result").filter_map(|(_, t)| t.as_deref()).collect();
    assert!(ended.contains(&"first") && ended.last() == Some(&"last"), "{followed:?}");
    assert_eq!(followed.last().unwrap().0, "workflow_completed", "{followed:?}");
    until("the other host stops hearing events", PATIENCE, || hearing_events(&redis), |n| *n == 0);

    // An event stream of the other host, from the snapshot to the end.
    let id = at_driver.submit(&driver.token, &chain(0.5)).await;
    let mut stream = Stream::open(&at_other, &format!("/api/v1/workflows/{id}/events"), &other.token, None).await;
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        seen.push((event.event, event.data["task_id"].as_str().unwrap_or_default().to_owned()));
    }
    assert_eq!(seen.first().unwrap().0, "snapshot");
    assert_eq!(seen.last().unwrap().0, "workflow_completed", "{seen:?}");
    let results: Vec<&str> = seen.iter().filter(|(e, _)| e == "task_result").map(|(_, t)| t.as_str()).collect();
    assert_eq!(results.first(), Some(&"first"), "{seen:?}");
    assert_eq!(results.last(), Some(&"last"), "in order: {seen:?}");
    assert_eq!(hearing_events(&redis), 1, "it hears them while its log keeps events for a reader's return");

    let id = at_driver.submit(&driver.token, &chain(10.0)).await;
    until_running(&at_other, &other.token, &id, "first").await;
    let cancelled = at_other.post_json(&format!("/api/v1/workflows/{id}/cancel"), &other.token, &json!({})).await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    let report = status(&at_driver, &driver.token, &id).await;
    assert_eq!(report["status"], "cancelled", "the driver shows it cancelled as soon as the answer came: {report:#}");
}

/// A task's timeout is its call's, not its wait in the cluster's queue: a
/// host offers no more calls than the other hosts' providers can run at
/// once. 32 half-second calls with a 3 s timeout, on a provider of 4 slots
/// on another host, all complete (offered at once, the last would wait
/// 3.5 s in the stream and time out).
#[tokio::test(flavor = "multi_thread")]
async fn a_task_waiting_for_another_host_s_provider_does_not_time_out() {
    let redis = redis_server();
    let (front, back) = (host(&redis), host(&redis));
    let _provider = work_provider_with(&back, "slow", &[("MAX_CONCURRENT", "4"), ("SECONDS", "0.5")]);
    let api = Api::of(&front);
    until_served(&api, &front.token, "work/v1").await;
    let batch = json!({"name": "queued elsewhere", "tasks": [{"id": "job", "protocol": "work/v1", "method": "job",
        "for_each": (0..32).collect::<Vec<_>>(), "timeout": 3, "retry": {"max_attempts": 1}, "params": {"n": "${item}"}}]});
    let id = api.submit(&front.token, &batch).await;
    let report = api.finished(&front.token, &id).await;
    let failed: Vec<&Value> =
        report["tasks"].as_array().unwrap().iter().filter(|t| t["status"] != "completed").collect();
    assert!(failed.is_empty(), "{} tasks did not complete: {failed:#?}", failed.len());
}

/// Wait until every host in `api`'s listing says it uses `limit`.
async fn until_limiting(api: &Api, token: &str, limit: &str, hosts: usize) {
    let started = std::time::Instant::now();
    loop {
        let listed = api.get("/api/v1/hosts", token).await.body;
        let using = (listed["hosts"].as_array().unwrap().iter())
            .filter(|h| h["limiting"].as_array().is_some_and(|l| l.iter().any(|n| n == limit)))
            .count();
        if using == hosts {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "the hosts never said they use {limit}: {listed:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rate limit is the cluster's: two hosts that both run tasks under a
/// limit of 10 a second run 100 tasks in 10 s together, not each 50 in 5.
/// (Lower bounds only: a slow machine can only stretch the span.)
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_across_the_hosts_that_use_it() {
    let redis = redis_server();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gleitzeit.toml");
    std::fs::write(&config, "[rate_limits.\"echo/v1\"]\nrequests_per_minute = 600\n").unwrap();
    let limited = || {
        let config = config.to_str().unwrap();
        Daemon::new().args(&["--store", &redis.url, "--cluster", "--lease", LEASE, "--config", config]).start()
    };
    let (first, second) = (limited(), limited());
    let (at_first, at_second) = (Api::of(&first), Api::of(&second));
    let batch = |n: usize| {
        json!({"name": "limited", "tasks": [{"id": "each", "protocol": "echo/v1", "method": "echo",
            "for_each": (0..n).collect::<Vec<_>>(), "params": {"message": "${item}"}}]})
    };
    // Both hosts use the limit, and say so.
    for (api, host) in [(&at_first, &first), (&at_second, &second)] {
        let id = api.submit(&host.token, &batch(1)).await;
        assert_eq!(api.finished(&host.token, &id).await["status"], "completed");
    }
    until_limiting(&at_first, &first.token, "protocol echo/v1", 2).await;

    let (a, b) = (at_first.submit(&first.token, &batch(50)).await, at_second.submit(&second.token, &batch(50)).await);
    let (a, b) = (at_first.finished(&first.token, &a).await, at_second.finished(&second.token, &b).await);
    let mut starts: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    for report in [&a, &b] {
        assert_eq!(report["status"], "completed", "none failed: {report:#}");
        let items = report["tasks"].as_array().unwrap().iter().filter(|t| t["parent"] == "each");
        starts
            .extend(items.map(|t| t["started_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap()));
    }
    assert_eq!(starts.len(), 100);
    starts.sort();
    let span = (starts[99] - starts[0]).to_std().unwrap();
    // 100 calls at 10 a second: 9.9 s; each host alone at 10 a second would
    // take 4.9 s. Up to a beat of both at full speed while the shares settle.
    assert!(span >= Duration::from_secs(8), "the two hosts together went faster than the limit: {span:?}");
}

/// The due times (seconds since the epoch) of the runs of schedule
/// `ticks` the store holds, from their ids (`ticks-KEY-YYYYMMDDTHHMMSSZ`).
async fn ticks_run(api: &Api, token: &str) -> Vec<i64> {
    let listed = api.get("/api/v1/workflows?name=ticker&limit=1000", token).await.body;
    let mut due: Vec<i64> = (listed["workflows"].as_array().unwrap().iter())
        .map(|w| {
            let id = w["workflow_id"].as_str().unwrap();
            let stamp = id.rsplit('-').next().unwrap();
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").unwrap().and_utc().timestamp()
        })
        .collect();
    due.sort_unstable();
    due
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_once_per_due_time_across_the_cluster_while_a_host_dies() {
    let redis = redis_server();
    let (mut first, _second, third) = (host(&redis), host(&redis), host(&redis));
    let (at_first, at_third) = (Api::of(&first), Api::of(&third));
    let ticker = json!({"name": "ticker", "schedule": {"cron": "* * * * * *", "id": "ticks"},
        "tasks": [{"id": "tick", "protocol": "echo/v1", "method": "echo", "params": {"message": "tick"}}]});
    let added = at_first.post_json("/api/v1/schedules", &first.token, &ticker).await;
    assert_eq!(added.status, 201, "{added:?}");

    // Every host fires every due time; the run's id, claimed in the store,
    // lets one of them start it.
    tokio::time::sleep(Duration::from_secs(20)).await;
    first.child.kill().unwrap();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let removed = at_third.send(at_third.request("DELETE", "/api/v1/schedules/ticks", Some(&third.token))).await;
    assert_eq!(removed.status, 200, "removed from another host than the one it was added on: {removed:?}");

    let due = ticks_run(&at_third, &third.token).await;
    assert!(due.len() >= 50, "a run for (nearly) each of 60 due times: {}", due.len());
    let mut unique = due.clone();
    unique.dedup();
    assert_eq!(unique.len(), due.len(), "no due time ran twice");
    let gaps: Vec<i64> = due.windows(2).map(|w| w[1] - w[0]).filter(|gap| *gap > 1).collect();
    assert!(gaps.iter().all(|gap| *gap <= 3), "it kept firing when a host died: gaps {gaps:?} in {due:?}");
}

/// A schedule's runs never overlap, whichever host drives the last one:
/// a host whose engine does not know the last run asks the store.
#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_s_runs_never_overlap_across_the_hosts() {
    let redis = redis_server();
    let (first, second) = (host(&redis), host(&redis));
    let at_first = Api::of(&first);
    let slow = json!({"name": "slow", "schedule": {"cron": "* * * * * *", "id": "slow"},
        "tasks": [{"id": "wait", "protocol": "echo/v1", "method": "delay", "params": {"seconds": 2.5}}]});
    let added = at_first.post_json("/api/v1/schedules", &first.token, &slow).await;
    assert_eq!(added.status, 201, "{added:?}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let removed = at_first.send(at_first.request("DELETE", "/api/v1/schedules/slow", Some(&first.token))).await;
    assert_eq!(removed.status, 200, "{removed:?}");

    let listed = at_first.get("/api/v1/workflows?name=slow&limit=100", &first.token).await.body;
    let ids: Vec<String> =
        listed["workflows"].as_array().unwrap().iter().map(|w| w["workflow_id"].as_str().unwrap().to_owned()).collect();
    let mut runs = Vec::new();
    for id in &ids {
        let report = at_first.finished(&first.token, id).await;
        let at = |field: &str| report[field].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        runs.push((at("started_at"), at("finished_at")));
    }
    assert!(runs.len() >= 2, "it ran: {runs:?}");
    runs.sort_by_key(|run| run.0);
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "a run started while the last one ran: {runs:#?}");
    }
    drop(second);
}

/// Whether `api`'s host accepts `token` (a listing, 200) or refuses it (401).
async fn accepts(api: &Api, token: &str) -> bool {
    let answer = api.get("/api/v1/workflows", token).await;
    assert!([200, 401].contains(&answer.status), "{answer:?}");
    answer.status == 200
}

async fn until_accepted(api: &Api, token: &str, accepted: bool) {
    let started = std::time::Instant::now();
    while accepts(api, token).await != accepted {
        assert!(
            started.elapsed() < PATIENCE,
            "{} never {}",
            api.url,
            if accepted { "accepted it" } else { "refused it" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_made_or_revoked_for_the_cluster_holds_on_every_host_with_one_quota() {
    let redis = redis_server();
    let quota = |redis: &RedisServer| {
        Daemon::new()
            .args(&["--store", &redis.url, "--cluster", "--lease", LEASE, "--max-workflows-per-token", "2"])
            .args(&["--max-streams-per-token", "2", "--max-schedules-per-token", "2"])
            .start()
    };
    let (first, second) = (quota(&redis), quota(&redis));
    let (at_first, at_second) = (Api::of(&first), Api::of(&second));
    let made = first.cli(&["token", "create", "--name", "alice", "--role", "client", "--store", &redis.url]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let alice = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    until_accepted(&at_first, &alice, true).await;
    until_accepted(&at_second, &alice, true).await;

    // Hers on either host, and no one else's.
    let id = at_first.submit(&alice, &chain(0.1)).await;
    let seen = at_second.get(&format!("/api/v1/workflows/{id}"), &alice).await;
    assert_eq!((seen.status, seen.body["owner"].as_str()), (200, Some("alice")), "{seen:?}");
    // Two running, one on each host: a third is refused on either, and
    // taken once one of them ended.
    assert_eq!(at_second.finished(&alice, &id).await["status"], "completed");
    let running = at_second.submit(&alice, &chain(10.0)).await;
    let _other = at_first.submit(&alice, &chain(10.0)).await;
    let refused = at_first.post_json("/api/v1/workflows", &alice, &chain(0.1)).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(refused.body["message"].as_str().unwrap().contains("has 2 workflows running, its quota"), "{refused:?}");
    let cancelled = at_first.post_json(&format!("/api/v1/workflows/{running}/cancel"), &alice, &json!({})).await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    at_first.submit(&alice, &chain(0.1)).await;

    // Two event streams, one on each host: a third is refused on either,
    // and taken once one of them closed.
    let on_first = open_stream(&at_first, &alice).await.unwrap();
    let _on_second = open_stream(&at_second, &alice).await.unwrap();
    for api in [&at_first, &at_second] {
        let (status, message) = open_stream(api, &alice).await.unwrap_err();
        assert_eq!(status, 429, "{message}");
        assert!(message.contains("has 2 event streams open on the cluster's hosts, its quota"), "{message}");
    }
    drop(on_first);
    until_stream(&at_second, &alice).await;

    // Six schedules added at once, three at each host: two are kept.
    let adds = (0..6).map(|n| {
        let (api, alice) = (if n % 2 == 0 { &at_first } else { &at_second }, &alice);
        let hourly = json!({"name": "hourly", "schedule": {"cron": "0 * * * *", "id": format!("s{n}")},
            "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]});
        async move { api.post_json("/api/v1/schedules", alice, &hourly).await }
    });
    let added = futures_util::future::join_all(adds).await;
    let kept = added.iter().filter(|answer| answer.status == 201).count();
    assert_eq!(kept, 2, "{added:#?}");
    assert!(added.iter().all(|a| a.status == 201 || a.body["message"].as_str().unwrap().contains("its quota")));

    let listed = first.cli(&["token", "list", "--store", &redis.url]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("alice"));
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("sha256"), "hashes are not shown");

    let revoked = first.cli(&["token", "revoke", "alice", "--store", &redis.url]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    until_accepted(&at_second, &alice, false).await;
    until_accepted(&at_first, &alice, false).await;
    let again = first.cli(&["token", "revoke", "alice", "--store", &redis.url]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("the cluster has no token named 'alice'"));

    // What a killed host held is given back once its lease is gone.
    let made = first.cli(&["token", "create", "--name", "bob", "--role", "client", "--store", &redis.url]);
    let bob = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    until_accepted(&at_second, &bob, true).await;
    until_accepted(&at_first, &bob, true).await;
    let _held = [open_stream(&at_second, &bob).await.unwrap(), open_stream(&at_second, &bob).await.unwrap()];
    assert_eq!(open_stream(&at_first, &bob).await.unwrap_err().0, 429);
    let mut second = second;
    second.child.kill().unwrap();
    let _after = [until_stream(&at_first, &bob).await, until_stream(&at_first, &bob).await];
}

/// An event stream of `token`'s workflows, open; or the refusal's status
/// and message.
async fn open_stream(api: &Api, token: &str) -> Result<reqwest::Response, (u16, String)> {
    let response = api.request("GET", "/api/v1/events", Some(token)).send().await.unwrap();
    match response.status().as_u16() {
        200 => Ok(response),
        status => Err((status, response.text().await.unwrap())),
    }
}

/// An event stream of `token`'s, once `api`'s host opens one.
async fn until_stream(api: &Api, token: &str) -> reqwest::Response {
    let started = std::time::Instant::now();
    loop {
        match open_stream(api, token).await {
            Ok(stream) => return stream,
            Err(refused) => assert!(started.elapsed() < PATIENCE, "never opened: {refused:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// docs/cluster.md's session, run as written by `sh` (its Redis, its
/// three hosts) on free ports in a directory of its own.
#[test]
fn the_cluster_docs_session_runs_as_written() {
    use std::os::unix::process::CommandExt as _;
    let text = std::fs::read_to_string(support::root().join("docs/cluster.md")).unwrap();
    let mut session = support::fenced_blocks(&text, "sh").into_iter().find(|b| b.contains("--cluster")).unwrap();
    for port in ["6379", "8001", "8002", "8003"] {
        session = session.replace(port, &free_port().to_string());
    }
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("workflows")).unwrap();
    std::fs::copy(support::root().join("workflows/hello.yaml"), cwd.path().join("workflows/hello.yaml")).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_gleitzeit")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // Its own process group: the hosts and Redis it starts in the
    // background are stopped with it. Its output goes to files, which the
    // background processes hold open after it ends.
    let (out, err) = (cwd.path().join("stdout"), cwd.path().join("stderr"));
    let mut session = Command::new("timeout")
        .args(["120", "sh", "-e", "-c", &session])
        .current_dir(cwd.path())
        .env("PATH", path)
        .env_remove("GLEITZEIT_TOKEN")
        .env_remove("GLEITZEIT_SERVER")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = format!("-{}", session.id());
    let status = session.wait().unwrap();
    let _ = Command::new("kill").args(["-9", "--", &group]).status();
    let (stdout, stderr) = (std::fs::read_to_string(out).unwrap(), std::fs::read_to_string(err).unwrap());
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("workflow 'Hello chain'"), "read at another host: {stdout}");
    let up = stdout.lines().filter(|l| l.contains(" up ") && l.contains("http://127.0.0.1:")).count();
    assert_eq!(up, 3, "three hosts listed up: {stdout}");
}

/// Start `gleitzeit serve` with `args`, which must refuse to start; its
/// error output.
fn refused(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn stores_a_cluster_cannot_share_are_refused_with_the_reason() {
    let error = refused(&["--cluster"]);
    assert!(error.contains("--cluster needs a store the hosts share: --store redis://"), "{error}");
    let error = refused(&["--lease", "3s"]);
    assert!(error.contains("--lease is for hosts started with --cluster"), "{error}");

    let redis = redis_server();
    let error = refused(&["--store", &redis.url, "--cluster", "--lease", "100ms"]);
    assert!(error.contains("the lease must be from 1s to 1m"), "{error}");
    {
        let _single = Daemon::new().args(&["--store", &redis.url]).start();
        let error = refused(&["--store", &redis.url, "--cluster"]);
        assert!(error.contains("a single gleitzeit host") && error.contains("without --cluster"), "{error}");
    }
    let mut c = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    redis::Commands::del::<_, ()>(&mut c, "gleitzeit:host").unwrap();
    {
        let _member = host(&redis);
        let error = refused(&["--store", &redis.url]);
        assert!(error.contains("hosts started with --cluster use it"), "{error}");
    }
    redis::Commands::set::<_, _, ()>(&mut c, "gleitzeit:cluster", "99").unwrap();
    let error = refused(&["--store", &redis.url, "--cluster"]);
    assert!(error.contains("a cluster of layout version 99 uses it; this host speaks version 1"), "{error}");
}
