//! The real `gleitzeit` binary on the example workflows, on malformed and
//! hostile files, and on plugins directories: output, results and exit codes.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::process::{Command, Output};
use support::fenced_blocks;
use support::root;

fn gleitzeit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(args)
        .current_dir(root())
        .env_remove("GLEITZEIT_LOG")
        .env_remove("GLEITZEIT_PLUGINS")
        .output()
        .unwrap()
}

/// `text` written to `name` in a fresh directory (kept while the guard is).
fn workflow_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    (dir, file.to_str().unwrap().to_owned())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a workflow with `--output json`; returns the exit code and document.
fn run_json(file: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["run", file, "--output", "json"];
    args.extend_from_slice(extra);
    let out = gleitzeit(&args);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", text(&out.stdout)));
    (out.status.code().unwrap(), doc)
}

fn task<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap()
}

/// Exit 2 with every expected fragment on stderr, and no panic.
fn rejected(args: &[&str], fragments: &[&str]) {
    let out = gleitzeit(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for fragment in fragments {
        assert!(stderr.contains(fragment), "{args:?}: missing {fragment:?} in:\n{stderr}");
    }
}

#[test]
fn hello_chain_passes_results_along() {
    let (code, doc) = run_json("workflows/hello.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["status"], "completed");
    assert_eq!(task(&doc, "reply")["result"]["echoed"], "The greeting was: Hello from Gleitzeit");
    assert_eq!(
        task(&doc, "summary")["result"]["response"],
        "The greeting was: Hello from Gleitzeit (served by echo-wasm)"
    );
}

#[test]
fn text_output_lists_every_task_and_a_summary() {
    let out = gleitzeit(&["run", "workflows/hello.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("completed  greet"), "{stdout}");
    assert!(lines[3].starts_with("workflow 'Hello chain'") && lines[3].contains("3 completed, 0 failed"), "{stdout}");
}

#[test]
fn diamond_keeps_json_types_through_substitution() {
    let (code, doc) = run_json("workflows/diamond.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(task(&doc, "left")["result"]["echoed"], 8);
    assert_eq!(task(&doc, "join")["result"]["echoed"], serde_json::json!({"title": "Weather for Berlin", "high": 8}));
}

#[test]
fn fan_out_runs_once_per_item_and_gathers_in_order() {
    let (code, doc) = run_json("workflows/fan-out.yaml", &[]);
    assert_eq!(code, 0);
    let ids: Vec<&str> = doc["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["outline", "write", "write[0]", "write[1]", "write[2]", "write[3]", "write[4]", "gather"]);
    assert_eq!(doc["summary"]["completed"], 8);
    assert_eq!(task(&doc, "write[2]")["result"]["echoed"], "Section 2: all about moths");
    assert_eq!(task(&doc, "write[2]")["parent"], "write");
    assert_eq!(task(&doc, "write")["items"], 5);
    let gathered = &task(&doc, "gather")["result"]["echoed"];
    assert_eq!(gathered["second"], "Section 1: all about bats");
    let sections: Vec<&Value> = gathered["sections"].as_array().unwrap().iter().map(|s| &s["echoed"]).collect();
    assert_eq!(sections[4], "Section 4: all about badgers", "in item order: {sections:?}");
}

#[test]
fn for_each_mistakes_are_validation_errors_naming_task_and_field() {
    let (_dir, file) = workflow_file(
        "fan.yaml",
        r#"name: fan
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, for_each: "${a.result}", params: {message: "${item}"}}
  - {id: c, protocol: echo/v1, method: echo, for_each: 3, max_parallel: 0}
  - {id: d, protocol: echo/v1, method: echo, params: {message: "${item_index}"}}
"#,
    );
    let out = gleitzeit(&["workflow", "validate", &file]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for want in [
        "fan.yaml is not a valid workflow (4 problems)",
        "task 'b', field 'for_each': refers to the result of task 'a', which is not among its dependencies",
        "task 'c', field 'for_each': must be a list of items, one reference that gives a list",
        "task 'c', field 'max_parallel': must be a whole number from 1 to 100000, found 0",
        "task 'd', field 'params': '${item_index}' needs 'for_each' on the task",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr}");
    }
}

#[test]
fn a_for_each_over_a_result_that_is_not_a_list_fails_the_task_naming_it() {
    let (_dir, file) = workflow_file(
        "fan.yaml",
        r#"name: fan
tasks:
  - {id: a, protocol: echo/v1, method: echo, params: {message: "not a list"}}
  - {id: b, protocol: echo/v1, method: echo, dependencies: [a], for_each: "${a.result.echoed}", params: {message: "${item}"}}
  - {id: c, protocol: echo/v1, method: echo, dependencies: [b], params: {message: "${b.result}"}}
"#,
    );
    let (code, doc) = run_json(&file, &[]);
    assert_eq!(code, 1);
    assert_eq!(task(&doc, "b")["error"]["code"], -32008);
    assert_eq!(
        task(&doc, "b")["error"]["message"],
        "for_each: '${a.result.echoed}' gave a string, not a list of items"
    );
    assert_eq!(task(&doc, "c")["status"], "skipped");
}

#[test]
fn with_concurrency_one_tasks_start_in_priority_order() {
    let (code, doc) = run_json("workflows/priorities.json", &["--concurrency", "1"]);
    assert_eq!(code, 0);
    let mut started: Vec<(String, String)> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["started_at"].as_str().unwrap().to_owned(), t["id"].as_str().unwrap().to_owned()))
        .collect();
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(order, ["urgent-1", "urgent-2", "high-1", "high-2", "normal-1", "low-1", "low-2"]);
}

#[test]
fn retry_recovers_flaky_tasks_and_fails_when_attempts_run_out() {
    let (code, doc) = run_json("workflows/retry.yaml", &[]);
    assert_eq!(code, 1);
    let recovers = task(&doc, "recovers");
    assert_eq!((recovers["status"].as_str(), recovers["attempts"].as_u64()), (Some("completed"), Some(3)));
    assert_eq!(recovers["result"]["attempt"], 3);
    let gives_up = task(&doc, "gives-up");
    assert_eq!((gives_up["status"].as_str(), gives_up["attempts"].as_u64()), (Some("failed"), Some(2)));
    assert_eq!(gives_up["error"]["code"], -32000);
}

#[test]
fn failure_skips_dependents_and_independent_branches_finish() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let (code, doc) = run_json("workflows/failure.yaml", &["--output-file", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(doc["status"], "failed");
    let statuses: Vec<(&str, &str)> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("boom", "failed"),
            ("report", "skipped"),
            ("publish", "skipped"),
            ("independent", "completed"),
            ("after-independent", "completed"),
        ]
    );
    assert_eq!(task(&doc, "boom")["attempts"], 1, "invalid params are not retried");
    assert_eq!(task(&doc, "boom")["error"]["message"], "ValueError: no such city");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["tasks"], doc["tasks"], "--output-file holds the full document");
    assert!(saved["tasks"][3]["duration_ms"].as_f64().unwrap() >= 100.0);
}

#[test]
fn a_wasm_task_past_its_timeout_fails_with_a_timeout_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    std::fs::write(
        &file,
        "name: slow\ntasks:\n  - {id: slow, protocol: echo/v1, method: delay, params: {seconds: 5}, timeout: 0.2}\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, doc) = run_json(file.to_str().unwrap(), &[]);
    assert_eq!(code, 1);
    assert!(started.elapsed().as_secs_f64() < 4.0, "the 5 s delay was cut short");
    let slow = task(&doc, "slow");
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["error"]["code"], -32001);
}

