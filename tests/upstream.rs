//! The original system's own example files, as its users have them: every
//! one validates, and each runs to completion as its CLI ran it, from the
//! folder above `examples/` (their paths are relative to that folder), with
//! the Ollama test server for `llm/v1`, the host's bundled `python/v1` and a
//! FastMCP server with the tools they call.
//!
//! The files are not part of this repository: they are read from
//! `../shared/brief/upstream-examples` beside the checkout, or from the
//! folder `GLEITZEIT_UPSTREAM_EXAMPLES` names. Without either the test says
//! so and checks nothing.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Every workflow file of the folder's `examples/` and `tests/`, relative
/// to it.
fn workflow_files(folder: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for sub in ["examples", "tests"] {
        for entry in std::fs::read_dir(folder.join(sub)).into_iter().flatten() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(format!("{sub}/{name}"));
            }
        }
    }
    files.sort();
    files
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("{id}: {report:#}"))
}

fn content<'a>(report: &'a Value, id: &str) -> &'a str {
    task(report, id)["result"]["content"].as_str().unwrap_or_else(|| panic!("{id}: {report:#}"))
}

#[test]
fn the_originals_example_files_validate_and_run_from_their_folder() {
    let Some(folder) = support::upstream_examples() else { return };
    let files = workflow_files(&folder);
    assert!(files.len() >= 6, "{files:?}");

    let ollama = support::servers::fake_ollama(fake_ollama::Options::default());
    let mcp = support::servers::Server::fastmcp();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gleitzeit.toml");
    std::fs::write(
        &config,
        format!(
            "[manifests.ollama]\nallowed_hosts = [\"http://127.0.0.1:{o}\"]\n[manifests.ollama.config]\nbase_url = \"http://127.0.0.1:{o}\"\n\
             [manifests.mcp]\nallowed_hosts = [\"http://127.0.0.1:{m}\"]\n[manifests.mcp.config.servers]\ntest = \"http://127.0.0.1:{m}/mcp\"\n",
            o = ollama.port,
            m = mcp.port,
        ),
    )
    .unwrap();
    let gleitzeit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(args)
            .args(["--output", "json", "--config", config.to_str().unwrap()])
            .args(["--cache-dir", support::plugin_cache().to_str().unwrap()])
            .current_dir(&folder)
            .env_remove("GLEITZEIT_LOG")
            .output()
            .unwrap();
        let json = serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(out.status.code(), Some(0), "gleitzeit {args:?}: {json:#} {}", String::from_utf8_lossy(&out.stderr));
        json
    };

    for file in &files {
        gleitzeit(&["workflow", "validate", file]);
        let report = gleitzeit(&["run", file]);
        assert_eq!(report["status"], "completed", "{file}: {report:#}");
    }

    // Results in the original's shape, with what the files named in them.
    let read = |path: &str| std::fs::read_to_string(folder.join(path)).unwrap();
    let title = read("examples/documents/sample_story.txt").lines().next().unwrap().to_owned();
    let report = gleitzeit(&["run", "examples/text_file_workflow.yaml"]);
    let prompt =
        format!("llama3.2:latest replies to 1 message(s): Please summarize this story in 2-3 sentences.\n\n{title}");
    assert!(content(&report, "summarize_story").starts_with(&prompt), "the file went into the prompt: {report:#}");
    assert!(content(&report, "create_sequel_idea").contains(&format!("Based on this summary: {prompt}")));

    let image = std::fs::metadata(folder.join("examples/images/test_colors.png")).unwrap().len();
    let report = gleitzeit(&["run", "examples/vision_file_workflow.yaml"]);
    assert!(
        content(&report, "analyze_image_file").starts_with(&format!("llava:latest sees 1 image(s) of {image} bytes"))
    );

    let report = gleitzeit(&["run", "examples/batch_text_dynamic.yaml"]);
    let documents = std::fs::read_dir(folder.join("examples/documents")).unwrap().count();
    let answers = task(&report, "batch")["result"].as_array().unwrap();
    assert_eq!(answers.len(), documents);
    assert!(answers.iter().all(|a| {
        a["content"].as_str().is_some_and(|c| c.starts_with("llama3.2:latest replies to 2 message(s): Provide"))
    }));

    let report = gleitzeit(&["run", "examples/mixed_workflow.yaml"]);
    let stats = &task(&report, "calculate_stats")["result"];
    // The test server's answer is not a list of numbers, and the script
    // says so as its `result`, as it did in the original.
    let error = stats["result"]["error"].as_str().unwrap_or_else(|| panic!("{stats:#}"));
    assert!(error.starts_with("invalid literal for int()"), "{stats:#}");
    assert!(stats["stdout"].as_str().unwrap().starts_with("Error parsing numbers: invalid literal"), "{stats:#}");
    assert!(content(&report, "summarize_results").contains(error), "the script's result went on");

    let report = gleitzeit(&["run", "tests/mcp_test_workflow.yaml"]);
    assert_eq!(task(&report, "test_echo")["result"]["text"], "Testing MCP provider");
    assert_eq!(task(&report, "test_math")["result"]["text"], "30");
    assert_eq!(task(&report, "test_math")["result"]["result"], 30, "the original's result of a tool");
}
