//! A real `gleitzeit serve` driven by real Socket.IO clients (python-socketio,
//! installed by `.ci/run`): remote providers, submitters, the original
//! system's payloads, bad payloads.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::process::Proc;
use support::root;

/// Start `command` and wait for a stdout line containing `marker`.
fn spawn_until(command: Command, marker: &str) -> (Proc, String) {
    let proc = Proc::spawn(command);
    let line = proc.wait_for(marker);
    (proc, line)
}

/// A daemon on a data directory of its own (`data_dir`: the default
/// SQLite store, the local token).
type Daemon = support::Served;

fn daemon() -> Daemon {
    daemon_with(&[])
}

fn daemon_with(args: &[&str]) -> Daemon {
    support::serve(args)
}

fn python(daemon: &Daemon, script: &str) -> Command {
    let mut command = Command::new("python3");
    command.arg(root().join(script)).env("GLEITZEIT_SERVER", &daemon.url).env("GLEITZEIT_TOKEN", &daemon.token);
    command
}

fn node(daemon: &Daemon, script: &str) -> Command {
    let mut command = Command::new("node");
    command.arg(root().join(script)).env("GLEITZEIT_SERVER", &daemon.url).env("GLEITZEIT_TOKEN", &daemon.token);
    command
}

fn finished(mut command: Command) -> Output {
    let out = command.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed:\n{stdout}\n{stderr}");
    out
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap()
}

/// The example provider and submitter of `lang` (`python` or `js`), the
/// provider answering through acks, or (REPLY_BY_EVENT=1) with an empty ack
/// (python-socketio sends one when the handler returns nothing) and then a
/// `method_result` event: the documented "empty ack, then `method_result`".
fn examples_mix_with_the_wasm_echo(lang: &str, run: fn(&Daemon, &str) -> Command, shouted: &str) {
    let (dir, provider, ext) = match lang {
        "python" => ("docs/examples/python", "socketio_provider", "py"),
        _ => ("docs/examples/js", "provider", "mjs"),
    };
    for by_event in ["0", "1"] {
        let daemon = daemon();
        let mut provider = run(&daemon, &format!("{dir}/{provider}.{ext}"));
        provider.env("REPLY_BY_EVENT", by_event);
        let (_provider, _) = spawn_until(provider, "registered");
        let out = finished(run(&daemon, &format!("{dir}/submit.{ext}")));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(report["status"], "completed", "{lang}, by event: {by_event}: {report}");
        assert_eq!(task(&report, "shout")["result"]["text"], shouted);
        assert_eq!(task(&report, "report")["result"]["echoed"], format!("{shouted} has 3 words"));
        assert_eq!(task(&report, "measure")["result"]["words"], 3);
        assert_eq!(task(&report, "report")["result"]["provider_id"], "echo-wasm");
        assert!(stdout.contains("task measure completed"), "task_result events reach the submitter");
    }
}

#[test]
fn a_python_provider_and_submitter_mix_with_the_wasm_echo() {
    examples_mix_with_the_wasm_echo("python", python, "HELLO FROM PYTHON");
}

#[test]
fn a_js_provider_and_submitter_mix_with_the_wasm_echo() {
    examples_mix_with_the_wasm_echo("js", node, "HELLO FROM JAVASCRIPT");
}

/// The original's clients show no token: they work with `auth = "off"`,
/// the explicit choice for them, and are refused by default.
#[test]
fn the_original_systems_payloads_work_unchanged_with_auth_off() {
    let daemon = daemon_with(&["--auth", "off"]);
    let out = finished(python(&daemon, "tests/python/original_payloads.py"));
    assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"));

    let daemon = self::daemon();
    let refused = python(&daemon, "tests/python/original_payloads.py").output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("failed to connect"), "{stderr}");
    // The daemon says why, and to whom.
    let logged = daemon.log_line("refused: no token");
    assert!(logged.contains("peer=127.0.0.1:"), "{logged}");
}

