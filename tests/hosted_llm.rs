//! The bundled OpenAI-compatible `llm/v1` plugin (plugins/openai) against
//! the test server of OpenAI's API (tests/fake-openai), with its API key
//! kept as a secret: every method, streaming, tool calls, a 429 with
//! Retry-After, a wrong key, a broken stream, and the key in nothing the
//! host wrote or sent.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

const KEY: &str = "sk-test-0123456789-the-real-key";

/// `gleitzeit secret set NAME` with `value` on stdin.
fn set_secret(data: &Path, name: &str, value: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["secret", "set", name, "--data-dir", data.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains(value), "the value is not shown: {said}");
}

/// docs/llm-and-mcp.md's settings for a hosted backend, as written, with
/// the test server on `port` for api.openai.com, and `data` as the data
/// directory.
fn settings(dir: &Path, data: &Path, port: u16) -> std::path::PathBuf {
    let doc = std::fs::read_to_string(support::root().join("docs/llm-and-mcp.md")).unwrap();
    let section = doc.split("## Hosted models").nth(1).unwrap();
    let block = section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let text = format!(
        "data_dir = {data:?}\n{}",
        block.replace("https://api.openai.com", &format!("http://127.0.0.1:{port}"))
    );
    let path = dir.join("gleitzeit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A test server of OpenAI's API with `options`, the key kept as the
/// secret `openai` in a data directory, and the docs' settings for it.
struct Hosted {
    server: support::servers::FakeOpenai,
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
}

fn hosted(options: fake_openai::Options) -> Hosted {
    let server = support::servers::fake_openai_with(KEY, options);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data, "openai", KEY);
    let config = settings(dir.path(), &data, server.port);
    Hosted { server, dir, data, config }
}

const WORKFLOW: &str = r#"
name: hosted
tasks:
  - {id: chat, protocol: llm-remote/v1, method: chat, params: {model: gpt-4o-mini, messages: [{role: user, content: "say hi"}]}}
  - {id: plain, protocol: llm-remote/v1, method: generate, params: {prompt: "one two three", system: "be brief", stream: false}}
  - {id: look, protocol: llm-remote/v1, method: vision, params: {prompt: "what is it", image_data: "iVBORw0KGgo="}}
  - {id: embed, protocol: llm-remote/v1, method: embed, params: {text: ["a b", "c"]}}
  - {id: models, protocol: llm-remote/v1, method: list_models}
  - id: tools
    protocol: llm-remote/v1
    method: chat
    params:
      model: tool-caller
      messages: [{role: user, content: "look it up"}]
      tools: [{type: function, function: {name: lookup, parameters: {type: object}}}]
  - {id: headers, protocol: llm-remote/v1, method: chat, params: {model: echo-headers, stream: false, messages: [{role: user, content: "what did I send?"}]}}
  - {id: limited, protocol: llm-remote/v1, method: chat, retry: {max_attempts: 2, base_delay: 0.01, jitter: false},
     params: {model: rate-limited, messages: [{role: user, content: "again"}]}}
  - {id: broken, protocol: llm-remote/v1, method: chat, params: {model: broken-stream, messages: [{role: user, content: "a b c d"}]}}
"#;

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("{id}: {report:#}"))
}

