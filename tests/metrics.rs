//! `/metrics` against a real daemon: after known workflows the counters and
//! histograms hold the expected values; only metrics and admin tokens read
//! them; a real Prometheus (Debian's) scrapes them with the configuration
//! docs/metrics.md shows; and promtool's lint finds nothing to say about
//! the names.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::collections::HashMap;
use std::process::Command;
use support::{Served, root, serve};

/// One scrape's samples: `name{labels}` (as written) → value.
fn scrape(host: &Served, token: &str) -> (u16, HashMap<String, f64>, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{}/metrics", host.url))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(name, value)| Some((name.to_owned(), value.parse().ok()?))))
        .collect();
    (status.parse().unwrap(), samples, body.to_owned())
}

fn token(host: &Served, name: &str, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["token", "create", "--name", name, "--role", role])
        .env("GLEITZEIT_DATA_DIR", host.data_home.path().join("gleitzeit"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Submit a workflow file and wait for it (the CLI's exit code is its status).
fn run(host: &Served, file: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["workflow", "submit", file, "--wait", "--server", &host.url])
        .current_dir(root())
        .env("GLEITZEIT_TOKEN", &host.token)
        .output()
        .unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn after_known_workflows_the_metrics_hold_what_happened() {
    let host = serve(&[]);
    let prometheus = token(&host, "prometheus", "metrics");
    let client = token(&host, "alice", "client");
    run(&host, "workflows/hello.yaml"); // 3 echo tasks, all completed
    run(&host, "workflows/retry.yaml"); // flaky: 3 attempts then completed; 2 attempts then failed
    let (status, m, text) = scrape(&host, &prometheus);
    assert_eq!(status, 200, "{text}");
    let at = |name: &str| m.get(name).copied().unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(at("gleitzeit_workflows_submitted_total"), 2.0);
    assert_eq!(at("gleitzeit_workflows_finished_total{status=\"completed\"}"), 1.0);
    assert_eq!(at("gleitzeit_workflows_finished_total{status=\"failed\"}"), 1.0);
    assert_eq!(at("gleitzeit_tasks_submitted_total{protocol=\"echo/v1\"}"), 5.0);
    assert_eq!(at("gleitzeit_tasks_finished_total{protocol=\"echo/v1\",status=\"completed\"}"), 4.0);
    assert_eq!(at("gleitzeit_tasks_finished_total{protocol=\"echo/v1\",status=\"failed\"}"), 1.0);
    assert_eq!(at("gleitzeit_task_retries_total{protocol=\"echo/v1\"}"), 3.0, "2 for recovers, 1 for gives-up");
    let flaky = "{protocol=\"echo/v1\",method=\"flaky\"}";
    assert_eq!(at(&format!("gleitzeit_task_attempt_duration_seconds_count{flaky}")), 5.0, "one per attempt");
    assert_eq!(at(&format!("gleitzeit_task_queue_wait_seconds_count{flaky}")), 5.0);
    let inf = "gleitzeit_task_attempt_duration_seconds_bucket{le=\"+Inf\",protocol=\"echo/v1\",method=\"echo\"}";
    assert_eq!(at(inf), 2.0, "hello's two echo tasks");
    let sum = at("gleitzeit_task_attempt_duration_seconds_sum{protocol=\"echo/v1\",method=\"echo\"}");
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    assert_eq!(at("gleitzeit_tasks_running"), 0.0);
    assert_eq!(at("gleitzeit_tasks_queued{priority=\"normal\"}"), 0.0);
    assert_eq!(at("gleitzeit_providers{kind=\"wasm\",protocol=\"echo/v1\"}"), 1.0);
    assert_eq!(at("gleitzeit_plugin_loads_total{plugin=\"echo\"}"), 1.0);
    assert_eq!(at("gleitzeit_plugin_reloads_total{plugin=\"echo\"}"), 0.0);
    assert!(at("gleitzeit_store_commit_duration_seconds_count") >= 2.0, "the default SQLite store commits");
    assert!(at("gleitzeit_store_batch_records_sum") >= 5.0 + 2.0, "every task's and workflow's records");
    assert_eq!(at("gleitzeit_socketio_connections"), 0.0, "the CLI has gone");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");

    // Who may read them.
    assert_eq!(scrape(&host, &host.token).0, 200, "admin");
    assert_eq!(scrape(&host, &client).0, 403, "a client token may not");
    assert_eq!(scrape(&host, "").0, 401, "nor can anyone without a token");
}

/// A real Prometheus scrapes the daemon with the scrape configuration of
/// docs/metrics.md (its target and token file filled in) and answers
/// queries over what it scraped.
#[test]
fn prometheus_scrapes_the_documented_configuration() {
    let host = serve(&[]);
    let prometheus_token = token(&host, "prometheus", "metrics");
    run(&host, "workflows/hello.yaml");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("gleitzeit.token");
    std::fs::write(&token_file, &prometheus_token).unwrap();
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let documented = support::fenced_blocks(&doc, "yaml").into_iter().find(|b| b.contains("scrape_configs")).unwrap();
    let target = host.url.trim_start_matches("http://");
    let config = documented
        .replace("/etc/prometheus/gleitzeit.token", token_file.to_str().unwrap())
        .replace("127.0.0.1:8000", target)
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    assert!(config.contains(target) && config.contains("scrape_interval: 1s"), "{config}");
    std::fs::write(dir.path().join("prometheus.yml"), &config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/test.sh)");
    let query = |q: &str| -> Option<f64> {
        let out = Command::new("curl")
            .args(["-sf", "--get", "--data-urlencode", &format!("query={q}")])
            .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
            .output()
            .ok()?;
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let completed = support::until(
        "Prometheus to scrape the daemon",
        support::PATIENCE,
        || query("gleitzeit_tasks_finished_total{status=\"completed\"}"),
        Option::is_some,
    )
    .unwrap();
    let up = query("up{job=\"gleitzeit\"}");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(completed, 3.0, "hello's three tasks, as Prometheus stored them");
    assert_eq!(up, Some(1.0));
}

/// promtool's lint (names, units, `_total`, help texts) on the scrape.
/// promtool reads the classic text format, whose counter families carry
/// `_total` and which has no `# EOF`; the scrape is OpenMetrics, so those
/// two differences are translated first, nothing else.
#[test]
fn promtool_finds_the_names_conventional() {
    let host = serve(&[]);
    run(&host, "workflows/hello.yaml");
    let (_, _, text) = scrape(&host, &host.token);
    let counters: Vec<String> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter").map(str::to_owned)).collect();
    let classic: String = text
        .lines()
        .filter(|l| *l != "# EOF")
        .map(|l| {
            let family = l.strip_prefix("# HELP ").or_else(|| l.strip_prefix("# TYPE "));
            match family.and_then(|rest| rest.split_once(' ')) {
                Some((name, _)) if counters.iter().any(|c| c == name) => l.replacen(name, &format!("{name}_total"), 1),
                _ => l.to_owned(),
            }
        })
        .map(|l| l + "\n")
        .collect();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh)");
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), classic.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{classic}");
}