#[test]
fn every_example_workflow_validates() {
    for entry in std::fs::read_dir(root().join("workflows")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue; // workflows/notes: files a workflow reads
        }
        let rel = path.strip_prefix(root()).unwrap().to_str().unwrap().to_owned();
        let out = gleitzeit(&["workflow", "validate", &rel]);
        assert_eq!(out.status.code(), Some(0), "{rel}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("is valid"), "{rel}");
    }
}

#[test]
fn malformed_files_are_rejected_with_located_errors() {
    let cases: &[(&str, &[&str])] = &[
        ("cycle.yaml", &["task 'a', field 'dependencies': dependency cycle: a -> c -> b -> a"]),
        (
            "duplicate-and-unknown.yaml",
            &[
                "task 'a', field 'id': duplicate id: tasks #1 and #2 both use it",
                "task 'b', field 'dependencies': a task cannot depend on itself",
                "task 'b', field 'dependencies': unknown task 'ghost'",
            ],
        ),
        (
            "bad-fields.yaml",
            &[
                "(8 problems)",
                "field 'priority': unknown priority 'soon'",
                "task 'a', field 'priority': unknown priority 'hgh'",
                "task 'a', field 'timeout': must be a number of seconds",
                "task 'a', field 'retry.max_attempts': must be a whole number from 1 to 100, found 1000",
                "task 'a', field 'retry.backoff': unknown backoff 'sometimes'",
                "task 'a', field 'retry.max_delay': 1s is less than base_delay 10s",
                "task 'b', field 'timeout'",
                "task 'b', field 'dependecies': unknown field; did you mean 'dependencies'?",
            ],
        ),
        (
            "bad-references.yaml",
            &[
                "task 'b', field 'params': refers to the result of task 'a', which is not among its dependencies",
                "task 'c', field 'params': malformed reference '${a.result.echoed': no closing '}'",
            ],
        ),
        (
            "unknown-protocol.yaml",
            &[
                "task 'a', field 'protocol': no provider serves protocol 'vision/v1' (served: echo/v1, llm/v1, mcp/v1, python/v1)",
                "task 'b', field 'method': protocol 'echo/v1' has no method 'shout' (methods: delay, echo, error, flaky, ping, timestamp)",
            ],
        ),
        ("not-a-workflow.json", &["the top level must be a mapping with 'name' and 'tasks', found a list"]),
        ("syntax.yaml", &["syntax.yaml: invalid YAML", "line 4"]),
    ];
    for (file, fragments) in cases {
        let path = format!("tests/fixtures/invalid/{file}");
        rejected(&["workflow", "validate", &path], fragments);
        rejected(&["run", &path], fragments);
    }
}

