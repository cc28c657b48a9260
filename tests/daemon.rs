//! A real `gleitzeit serve` driven by real Socket.IO clients (python-socketio,
//! installed by `.ci/run`): remote providers, submitters, the original
//! system's payloads, bad payloads.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A child process killed when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `child` and wait for a stdout line containing `marker`; returns the
/// line. Later output is drained so the child never blocks on a full pipe.
fn spawn_until(mut command: Command, marker: &str) -> (Running, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("  | {line}");
            let _ = lines.send(line);
        }
    });
    let running = Running(child);
    loop {
        let line = seen.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no line with {marker:?}"));
        if line.contains(marker) {
            return (running, line);
        }
    }
}

struct Daemon {
    _process: Running,
    url: String,
}

fn daemon() -> Daemon {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
    command.args(["serve", "--listen", "127.0.0.1:0"]).current_dir(root()).env_remove("GLEITZEIT_PLUGINS");
    let (process, line) = spawn_until(command, "listening on");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    Daemon { _process: process, url }
}

fn python(daemon: &Daemon, script: &str) -> Command {
    let mut command = Command::new("python3");
    command.arg(root().join(script)).env("GLEITZEIT_SERVER", &daemon.url);
    command
}

fn node(daemon: &Daemon, script: &str) -> Command {
    let mut command = Command::new("node");
    command.arg(root().join(script)).env("GLEITZEIT_SERVER", &daemon.url);
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

#[test]
fn a_python_provider_and_submitter_mix_with_the_wasm_echo() {
    let daemon = daemon();
    let (_provider, _) = spawn_until(python(&daemon, "docs/examples/python/provider.py"), "registered");
    let out = finished(python(&daemon, "docs/examples/python/submit.py"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(task(&report, "shout")["result"]["text"], "HELLO FROM PYTHON");
    assert_eq!(task(&report, "measure")["result"]["words"], 3);
    assert_eq!(task(&report, "report")["result"]["echoed"], "HELLO FROM PYTHON has 3 words");
    assert_eq!(task(&report, "report")["result"]["provider_id"], "echo-wasm");
    assert!(stdout.contains("task measure completed"), "task_result events reach the submitter");
}

/// The JS provider answers through acks, or (REPLY_BY_EVENT=1) through
/// `method_result` events as libraries without acks must.
#[test]
fn a_js_provider_and_submitter_mix_with_the_wasm_echo() {
    for by_event in ["0", "1"] {
        let daemon = daemon();
        let mut provider = node(&daemon, "docs/examples/js/provider.mjs");
        provider.env("REPLY_BY_EVENT", by_event);
        let (_provider, _) = spawn_until(provider, "registered");
        let out = finished(node(&daemon, "docs/examples/js/submit.mjs"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(report["status"], "completed", "by event: {by_event}: {report}");
        assert_eq!(task(&report, "shout")["result"]["text"], "HELLO FROM JAVASCRIPT");
        assert_eq!(task(&report, "report")["result"]["echoed"], "HELLO FROM JAVASCRIPT has 3 words");
    }
}

#[test]
fn the_original_systems_payloads_work_unchanged() {
    let daemon = daemon();
    let out = finished(python(&daemon, "tests/python/original_payloads.py"));
    assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"));
}

#[test]
fn bad_payloads_get_errors_and_the_server_keeps_serving() {
    let daemon = daemon();
    let out = finished(python(&daemon, "tests/python/bad_payloads.py"));
    assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"));
}
