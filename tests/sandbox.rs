//! The plugin sandbox with a hostile plugin built from source
//! (tests/fixtures/plugins/hostile): endless loops end at their deadline,
//! memory bombs at their limit, panics and oversized results become task
//! errors, nothing is granted by default, and manifests are checked.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::root;

/// A plugins directory holding the hostile plugin and, if given, its manifest.
fn plugins_dir(manifest: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(support::component("hostile"), dir.path().join("hostile.wasm")).unwrap();
    if let Some(text) = manifest {
        std::fs::write(dir.path().join("hostile.toml"), text).unwrap();
    }
    dir
}

/// The host config of these tests: its operator lets plugin manifests ask
/// for loopback hosts (the tests' own servers).
const LOOPBACK_POLICY: &str = "[plugin_policy]\nallowed_hosts = [\"http://127.0.0.1:*\"]\n";

fn run(plugins: &Path, workflow: &str) -> (Output, Value) {
    run_with(plugins, workflow, LOOPBACK_POLICY)
}

/// `gleitzeit run` of `workflow` with the plugins of `plugins` and the host
/// config `config`.
fn run_with(plugins: &Path, workflow: &str, config: &str) -> (Output, Value) {
    let file = plugins.join("workflow.yaml");
    std::fs::write(&file, workflow).unwrap();
    let config_file = plugins.join("host-config.toml");
    std::fs::write(&config_file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", file.to_str().unwrap(), "--plugins", plugins.to_str().unwrap(), "--output", "json"])
        .args(["--config", config_file.to_str().unwrap()])
        .env_remove("GLEITZEIT_LOG")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap()
}

fn error_of(report: &Value, id: &str) -> (i64, String) {
    let error = &task(report, id)["error"];
    (error["code"].as_i64().unwrap(), error["message"].as_str().unwrap().to_owned())
}

#[test]
fn hostile_calls_become_task_errors_and_the_rest_keeps_serving() {
    let dir = plugins_dir(Some("memory_mb = 256\n[config]\nmood = \"grumpy\"\n"));
    let (out, report) = run(
        dir.path(),
        r#"
name: hostile
tasks:
  - {id: spin, protocol: hostile/v1, method: spin, timeout: 0.3}
  - {id: hog, protocol: hostile/v1, method: hog}
  - {id: panic, protocol: hostile/v1, method: panic}
  - {id: huge, protocol: hostile/v1, method: huge, params: {bytes: 20000000}}
  - {id: snoop, protocol: hostile/v1, method: snoop}
  - {id: config, protocol: hostile/v1, method: config, params: {key: mood}}
  - {id: unset, protocol: hostile/v1, method: config, params: {key: other}}
  - {id: forbidden, protocol: hostile/v1, method: fetch, params: {url: "http://127.0.0.1:9/secrets"}}
  - {id: fine, protocol: echo/v1, method: echo, params: {message: still serving}}
"#,
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let (code, message) = error_of(&report, "spin");
    assert_eq!(code, -32001, "{message}");
    let took = task(&report, "spin")["duration_ms"].as_f64().unwrap();
    assert!((300.0..400.0).contains(&took), "an endless loop ends within 100 ms of its deadline, took {took} ms");

    let (code, message) = error_of(&report, "hog");
    assert_eq!(code, -32004);
    assert!(message.contains("trapped in 'hog'") && message.contains("memory allocation of"), "{message}");

    let (code, message) = error_of(&report, "panic");
    assert_eq!(code, -32004);
    assert!(message.contains("boom from the hostile plugin"), "the panic message reaches the task: {message}");
    assert!(!message.contains('\n'), "one line: {message}");

    let (code, message) = error_of(&report, "huge");
    assert_eq!(code, -32007);
    assert!(message.contains("results are limited to 16777216 bytes"), "{message}");

    let snoop = &task(&report, "snoop")["result"];
    assert_eq!(snoop["env_home"], Value::Null, "no environment: {snoop}");
    assert_eq!(snoop["env_count"], 0);
    assert!(snoop["file"]["Err"].is_string() && snoop["dir"]["Err"].is_string(), "no files: {snoop}");

    assert_eq!(task(&report, "config")["result"]["value"], "grumpy");
    assert_eq!(task(&report, "unset")["result"]["value"], Value::Null);
    let (_, message) = error_of(&report, "forbidden");
    assert_eq!(
        message,
        "http-fetch denied: plugin 'hostile' may not reach http://127.0.0.1:9 (it is granted no hosts; grant it with allowed_hosts = [\"http://127.0.0.1:9\"] in hostile.toml)"
    );
    assert_eq!(task(&report, "fine")["status"], "completed");
}

/// A local HTTP server for `http-fetch`: plain answers, redirects (to a
/// host the plugin is granted and to one it is not), large and slow bodies.
struct HttpServer {
    port: u16,
    /// Requests that reached `/leak` (only a redirect to a denied host leads there).
    leaks: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

fn http_server() -> HttpServer {
    use axum::routing::{get, post};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let leaks = Arc::new(AtomicUsize::new(0));
    let counted = leaks.clone();
    let chunks = || futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 100_000])));
    let app = axum::Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route("/redirect-in", get(|| async { axum::response::Redirect::temporary("/hello") }))
        .route(
            "/redirect-out",
            get(move || async move { axum::response::Redirect::temporary(&format!("http://localhost:{port}/leak")) }),
        )
        .route(
            "/leak",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "leaked" }
            }),
        )
        .route("/big", get(|| async { "x".repeat(2_000_000) }))
        .route("/big-chunked", get(move || async move { axum::body::Body::from_stream(chunks()) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/echo",
            post(|headers: axum::http::HeaderMap, body: String| async move {
                let test = headers.get("x-test").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                ([("content-type", "text/plain; charset=utf-8")], format!("{test}:{body}"))
            }),
        );
    runtime.spawn(async move { axum::serve(listener, app).await });
    HttpServer { port, leaks, _runtime: runtime }
}

#[test]
fn http_fetch_reaches_granted_hosts_only() {
    let server = http_server();
    let port = server.port;
    let dir =
        plugins_dir(Some(&format!("allowed_hosts = [\"http://127.0.0.1:{port}\"]\nmax_response_bytes = 1000000\n")));
    let (_, report) = run(
        dir.path(),
        &format!(
            r#"
name: fetch
tasks:
  - {{id: hello, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{port}/hello"}}}}
  - {{id: post, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{port}/echo", method: POST, headers: [[x-test, sent]], body: payload}}}}
  - {{id: other-port, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{other}/hello"}}}}
  - {{id: other-host, protocol: hostile/v1, method: fetch, params: {{url: "http://localhost:{port}/hello"}}}}
  - {{id: tls, protocol: hostile/v1, method: fetch, params: {{url: "https://127.0.0.1:{port}/hello"}}}}
  - {{id: redirect-in, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{port}/redirect-in"}}}}
  - {{id: redirect-out, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{port}/redirect-out"}}}}
  - {{id: big, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{port}/big"}}}}
  - {{id: big-chunked, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{port}/big-chunked"}}}}
  - {{id: slow, protocol: hostile/v1, method: fetch, params: {{url: "http://127.0.0.1:{port}/slow", timeout_ms: 200}}}}
  - {{id: not-a-url, protocol: hostile/v1, method: fetch, params: {{url: "127.0.0.1/hello"}}}}
  - {{id: hold-16, protocol: hostile/v1, method: hold, params: {{url: "http://127.0.0.1:{port}/hello", streams: 16}}}}
  - {{id: hold-17, protocol: hostile/v1, method: hold, params: {{url: "http://127.0.0.1:{port}/hello", streams: 17}}}}
"#,
            other = port + 1,
        ),
    );
    assert_eq!(task(&report, "hello")["result"]["body"], "hi", "{report:#}");
    assert_eq!(task(&report, "hello")["result"]["status"], 200);
    let post = &task(&report, "post")["result"];
    assert_eq!(post["body"], "sent:payload", "method, headers and body reach the server: {post}");
    assert_eq!(post["content_type"], "text/plain; charset=utf-8");

    let origin = format!("http://127.0.0.1:{port}");
    for (id, wanted) in [
        ("other-port", format!("http://127.0.0.1:{}", port + 1)),
        ("other-host", format!("http://localhost:{port}")),
        ("tls", format!("https://127.0.0.1:{port}")),
    ] {
        let (_, message) = error_of(&report, id);
        assert!(
            message.starts_with(&format!(
                "http-fetch denied: plugin 'hostile' may not reach {wanted} (it is granted only {origin};"
            )),
            "{id}: {message}"
        );
    }

    assert_eq!(task(&report, "redirect-in")["result"]["body"], "hi", "redirects within the grants are followed");
    let (_, message) = error_of(&report, "redirect-out");
    assert!(
        message.contains(&format!("redirect to http://localhost:{port} denied: not in allowed_hosts")),
        "{message}"
    );
    assert_eq!(server.leaks.load(Ordering::SeqCst), 0, "the denied redirect was never sent");

    for id in ["big", "big-chunked"] {
        let (_, message) = error_of(&report, id);
        assert_eq!(
            message,
            format!("http-fetch {origin}: the response is larger than max_response_bytes (1000000 bytes)"),
            "{id}"
        );
    }
    let (_, message) = error_of(&report, "slow");
    assert!(message.starts_with(&format!("http-fetch {origin}: timed out")), "{message}");
    let took = task(&report, "slow")["duration_ms"].as_f64().unwrap();
    assert!(took < 2000.0, "the request's own timeout ended it, took {took} ms");
    let (_, message) = error_of(&report, "not-a-url");
    assert!(message.starts_with("http-fetch: invalid URL '127.0.0.1/hello'"), "{message}");
    assert_eq!(task(&report, "hold-16")["result"]["open"], 16);
    let (_, message) = error_of(&report, "hold-17");
    assert_eq!(message, "http-fetch-stream: at most 16 streams may be open at once");
}

#[test]
fn the_manifest_sets_the_memory_limit() {
    // A 12 MB result and its JSON copy fit in the default 64 MiB, not in 16.
    let workflow = "name: m\ntasks:\n  - {id: big, protocol: hostile/v1, method: huge, params: {bytes: 12000000}}\n";
    let (out, report) = run(plugins_dir(None).path(), workflow);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(task(&report, "big")["result"].as_str().map(str::len), Some(12_000_000));
    let (_, report) = run(plugins_dir(Some("memory_mb = 16\n")).path(), workflow);
    let (code, message) = error_of(&report, "big");
    assert_eq!(code, -32004, "{message}");
    assert!(message.contains("memory allocation of"), "{message}");
}

#[test]
fn a_manifest_timeout_caps_every_call() {
    let dir = plugins_dir(Some("timeout_s = 0.2\n"));
    let (_, report) =
        run(dir.path(), "name: t\ntasks:\n  - {id: spin, protocol: hostile/v1, method: spin, timeout: 60}\n");
    assert_eq!(error_of(&report, "spin").0, -32001);
    let took = task(&report, "spin")["duration_ms"].as_f64().unwrap();
    assert!((200.0..300.0).contains(&took), "stopped at the plugin's 0.2 s, took {took} ms");
}

#[test]
fn manifest_mistakes_are_reported_and_the_plugin_is_not_loaded() {
    for (manifest, expected) in [
        ("memroy_mb = 64\n", "unknown field `memroy_mb`"),
        ("memory_mb = 0\n", "memory_mb must be from 1 to 4096, got 0"),
        ("max_concurrency = 0\n", "max_concurrency must be from 1 to 1000, got 0"),
        (
            "[mcp_stdio.x]\ncommand = []\n",
            "[mcp_stdio.x] asks the host to run a command, and a file in the plugins directory may not",
        ),
        (
            "allowed_hosts = [\"example.com\"]\n",
            "allowed_hosts[0]: 'example.com' is not of the form scheme://host[:port]",
        ),
        // Beyond the default plugin policy: each refusal names the grant and
        // the two lines that would allow it.
        (
            "allowed_hosts = [\"http://10.0.0.1:80\"]\n",
            "allowed_hosts[0] 'http://10.0.0.1:80' is beyond the host's plugin policy; allow it for every plugin with allowed_hosts = [\"http://10.0.0.1:80\"] under [plugin_policy] in the host config, or for this one with allowed_hosts = [\"http://10.0.0.1:80\"] under [manifests.hostile]",
        ),
        (
            "memory_mb = 512\n",
            "memory_mb = 512 is beyond the host's plugin policy; allow it for every plugin with max_memory_mb = 512",
        ),
        ("read_dirs = [\"/tmp\"]\n", "read_dirs[0] '/tmp' is beyond the host's plugin policy"),
        ("timeout_s = 1000\n", "timeout_s = 1000 is beyond the host's plugin policy"),
    ] {
        let dir = plugins_dir(Some(manifest));
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["run", "workflows/hello.yaml", "--plugins", dir.path().to_str().unwrap()])
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "other plugins still serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("plugin 'hostile'") && stderr.contains("has an invalid manifest"), "{stderr}");
        assert!(stderr.contains("hostile.toml") && stderr.contains(expected), "{manifest}: {stderr}");
    }
}

#[test]
fn the_manifest_and_host_config_shown_in_the_docs_are_accepted() {
    let doc = std::fs::read_to_string(root().join("docs/plugins.md")).unwrap();
    let blocks = support::fenced_blocks(&doc, "toml");
    let dir = plugins_dir(Some(&blocks[0]));
    let policy = blocks.iter().find(|b| b.contains("[plugin_policy]")).unwrap();
    let (out, report) = run_with(
        dir.path(),
        "name: d\ntasks:\n  - {id: c, protocol: hostile/v1, method: config, params: {key: temperature}}\n",
        policy,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(task(&report, "c")["result"]["value"], "0.7");

    let config = blocks.iter().find(|b| b.starts_with("# gleitzeit.toml")).unwrap();
    std::fs::write(dir.path().join("gleitzeit.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", "workflows/hello.yaml", "--config", dir.path().join("gleitzeit.toml").to_str().unwrap()])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_host_config_overrides_manifests_of_directory_and_bundled_plugins() {
    let dir = plugins_dir(Some("[config]\nmood = \"grumpy\"\nkept = \"yes\"\n"));
    let config = dir.path().join("gleitzeit.toml");
    std::fs::write(
        &config,
        "[manifests.hostile]\nconfig = { mood = \"calm\" }\n\n[manifests.echo]\ntimeout_s = 0.2\n\n[manifests.absent]\nmemory_mb = 8\n",
    )
    .unwrap();
    let workflow = dir.path().join("w.yaml");
    std::fs::write(
        &workflow,
        r#"
name: overrides
tasks:
  - {id: mood, protocol: hostile/v1, method: config, params: {key: mood}}
  - {id: kept, protocol: hostile/v1, method: config, params: {key: kept}}
  - {id: slow, protocol: echo/v1, method: delay, params: {seconds: 5}, timeout: 60}
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["run", workflow.to_str().unwrap(), "--output", "json"])
        .args(["--plugins", dir.path().to_str().unwrap(), "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task(&report, "mood")["result"]["value"], "calm", "the host config wins: {report:#}");
    assert_eq!(task(&report, "kept")["result"]["value"], "yes", "keys it does not name stay");
    assert_eq!(error_of(&report, "slow").0, -32001, "the bundled echo got the 0.2 s cap");
    assert!(task(&report, "slow")["duration_ms"].as_f64().unwrap() < 1000.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[manifests.absent] in the host config names no plugin loaded now"), "{stderr}");
}

#[test]
fn mistakes_in_the_host_configs_manifests_stop_the_start() {
    let dir = plugins_dir(None);
    let config = dir.path().join("gleitzeit.toml");
    for (text, expected) in [
        (
            "[manifests.echo]\nallowed_hosts = [\"localhost\"]\n",
            "[manifests.echo]: allowed_hosts[0]: 'localhost' is not of the form scheme://host[:port]",
        ),
        ("[manifests.hostile]\nmemroy_mb = 1\n", "unknown field `memroy_mb`"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["run", "workflows/hello.yaml", "--config", config.to_str().unwrap()])
            .args(["--plugins", dir.path().to_str().unwrap()])
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("invalid config file {}", config.display())), "{stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}
