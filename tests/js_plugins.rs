//! Plugins written in JavaScript with the SDK of `plugin-sdk/js`, built from
//! source with componentize-js (npm), served by the real binary: declared
//! params as the schema, errors as JSON-RPC errors, and the sandbox (no
//! Node.js APIs, no network but the host's grants, the task's deadline, the
//! memory limit). Hot reload of source-built plugins is in `reload.rs`.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// A plugins directory with the JS example and the hostile JS fixture.
fn plugins_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let projects = [("textstats", "plugin-sdk/js/examples/textstats"), ("hostile-js", "tests/fixtures/js/hostile")];
    for (name, project) in projects {
        let built = support::js_plugin(&support::root().join(project));
        std::fs::copy(built, dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// Run `yaml` with the JS plugins; the exit code and the report.
fn run(plugins: &Path, yaml: &str) -> (Option<i32>, Value) {
    let file = plugins.join("workflow.yaml");
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
fn a_js_plugin_answers_with_its_declared_params_and_defaults() {
    let plugins = plugins_dir();
    let (code, report) = run(
        plugins.path(),
        "name: js\ntasks:\n  - {id: two, protocol: textstats/v1, method: count, params: {text: \"b a b\\nc\", top: 1}}\n  - {id: dflt, protocol: textstats/v1, method: count, dependencies: [two], params: {text: \"a b c ${two.result.words}\"}}\n",
    );
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        task(&report, "two")["result"],
        json!({"words": 4, "lines": 2, "characters": 7, "top": [{"word": "b", "count": 2}]})
    );
    // The number came in as text; `top` defaulted to 3 (of 4 words).
    let top = &task(&report, "dflt")["result"]["top"];
    assert_eq!(top[0], json!({"word": "a", "count": 1}), "{report:#}");
    assert_eq!(top.as_array().unwrap().len(), 3, "{report:#}");

    let file = plugins.path().join("bad.yaml");
    std::fs::write(
        &file,
        "name: bad\ntasks:\n  - {id: a, protocol: textstats/v1, method: count, params: {text: [1], top: -1, extra: 1}}\n",
    )
    .unwrap();
    let out = support::gleitzeit_with_plugins(plugins.path(), &["workflow", "validate", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "task 'a', field 'params.text': [1] is not of type \"string\"",
        "task 'a', field 'params.top': -1 is less than the minimum of 0",
        "task 'a', field 'params': Additional properties are not allowed ('extra' was unexpected)",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

/// No Node.js APIs, no network but through the host (and none granted),
/// no config it was not given,
/// a loop stops at the deadline, a hog at the memory limit; thrown errors
/// become the task's errors, retried only when they say so.
#[test]
fn js_plugins_hold_to_the_sandbox() {
    let plugins = plugins_dir();
    let (code, report) = run(
        plugins.path(),
        r#"
name: hostile js
tasks:
  - {id: probe, protocol: hostile-js/v1, method: probe}
  - {id: fetch, protocol: hostile-js/v1, method: fetch, params: {url: "http://127.0.0.1:9/"}}
  - {id: spin, protocol: hostile-js/v1, method: spin, timeout: 2}
  - {id: hog, protocol: hostile-js/v1, method: hog}
  - {id: fail, protocol: hostile-js/v1, method: fail, params: {retryable: true}, retry: {max_attempts: 2, base_delay: 0.01}}
  - {id: final, protocol: hostile-js/v1, method: fail, retry: {max_attempts: 3, base_delay: 0.01}}
  - {id: crash, protocol: hostile-js/v1, method: crash}
  - {id: after, protocol: hostile-js/v1, method: probe, dependencies: [spin, hog]}
"#,
    );
    assert_eq!(code, Some(1), "{report:#}");
    // It loaded, so it imports no wasi:http (the host links none); sockets
    // are refused by the host's WASI context.
    assert_eq!(task(&report, "probe")["result"], json!({"process": "undefined", "config": null}));
    let refused = task(&report, "fetch")["result"]["refused"].as_str().unwrap().to_owned();
    assert!(refused.contains("may not reach http://127.0.0.1:9 (it is granted no hosts"), "{refused}");
    assert_eq!(task(&report, "fetch")["result"]["kind"], "denied", "the refusal's kind, from the WIT's fetch-error");
    let error = |id: &str| task(&report, id)["error"].clone();
    assert_eq!(error("spin")["code"], -32001, "{}", error("spin"));
    assert!(error("hog")["message"].as_str().unwrap().contains("memory"), "{}", error("hog"));
    assert_eq!(
        (error("fail"), &task(&report, "fail")["attempts"]),
        (json!({"code": -32050, "message": "failed on purpose", "data": {"why": "asked"}}), &json!(2))
    );
    assert_eq!(task(&report, "final")["attempts"], 1, "not retryable, not retried");
    assert_eq!(error("crash")["code"], -32603);
    assert!(error("crash")["message"].as_str().unwrap().starts_with("TypeError: "), "{}", error("crash"));
    assert_eq!(task(&report, "after")["status"], "skipped");
}

/// docs/plugins.md shows the JS example these tests build, as it is.
#[test]
fn the_plugins_doc_shows_the_tested_js_example() {
    let doc = std::fs::read_to_string(support::root().join("docs/plugins.md")).unwrap();
    let code = std::fs::read_to_string(support::root().join("plugin-sdk/js/examples/textstats/app.js")).unwrap();
    let shown = support::fenced_blocks(&doc, "javascript");
    assert!(shown.contains(&code), "docs/plugins.md must show plugin-sdk/js/examples/textstats/app.js as it is");
}

/// The documented way: install the SDK's tools with npm, build with its
/// command, drop the component in, run a task on it.
#[test]
fn the_documented_js_build_makes_a_plugin_that_serves() {
    let doc = std::fs::read_to_string(support::root().join("docs/plugins.md")).unwrap();
    let session =
        support::fenced_blocks(&doc, "sh").into_iter().find(|b| b.contains("plugin-sdk/js/build.js")).unwrap();
    // The install is scripts/test.sh's own step; run again here it would pull
    // node_modules from under the other tests' builds.
    let (install, build): (Vec<&str>, Vec<&str>) = session.lines().partition(|l| l.starts_with("npm ci"));
    let setup = std::fs::read_to_string(support::root().join("scripts/test.sh")).unwrap();
    assert!(install.iter().all(|line| setup.contains(line)), "scripts/test.sh runs {install:?}");
    let session = build.join("\n");
    let built = support::root().join("plugin-sdk/js/examples/textstats/textstats.wasm");
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
