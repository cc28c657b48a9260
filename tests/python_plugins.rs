//! Plugins written in Python with the SDK of `plugin-sdk/python`, built from
//! source with componentize-py (PyPI), served by the real binary: typed
//! params from annotations, errors as JSON-RPC errors, and the sandbox
//! (no environment, files or network; the task's deadline; the memory limit).
//! Hot reload of Python plugins is in `reload.rs`.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// A plugins directory with the example Python plugins in it.
fn plugins_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["textstats", "run-python"] {
        std::fs::copy(support::python_plugin(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// Run `yaml` with the Python plugins; the exit code and the report.
fn run(plugins: &Path, yaml: &str) -> (Option<i32>, Value) {
    let file = plugins.parent().unwrap().join(format!("w-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    let out = support::gleitzeit_with_plugins(plugins, &["run", file.to_str().unwrap(), "--output", "json"]);
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("{id}: {report:#}"))
}

#[test]
fn python_plugins_answer_and_pass_results_on() {
    let plugins = plugins_dir();
    let (code, report) = run(
        plugins.path(),
        r#"
name: python
tasks:
  - id: stats
    protocol: textstats/v1
    method: count
    params: {text: "one two two three three three", top: 2}
  - id: py
    protocol: python/v1
    method: execute
    dependencies: [stats]
    params:
      code: |
        import statistics
        counts = [t["count"] for t in top]
        print("counts", counts)
        result = {"mean": statistics.mean(counts), "words": words}
      context: {top: "${stats.result.top}", words: "${stats.result.words}"}
"#,
    );
    assert_eq!(code, Some(0), "{report:#}");
    let stats = &task(&report, "stats")["result"];
    assert_eq!(stats["words"], 6);
    assert_eq!(stats["top"], json!([{"word": "three", "count": 3}, {"word": "two", "count": 2}]));
    assert_eq!(
        task(&report, "py")["result"],
        json!({"result": {"mean": 2.5, "words": 6}, "stdout": "counts [3, 2]\n"})
    );
}

/// The params schema comes from the dataclass annotations: literal mistakes
/// fail validation with the task and the field, substituted ones the task.
#[test]
fn python_annotations_are_the_params_schema() {
    let plugins = plugins_dir();
    let file = plugins.path().parent().unwrap().join(format!("bad-{}.yaml", std::process::id()));
    std::fs::write(
        &file,
        "name: bad\ntasks:\n  - {id: a, protocol: textstats/v1, method: count, params: {text: 5, top: many}}\n  - {id: b, protocol: textstats/v1, method: count, params: {txt: typo}}\n  - {id: c, protocol: python/v1, method: execute, params: {code: 'result = 1', context: [1]}}\n",
    )
    .unwrap();
    let out = support::gleitzeit_with_plugins(plugins.path(), &["workflow", "validate", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "task 'a', field 'params.text': 5 is not of type \"string\"",
        "task 'a', field 'params.top': \"many\" is not of type \"integer\"",
        "task 'b', field 'params': Additional properties are not allowed ('txt' was unexpected)",
        "task 'b', field 'params': \"text\" is a required property",
        "task 'c', field 'params.context': [1] is not of type \"object\"",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }

    let (code, report) = run(
        plugins.path(),
        "name: late\ntasks:\n  - {id: seven, protocol: python/v1, method: execute, params: {code: 'result = 7'}}\n  - {id: s, protocol: textstats/v1, method: count, dependencies: [seven], params: {text: \"${seven.result.result}\"}}\n",
    );
    assert_eq!(code, Some(1));
    let late = task(&report, "s");
    assert_eq!((&late["attempts"], &late["error"]["code"]), (&json!(0), &json!(-32602)), "{late:#}");
    assert!(late["error"]["message"].as_str().unwrap().contains("params.text: 7 is not of type \"string\""));
}

/// Code run by python/v1 sees no environment, no file and no socket; a
/// loop stops at the task's deadline and a hog at the memory limit, and
/// errors come back as the task's JSON-RPC errors.
#[test]
fn python_plugins_hold_to_the_sandbox() {
    let plugins = plugins_dir();
    let (code, report) = run(
        plugins.path(),
        r#"
name: hostile python
tasks:
  - id: snoop
    protocol: python/v1
    method: execute
    params:
      code: |
        import os
        result = {"env": dict(os.environ), "cwd": os.getcwd()}
        for name, probe in [("file", lambda: open("/etc/passwd").read()), ("ls", lambda: os.listdir("/")),
                            ("socket", lambda: __import__("socket"))]:
            try:
                probe()
                result[name] = "allowed"
            except Exception as e:
                result[name] = type(e).__name__
  - {id: spin, protocol: python/v1, method: execute, timeout: 2, params: {code: "while True: pass"}}
  - {id: hog, protocol: python/v1, method: execute, params: {code: "x = []\nwhile True: x.append('y' * 1000000)"}}
  - {id: boom, protocol: python/v1, method: execute, params: {code: "print('partial'); 1/0"}}
  - {id: syntax, protocol: python/v1, method: execute, params: {code: "def ("}}
  - {id: fine, protocol: python/v1, method: execute, dependencies: [spin, hog], params: {code: "result = 1"}}
"#,
    );
    assert_eq!(code, Some(1), "{report:#}");
    let snooped = &task(&report, "snoop")["result"]["result"];
    assert_eq!(
        snooped,
        &json!({"env": {}, "cwd": "/", "file": "FileNotFoundError", "ls": "FileNotFoundError", "socket": "ModuleNotFoundError"})
    );
    let error = |id: &str| task(&report, id)["error"].clone();
    assert_eq!(error("spin")["code"], -32001, "{}", error("spin"));
    assert!(error("spin")["message"].as_str().unwrap().contains("stopped at the task's deadline"));
    assert_eq!(error("hog")["code"], -32000);
    assert!(error("hog")["message"].as_str().unwrap().contains("MemoryError"), "{}", error("hog"));
    assert_eq!(
        error("boom"),
        json!({"code": -32000, "message": "the code raised ZeroDivisionError: division by zero", "data": {"stdout": "partial\n"}})
    );
    assert_eq!(error("syntax")["code"], -32602);
    assert!(error("syntax")["message"].as_str().unwrap().contains("the code does not parse: invalid syntax (line 1)"));
    assert_eq!(task(&report, "fine")["status"], "skipped");
    // A host the plugin is not granted: the SDK's FetchError, of kind denied.
    let fetcher =
        support::source_plugin(support::Language::Python, &support::root().join("tests/fixtures/python/fetcher"));
    std::fs::copy(fetcher, plugins.path().join("fetcher.wasm")).unwrap();
    let (_, report) = run(
        plugins.path(),
        "name: fetch\ntasks:\n  - {id: fetch, protocol: fetcher-py/v1, method: fetch, params: {url: \"http://127.0.0.1:9/\"}}\n",
    );
    let refused = &task(&report, "fetch")["result"];
    assert_eq!(refused["kind"], "denied", "the refusal's kind, from the WIT's fetch-error: {refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.starts_with("GET http://127.0.0.1:9/: http-fetch denied"), "{message}");
}

/// docs/plugins.md shows the Python example these tests build, as it is.
#[test]
fn the_plugins_doc_shows_the_tested_python_example() {
    let doc = std::fs::read_to_string(support::root().join("docs/plugins.md")).unwrap();
    let code = std::fs::read_to_string(support::root().join("plugin-sdk/python/examples/textstats/app.py")).unwrap();
    let shown = support::fenced_blocks(&doc, "python");
    assert!(shown.contains(&code), "docs/plugins.md must show plugin-sdk/python/examples/textstats/app.py as it is");
}

/// The documented way: install the SDK with pip, build with its command,
/// drop the component in, run a task on it.
#[test]
fn the_documented_python_build_makes_a_plugin_that_serves() {
    let doc = std::fs::read_to_string(support::root().join("docs/plugins.md")).unwrap();
    let session =
        support::fenced_blocks(&doc, "sh").into_iter().find(|b| b.contains("gleitzeit-plugin build")).unwrap();
    let built = support::root().join("plugin-sdk/python/examples/textstats/textstats.wasm");
    let _ = std::fs::remove_file(&built);
    let out = Command::new("bash").args(["-euc", &session]).current_dir(support::root()).output().unwrap();
    assert!(out.status.success(), "{session}\n{}", String::from_utf8_lossy(&out.stderr));
    let plugins = tempfile::tempdir().unwrap();
    std::fs::rename(&built, plugins.path().join("textstats.wasm")).unwrap();
    let (code, report) = run(
        plugins.path(),
        "name: d\ntasks:\n  - {id: c, protocol: textstats/v1, method: count, params: {text: x y x}}\n",
    );
    assert_eq!((code, &task(&report, "c")["result"]["words"]), (Some(0), &json!(3)), "{report:#}");
}

/// python/v1 ships with the host: a binary built where componentize-py is
/// installed (as scripts/test.sh does) carries run-python and serves it
/// with no plugins folder, compiled at its first call; compiling it (seconds)
/// is its start, not the task's time, so a task with a one-second timeout
/// runs on a daemon that has not compiled it yet (`run` compiles what its
/// tasks call before it starts them). The spec it registers without
/// compiling is the one the component describes.
#[test]
fn python_v1_ships_with_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("python.yaml");
    std::fs::write(
        &file,
        r#"
name: bundled python
tasks:
  - id: mean
    protocol: python/v1
    method: execute
    timeout: 1
    params: {code: "import statistics\nresult = statistics.mean(context['xs'])\nprint(len(xs))", context: {xs: [1, 2, 6]}}
"#,
    )
    .unwrap();
    // A cache of its own: nothing compiled yet.
    let cache = dir.path().join("cache");
    let daemon = support::Daemon::new().args(&["--cache-dir", cache.to_str().unwrap()]).start();
    let out = daemon.cli(&["workflow", "submit", file.to_str().unwrap(), "--wait", "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(out.status.code(), Some(0), "{report:#} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(task(&report, "mean")["result"], json!({"result": 3, "stdout": "3\n"}));
    assert_eq!(task(&report, "mean")["history"][0]["provider"], "wasm:python", "{report:#}");

    // What the host registers without compiling it, against what the same
    // component says when a plugins folder holds it and it is described.
    let schemas = |plugins: &[&str]| {
        let daemon = support::Daemon::new().args(plugins).start();
        let out = daemon.cli(&["protocol", "list", "--output", "json"]);
        let protocols: Value = serde_json::from_slice(&out.stdout).unwrap();
        let python = protocols.as_array().unwrap().iter().find(|p| p["protocol_id"] == "python/v1").cloned();
        python.unwrap_or_else(|| panic!("no python/v1 in {protocols:#}"))["params_schemas"].clone()
    };
    let folder = plugins_dir();
    let cache = support::plugin_cache();
    let described = schemas(&["--plugins", folder.path().to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()]);
    assert_eq!(schemas(&[]), described);
    assert!(described["execute"]["required"] == json!(["code"]), "{described:#}");
}
