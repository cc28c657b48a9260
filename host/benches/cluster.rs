//! Cluster benchmark (docs/cluster.md); prints tables of medians.
//!
//! Real `gleitzeit serve` processes (the release binary) on one real
//! `redis-server`, remote providers written in Rust with `gleitzeit::client`
//! in this process, a submitter over Socket.IO:
//! 1. 10,000 echo tasks through remote providers: one host on the Redis
//!    store without `--cluster` (the baseline), then three hosts with
//!    `--cluster`, the workflow submitted where no provider of its protocol
//!    is (every task offered to the other two hosts);
//! 2. a chain of dependent tasks: the time from a task's start to its end
//!    as its workflow's host sees it (p50, p99), on one host and across
//!    hosts: the extra latency of a hop;
//! 3. Redis commands per task, from `INFO commandstats`, for both;
//! 4. failover: SIGKILL the host driving a chain of short tasks and time
//!    until the first task completed by the host that took it over (as a
//!    client of a third host sees it), with the default lease of 3 s.
//!
//! Run: `cargo bench -p gleitzeit --bench cluster` (`-- --quick` for 3
//! rounds and 3 kills; `-- --throughput` for the first table alone).
//! Needs `redis-server` on PATH.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

mod support;

use gleitzeit::client::Client;
use gleitzeit::report::RunReport;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TASKS: usize = 10_000;
const CHAIN: usize = 300;
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Only the tasks/s table (while working on the cluster path's cost).
    let throughput_only = std::env::args().any(|a| a == "--throughput");
    let (rounds, kills) = if quick { (3, 3) } else { (9, 7) };
    let redis = Redis::start();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        println!("gleitzeit cluster benchmark: {TASKS} remote echo tasks per round, medians of {rounds} rounds");
        println!();
        // Both paths run side by side, on two databases of one Redis, and
        // their rounds alternate: each cluster round has a baseline round
        // next to it, under the same load of the shared machine.
        let single = Host::start(&format!("{}/1", redis.url), false);
        let _single_provider = provider(&single, "single-provider");
        wait_for_protocol(&single).await;
        let cluster = [Host::start(&redis.url, true), Host::start(&redis.url, true), Host::start(&redis.url, true)];
        let _providers = [provider(&cluster[1], "second"), provider(&cluster[2], "third")];
        wait_for_protocol(&cluster[0]).await;
        let mut paths = [
            Path::new(&single, vec![&single], &redis).await,
            Path::new(&cluster[0], cluster.iter().collect(), &redis).await,
        ];
        let (mut single_rounds, mut cluster_rounds) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            single_rounds.push(paths[0].round(&redis).await);
            cluster_rounds.push(paths[1].round(&redis).await);
        }
        let ratio = |of: fn(&Sample) -> Duration| {
            let ratios: Vec<f64> = (single_rounds.iter().zip(&cluster_rounds))
                .map(|(single, cluster)| of(cluster).as_secs_f64() / of(single).as_secs_f64())
                .collect();
            median(&ratios)
        };
        let (wall_ratio, cpu_ratio) = (ratio(|s| s.wall), ratio(|s| s.cpu));
        let (single_cost, cluster_cost) = (Cost::of(&single_rounds), Cost::of(&cluster_rounds));
        let single_hops = if throughput_only { (0.0, 0.0) } else { hops(&single, rounds).await };
        drop(single);

        println!(
            "| path | median wall | tasks/s | Redis commands per task | CPU per task (hosts + Redis) | the submitting host's | Redis's |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let row = |name: &str, cost: &Cost| {
            println!(
                "| {name} | {:.1} ms | {:.0} | {:.1} | {:.1} µs | {:.1} µs | {:.1} µs |",
                cost.wall.as_secs_f64() * 1000.0,
                TASKS as f64 / cost.wall.as_secs_f64(),
                cost.commands,
                cost.cpu.as_secs_f64() * 1e6,
                cost.front_cpu.as_secs_f64() * 1e6,
                cost.redis_cpu.as_secs_f64() * 1e6
            );
        };
        row("one host, Redis store, one remote provider (baseline)", &single_cost);
        row("three hosts (--cluster), providers on the other two", &cluster_cost);
        println!(
            "|  cluster / one host, median of the rounds' ratios: wall {wall_ratio:.2}x, CPU per task {cpu_ratio:.2}x | | | | | | |"
        );
        if throughput_only {
            if std::env::var_os("COMMANDSTATS").is_some() {
                redis.print_commandstats();
            }
            return;
        }
        println!();
        println!("A chain of {CHAIN} dependent tasks: each task's call as its workflow's host times it");
        println!();
        let cluster_hops = hops(&cluster[0], rounds).await;
        println!("| path | p50 | p99 |");
        println!("|---|---:|---:|");
        println!("| one host | {:.2} ms | {:.2} ms |", single_hops.0, single_hops.1);
        println!("| across hosts | {:.2} ms | {:.2} ms |", cluster_hops.0, cluster_hops.1);
        println!(
            "|  extra per hop | {:.2} ms | {:.2} ms |",
            cluster_hops.0 - single_hops.0,
            cluster_hops.1 - single_hops.1
        );
        drop(cluster);

        let failovers = failover(&redis.url, kills).await;
        println!();
        println!(
            "Failover, lease 3 s: SIGKILL of the driving host to the first task completed by the host that took over"
        );
        println!();
        let mut sorted = failovers.clone();
        sorted.sort();
        println!(
            "| kills | p50 | min | max |\n|---:|---:|---:|---:|\n| {} | {:.2} s | {:.2} s | {:.2} s |",
            sorted.len(),
            median(&sorted).as_secs_f64(),
            sorted[0].as_secs_f64(),
            sorted[sorted.len() - 1].as_secs_f64()
        );
    });
}

