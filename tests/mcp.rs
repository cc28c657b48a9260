//! The bundled `mcp/v1` plugin (plugins/mcp) against real MCP servers,
//! installed by scripts/test.sh: `@modelcontextprotocol/server-everything`
//! from npm over Streamable HTTP and over stdio (bridged by the host), and a
//! FastMCP server from PyPI (tests/python/fastmcp_server.py).

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::root;
use support::servers::{Server, free_port};

fn everything_js() -> PathBuf {
    root().join("tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

fn everything_http() -> Server {
    let mut command = Command::new("node");
    command.arg(everything_js()).arg("streamableHttp");
    Server::start(command, "listening on port")
}

/// A host config granting the mcp plugin `servers` (name, port) over HTTP,
/// plus any extra manifest text.
fn config(dir: &Path, servers: &[(&str, u16)], extra: &str) -> PathBuf {
    let hosts: Vec<String> = servers.iter().map(|(_, port)| format!("\"http://127.0.0.1:{port}\"")).collect();
    let table: String =
        servers.iter().map(|(name, port)| format!("{name} = \"http://127.0.0.1:{port}/mcp\"\n")).collect();
    let text = format!(
        "[manifests.mcp]\nallowed_hosts = [{}]\n{extra}\n[manifests.mcp.config.servers]\n{table}",
        hosts.join(", ")
    );
    let path = dir.join("gleitzeit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(dir: &Path, config: &Path, workflow: &str) -> (Output, Value) {
    let file = dir.join("w.yaml");
    std::fs::write(&file, workflow).unwrap();
    support::run_json(&[file.to_str().unwrap(), "--config", config.to_str().unwrap()])
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("{id}: {report:#}"))
}

fn result<'a>(report: &'a Value, id: &str) -> &'a Value {
    let task = task(report, id);
    assert_eq!(task["status"], "completed", "{task:#}");
    &task["result"]
}

/// The same tasks against server-everything, whichever way it is reached.
const EVERYTHING_WORKFLOW: &str = r#"
name: everything
tasks:
  - {id: info, protocol: mcp/v1, method: server_info}
  - {id: tools, protocol: mcp/v1, method: list_tools}
  - {id: sum, protocol: mcp/v1, method: call_tool, params: {name: get-sum, arguments: {a: 2, b: 3}}}
  - {id: echo, protocol: mcp/v1, method: tool.echo, dependencies: [sum], params: {message: "${sum.result.text}"}}
  - {id: resources, protocol: mcp/v1, method: list_resources}
  - {id: prompts, protocol: mcp/v1, method: list_prompts}
  - {id: prompt, protocol: mcp/v1, method: get_prompt, params: {name: simple-prompt}}
  - {id: unknown-tool, protocol: mcp/v1, method: call_tool, params: {name: no-such-tool}}
"#;

fn check_everything(report: &Value, server: &str) {
    assert_eq!(result(report, "info")["serverInfo"]["name"].as_str().map(|n| n.contains("everything")), Some(true));
    assert_eq!(result(report, "info")["server"], server);
    let tools = result(report, "tools")["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t["name"] == "get-sum" && t["inputSchema"].is_object()), "{tools:?}");
    assert_eq!(result(report, "sum")["text"], "The sum of 2 and 3 is 5.");
    assert_eq!(
        result(report, "echo")["text"],
        "Echo: The sum of 2 and 3 is 5.",
        "the second task used the first's result"
    );
    assert!(!result(report, "resources")["resources"].as_array().unwrap().is_empty());
    assert!(result(report, "prompts")["prompts"].as_array().unwrap().iter().any(|p| p["name"] == "simple-prompt"));
    assert!(!result(report, "prompt")["messages"].as_array().unwrap().is_empty());
    let unknown = &task(report, "unknown-tool")["error"];
    assert!(unknown["message"].as_str().unwrap().contains("no-such-tool"), "{unknown}");
}

#[test]
fn server_everything_over_streamable_http() {
    let server = everything_http();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[("everything", server.port)], "");
    let (_, report) = run(dir.path(), &config, EVERYTHING_WORKFLOW);
    check_everything(&report, "everything");
}