/// `gleitzeit token create` while the daemon runs; each role against every
/// event with python-socketio (see the script for the cases).
#[test]
fn each_role_may_do_only_what_its_token_allows() {
    let daemon = daemon();
    let create = |name: &str, extra: &[&str]| {
        let out = finished({
            let mut command = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
            command.args(["token", "create", "--name", name]).args(extra).env("GLEITZEIT_DATA_DIR", &daemon.data_dir);
            command
        });
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let mut script = python(&daemon, "tests/python/auth_roles.py");
    script
        .env("ADMIN", &daemon.token)
        .env("ALICE", create("alice", &["--role", "client"]))
        .env("BOB", create("bob", &["--role", "client"]))
        .env("WORKER", create("worker", &["--role", "provider", "--protocol", "text/v1"]))
        .env("WORKER2", create("worker2", &["--role", "provider", "--protocol", "text/v1"]))
        .env("GLEITZEIT_BIN", env!("CARGO_BIN_EXE_gleitzeit"))
        .env("GLEITZEIT_DATA_DIR", &daemon.data_dir);
    let out = finished(script);
    assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"));
    let tokens = std::fs::read_to_string(daemon.data_dir.join("tokens.toml")).unwrap();
    assert!(tokens.contains("worker") && !tokens.contains("gzt_"), "hashes only: {tokens}");
}

/// Clients that show no token are told so: socket.io-client (the example
/// submitter) and the CLI, with where the token is looked for.
#[test]
fn clients_without_a_token_are_refused_with_the_reason() {
    let daemon = daemon();
    let nowhere = tempfile::tempdir().unwrap();
    let mut js = node(&daemon, "docs/examples/js/submit.mjs");
    js.env_remove("GLEITZEIT_TOKEN").env("XDG_DATA_HOME", nowhere.path());
    let out = js.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cannot connect: no token"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["workflow", "list"])
        .env("GLEITZEIT_SERVER", &daemon.url)
        .env_remove("GLEITZEIT_TOKEN")
        .env("GLEITZEIT_DATA_DIR", nowhere.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no token") && stderr.contains("GLEITZEIT_TOKEN"), "{stderr}");
}

/// The `sh` block of `doc` that contains `marker`, run as written by `sh`
/// against `daemon` in a directory holding the example `workflow` (the CLI
/// on PATH, the daemon's data directory as the default): the block, and
/// what it printed.
fn doc_session(daemon: &Daemon, doc: &str, marker: &str, workflow: &str) -> (String, std::process::Output) {
    let text = std::fs::read_to_string(root().join(doc)).unwrap();
    let session = support::fenced_blocks(&text, "sh").into_iter().find(|b| b.contains(marker)).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("workflows")).unwrap();
    std::fs::copy(root().join(workflow), cwd.path().join(workflow)).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_gleitzeit")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut sh = Command::new("sh");
    sh.args(["-e", "-c", &session]).current_dir(cwd.path()).env("PATH", path);
    sh.env("GLEITZEIT_SERVER", &daemon.url).env("GLEITZEIT_DATA_DIR", &daemon.data_dir).env_remove("GLEITZEIT_TOKEN");
    (session, finished(sh))
}

/// docs/security.md's token session, run as written by `sh` against a real
/// daemon (the CLI on PATH, the daemon's data directory as the default).
#[test]
fn the_security_docs_token_session_runs_as_written() {
    let daemon = daemon();
    let (_, out) = doc_session(&daemon, "docs/security.md", "token create", "workflows/hello.yaml");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("workflow 'Hello chain'") && stdout.contains("completed in"), "{stdout}");
    assert!(stdout.contains("text-worker") && stdout.contains("provider") && stdout.contains("text/v1"), "{stdout}");
    let left = std::fs::read_to_string(daemon.data_dir.join("tokens.toml")).unwrap();
    assert!(!left.contains("alice") && left.contains("text-worker"), "alice is revoked: {left}");
}

/// docs/workflows.md's schedule session, run as written by `sh` against
/// a real daemon: the file's schedule is kept, a second one from options,
/// both listed, one removed.
#[test]
fn the_workflow_docs_schedule_session_runs_as_written() {
    let daemon = daemon();
    let (session, out) = doc_session(&daemon, "docs/workflows.md", "schedule add", "workflows/scheduled.yaml");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let shown = session.lines().find_map(|l| l.strip_prefix("# schedule morning-briefing: ")).unwrap();
    let said = stdout.lines().find_map(|l| l.strip_prefix("schedule morning-briefing: ")).unwrap();
    let upto_date = |line: &str| line.split("next run ").next().unwrap().to_owned();
    assert_eq!(upto_date(said), upto_date(shown), "{stdout}");
    assert!(said.ends_with(":00+01:00") || said.ends_with(":00+02:00"), "the next 07:00 in Berlin: {said}");
    let listed: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("hourly ") || l.starts_with("morning-briefing ")).collect();
    assert_eq!(listed.len(), 2, "both listed: {stdout}");
    assert!(
        listed[0].contains("0 * * * *") && listed[0].contains("Europe/Berlin"),
        "the file's zone, its own pattern: {stdout}"
    );
    assert!(stdout.trim_end().ends_with("removed schedule hourly"), "{stdout}");
}