/// What one round of a path cost: its wall time, and per task the Redis
/// commands and the CPU time of the hosts and Redis, of Redis alone and of
/// the submitting host.
struct Sample {
    wall: Duration,
    commands: f64,
    cpu: Duration,
    redis_cpu: Duration,
    front_cpu: Duration,
}

/// What a path costs: the medians of its rounds.
struct Cost {
    wall: Duration,
    commands: f64,
    cpu: Duration,
    redis_cpu: Duration,
    /// The submitting host's share.
    front_cpu: Duration,
}

impl Cost {
    fn of(rounds: &[Sample]) -> Self {
        let median_of = |of: fn(&Sample) -> Duration| median(&rounds.iter().map(of).collect::<Vec<_>>());
        Self {
            wall: median_of(|s| s.wall),
            commands: median(&rounds.iter().map(|s| s.commands).collect::<Vec<_>>()),
            cpu: median_of(|s| s.cpu),
            redis_cpu: median_of(|s| s.redis_cpu),
            front_cpu: median_of(|s| s.front_cpu),
        }
    }
}

/// Fan-outs submitted at `front`, whose CPU time counts with `hosts'` and
/// Redis's.
struct Path {
    client: Client,
    front: u32,
    pids: Vec<u32>,
}

impl Path {
    /// A path, warmed up.
    async fn new(front: &Host, hosts: Vec<&Host>, redis: &Redis) -> Self {
        let mut client = front.client().await;
        run(&mut client, &fan_out(100)).await;
        let pids = hosts.iter().map(|h| h.child.id()).chain([redis.child.id()]).collect();
        Self { client, front: front.child.id(), pids }
    }

    async fn round(&mut self, redis: &Redis) -> Sample {
        let per_task = |spent: Duration| spent / TASKS as u32;
        let (commands, cpu, redis_cpu) = (redis.commands(), cpu_time(&self.pids), cpu_time(&[redis.child.id()]));
        let front_cpu = cpu_time(&[self.front]);
        let wall = run(&mut self.client, &fan_out(TASKS)).await.0;
        Sample {
            wall,
            commands: (redis.commands() - commands) as f64 / TASKS as f64,
            cpu: per_task(cpu_time(&self.pids) - cpu),
            redis_cpu: per_task(cpu_time(&[redis.child.id()]) - redis_cpu),
            front_cpu: per_task(cpu_time(&[self.front]) - front_cpu),
        }
    }
}