#[test]
fn validate_can_answer_in_json() {
    let out = gleitzeit(&["workflow", "validate", "workflows/diamond.yaml", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verdict,
        serde_json::json!({"valid": true, "file": "workflows/diamond.yaml", "name": "Diamond", "tasks": 4, "levels": 3, "notes": []})
    );
}

#[test]
fn schema_only_validation_skips_the_registry() {
    let out = gleitzeit(&["workflow", "validate", "--schema-only", "tests/fixtures/invalid/unknown-protocol.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn hostile_files_get_clear_errors_or_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for (prev, next) in "abcdefgh".chars().zip("bcdefghi".chars()) {
        bomb.push_str(&format!("{next}: &{next} [{}]\n", vec![format!("*{prev}"); 10].join(",")));
    }
    let bomb = write("bomb.yaml", bomb.as_bytes());
    rejected(
        &["workflow", "validate", &bomb],
        &["invalid YAML: the file expands its aliases (*name) beyond the limit of 1000000 copied nodes"],
    );

    let deep = write("deep.yaml", format!("name: x\ntasks: {}{}", "[".repeat(100_000), "]".repeat(100_000)).as_bytes());
    rejected(&["workflow", "validate", &deep], &["invalid YAML: collections nested deeper than 128 levels at line 2"]);
    let deep_block = write("deep-block.yaml", format!("name: x\ntasks:\n{}x\n", "- ".repeat(100_000)).as_bytes());
    rejected(
        &["workflow", "validate", &deep_block],
        &["invalid YAML: collections nested deeper than 128 levels at line 3"],
    );
    let deep_json =
        write("deep.json", format!("{{\"name\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)).as_bytes());
    rejected(&["workflow", "validate", &deep_json], &["invalid JSON: recursion limit exceeded"]);

    let binary = write("binary.yaml", b"name: \xff\xfe\x00\x01\ntasks: []\n");
    rejected(
        &["workflow", "validate", &binary],
        &["binary.yaml: the file is not UTF-8 text (invalid byte at offset 6)"],
    );

    let mut chain = String::from("name: chain\ntasks:\n");
    for i in 0..200_000 {
        let dep = if i == 0 { String::new() } else { format!(", dependencies: [t{}]", i - 1) };
        chain.push_str(&format!("  - {{id: t{i}, protocol: echo/v1, method: ping{dep}}}\n"));
    }
    let chain_path = write("chain.yaml", chain.as_bytes());
    let out = gleitzeit(&["workflow", "validate", &chain_path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("200000 tasks in 200000 levels"));

    chain.push_str("  - {id: t0, protocol: echo/v1, method: ping, dependencies: [t199999]}\n");
    let cyclic = write("cyclic-chain.yaml", chain.as_bytes());
    rejected(&["workflow", "validate", &cyclic], &["duplicate id"]);
}

#[test]
fn usage_and_io_errors_exit_2() {
    rejected(&["run"], &["Usage"]);
    rejected(&["run", "workflows/does-not-exist.yaml"], &["cannot read workflow file workflows/does-not-exist.yaml"]);
    rejected(&["run", "workflows/hello.yaml", "--output", "xml"], &["invalid value 'xml'"]);
    rejected(&["run", "workflows/hello.yaml", "--concurrency", "0"], &["--concurrency"]);
}

#[test]
fn a_broken_plugin_file_is_reported_and_the_rest_still_serve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm this is not a component").unwrap();
    let out = gleitzeit(&["run", "workflows/hello.yaml", "--plugins", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning: plugin 'broken'"), "{stderr}");
    assert!(stderr.contains("broken.wasm) is not a valid component"), "{stderr}");
}

#[test]
fn a_plugin_in_the_plugins_directory_serves_tasks() {
    // The bundled echo component, dropped into a directory under a new name:
    // it takes over echo/v1 from the bundled copy.
    let built = root().join("target/wasm/wasm32-wasip2/release/echo.wasm");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&built, dir.path().join("my-echo.wasm")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", "workflows/hello.yaml", "--plugins", dir.path().to_str().unwrap()])
        .current_dir(root())
        .env("GLEITZEIT_LOG", "gleitzeit=info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("loaded echo/v1 from"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("replaces the bundled plugin 'echo'"), "{}", text(&out.stderr));
}

#[test]
fn workflows_shown_in_the_docs_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut count = 0;
    for doc in ["README.md", "docs/workflows.md"] {
        let markdown = std::fs::read_to_string(root().join(doc)).unwrap();
        for (i, block) in fenced_blocks(&markdown, "yaml").into_iter().enumerate() {
            let file = dir.path().join(format!("{}-{i}.yaml", doc.replace('/', "-")));
            std::fs::write(&file, &block).unwrap();
            let (code, report) = run_json(file.to_str().unwrap(), &[]);
            assert_eq!(
                (code, report["status"].as_str()),
                (0, Some("completed")),
                "{doc} block {i}:\n{block}\n{report}"
            );
            count += 1;
        }
    }
    assert!(count >= 2, "the docs show workflows");
}

#[test]
fn the_validation_output_shown_in_the_docs_is_current() {
    let markdown = std::fs::read_to_string(root().join("docs/workflows.md")).unwrap();
    let shown = fenced_blocks(&markdown, "text").into_iter().find(|b| b.contains("bad-fields.yaml")).unwrap();
    let out = gleitzeit(&["workflow", "validate", "tests/fixtures/invalid/bad-fields.yaml"]);
    assert_eq!(text(&out.stderr), shown);
}

/// Compiled plugins are kept in the data directory's cache with the spec
/// each described: the first run compiles the bundled ones; later runs load
/// only the plugins their tasks call, and validation loads none. A
/// tampered entry is compiled again and rewritten, a spec that does not
/// parse is asked for again, and `--no-cache` neither reads nor writes.
#[test]
fn compiled_plugins_are_cached_between_runs() {
    let data = tempfile::tempdir().unwrap();
    let cache = data.path().join("gleitzeit/cache");
    let gleitzeit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(args)
            .current_dir(root())
            .env("XDG_DATA_HOME", data.path())
            .env("GLEITZEIT_LOG", "gleitzeit::plugins=debug")
            .env_remove("GLEITZEIT_PLUGINS")
            .env_remove("GLEITZEIT_CACHE_DIR")
            .env_remove("GLEITZEIT_NO_CACHE")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let count = |what: &str| stderr.lines().filter(|l| l.contains(what)).count();
        let loads =
            (count(": compiled plugin="), count("loaded from the compiled-plugin cache"), count("compiled again"));
        (loads, count("spec from the cache"))
    };
    let run = |extra: &[&str]| gleitzeit(&[&["run", "workflows/hello.yaml"], extra].concat());
    let entries = |extension: &str| -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
        found.retain(|path| path.to_string_lossy().ends_with(extension));
        found.sort();
        found
    };
    let bundled = 3; // echo, ollama, mcp
    assert_eq!(run(&[]), ((bundled, 0, 0), 0), "the first run compiles every plugin");
    assert_eq!((entries(".cwasm").len(), entries(".spec.json").len()), (bundled, bundled));
    assert_eq!(run(&[]), ((0, 1, 0), bundled), "the next loads echo alone, the only one it calls");
    let validate = gleitzeit(&["workflow", "validate", "workflows/hello.yaml"]);
    assert_eq!(validate, ((0, 0, 0), bundled), "validation loads no component");

    for spec in entries(".spec.json") {
        std::fs::write(spec, "{not json").unwrap();
    }
    assert_eq!(run(&[]), ((0, bundled, 0), 0), "specs that do not parse are asked for again");
    for spec in entries(".spec.json") {
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
        assert!(spec["protocol"].is_string(), "and written again: {spec}");
    }

    let sound: Vec<Vec<u8>> = entries(".cwasm").iter().map(|e| std::fs::read(e).unwrap()).collect();
    for entry in entries(".cwasm") {
        let mut bad = std::fs::read(&entry).unwrap();
        bad[100] ^= 0xff;
        std::fs::write(&entry, bad).unwrap();
    }
    assert_eq!(run(&[]), ((0, 0, 1), bundled), "a tampered entry is not used");
    let now: Vec<Vec<u8>> = entries(".cwasm").iter().map(|e| std::fs::read(e).unwrap()).collect();
    let rewritten = sound.iter().zip(&now).filter(|(sound, now)| sound == now).count();
    assert_eq!(rewritten, 1, "echo's entry is written again, the others wait for a run that needs them");

    std::fs::remove_dir_all(&cache).unwrap();
    assert_eq!(run(&["--no-cache"]), ((bundled, 0, 0), 0));
    assert!(!cache.exists(), "--no-cache writes nothing");
}

/// Params are checked against the schema the plugin derives from its params
/// types: literal mismatches at validation, each with its task and field;
/// substituted ones before the call, failing the task without a call.
#[test]
fn params_that_miss_the_plugins_schema_fail_validation_or_their_task() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\ntasks:\n  - {id: a, protocol: echo/v1, method: delay, params: {seconds: two}}\n  - {id: b, protocol: echo/v1, method: echo, params: {text: hi}}\n  - {id: c, protocol: echo/v1, method: delay, dependencies: [a], params: {seconds: \"${a.result.delayed_seconds}\"}}\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    rejected(
        &["workflow", "validate", bad],
        &[
            "(2 problems)",
            "task 'a', field 'params.seconds': \"two\" is not of type \"number\"",
            "task 'b', field 'params': \"message\" is a required property",
        ],
    );
    rejected(&["run", bad], &["task 'a', field 'params.seconds'"]);

    let late = dir.path().join("late.yaml");
    std::fs::write(
        &late,
        "name: late\ntasks:\n  - {id: a, protocol: echo/v1, method: echo, params: {message: not a number}}\n  - {id: c, protocol: echo/v1, method: delay, dependencies: [a], params: {seconds: \"${a.result.echoed}\"}}\n",
    )
    .unwrap();
    let (code, doc) = run_json(late.to_str().unwrap(), &[]);
    assert_eq!(code, 1, "{doc:#}");
    let c = task(&doc, "c");
    assert_eq!((&c["status"], &c["attempts"], &c["error"]["code"]), (&json!("failed"), &json!(0), &json!(-32602)));
    let message = c["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the params do not fit the schema of echo/v1.delay (provider wasm:echo): params.seconds: \"not a number\" is not of type \"number\""),
        "{message}"
    );
}

#[test]
fn inputs_are_given_with_input_and_checked_by_type() {
    let (_dir, file) = workflow_file(
        "inputs.yaml",
        r#"name: inputs
inputs:
  topic: {type: string, description: what to write about}
  count: {type: integer, default: 2}
  tags: array
tasks:
  - {id: a, protocol: echo/v1, method: echo, params: {message: "${inputs.count} lines on ${inputs.topic}, tags ${inputs.tags}"}}
"#,
    );
    let file = file.as_str();
    let (code, doc) = run_json(file, &["--input", "topic=owls", "--input", r#"tags=["a","b"]"#]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(task(&doc, "a")["result"]["echoed"], r#"2 lines on owls, tags ["a","b"]"#);

    let out = gleitzeit(&["run", file, "--input", "count=two", "--input", "topc=x"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for want in [
        "field 'inputs.topc': given, but the workflow declares no such input (inputs: count, tags, topic)",
        "field 'inputs.count': must be an integer, found 'two'",
        "field 'inputs.topic': required and not given (give it with --input topic=VALUE, or declare a default)",
        "field 'inputs.tags': required and not given",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr}");
    }
    let out = gleitzeit(&["workflow", "validate", file, "--input", "topic"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--input 'topic' is not NAME=VALUE"), "{}", text(&out.stderr));
    let out = gleitzeit(&["workflow", "validate", file, "--input", "topic=x", "--input", "tags=[]"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_condition_example_takes_the_branch_its_input_names() {
    for (language, ran, skipped) in [("de", "translate", "publish"), ("en", "publish", "translate")] {
        let (code, doc) = run_json("workflows/condition.yaml", &["--input", &format!("language={language}")]);
        assert_eq!((code, doc["status"].as_str()), (0, Some("completed")), "{doc}");
        assert_eq!(task(&doc, ran)["status"], "completed");
        assert_eq!(task(&doc, skipped)["status"], "skipped");
        assert_eq!(task(&doc, skipped)["error"]["code"], -32040);
        assert!(task(&doc, skipped)["error"]["message"].as_str().unwrap().starts_with("condition false: "));
    }
    let (_, doc) = run_json("workflows/condition.yaml", &[]);
    assert_eq!(task(&doc, "translate")["result"]["echoed"], "translate from de: Guten Morgen", "the default input");
}

/// Files in the original system's later form run unchanged, and
/// validation says how each loose part was read.
#[test]
fn the_originals_looser_files_run_with_notes() {
    let (_dir, file) = workflow_file(
        "old.yaml",
        r#"name: old form
tasks:
  - id: first
    method: "echo/echo"
    priority: 1
    parameters: {message: {text: hi, n: 2}}
  - id: second
    method: "echo/echo"
    dependencies: [first]
    parameters: {message: "${first.echoed.text} x${first.echoed.n}"}
"#,
    );
    let file = file.as_str();
    let out = gleitzeit(&["workflow", "validate", file, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verdict["notes"],
        json!([
            "task 'first', field 'method': 'echo/echo' read as protocol 'echo/v1', method 'echo' (the protocol was left out)",
            "task 'first', field 'priority': 1 read as 'high' (1 high, 2 normal, 3 low)",
            "task 'second', field 'method': 'echo/echo' read as protocol 'echo/v1', method 'echo' (the protocol was left out)",
            "task 'second', field 'parameters': '${first.echoed.text}' read as '${first.result.echoed.text}' (fields start at the task's result)",
            "task 'second', field 'parameters': '${first.echoed.n}' read as '${first.result.echoed.n}' (fields start at the task's result)",
        ])
    );
    let (code, doc) = run_json(file, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(task(&doc, "second")["result"]["echoed"], "hi x2");
}

/// Output read by a pipe that closes early (`| head`) ends the command
/// quietly, without a panic.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let (_dir, file) = workflow_file(
        "many.json",
        &json!({"name": "many", "tasks": [{"id": "fan", "protocol": "echo/v1", "method": "echo",
            "for_each": (0..5000).collect::<Vec<_>>(), "params": {"message": "${item}"}}]})
        .to_string(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", &file])
        .current_dir(root())
        .env_remove("GLEITZEIT_PLUGINS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout); // the reader goes away with most of 700 kB unread
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}