/// docs/security.md's `[auth]` example, as written, in a real daemon.
#[test]
fn the_security_docs_settings_example_works_as_written() {
    let doc = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let example = support::fenced_blocks(&doc, "toml").into_iter().find(|b| b.contains("[auth]")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gleitzeit.toml");
    std::fs::write(&config, example).unwrap();
    let daemon = daemon_with(&["--config", config.to_str().unwrap()]);
    let out = finished(python(&daemon, "tests/python/security_doc.py"));
    assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"));
}

/// Authentication off is for loopback only; tokens may listen anywhere.
#[test]
fn authentication_off_is_refused_beyond_loopback() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["serve", "--listen", "0.0.0.0:0", "--auth", "off", "--store", "memory"])
        .args(["--data-dir", data.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 with authentication off"), "{stderr}");
    assert!(stderr.contains("[auth] mode (--auth, GLEITZEIT_AUTH)"), "{stderr}");
}

/// Run a Python check script against a fresh daemon; it prints "ok" last.
fn passes_against_a_daemon(script: &str) {
    let daemon = daemon();
    let out = finished(python(&daemon, script));
    assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"), "{script} did not pass");
}

/// `workflow_started` to the submitter, provider changes to their
/// subscribers, nothing to a bystander; method names checked like ids.
#[test]
fn events_reach_only_those_who_asked() {
    passes_against_a_daemon("tests/python/event_scope.py");
}

/// 20 MiB requests arrive on both transports, 70 MiB ones get an error
/// naming the 64 MiB limit, and a remote result above 16 MiB fails its task
/// with -32007 as a WASM plugin's would.
#[test]
fn size_limits_agree_across_transports_and_providers() {
    passes_against_a_daemon("tests/python/limits.py");
}

/// Escaped (non-ASCII) keys in a request and in a provider's ack.
#[test]
fn escaped_keys_arrive_in_requests_and_acks() {
    passes_against_a_daemon("tests/python/escaped_keys.py");
}

#[test]
fn bad_payloads_get_errors_and_the_server_keeps_serving() {
    passes_against_a_daemon("tests/python/bad_payloads.py");
}

/// Submit workflows (JSON) with tests/python/submit_file.py; returns their reports.
fn submit(daemon: &Daemon, workflows: &Value, cancel: Option<&str>) -> std::thread::JoinHandle<Vec<Value>> {
    let mut command = python(daemon, "tests/python/submit_file.py");
    command.args(cancel).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, workflows.to_string().as_bytes()).unwrap();
    drop(stdin);
    std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "submitter failed: {}", String::from_utf8_lossy(&out.stdout));
        serde_json::from_slice(&out.stdout).unwrap()
    })
}

fn work_provider(daemon: &Daemon, id: &str) -> Proc {
    let mut command = python(daemon, "tests/python/work_provider.py");
    command.env("PROVIDER_ID", id);
    spawn_until(command, "registered").0
}

fn jobs(name: &str, n: usize, priority: &str) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"id": format!("{name}-{i}"), "protocol": "work/v1", "method": "job", "priority": priority, "params": {"n": i}}))
        .collect();
    serde_json::json!({"name": name, "id": name, "tasks": tasks})
}