#[test]
fn server_everything_over_stdio_bridged_by_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let stdio = format!(
        "[manifests.mcp.mcp_stdio.everything]\ncommand = [\"node\", \"{}\", \"stdio\"]\n",
        everything_js().display()
    );
    let path = dir.path().join("gleitzeit.toml");
    std::fs::write(&path, stdio).unwrap();
    let (_, report) = run(dir.path(), &path, EVERYTHING_WORKFLOW);
    check_everything(&report, "everything");

    // Many calls at once share the one process; their ids never collide.
    let tasks: String = (0..20)
        .map(|i| format!("  - {{id: s{i}, protocol: mcp/v1, method: tool.get-sum, params: {{a: {i}, b: 1}}}}\n"))
        .collect();
    let (out, report) = run(dir.path(), &path, &format!("name: many\ntasks:\n{tasks}"));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    for i in 0..20 {
        assert_eq!(result(&report, &format!("s{i}"))["text"], format!("The sum of {i} and 1 is {}.", i + 1));
    }
}

#[test]
fn a_fastmcp_server_with_tool_errors_resources_and_prompts() {
    let server = Server::fastmcp();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[("py", server.port)], "");
    let (_, report) = run(
        dir.path(),
        &config,
        r#"
name: fastmcp
tasks:
  - {id: add, protocol: mcp/v1, method: call_tool, params: {server: py, name: add, arguments: {a: 20, b: 22}}}
  - {id: shout, protocol: mcp/v1, method: tool.shout, dependencies: [add], params: {text: "answer ${add.result.text}"}}
  - {id: refuse, protocol: mcp/v1, method: call_tool, params: {name: refuse, arguments: {reason: no way}}}
  - {id: read, protocol: mcp/v1, method: read_resource, params: {uri: "notes://greeting"}}
  - {id: prompt, protocol: mcp/v1, method: get_prompt, params: {name: review, arguments: {topic: DAGs}}}
  - {id: servers, protocol: mcp/v1, method: list_servers}
  - {id: elsewhere, protocol: mcp/v1, method: list_tools, params: {server: nope}}
"#,
    );
    assert_eq!(result(&report, "add")["text"], "42");
    assert_eq!(result(&report, "add")["structured"], json!({"result": 42}));
    assert_eq!(result(&report, "add")["result"], 42, "the value, unwrapped");
    assert_eq!(result(&report, "shout")["result"], "ANSWER 42");
    assert_eq!(result(&report, "shout")["text"], "ANSWER 42");
    let refuse = &task(&report, "refuse");
    assert_eq!(refuse["error"]["code"], -32030, "{refuse}");
    assert_eq!(refuse["error"]["message"], "tool 'refuse' on MCP server 'py' failed: refused: no way");
    assert_eq!(refuse["attempts"], 1);
    assert_eq!(result(&report, "read")["text"], "hello from a resource");
    assert_eq!(result(&report, "prompt")["text"], "Please review DAGs.");
    assert_eq!(
        result(&report, "servers")["servers"],
        json!([{"name": "py", "url": format!("http://127.0.0.1:{}/mcp", server.port)}])
    );
    let elsewhere = &task(&report, "elsewhere")["error"];
    assert_eq!(elsewhere["message"], "no MCP server named 'nope' (configured: py)");
}

#[test]
fn unreachable_and_ungranted_servers_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config(dir.path(), &[("gone", port)], "");
    let retry = "retry: {max_attempts: 2, base_delay: 0.1, jitter: false}";
    let (_, report) = run(
        dir.path(),
        &config,
        &format!("name: gone\ntasks:\n  - {{id: t, protocol: mcp/v1, method: list_tools, {retry}}}\n"),
    );
    let t = task(&report, "t");
    assert_eq!(t["error"]["code"], -32031, "{t}");
    assert!(t["error"]["message"].as_str().unwrap().starts_with("MCP server 'gone' at http://127.0.0.1:"), "{t}");
    assert_eq!(t["attempts"], 2, "an unreachable server is worth a retry");

    let ungranted = dir.path().join("ungranted.toml");
    std::fs::write(&ungranted, format!("[manifests.mcp.config.servers]\nx = \"http://127.0.0.1:{port}/mcp\"\n"))
        .unwrap();
    let (_, report) =
        run(dir.path(), &ungranted, "name: x\ntasks:\n  - {id: t, protocol: mcp/v1, method: list_tools}\n");
    let t = task(&report, "t");
    assert_eq!(t["error"]["code"], -32034, "{t}");
    assert!(t["error"]["message"].as_str().unwrap().starts_with("http-fetch denied: plugin 'mcp'"), "{t}");

    let none = dir.path().join("none.toml");
    std::fs::write(&none, "").unwrap();
    let (_, report) = run(dir.path(), &none, "name: x\ntasks:\n  - {id: t, protocol: mcp/v1, method: list_tools}\n");
    assert!(task(&report, "t")["error"]["message"].as_str().unwrap().starts_with("no MCP servers are configured"));
}