/// Every file under `dir` but the secrets file, as text.
fn everything_written(dir: &Path) -> String {
    let mut all = String::new();
    for entry in walk(dir) {
        if entry.file_name().is_some_and(|n| n != "secrets.toml") {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()));
        }
    }
    all
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn a_hosted_backend_serves_llm_with_its_key_kept_secret() {
    let Hosted { server, dir, data, config } = hosted(fake_openai::Options::default());
    let file = dir.path().join("hosted.yaml");
    std::fs::write(&file, WORKFLOW).unwrap();

    let (out, report) = support::run_json(&[file.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let statuses: Vec<(&str, &str)> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    let failed: Vec<&str> = statuses.iter().filter(|(_, s)| *s != "completed").map(|(id, _)| *id).collect();
    assert_eq!(failed, ["broken"], "only the broken stream fails: {report:#}\n{stderr}");

    let chat = &task(&report, "chat")["result"];
    assert_eq!(chat["content"], "gpt-4o-mini replies to 1 message(s): say hi", "{chat:#}");
    assert_eq!(chat["usage"], serde_json::json!({"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}));
    assert_eq!(chat["message"]["role"], "assistant");
    let plain = &task(&report, "plain")["result"];
    assert_eq!(plain["content"], "gpt-4o-mini replies to 2 message(s): one two three");
    assert_eq!(plain["tokens_used"], 13, "{plain:#}");
    assert_eq!(
        task(&report, "look")["result"]["content"],
        "gpt-4o-mini replies to 1 message(s): what is it (with 1 image(s))"
    );
    assert_eq!(task(&report, "embed")["result"]["dimensions"], 3);
    assert_eq!(
        task(&report, "models")["result"]["models"],
        serde_json::json!(["gpt-4o-mini", "text-embedding-3-small"])
    );
    let calls = &task(&report, "tools")["result"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "lookup", "{calls:#}");
    assert_eq!(calls[0]["function"]["arguments"], "{\"q\": 1}");

    // The backend echoed what it received: the key reached it, and the
    // plugin (and so the result) saw only its name.
    let echoed = task(&report, "headers")["result"]["content"].as_str().unwrap();
    assert!(echoed.contains("authorization: Bearer [secret:openai]"), "{echoed}");

    // The 429 said Retry-After: 1; the retry came no sooner.
    let limited = task(&report, "limited");
    assert_eq!((limited["status"].as_str(), limited["attempts"].as_u64()), (Some("completed"), Some(2)), "{limited:#}");
    let history = limited["history"].as_array().unwrap();
    assert_eq!(history[0]["error"]["code"], -32026, "{history:#?}");
    let started = |call: &Value| humantime::parse_rfc3339_weak(call["started_at"].as_str().unwrap()).unwrap();
    let gap = started(&history[1]).duration_since(started(&history[0])).unwrap();
    assert!(gap.as_secs_f64() >= 0.95, "retried after {gap:?}, before the backend's Retry-After");
    assert_eq!(server.stats.limited.load(Ordering::SeqCst), 1);

    let broken = task(&report, "broken");
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["error"]["message"].as_str().unwrap().contains("openai's stream ended without [DONE]"),
        "{broken:#}"
    );

    // A wrong key: the error says so, without the key.
    let wrong = "sk-wrong-key-abcdefghijkl";
    set_secret(&data, "openai", wrong);
    let one = dir.path().join("one.yaml");
    std::fs::write(&one, "name: one\ntasks:\n  - {id: chat, protocol: llm-remote/v1, method: chat, params: {messages: [{role: user, content: hi}]}}\n").unwrap();
    let (refused_out, refused) = support::run_json(&[one.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    let error = &task(&refused, "chat")["error"];
    assert_eq!(error["code"], -32025, "{refused:#}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("refused the credentials (401") && message.contains("gleitzeit secret list"), "{message}");

    // Neither key is in anything the host printed or wrote.
    let printed = [&out, &refused_out]
        .iter()
        .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        .collect::<String>();
    let written = everything_written(dir.path());
    for key in [KEY, wrong] {
        assert!(!printed.contains(key), "a key was printed");
        assert!(!written.contains(key), "a key was written outside secrets.toml");
    }
    let listed = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["secret", "list", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.starts_with("openai\t") && !listed.contains(wrong), "{listed}");
}

/// A backend that answers 429 past 3 chat completions a second: the
/// host's `rate_limit` (90 a minute, one every 667 ms) keeps a batch
/// under it, every task completing at its first attempt; without it the
/// same batch is refused.
#[test]
fn a_rate_limit_keeps_a_batch_within_the_backends_limit() {
    let limit = fake_openai::Options { limit: Some((3, std::time::Duration::from_secs(1))) };
    let Hosted { server, dir, config, .. } = hosted(limit);
    let batch = dir.path().join("batch.yaml");
    std::fs::write(
        &batch,
        "name: batch\ntasks:\n  - {id: ask, protocol: llm-remote/v1, method: chat, for_each: [1, 2, 3, 4, 5, 6, 7, 8], params: {stream: false, messages: [{role: user, content: \"item ${item}\"}]}}\n",
    )
    .unwrap();
    let run = || support::run_json(&[batch.to_str().unwrap(), "--config", config.to_str().unwrap()]).1;

    let text = std::fs::read_to_string(&config).unwrap();
    let with_limit = text.replace("enabled = true\n", "enabled = true\nrate_limit = { requests_per_minute = 90 }\n");
    std::fs::write(&config, with_limit).unwrap();
    let limited = run();
    assert_eq!(limited["status"], "completed", "{limited:#}");
    assert_eq!(server.stats.limited.load(Ordering::SeqCst), 0, "no 429 within the limit");
    let items: Vec<&Value> = limited["tasks"].as_array().unwrap().iter().filter(|t| t["parent"] == "ask").collect();
    assert_eq!(items.len(), 8);
    assert!(items.iter().all(|t| t["attempts"] == 1), "waiting is not an attempt: {limited:#}");

    std::fs::write(&config, text).unwrap();
    let unlimited = run();
    assert_eq!(unlimited["status"], "failed", "the backend refuses a burst: {unlimited:#}");
    assert!(server.stats.limited.load(Ordering::SeqCst) > 0);
}

/// `cache: {ttl}`: the second run of the same calls is answered from the
/// cache, without a request to the backend, and says so; a task that opts
/// out asks again. A run without a store keeps its cache in the data
/// directory; one with a store, in the store.
#[test]
fn repeated_calls_are_answered_from_the_cache() {
    let Hosted { server, dir, config, data } = hosted(fake_openai::Options::default());
    let file = dir.path().join("cached.yaml");
    std::fs::write(
        &file,
        "name: cached\ncache: {ttl: 1h}\ntasks:\n  - {id: ask, protocol: llm-remote/v1, method: chat, params: {stream: false, messages: [{role: user, content: same question}]}}\n  - {id: fresh, protocol: llm-remote/v1, method: chat, cache: false, params: {stream: false, messages: [{role: user, content: same question}]}}\n",
    )
    .unwrap();
    let store = format!("sqlite:{}", dir.path().join("store.db").display());
    for with in [&[][..], &["--store", &store][..]] {
        let run =
            || support::run_json(&[&[file.to_str().unwrap(), "--config", config.to_str().unwrap()], with].concat()).1;
        let asked = server.stats.requests.load(Ordering::SeqCst);
        let first = run();
        assert_eq!(first["status"], "completed", "{first:#}");
        assert_eq!(server.stats.requests.load(Ordering::SeqCst), asked + 2, "{with:?}: the first run asks");
        let second = run();
        assert_eq!(second["status"], "completed", "{second:#}");
        let asked_again = server.stats.requests.load(Ordering::SeqCst) - asked - 2;
        assert_eq!(asked_again, 1, "{with:?}: only the task that opted out asked again");
        let ask = task(&second, "ask");
        assert_eq!((ask["cached"].as_bool(), &ask["history"][0]["provider"]), (Some(true), &Value::from("cache")));
        assert_eq!(ask["result"]["content"], task(&first, "ask")["result"]["content"]);
        assert!(task(&second, "fresh").get("cached").is_none());
    }
    let kept = std::fs::metadata(data.join("results.db")).expect("a run without a store keeps its cache here");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&kept.permissions()) & 0o777, 0o600);
}

/// Two instances of the bundled plugin at once, each with its own
/// backend, key and protocol (the second as the docs declare OpenRouter):
/// each task reaches its own backend with its own key.
#[test]
fn two_hosted_backends_at_once_each_with_its_own_key() {
    let Hosted { server, dir, data, config } = hosted(fake_openai::Options::default());
    let router = support::servers::fake_openai_with("sk-router-4b1e", fake_openai::Options::default());
    set_secret(&data, "openrouter", "sk-router-4b1e");
    let doc = std::fs::read_to_string(support::root().join("docs/llm-and-mcp.md")).unwrap();
    let block = doc.split("```toml\n[manifests.openrouter]").nth(1).unwrap().split("```").next().unwrap();
    let at = format!("http://127.0.0.1:{}", router.port);
    let block = format!("[manifests.openrouter]{block}")
        .replace("https://openrouter.ai/api", &at)
        .replace("https://openrouter.ai", &at);
    let mut settings = std::fs::OpenOptions::new().append(true).open(&config).unwrap();
    writeln!(settings, "\n{block}").unwrap();
    let file = dir.path().join("two.yaml");
    std::fs::write(
        &file,
        "name: two\ntasks:\n  - {id: openai, protocol: llm-remote/v1, method: chat, params: {stream: false, messages: [{role: user, content: hi}]}}\n  - {id: router, protocol: llm-router/v1, method: chat, params: {stream: false, messages: [{role: user, content: hi}]}}\n",
    )
    .unwrap();
    let (out, report) = support::run_json(&[file.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(report["status"], "completed", "{report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(task(&report, "openai")["result"]["content"], "gpt-4o-mini replies to 1 message(s): hi");
    assert_eq!(task(&report, "router")["result"]["content"], "openai/gpt-4o-mini replies to 1 message(s): hi");
    assert_eq!((server.stats.requests.load(Ordering::SeqCst), router.stats.requests.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(task(&report, "router")["history"][0]["provider"], "wasm:openrouter");

    // An instance of no bundled plugin is refused, naming the ones there are.
    writeln!(settings, "\n[manifests.other]\nbundled = \"gpt\"").unwrap();
    let (out, _) = support::run_json(&[file.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[manifests.other] bundled = 'gpt': no such bundled plugin (bundled: "), "{stderr}");
}

/// `curl` of the daemon's API: the answer as JSON.
fn curl(method: &str, url: &str, token: &str) -> Value {
    let out = Command::new("curl")
        .args(["-s", "-X", method, "-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

/// The report of workflow `id` once it has finished, as the host's admin
/// sees it.
fn finished(host: &support::Served, id: &str) -> Value {
    finished_as(host, id, &host.token)
}

/// `workflow rerun`: a failed workflow's completed tasks are not asked
/// again, its failed one and what follows run; `?from=TASK` reruns a
/// completed one from a task on; the old runs are unchanged.
#[test]
fn a_rerun_runs_only_what_failed_and_names_its_origin() {
    let Hosted { server, dir, data, config } = hosted(fake_openai::Options::default());
    let host = support::serve(&["--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    let file = dir.path().join("rerun.yaml");
    // The test server answers the model rate-limited with a 429 every other
    // time: `flaky` fails at first (it has no retry), and succeeds again.
    std::fs::write(
        &file,
        "name: rerun me\ntasks:\n  - {id: first, protocol: llm-remote/v1, method: chat, params: {stream: false, messages: [{role: user, content: one}]}}\n  - {id: flaky, protocol: llm-remote/v1, method: chat, dependencies: [first], params: {model: rate-limited, stream: false, messages: [{role: user, content: \"${first.result.content}\"}]}}\n  - {id: last, protocol: llm-remote/v1, method: chat, dependencies: [flaky], params: {stream: false, messages: [{role: user, content: \"${flaky.result.content}\"}]}}\n",
    )
    .unwrap();
    let gleitzeit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(args)
            .args(["--server", &host.url, "--token", &host.token, "--output", "json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    };
    let failed = gleitzeit(&["workflow", "submit", file.to_str().unwrap(), "--wait"]);
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let old = failed["workflow_id"].as_str().unwrap().to_owned();
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), 2, "first, then flaky's 429");

    let rerun = gleitzeit(&["workflow", "rerun", &old, "--wait"]);
    assert_eq!(rerun["status"], "completed", "{rerun:#}");
    assert_eq!(rerun["rerun_of"], old.as_str());
    assert_eq!(task(&rerun, "first")["taken_from"], old.as_str(), "kept, not asked again");
    assert_eq!(task(&rerun, "first")["result"], task(&failed, "first")["result"]);
    assert!(task(&rerun, "last")["taken_from"].is_null());
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), 4, "flaky and last, not first");

    // From a task on, of the completed rerun, over the HTTP API.
    let new = rerun["workflow_id"].as_str().unwrap();
    let url = format!("{}/api/v1/workflows/{new}/rerun?from=last", host.url);
    let again = curl("POST", &url, &host.token);
    assert_eq!(again["rerun_of"], new, "{again:#}");
    let again = finished(&host, again["workflow_id"].as_str().unwrap());
    assert_eq!(again["status"], "completed", "{again:#}");
    assert_eq!(task(&again, "flaky")["taken_from"], new);
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), 5, "only last");

    // The old run is as it was; a running or unknown one is refused.
    assert_eq!(finished(&host, &old)["status"], "failed");
    let nothing = curl("POST", &format!("{}/api/v1/workflows/nope/rerun", host.url), &host.token);
    assert_eq!(nothing["code"], -32011, "{nothing:#}");
    let completed = curl("POST", &format!("{}/api/v1/workflows/{new}/rerun", host.url), &host.token);
    assert!(completed["message"].as_str().unwrap().contains("--from TASK"), "{completed:#}");
}

/// `curl` with a JSON body.
fn curl_post(url: &str, token: &str, body: &Value) -> Value {
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string(), url])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

/// Through the daemon, as two client tokens: the key reaches the backend
/// and nothing else; one client's answer (which echoes its request) is not
/// the other's to read; the key is in no answer, listing, log line or
/// stored record.
#[test]
fn the_daemon_keeps_the_key_from_every_client_log_and_record() {
    let Hosted { server: _server, dir: _dir, data, config } = hosted(fake_openai::Options::default());
    let host = support::serve(&["--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    let (alice, bob) = (client_token(&host, &data, "alice"), client_token(&host, &data, "bob"));
    let workflow = serde_json::json!({"name": "what did I send", "tasks": [{"id": "echo", "protocol": "llm-remote/v1",
        "method": "chat", "params": {"model": "echo-headers", "stream": false, "messages": [{"role": "user", "content": "?"}]}}]});
    let submitted = curl_post(&format!("{}/api/v1/workflows", host.url), &alice, &workflow);
    let id = submitted["workflow_id"].as_str().unwrap_or_else(|| panic!("{submitted:#}")).to_owned();
    let report = finished_as(&host, &id, &alice);
    assert_eq!(report["status"], "completed", "{report:#}");
    let results = curl("GET", &format!("{}/api/v1/workflows/{id}/results", host.url), &alice);
    let echoed = results["results"]["echo"]["content"].as_str().unwrap_or_else(|| panic!("{results:#}")).to_owned();
    assert!(echoed.contains("authorization: Bearer [secret:openai]"), "{echoed}");
    let bobs = curl("GET", &format!("{}/api/v1/workflows/{id}", host.url), &bob);
    assert_eq!(bobs["code"], -32011, "bob does not see alice's workflow: {bobs:#}");

    let plugins = curl("GET", &format!("{}/api/v1/plugins", host.url), &host.token);
    // The operator sees which secret goes where, never its value.
    let openai = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "openai").unwrap();
    assert_eq!(openai["grants"]["headers"][0]["secrets"], serde_json::json!(["openai"]), "{openai:#}");
    let listed = host.cli(&["plugin", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let origin = openai["grants"]["allowed_hosts"][0].as_str().unwrap();
    assert!(listed.contains(&format!("adds authorization for {origin} from secret openai")), "{listed}");
    let metrics = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {}", host.token)])
        .arg(format!("{}/metrics", host.url))
        .output()
        .unwrap();
    let said = format!("{report}{results}{plugins}{listed}{}{}", String::from_utf8_lossy(&metrics.stdout), host.log());
    assert!(!said.contains(KEY), "the key was in an answer or a log line");
    assert!(!everything_written(&data).contains(KEY), "the key was stored outside secrets.toml");
}

/// A new client token named `name` of `host`, whose data directory is
/// `data`.
fn client_token(host: &support::Served, data: &Path, name: &str) -> String {
    let out = host.cli(&["token", "create", "--name", name, "--role", "client", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// [`finished`] as `token` sees it.
fn finished_as(host: &support::Served, id: &str, token: &str) -> Value {
    let url = format!("{}/api/v1/workflows/{id}", host.url);
    for _ in 0..600 {
        let report = curl("GET", &url, token);
        if report["status"] != "running" && !report["status"].is_null() {
            return report;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("workflow {id} did not finish");
}

/// Through the daemon: a batch under the plugin's rate limit gets no 429
/// from a backend that allows 3 a second, and the same calls made again
/// are answered from the store's cache without a request.
#[test]
fn the_daemon_keeps_a_batch_within_the_limit_and_answers_repeats_from_its_cache() {
    let limit = fake_openai::Options { limit: Some((3, std::time::Duration::from_secs(1))) };
    let Hosted { server, dir: _dir, data, config } = hosted(limit);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("enabled = true\n", "enabled = true\nrate_limit = { requests_per_minute = 90 }\n"),
    )
    .unwrap();
    let host = support::serve(&["--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    let batch = serde_json::json!({"name": "batch", "cache": {"ttl": "1h"}, "tasks": [{"id": "ask", "protocol": "llm-remote/v1",
        "method": "chat", "for_each": [1, 2, 3, 4, 5, 6], "params": {"stream": false, "messages": [{"role": "user", "content": "item ${item}"}]}}]});
    let submit_as = |token: &str| {
        let submitted = curl_post(&format!("{}/api/v1/workflows", host.url), token, &batch);
        finished_as(&host, submitted["workflow_id"].as_str().unwrap_or_else(|| panic!("{submitted:#}")), token)
    };
    let submit = || submit_as(&host.token);
    let first = submit();
    assert_eq!(first["status"], "completed", "{first:#}");
    assert_eq!(server.stats.limited.load(Ordering::SeqCst), 0, "no 429 within the limit");
    let asked = server.stats.requests.load(Ordering::SeqCst);
    let second = submit();
    assert_eq!(second["status"], "completed", "{second:#}");
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), asked, "every call answered from the cache");
    let items: Vec<&Value> = second["tasks"].as_array().unwrap().iter().filter(|t| t["parent"] == "ask").collect();
    assert!(items.len() == 6 && items.iter().all(|t| t["cached"] == true), "{second:#}");

    // Another token's same calls are not answered from this one's results.
    let bobs = submit_as(&client_token(&host, &data, "bob"));
    assert_eq!(bobs["status"], "completed", "{bobs:#}");
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), asked + 6, "bob's calls were made: {bobs:#}");
}