#[test]
fn two_providers_share_a_fan_out_and_one_dies_mid_run() {
    let daemon = daemon();
    let first = work_provider(&daemon, "worker-a");
    let _second = work_provider(&daemon, "worker-b");
    let submitted = submit(&daemon, &jobs("fan", 1000, "normal"), None);
    first.wait_for("executed 100");
    first.kill();
    let reports = submitted.join().unwrap();
    let report = &reports[0];
    assert_eq!(report["status"], "completed", "{}", report["summary"]);
    assert_eq!(report["summary"]["completed"], 1000);
    let tasks = report["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["attempts"] == 1), "lost calls do not count as attempts");
    let by = |p: &str| tasks.iter().filter(|t| t["result"]["provider"] == p).count();
    // worker-a ran 100 jobs before it died; the answers still on the wire
    // were lost and those tasks ran again on worker-b.
    assert!(by("worker-a") > 50 && by("worker-b") > 0, "a: {}, b: {}", by("worker-a"), by("worker-b"));
    assert_eq!(by("worker-a") + by("worker-b"), 1000, "each task has exactly one result");
}

#[test]
fn priorities_hold_across_workflows_submitted_together() {
    let daemon = daemon();
    let mut command = python(&daemon, "tests/python/work_provider.py");
    command.env("PROVIDER_ID", "serial").env("MAX_CONCURRENT", "1");
    let (_provider, _) = spawn_until(command, "registered");
    let both = serde_json::json!([jobs("background", 20, "low"), jobs("interactive", 6, "urgent")]);
    let reports = submit(&daemon, &both, None).join().unwrap();
    let mut started: Vec<(String, String)> = reports
        .iter()
        .flat_map(|r| r["tasks"].as_array().unwrap().clone())
        .map(|t| (t["started_at"].as_str().unwrap().to_owned(), t["id"].as_str().unwrap().to_owned()))
        .collect();
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, id)| id.split('-').next().unwrap()).collect();
    // Low tasks may start while the urgent workflow is being submitted; once
    // it is in, every urgent task goes before the low ones left.
    let first_urgent = order.iter().position(|w| *w == "interactive").unwrap();
    assert!(order[first_urgent..first_urgent + 6].iter().all(|w| *w == "interactive"), "{order:?}");
    assert!(order.len() > first_urgent + 6, "some low tasks waited: {order:?}");
}

#[test]
fn a_workflow_can_be_cancelled_while_it_runs() {
    let daemon = daemon();
    let (_provider, _) = spawn_until(
        {
            let mut c = python(&daemon, "tests/python/work_provider.py");
            c.env("PROVIDER_ID", "w").env("MAX_CONCURRENT", "1");
            c
        },
        "registered",
    );
    let reports = submit(&daemon, &jobs("doomed", 50, "normal"), Some("doomed")).join().unwrap();
    let report = &reports[0];
    assert_eq!(report["status"], "cancelled");
    let cancelled = report["summary"]["cancelled"].as_u64().unwrap();
    assert!(cancelled >= 40, "{}", report["summary"]);
    assert_eq!(report["summary"]["completed"].as_u64().unwrap() + cancelled, 50);
}