/// The documented example as written: the host starts server-everything
/// with `npx` (from the npm registry, or its cache).
#[test]
fn the_documented_mcp_example_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", "workflows/mcp.yaml", "--config", "docs/examples/mcp.toml", "--output", "json"])
        .current_dir(root())
        .env_remove("GLEITZEIT_PLUGINS")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "completed", "{report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(result(&report, "echo")["text"], "Echo: The sum of 19 and 23 is 42.");
}

/// Every settings example in docs/llm-and-mcp.md is accepted by the host.
#[test]
fn the_documented_settings_are_valid() {
    let doc = std::fs::read_to_string(root().join("docs/llm-and-mcp.md")).unwrap();
    let blocks = support::fenced_blocks(&doc, "toml");
    assert!(blocks.len() >= 3, "the docs show settings");
    let dir = tempfile::tempdir().unwrap();
    for block in blocks {
        let file = dir.path().join("gleitzeit.toml");
        std::fs::write(&file, &block).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["workflow", "validate", "workflows/hello.yaml", "--config", file.to_str().unwrap()])
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{block}\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A long tool call's progress notifications reach the submitter as
/// `task_progress` events while it runs, from a Streamable HTTP server and
/// from a stdio one through the host's bridge.
#[test]
fn tool_progress_reaches_subscribers() {
    let server = everything_http();
    let dir = tempfile::tempdir().unwrap();
    let http = config(dir.path(), &[("everything", server.port)], "");
    let stdio = dir.path().join("stdio.toml");
    let command = format!(
        "[manifests.mcp.mcp_stdio.everything]\ncommand = [\"node\", \"{}\", \"stdio\"]\n",
        everything_js().display()
    );
    std::fs::write(&stdio, command).unwrap();
    for config in [http, stdio] {
        let host = support::serve(&["--store", "memory", "--config", config.to_str().unwrap()]);
        let workflow = json!({"name": "long", "tasks": [{"id": "long", "protocol": "mcp/v1", "method": "call_tool",
            "params": {"name": "trigger-long-running-operation", "arguments": {"duration": 0.8, "steps": 4}}}]});
        let report = support::submit_with_python(&host, &workflow);
        assert_eq!(
            result(&report, "long")["text"],
            "Long running operation completed. Duration: 0.8 seconds, Steps: 4."
        );
        let steps: Vec<Value> =
            report["progress_events"].as_array().unwrap().iter().map(|e| e["chunk"].clone()).collect();
        let expected: Vec<Value> =
            (1..=4).map(|i| json!({"server": "everything", "progress": i, "total": 4, "message": null})).collect();
        assert_eq!(steps, expected, "{}", config.display());
    }
}

/// An MCP server over HTTP that wants a bearer token gets it from a secret
/// the host adds (the plugin never sees it); without the header it
/// answers 401.
#[test]
fn an_mcp_server_behind_a_bearer_token_gets_it_from_a_secret() {
    const TOKEN: &str = "mcp-0123456789-secret";
    let server = Server::fastmcp_requiring(TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut set = std::process::Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["secret", "set", "mcp", "--data-dir", data.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut set.stdin.take().unwrap(), TOKEN.as_bytes()).unwrap();
    assert!(set.wait().unwrap().success());
    let origin = format!("http://127.0.0.1:{}", server.port);
    let workflow =
        "name: secured\ntasks:\n  - {id: shout, protocol: mcp/v1, method: tool.shout, params: {text: quiet}}\n";
    let without = config(dir.path(), &[("py", server.port)], "");
    let (_, refused) = run(dir.path(), &without, workflow);
    let error = task(&refused, "shout")["error"]["message"].as_str().unwrap().to_owned();
    assert!(error.contains("401"), "{error}");
    let headers = format!("[manifests.mcp.headers.\"{origin}\"]\nAuthorization = \"Bearer {{secret:mcp}}\"\n");
    let with = config(dir.path(), &[("py", server.port)], "");
    let text = std::fs::read_to_string(&with).unwrap();
    std::fs::write(&with, format!("data_dir = {data:?}\n{text}{headers}")).unwrap();
    let (out, report) = run(dir.path(), &with, workflow);
    assert_eq!(result(&report, "shout")["result"], "QUIET");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(TOKEN) && !String::from_utf8_lossy(&out.stderr).contains(TOKEN)
    );
}