/// The CPU time (user and system) the processes `pids` have used so far.
fn cpu_time(pids: &[u32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command's name, which may hold spaces: fields 14 and 15.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    // Linux counts in USER_HZ, 100 a second.
    Duration::from_millis(ticks * 10)
}

/// The p50 and p99 (ms) of the calls of a chain of dependent tasks.
async fn hops(host: &Host, rounds: usize) -> (f64, f64) {
    let mut client = host.client().await;
    let mut calls = Vec::new();
    for _ in 0..rounds.min(3) {
        let (_, report) = run(&mut client, &chain(CHAIN)).await;
        calls.extend(report.tasks.iter().filter_map(|t| t.duration_ms));
    }
    calls.sort_by(f64::total_cmp);
    (calls[calls.len() / 2], calls[calls.len() * 99 / 100])
}

/// `kills` times: three hosts, a chain submitted at the first, the first
/// killed once the chain runs; how long until a client of the third sees
/// a task completed by the one that took it over.
async fn failover(url: &str, kills: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    let hosts = [Host::start(url, true), Host::start(url, true)];
    for _ in 0..kills {
        let mut victim = Host::start(url, true);
        let mut submitter = victim.client().await;
        let mut watcher = hosts[1].client().await;
        let workflow = json!({"name": "failover", "tasks": (0..2000).map(|i| {
            let deps: Vec<String> = if i == 0 { vec![] } else { vec![format!("t{}", i - 1)] };
            json!({"id": format!("t{i}"), "protocol": "echo/v1", "method": "delay", "params": {"seconds": 0.01}, "dependencies": deps})
        }).collect::<Vec<_>>()});
        let reply = submitter.call("submit_workflow", &json!({ "workflow": workflow }), TIMEOUT).await.unwrap();
        let id = reply["workflow_id"].as_str().unwrap().to_owned();
        watcher.call("subscribe", &json!({ "workflow_id": id }), TIMEOUT).await.unwrap();
        // Running: some tasks done.
        loop {
            let event = submitter.next_event().await.unwrap();
            if event.name == "task_result" && event.data["task_id"] == "t20" {
                break;
            }
        }
        victim.kill();
        let killed = Instant::now();
        // Events the victim sent before it died may still arrive: the first
        // result after the kill that is not of a task it had finished.
        let mut seen = std::collections::HashSet::new();
        loop {
            let event = watcher.next_event().await.unwrap();
            if event.name != "task_result" {
                continue;
            }
            let task = event.data["task_id"].as_str().unwrap_or_default().to_owned();
            let index: usize = task.trim_start_matches('t').parse().unwrap_or(0);
            if index > 21 && killed.elapsed() > Duration::from_millis(500) && seen.insert(task) {
                times.push(killed.elapsed());
                break;
            }
        }
        let cancel = json!({ "workflow_id": id });
        let _ = watcher.call("cancel_workflow", &cancel, TIMEOUT).await;
    }
    drop(hosts);
    times
}

fn fan_out(n: usize) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "protocol": "bench/v1", "method": "echo", "params": {"message": i}}))
        .collect();
    json!({"name": "bench", "tasks": tasks})
}

fn chain(n: usize) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i == 0 { vec![] } else { vec![format!("t{}", i - 1)] };
            json!({"id": format!("t{i}"), "protocol": "bench/v1", "method": "echo", "params": {"message": i}, "dependencies": deps})
        })
        .collect();
    json!({"name": "chain", "tasks": tasks})
}

/// Submit and wait for `workflow_completed`; the wall time and the report.
async fn run(client: &mut Client, workflow: &Value) -> (Duration, RunReport) {
    let (wall, report) = support::submit_and_wait(client, workflow, TIMEOUT).await;
    assert_eq!(report.summary.completed, report.summary.total, "{:?}", report.summary);
    (wall, report)
}

/// A remote provider of bench/v1 that echoes, connected to `host`.
fn provider(host: &Host, id: &str) -> tokio::task::JoinHandle<()> {
    let (url, token, id) = (host.url.clone(), host.token.clone(), id.to_owned());
    tokio::spawn(async move {
        let mut client = Client::connect(&url, Some(&token)).await.unwrap();
        let registration = json!({
            "provider_id": id, "protocol_id": "bench/v1", "supported_methods": ["echo"], "max_concurrent": 256,
        });
        client.call("register_provider", &registration, TIMEOUT).await.unwrap();
        while let Some(event) = client.next_event().await {
            if let (true, Some(ack)) = (event.name == "execute_method", event.ack) {
                let _ = client.ack(ack, &json!({ "result": { "echoed": event.data["params"]["message"] } }));
            }
        }
    })
}

async fn wait_for_protocol(host: &Host) {
    let client = host.client().await;
    for _ in 0..200 {
        let reply = client.call("list_protocols", &json!({}), TIMEOUT).await.unwrap();
        if reply["protocols"].as_array().unwrap().iter().any(|p| p["protocol_id"] == "bench/v1") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bench/v1 never offered");
}

fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted[sorted.len() / 2]
}

/// A `gleitzeit serve` process, killed when dropped.
struct Host {
    child: Child,
    url: String,
    token: String,
    _data: tempfile::TempDir,
}

impl Host {
    fn start(store: &str, cluster: bool) -> Self {
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
        command.args(["serve", "--store", store, "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]);
        command.arg(data.path()).env("GLEITZEIT_LOG", "error").stdout(Stdio::null()).stderr(Stdio::null());
        if cluster {
            command.arg("--cluster");
        }
        let child = command.spawn().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "a host did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let token = gleitzeit::auth::read_local_token(data.path()).unwrap().unwrap();
        Self { child, url: format!("http://127.0.0.1:{port}"), token, _data: data }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.url, Some(&self.token)).await.unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` on a free port, without persistence.
struct Redis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--dir", dir.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, url: format!("redis://127.0.0.1:{port}"), _dir: dir }
    }

    /// Commands Redis has run so far (`INFO commandstats`).
    fn print_commandstats(&self) {
        let mut c = redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap();
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap();
        println!("{info}");
    }

    fn commands(&self) -> u64 {
        let mut c = redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap();
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap();
        info.lines().filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok()).sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