fn cli(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(args)
        .current_dir(root())
        .env("GLEITZEIT_SERVER", &daemon.url)
        // No token given: the CLI finds the local one in the data directory.
        .env_remove("GLEITZEIT_TOKEN")
        .env("GLEITZEIT_DATA_DIR", &daemon.data_dir)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_cli_submits_waits_lists_and_cancels() {
    let daemon = daemon();
    let out = cli(&daemon, &["workflow", "submit", "workflows/hello.yaml", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("3 completed, 0 failed"), "{}", stdout(&out));

    let out = cli(&daemon, &["workflow", "submit", "workflows/failure.yaml", "--wait", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "a failed workflow exits 1");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task(&report, "report")["status"], "skipped");

    let out = cli(
        &daemon,
        &[
            "task",
            "submit",
            "--protocol",
            "echo/v1",
            "--method",
            "ping",
            "--params",
            r#"{"message": "hi"}"#,
            "--wait",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tasks"][0]["result"]["response"], "hi");

    let slow = root().join("target/slow-workflow.yaml");
    std::fs::write(
        &slow,
        "name: slow\nid: slow-one\ntasks:\n  - {id: wait, protocol: echo/v1, method: delay, params: {seconds: 10}}\n",
    )
    .unwrap();
    let out = cli(&daemon, &["workflow", "submit", slow.to_str().unwrap()]);
    assert!(stdout(&out).contains("submitted workflow slow-one (1 tasks)"), "{}", stdout(&out));
    let out = cli(&daemon, &["workflow", "cancel", "slow-one"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&daemon, &["workflow", "status", "slow-one", "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "cancelled");

    let out = cli(&daemon, &["workflow", "list", "--output", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    let out = cli(&daemon, &["workflow", "list"]);
    assert!(stdout(&out).lines().next().unwrap().starts_with("workflow_id"), "{}", stdout(&out));

    for (what, expected) in [("provider", "wasm:echo"), ("protocol", "echo/v1"), ("plugin", "bundled")] {
        let out = cli(&daemon, &[what, "list"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains(expected), "{what}: {}", stdout(&out));
    }

    let out = cli(&daemon, &["workflow", "submit", "tests/fixtures/invalid/unknown-protocol.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no provider serves protocol 'vision/v1'"));
    let out = cli(&daemon, &["workflow", "status", "no-such-workflow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no workflow 'no-such-workflow'"));
}

#[test]
fn the_cli_reports_an_unreachable_host() {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["workflow", "list", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to http://127.0.0.1:9"));
}

#[test]
fn the_protocol_doc_shows_exactly_the_tested_examples() {
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    let files = [
        ("python", "docs/examples/python/socketio_provider.py"),
        ("python", "docs/examples/python/submit.py"),
        ("javascript", "docs/examples/js/provider.mjs"),
        ("javascript", "docs/examples/js/submit.mjs"),
    ];
    let mut python = support::fenced_blocks(&doc, "python").into_iter();
    let mut javascript = support::fenced_blocks(&doc, "javascript").into_iter();
    for (lang, file) in files {
        let shown = if lang == "python" { python.next() } else { javascript.next() };
        let code = std::fs::read_to_string(root().join(file)).unwrap();
        assert_eq!(shown.as_deref(), Some(code.as_str()), "docs/protocol.md must show {file} as it is");
    }
}

#[test]
fn a_provider_that_stops_answering_is_dropped_and_its_tasks_finish_elsewhere() {
    let daemon = daemon();
    let mut hung = python(&daemon, "tests/python/work_provider.py");
    hung.env("PROVIDER_ID", "hung").env("HANG", "1").env("MAX_CONCURRENT", "4");
    let (_hung, _) = spawn_until(hung, "registered");
    let mut good = python(&daemon, "tests/python/work_provider.py");
    good.env("PROVIDER_ID", "good").env("MAX_CONCURRENT", "4");
    let (_good, _) = spawn_until(good, "registered");
    let mut workflow = jobs("survive", 30, "normal");
    for task in workflow["tasks"].as_array_mut().unwrap() {
        task["timeout"] = serde_json::json!(0.5);
        task["retry"] = serde_json::json!({"max_attempts": 5, "base_delay": 0.01, "backoff": "fixed"});
    }
    let report = &submit(&daemon, &workflow, None).join().unwrap()[0];
    assert_eq!(report["status"], "completed", "{}", report["summary"]);
    let tasks = report["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["result"]["provider"] == "good"));
    let out = cli(&daemon, &["provider", "list", "--output", "json"]);
    let providers: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = providers.as_array().unwrap().iter().map(|p| p["provider_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["wasm:echo", "wasm:ollama", "wasm:mcp", "wasm:python", "good"],
        "the hung provider was disconnected"
    );
}

#[test]
fn serve_reads_its_config_file_and_rejects_mistakes() {
    let dir = std::env::temp_dir().join(format!("gleitzeit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("gleitzeit.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:0\"\nconcurrency = 4\ngrace = 2\nstore = \"memory\"\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
    command.args(["serve", "--config", good.to_str().unwrap()]).current_dir(root()).env("XDG_DATA_HOME", &dir);
    let (_daemon, line) = spawn_until(command, "listening on");
    assert!(line.contains("http://127.0.0.1:"), "{line}");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nconcurrancy = 4\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid config file") && stderr.contains("concurrancy"), "{stderr}");
}

/// Settings that feed time arithmetic are refused outside their documented
/// ranges, naming the setting, instead of overflowing a sum later.
#[test]
fn out_of_range_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gleitzeit.toml");
    std::fs::write(&config, "default_timeout = 1e18\n").unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["--max-schedules-per-token", "951"], "max_schedules_per_token must be from 1 to 950, got 951"),
        (&["--grace", "1e18"], "--grace must be more than 0 and at most 86400 seconds, got 1000000000000000000"),
        (&["--grace", "0"], "--grace must be more than 0"),
        (&["--grace", "NaN"], "--grace must be more than 0"),
        (&["--concurrency", "0"], "concurrency must be from 1 to 100000, got 0"),
        (&["--retention", "1000000years"], "retention must be at most 100 years"),
        (&["--config", config.to_str().unwrap()], "default_timeout must be more than 0 and at most 604800 seconds"),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
            .args(args)
            .env("XDG_DATA_HOME", dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn sigterm_lets_running_work_finish_then_exits() {
    let daemon = daemon();
    let slow = serde_json::json!({"name": "slow", "id": "slow", "tasks": [
        {"id": "wait", "protocol": "echo/v1", "method": "delay", "params": {"seconds": 1}}]});
    let submitted = submit(&daemon, &slow, None);
    let status = || cli(&daemon, &["workflow", "status", "slow"]).status.code();
    support::until("the workflow to be accepted", support::PATIENCE, status, |code| *code == Some(0));
    let pid = daemon.pid().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let reports = submitted.join().unwrap();
    assert_eq!(reports[0]["status"], "completed", "the running workflow finished during the grace period");
    let out = cli(&daemon, &["workflow", "list"]);
    assert_eq!(out.status.code(), Some(2), "the daemon is gone after the grace period");
}

#[test]
fn task_progress_reaches_the_submitter() {
    let daemon = daemon();
    let mut provider = python(&daemon, "tests/python/work_provider.py");
    provider.env("PROVIDER_ID", "chatty").env("PROGRESS", "1");
    let (_provider, _) = spawn_until(provider, "registered");
    let report = &submit(&daemon, &jobs("talk", 5, "normal"), None).join().unwrap()[0];
    assert_eq!(report["status"], "completed");
    let events = report["progress_events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(
        events.iter().any(|e| e["task_id"] == "talk-3" && e["chunk"] == serde_json::json!({"step": "started", "n": 3}))
    );
}

/// Our own Socket.IO client as a provider: it must answer the acks the host
/// asks for, with ids that never collide under load.
#[test]
fn a_provider_on_the_rust_client_answers_the_hosts_acks() {
    use gleitzeit::client::Client;
    let daemon = daemon();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(async {
        let url = daemon.url.clone();
        let mut provider = Client::connect(&url, Some(&daemon.token)).await.unwrap();
        let registration = serde_json::json!({"provider_id": "rusty", "protocol_id": "work/v1", "supported_methods": ["job"], "max_concurrent": 64});
        let reply = provider.call("register_provider", &registration, Duration::from_secs(10)).await.unwrap();
        assert_eq!(reply["provider_id"], "rusty", "{reply}");
        tokio::spawn(async move {
            while let Some(event) = provider.next_event().await {
                if let (true, Some(id)) = (event.name == "execute_method", event.ack) {
                    let n = event.data["params"]["n"].clone();
                    provider.ack(id, &serde_json::json!({"result": {"n": n, "provider": "rusty"}})).unwrap();
                }
            }
        });
        let mut submitter = Client::connect(&url, Some(&daemon.token)).await.unwrap();
        let reply = submitter.call("submit_workflow", &serde_json::json!({"workflow": jobs("rust", 2000, "normal")}), Duration::from_secs(30)).await.unwrap();
        let id = reply["workflow_id"].as_str().unwrap().to_owned();
        while let Some(event) = submitter.next_event().await {
            if event.name == "workflow_completed" && event.data["workflow_id"] == id.as_str() {
                break;
            }
        }
        submitter.call("get_workflow", &serde_json::json!({"workflow_id": id}), Duration::from_secs(30)).await.unwrap()
    });
    assert_eq!(report["summary"]["completed"], 2000, "{}", report["summary"]);
    let tasks = report["tasks"].as_array().unwrap();
    assert!(
        tasks.iter().all(|t| t["result"]["n"] == t["id"].as_str().unwrap()["rust-".len()..].parse::<u64>().unwrap())
    );
}

/// The daemon's resident memory, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// A raw WebSocket client: it connects, joins the default namespace and
/// sends what it is told, and never reads a byte after the handshake.
struct SilentClient(std::net::TcpStream);

impl SilentClient {
    fn connect(url: &str, token: &str) -> Self {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        let mut client = Self(stream);
        client.send(&format!("40{}", serde_json::json!({ "token": token })));
        client
    }

    /// One masked text frame (the mask key is zero, so the payload is as is).
    fn send(&mut self, text: &str) {
        self.try_send(text).unwrap();
    }

    /// The same; an error once the daemon has closed the connection.
    fn try_send(&mut self, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut frame = vec![0x81u8];
        match text.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend(u16::try_from(n).unwrap().to_be_bytes());
            }
        }
        frame.extend([0, 0, 0, 0]);
        frame.extend(text.as_bytes());
        self.0.write_all(&frame)
    }
}

/// Small requests for a 10 MB answer from a client that never reads: the
/// daemon keeps at most its unread limit for it, disconnects it, and its
/// memory returns near the baseline once the client is gone.
#[test]
fn a_client_that_never_reads_cannot_grow_the_daemon() {
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let message = "x".repeat(10 * 1024 * 1024);
    let workflow = serde_json::json!({"id": "big", "name": "big", "tasks": [
        {"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": message}}]});
    std::fs::write(&big, workflow.to_string()).unwrap();
    assert_eq!(cli(&daemon, &["workflow", "submit", big.to_str().unwrap(), "--wait"]).status.code(), Some(0));
    let pid = daemon.pid();
    let baseline = rss_mib(pid);

    let mut silent = SilentClient::connect(&daemon.url, &daemon.token);
    for ack in 1..=400 {
        // The daemon may disconnect it before all are sent: that is the
        // bound at work, and the rest need not be sent.
        if silent.try_send(&format!(r#"42{ack}["get_workflow",{{"workflow_id":"big"}}]"#)).is_err() {
            break;
        }
    }
    // Without a bound the daemon grows by 10 MB per request (1.5 GB within
    // 5 s here); watch it for 10 s.
    let mut peak = 0;
    for _ in 0..100 {
        peak = peak.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(peak < baseline + 400, "resident memory grew from {baseline} MiB to {peak} MiB");
    drop(silent);
    let started = std::time::Instant::now();
    while rss_mib(pid) > baseline + 100 {
        assert!(started.elapsed() < Duration::from_secs(30), "memory stayed at {} MiB", rss_mib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same over long-polling: a client that posts requests and never polls.
#[test]
fn a_polling_client_that_never_polls_cannot_grow_the_daemon() {
    let daemon = daemon();
    let mut check = python(&daemon, "tests/python/silent_polling.py");
    check.env("GLEITZEIT_PID", daemon.pid().to_string());
    let out = finished(check);
    assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"));
}

/// An ack id too large for the host to answer with closes the connection as
/// a malformed packet, instead of leaving the client waiting forever.
#[test]
fn an_ack_id_out_of_range_closes_the_connection() {
    use std::io::Read;
    let daemon = daemon();
    let mut client = SilentClient::connect(&daemon.url, &daemon.token);
    client.send(r#"4218446744073709551615["list_protocols"]"#);
    client.0.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Everything until the host closes: it must close (well before Engine.IO's
    // 45 s ping timeout would), not leave the read to time out.
    let mut received = Vec::new();
    let closed = client.0.read_to_end(&mut received);
    assert!(closed.is_ok(), "the connection stayed open: {closed:?}");
}

/// A remote provider's params schemas are listed and checked at submission
/// and before each call; unusable ones are refused when it registers.
#[test]
fn remote_params_schemas_are_checked_before_the_provider_is_called() {
    passes_against_a_daemon("tests/python/params_schemas.py");
}

/// `protocol list` shows each method's params as the plugin's schema gives
/// them; `--output json` carries the schemas whole.
#[test]
fn protocol_list_shows_each_methods_params() {
    let daemon = daemon();
    let out = cli(&daemon, &["protocol", "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "echo/v1.delay(message?: string, seconds: number)",
        "echo/v1.echo(message: any)",
        "echo/v1.timestamp()\n",
        "mcp/v1.tool.*(…)",
        "llm/v1.generate(",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let out = cli(&daemon, &["protocol", "list", "--output", "json"]);
    let protocols: Value = serde_json::from_slice(&out.stdout).unwrap();
    let echo = protocols.as_array().unwrap().iter().find(|p| p["protocol_id"] == "echo/v1").unwrap();
    assert_eq!(echo["params_schemas"]["delay"]["properties"]["seconds"]["type"], "number", "{echo:#}");
}

/// A fan-out over an input, through the daemon: submitted by python-socketio
/// with `inputs` in the payload, and by `workflow submit --input --wait`.
#[test]
fn a_fan_out_over_an_input_runs_through_the_daemon() {
    let daemon = daemon();
    let workflow = serde_json::json!({
        "name": "inputs fan-out",
        "inputs": {"topics": {"type": "array"}, "prefix": {"type": "string", "default": "on"}},
        "tasks": [
            {"id": "write", "protocol": "echo/v1", "method": "echo", "for_each": "${inputs.topics}",
             "max_parallel": 2, "params": {"message": "${inputs.prefix} ${item} (#${item_index})"}},
            {"id": "join", "protocol": "echo/v1", "method": "echo", "dependencies": ["write"],
             "params": {"message": "${write.result}"}},
        ],
    });
    let payload = serde_json::json!({"workflow": workflow, "inputs": {"topics": ["owls", "bats", "eels"]}});
    let report = &submit(&daemon, &payload, None).join().unwrap()[0];
    assert_eq!(report["status"], "completed", "{report}");
    let ids: Vec<&str> = report["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["write", "write[0]", "write[1]", "write[2]", "join"]);
    let joined: Vec<&Value> =
        report["tasks"][4]["result"]["echoed"].as_array().unwrap().iter().map(|r| &r["echoed"]).collect();
    assert_eq!(joined, ["on owls (#0)", "on bats (#1)", "on eels (#2)"]);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fan.json");
    std::fs::write(&file, workflow.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let out = cli(
        &daemon,
        &[
            "workflow",
            "submit",
            file,
            "--input",
            r#"topics=["x","y"]"#,
            "--input",
            "prefix=about",
            "--wait",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tasks"][2]["result"]["echoed"], "about y (#1)", "{report}");
    let out = cli(&daemon, &["workflow", "submit", file, "--input", "topics=owls"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("field 'inputs.topics': must be a list, found 'owls'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon reads files only from the directories `--files-dir` names; a
/// workflow without `dir` (or naming another) fails its task saying so.
#[test]
fn the_daemon_reads_files_from_named_directories_only() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("a.txt"), "alpha").unwrap();
    std::fs::write(files.path().join("b.txt"), "beta").unwrap();
    let flag = format!("notes={}", files.path().display());
    let daemon = daemon_with(&["--files-dir", &flag]);
    let dir = tempfile::tempdir().unwrap();
    let submit = |reads: Value| {
        let file = dir.path().join("files.json");
        let mut task = serde_json::json!({"id": "read", "protocol": "echo/v1", "method": "echo",
            "params": {"message": "${item.path}=${item.text}"}});
        task.as_object_mut().unwrap().extend(reads.as_object().unwrap().clone());
        let workflow = serde_json::json!({"name": "files", "tasks": [task]});
        std::fs::write(&file, workflow.to_string()).unwrap();
        let out = cli(&daemon, &["workflow", "submit", file.to_str().unwrap(), "--wait", "--output", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let report = submit(serde_json::json!({"for_each": {"files": "*.txt", "dir": "notes"}}));
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["tasks"][1]["result"]["echoed"], "a.txt=alpha");
    assert_eq!(report["tasks"][2]["result"]["echoed"], "b.txt=beta");
    let report = submit(serde_json::json!({"for_each": {"files": "*.txt"}}));
    assert_eq!(report["tasks"][0]["error"]["code"], -32008, "{report}");
    assert_eq!(
        report["tasks"][0]["error"]["message"],
        "for_each: this host reads no files directory 'workflow' (it reads: notes)"
    );
    // One file of its own: the task's result is the call's, not a list.
    let report = submit(serde_json::json!({"file": {"path": "b.txt", "dir": "notes"}}));
    assert_eq!(report["tasks"][0]["result"]["echoed"], "b.txt=beta", "{report}");
    let report = submit(serde_json::json!({"file": "a.txt"}));
    assert_eq!(
        report["tasks"][0]["error"]["message"], "this host reads no files directory 'workflow' (it reads: notes)",
        "{report}"
    );
}
