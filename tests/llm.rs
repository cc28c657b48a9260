//! The bundled `llm/v1` plugin (plugins/ollama) against the test server of
//! Ollama's API (tests/fake-ollama; Ollama itself cannot be installed here):
//! the seed's research workflow, every method, streaming to subscribers, and
//! each kind of failure.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::root;
use support::servers::fake_ollama;

/// A host config pointing the bundled ollama plugin at `port`, granting it.
fn config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("gleitzeit.toml");
    let text = format!(
        "[manifests.ollama]\nallowed_hosts = [\"http://127.0.0.1:{port}\"]\n{extra}\n[manifests.ollama.config]\nbase_url = \"http://127.0.0.1:{port}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(workflow: &Path, config: &Path) -> (Output, Value) {
    support::run_json(&[workflow.to_str().unwrap(), "--config", config.to_str().unwrap()])
}

fn run_yaml(yaml: &str, port: u16) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(&file, yaml).unwrap();
    run(&file, &config(dir.path(), port, "")).1
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("{id}: {report:#}"))
}

#[test]
fn the_seeds_research_workflow_runs_in_yaml_and_json() {
    let server = fake_ollama(fake_ollama::Options::default());
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), server.port, "");
    for file in ["workflows/research.yaml", "workflows/research.json"] {
        let (out, report) = run(&root().join(file), &config);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let topic = &task(&report, "generate-topic")["result"];
        assert_eq!(topic["content"], "llama3 answers: Generate an AI research topic");
        assert_eq!(topic["model"], "llama3");
        assert_eq!(topic["done_reason"], "stop");
        assert_eq!(topic["tokens_used"], 5 + 7, "prompt plus generated tokens: {topic}");
        assert_eq!(topic["usage"], json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}), "{topic}");
        assert!(topic["total_duration"].as_u64().is_some() && topic["eval_count"] == 7, "{topic}");
        let article = &task(&report, "write-article")["result"];
        assert_eq!(
            article["content"], "llama3 answers: Write about: llama3 answers: Generate an AI research topic",
            "the topic reached the second prompt"
        );
    }
}

#[test]
fn every_method_answers_in_the_originals_shape() {
    let server = fake_ollama(fake_ollama::Options::default());
    let images = tempfile::tempdir().unwrap();
    std::fs::write(images.path().join("pixel.png"), [0x89, b'P', b'N', b'G']).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let granted = format!("read_dirs = [\"{}\"]", images.path().display());
    let config = config(dir.path(), server.port, &granted);
    let workflow = dir.path().join("w.yaml");
    std::fs::write(
        &workflow,
        format!(
            r#"
name: methods
tasks:
  - {{id: plain, protocol: llm/v1, method: generate, params: {{prompt: "Say hi", system: Be brief, stream: false, max_tokens: 3}}}}
  - {{id: json, protocol: llm/v1, method: generate, params: {{prompt: "Hi", format: json}}}}
  - {{id: chat, protocol: llm/v1, method: chat, params: {{messages: [{{role: user, content: "Hello there"}}]}}}}
  - {{id: look, protocol: llm/v1, method: vision, params: {{image_data: "aGVsbG8=", prompt: "What is it?"}}}}
  - {{id: look-file, protocol: llm/v1, method: vision, params: {{image_path: "{path}"}}}}
  - {{id: look-elsewhere, protocol: llm/v1, method: vision, params: {{image_path: "/etc/hostname"}}}}
  - {{id: embed-one, protocol: llm/v1, method: embed, params: {{text: "a graph"}}}}
  - {{id: embed-two, protocol: llm/v1, method: embed, params: {{text: ["a graph", "a tree"]}}}}
  - {{id: models, protocol: llm/v1, method: list_models}}
"#,
            path = images.path().join("pixel.png").display()
        ),
    )
    .unwrap();
    let (_, report) = run(&workflow, &config);

    let plain = &task(&report, "plain")["result"];
    assert_eq!(plain["content"], "[Be brief] llama3", "system prompt, 3 tokens: {plain}");
    assert_eq!(plain["done_reason"], "length");
    let json_mode: Value = serde_json::from_str(task(&report, "json")["result"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(json_mode["answer"], "llama3 answers: Hi");
    let chat = &task(&report, "chat")["result"];
    assert_eq!(chat["content"], "llama3 replies to 1 message(s): Hello there");
    assert_eq!(chat["message"], json!({"role": "assistant", "content": chat["content"]}));
    let look = &task(&report, "look")["result"];
    assert_eq!(look["content"], "llava sees 1 image(s) of 5 bytes: What is it?");
    assert_eq!(look["model"], "llava", "the vision model by default");
    assert_eq!(
        task(&report, "look-file")["result"]["content"],
        "llava sees 1 image(s) of 4 bytes: Describe this image."
    );
    let denied = &task(&report, "look-elsewhere")["error"];
    assert!(denied["message"].as_str().unwrap().contains("cannot read image_path '/etc/hostname'"), "{denied}");

    let one = &task(&report, "embed-one")["result"];
    assert_eq!(one["dimensions"], 768);
    assert_eq!(one["model"], "nomic-embed-text");
    assert_eq!(one["embedding"], one["embeddings"][0]);
    let two = &task(&report, "embed-two")["result"];
    assert_eq!(two["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(two["embeddings"][0], one["embedding"], "equal texts embed equally");
    assert!(two.get("embedding").is_none(), "a list has no single embedding");

    let models = &task(&report, "models")["result"];
    assert_eq!(
        models["models"],
        json!(["llama3:latest", "llama3.2:latest", "llava:latest", "nomic-embed-text:latest"])
    );
    assert_eq!(models["count"], 4);
    // A misspelt param fails validation: the schema comes from the plugin.
    std::fs::write(
        &workflow,
        "name: typo\ntasks:\n  - {id: typo, protocol: llm/v1, method: generate, params: {prompt: x, max_token: 3}}\n",
    )
    .unwrap();
    let (out, report) = run(&workflow, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), report), (Some(2), Value::Null), "{stderr}");
    assert!(
        stderr.contains(
            "task 'typo', field 'params': Additional properties are not allowed ('max_token' was unexpected)"
        ),
        "{stderr}"
    );
}

/// The original's later LLM forms: the method names its protocol (with
/// and without `protocol`), its `complete` is `generate` here,
/// `wait_for_completion` is dropped, and `${task.response}` of an LLM task
/// is the text it answered; each read is noted, and the file runs.
#[test]
fn the_originals_later_llm_forms_run_with_notes() {
    let server = fake_ollama(fake_ollama::Options::default());
    let dir = tempfile::tempdir().unwrap();
    let workflow = dir.path().join("old.yaml");
    std::fs::write(
        &workflow,
        r#"name: "Old LLM form"
wait_for_completion: true
tasks:
  - id: "ask"
    protocol: "llm/v1"
    method: "llm/chat"
    parameters:
      messages: [{role: user, content: "Name a colour."}]
  - id: "complete"
    method: "llm/complete"
    parameters: {prompt: "Say hi"}
  - id: "pong"
    method: "echo/ping"
    parameters: {message: "ping"}
  - id: "follow"
    method: "llm/chat"
    dependencies: ["ask", "pong"]
    parameters:
      messages: [{role: user, content: "You said ${ask.response}; echo said ${pong.response}."}]
"#,
    )
    .unwrap();
    let config = config(dir.path(), server.port, "");
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["workflow", "validate", "--output", "json", "--config"])
        .args([&config, &workflow])
        .env_remove("GLEITZEIT_PLUGINS")
        .output()
        .unwrap();
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verdict["notes"],
        json!([
            "field 'wait_for_completion': dropped: it told the original's client to wait for the end; here `gleitzeit run` and `workflow submit --wait` wait, `workflow submit` returns at once",
            "task 'ask', field 'method': 'llm/chat' read as protocol 'llm/v1', method 'chat' (the method named its protocol)",
            "task 'complete', field 'method': 'llm/complete' read as protocol 'llm/v1', method 'generate' (the original's 'llm/complete' is 'generate' here)",
            "task 'pong', field 'method': 'echo/ping' read as protocol 'echo/v1', method 'ping' (the protocol was left out)",
            "task 'follow', field 'method': 'llm/chat' read as protocol 'llm/v1', method 'chat' (the protocol was left out)",
            "task 'follow', field 'parameters': '${ask.response}' read as '${ask.result.content}' (fields start at the task's result; an LLM's answer is its 'content')",
            "task 'follow', field 'parameters': '${pong.response}' read as '${pong.result.response}' (fields start at the task's result)",
        ]),
        "{verdict:#}"
    );

    let (out, report) = run(&workflow, &config);
    assert!(out.status.success(), "{report:#}");
    let answer = task(&report, "ask")["result"]["content"].as_str().unwrap();
    assert!(!answer.is_empty());
    assert_eq!(
        task(&report, "follow")["params"]["messages"][0]["content"],
        format!("You said {answer}; echo said ping."),
    );
    assert!(task(&report, "complete")["result"]["content"].as_str().is_some_and(|text| !text.is_empty()));
}

/// The original's files name files relative to where its CLI ran:
/// `file_path` of chat and generate, `image_path` and `messages` of vision,
/// and its batch files. `gleitzeit run` reads them from the directory it
/// runs in (here the project, while the workflows are in `flows/`).
#[test]
fn the_originals_files_and_batches_are_read_from_where_run_runs() {
    let server = fake_ollama(fake_ollama::Options::default());
    let project = tempfile::tempdir().unwrap();
    let at = |path: &str| {
        let path = project.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    };
    std::fs::write(at("docs/story.txt"), "Once upon a time.").unwrap();
    std::fs::write(at("docs/notes.txt"), "Buy milk.").unwrap();
    std::fs::write(at("docs/.secret.txt"), "hidden").unwrap();
    std::fs::write(at("images/pixel.png"), [0x89, b'P', b'N', b'G']).unwrap();
    std::fs::write(
        at("flows/files.yaml"),
        r#"name: "Files"
tasks:
  - name: "summarize"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "llama3.2:latest"
      file_path: "docs/story.txt"
      messages:
        - role: "user"
          content: "Summarize this story."
  - name: "complete"
    method: "llm/generate"
    params: {file_path: "./docs/notes.txt", prompt: "What to buy?"}
  - name: "look"
    protocol: "llm/v1"
    method: "llm/vision"
    params:
      model: "llava:latest"
      image_path: "images/pixel.png"
      messages:
        - role: "user"
          content: "What is it?"
  - name: "sequel"
    method: "llm/chat"
    dependencies: ["summarize"]
    params:
      messages: [{role: user, content: "After ${summarize.response}"}]
"#,
    )
    .unwrap();
    std::fs::write(
        at("flows/batch.yaml"),
        r#"name: "Batch"
type: "batch"
batch:
  directory: "docs"
  pattern: "*.txt"
template:
  method: "llm/chat"
  model: "llama3"
  messages:
    - role: "user"
      content: "Summarize ${file_path}."
"#,
    )
    .unwrap();
    let config = config(project.path(), server.port, "");
    let gleitzeit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(args)
            .args(["--output", "json", "--config", config.to_str().unwrap()])
            .current_dir(project.path())
            .env_remove("GLEITZEIT_PLUGINS")
            .output()
            .unwrap();
        (out.status.code(), serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null))
    };

    let (code, verdict) = gleitzeit(&["workflow", "validate", "flows/files.yaml"]);
    assert_eq!(code, Some(0), "{verdict:#}");
    let notes: Vec<&str> = verdict["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    for expected in [
        "task 'summarize', field 'params': the text of 'docs/story.txt' is put after the prompt",
        "task 'complete', field 'params': the text of 'docs/notes.txt' is put after the prompt",
        "task 'look', field 'params': 'messages' read as vision's 'prompt' (their contents, in order)",
        "task 'look', field 'params': the image 'images/pixel.png' is read by the host and sent as 'images'",
    ] {
        assert!(notes.contains(&expected), "{expected}: {notes:#?}");
    }
    let (code, report) = gleitzeit(&["run", "flows/files.yaml"]);
    assert_eq!(code, Some(0), "{report:#}");
    let content = |report: &Value, id: &str| task(report, id)["result"]["content"].as_str().unwrap().to_owned();
    assert!(
        content(&report, "summarize").ends_with("Summarize this story.\n\nOnce upon a time."),
        "{}",
        content(&report, "summarize")
    );
    assert_eq!(content(&report, "complete"), "llama3 answers: What to buy?\n\nBuy milk.");
    assert_eq!(content(&report, "look"), "llava:latest sees 1 image(s) of 4 bytes: What is it?");
    assert!(content(&report, "sequel").contains("Once upon a time."), "the answer reached the next task");
    assert_eq!(
        task(&report, "summarize")["item"],
        json!({"dir": "cwd", "path": "docs/story.txt", "name": "story.txt"})
    );

    let (code, report) = gleitzeit(&["run", "flows/batch.yaml"]);
    assert_eq!(code, Some(0), "{report:#}");
    let answers = task(&report, "batch")["result"].as_array().unwrap().clone();
    let answers: Vec<&str> = answers.iter().map(|a| a["content"].as_str().unwrap()).collect();
    assert_eq!(answers.len(), 2, "no hidden file: {answers:?}");
    assert!(answers[0].ends_with("Summarize docs/notes.txt.\n\nBuy milk."), "{answers:?}");
    assert!(answers[1].ends_with("Summarize docs/story.txt.\n\nOnce upon a time."), "{answers:?}");

    // The original's pool of instances and its per-task placement params
    // are dropped; `images` naming one file reads the file.
    std::fs::write(
        at("flows/pool.yaml"),
        r#"name: "Pool"
providers:
  ollama_pool:
    type: "ollama_pool"
    instances: [{id: "local", url: "http://localhost:11434", max_concurrent: 5}]
tasks:
  - name: "ask"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "llama3.2"
      load_balancing_strategy: "least_loaded"
      instance_tags: ["gpu"]
      messages: [{role: "user", content: "Hello"}]
  - name: "see"
    protocol: "llm/v1"
    method: "llm/vision"
    params: {model: "llava", require_gpu: true, prompt: "Colours?", images: ["images/pixel.png"]}
"#,
    )
    .unwrap();
    let (code, verdict) = gleitzeit(&["workflow", "validate", "flows/pool.yaml"]);
    assert_eq!(code, Some(0), "{verdict:#}");
    let notes = verdict["notes"].to_string();
    assert!(notes.contains("field 'providers': dropped: the original's pool of provider instances"), "{notes}");
    assert!(notes.contains("'instance_tags' dropped: it chose one of the original's Ollama instances"), "{notes}");
    let (code, report) = gleitzeit(&["run", "flows/pool.yaml"]);
    assert_eq!(code, Some(0), "{report:#}");
    assert!(content(&report, "ask").ends_with("Hello"), "{}", content(&report, "ask"));
    assert_eq!(content(&report, "see"), "llava sees 1 image(s) of 4 bytes: Colours?");

    // A path that leaves the directory is refused before anything runs.
    std::fs::write(
        at("flows/out.yaml"),
        "name: out\ntasks:\n  - {id: a, method: llm/chat, params: {file_path: ../etc/passwd, messages: []}}\n  - {id: b, method: llm/chat, params: {file_path: docs/.secret.txt}}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["workflow", "validate", "flows/out.yaml"])
        .current_dir(project.path())
        .output()
        .unwrap();
    let problems = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{problems}");
    assert!(problems.contains("(2 problems)"), "{problems}");
    assert!(problems.contains("task 'a', field 'file.path': '../etc/passwd' leaves its directory"), "{problems}");
    assert!(problems.contains("'docs/.secret.txt' names a hidden file or directory"), "{problems}");
}

#[test]
fn failures_say_what_went_wrong_and_only_transient_ones_retry() {
    let server = fake_ollama(fake_ollama::Options::default());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let retry = "retry: {max_attempts: 2, base_delay: 0.1, jitter: false}";
    let report = run_yaml(
        &format!(
            r#"
name: failures
tasks:
  - {{id: unknown-model, protocol: llm/v1, method: generate, params: {{prompt: x, model: llama9}}, {retry}}}
  - {{id: overloaded, protocol: llm/v1, method: generate, params: {{prompt: x, model: overloaded}}, {retry}}}
  - {{id: garbled, protocol: llm/v1, method: generate, params: {{prompt: x, model: garbled, stream: false}}}}
  - {{id: garbled-stream, protocol: llm/v1, method: chat, params: {{messages: [{{role: user, content: x}}], model: garbled}}}}
"#
        ),
        server.port,
    );
    let error = |id: &str| task(&report, id)["error"].clone();
    let unknown = error("unknown-model");
    assert_eq!(unknown["code"], -32021);
    assert!(unknown["message"].as_str().unwrap().starts_with("model 'llama9' is not available in Ollama"), "{unknown}");
    assert_eq!(task(&report, "unknown-model")["attempts"], 1, "a missing model is not retried");
    let overloaded = error("overloaded");
    assert_eq!(overloaded["code"], -32020);
    assert_eq!(overloaded["message"], "Ollama answered 503: server busy, please try again");
    assert_eq!(task(&report, "overloaded")["attempts"], 2, "5xx is retried");
    for id in ["garbled", "garbled-stream"] {
        let garbled = error(id);
        assert_eq!(garbled["code"], -32023, "{garbled}");
        assert!(garbled["message"].as_str().unwrap().ends_with("\"<html>this is not json\""), "{garbled}");
    }

    // Nothing listens: retryable; a host the manifest does not grant: refused.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        format!(
            "name: down\ntasks:\n  - {{id: down, protocol: llm/v1, method: generate, params: {{prompt: x}}, {retry}}}\n"
        ),
    )
    .unwrap();
    let config = config(dir.path(), closed, "");
    let (_, report) = run(&file, &config);
    let down = &task(&report, "down");
    assert_eq!(down["error"]["code"], -32020, "{down}");
    assert!(down["error"]["message"].as_str().unwrap().contains("is not reachable"), "{down}");
    assert_eq!(down["attempts"], 2, "a refused connection is retried");
    let ungranted = config.with_file_name("ungranted.toml");
    std::fs::write(&ungranted, format!("[manifests.ollama.config]\nbase_url = \"http://127.0.0.1:{}\"\n", server.port))
        .unwrap();
    let (_, report) = run(&file, &ungranted);
    let denied = &task(&report, "down");
    assert_eq!(denied["error"]["code"], -32024, "{denied}");
    assert!(denied["error"]["message"].as_str().unwrap().starts_with("http-fetch denied: plugin 'ollama'"), "{denied}");
    assert_eq!(denied["attempts"], 1);
}

#[test]
fn generations_stream_progress_to_subscribers_and_return_the_whole_text() {
    let server = fake_ollama(fake_ollama::Options { chunk_delay: Duration::from_millis(20), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), server.port, "");
    let host = support::serve(&["--store", "memory", "--config", config.to_str().unwrap()]);
    let workflow = json!({"name": "stream", "tasks": [
        {"id": "talk", "protocol": "llm/v1", "method": "generate", "params": {"prompt": "one two three four five"}}]});
    let report = &support::submit_with_python(&host, &workflow);
    let content = task(report, "talk")["result"]["content"].as_str().unwrap().to_owned();
    assert_eq!(content, "llama3 answers: one two three four five");
    let pieces: Vec<&str> =
        report["progress_events"].as_array().unwrap().iter().map(|e| e["chunk"]["content"].as_str().unwrap()).collect();
    assert_eq!(pieces.len(), 7, "one event per streamed piece: {pieces:?}");
    assert_eq!(pieces.concat(), content, "the pieces add up to the result");
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), 1);
}

/// The README's way: the test server on Ollama's own port and the bundled
/// plugin's default grants, no settings file; every LLM example workflow.
#[test]
fn the_example_llm_workflows_run_against_the_test_server_on_ollamas_port() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:11434"))
        .expect("port 11434 (Ollama's) must be free for this test");
    runtime.spawn(fake_ollama::serve(listener, fake_ollama::Options::default()));
    for file in [
        "workflows/research.yaml",
        "workflows/chat-embed.yaml",
        "workflows/vision.yaml",
        "workflows/batch-summary.yaml",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["run", file, "--output", "json"])
            .current_dir(root())
            .env_remove("GLEITZEIT_PLUGINS")
            .env_remove("GLEITZEIT_CONFIG")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["status"], "completed", "{file}: {report:#}");
        if file.ends_with("vision.yaml") {
            let look = task(&report, "look")["result"]["content"].as_str().unwrap().to_owned();
            assert!(look.starts_with("llava sees 1 image(s) of 73 bytes"), "{look}");
        }
        if file.ends_with("batch-summary.yaml") {
            let first = task(&report, "summarize[0]");
            assert_eq!(first["item"]["name"], "harbour.txt");
            let answer = first["result"]["content"].as_str().unwrap();
            assert!(
                answer.contains("Summarize harbour.txt") && answer.contains("The harbour opens at six."),
                "{answer}"
            );
            assert_eq!(task(&report, "summarize")["items"], 3);
        }
        if file.ends_with("chat-embed.yaml") {
            assert_eq!(task(&report, "embed")["result"]["embeddings"].as_array().unwrap().len(), 2);
        }
    }
}

/// The dashboard shows an answer as it streams: the task's details hold a
/// growing part of it while the task runs (tests/python/dashboard_progress.py,
/// in Debian's headless Chromium), then the whole result.
#[test]
fn the_dashboard_shows_an_answer_token_by_token() {
    let server = fake_ollama(fake_ollama::Options { chunk_delay: Duration::from_millis(400), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), server.port, "");
    let host = support::serve(&["--store", "memory", "--config", config.to_str().unwrap()]);
    let prompt = "one two three four five six seven eight nine ten eleven twelve";
    let workflow = json!({"name": "streamed", "tasks": [
        {"id": "talk", "protocol": "llm/v1", "method": "generate", "params": {"prompt": prompt}, "timeout": 120}]});
    // Submitted by the script once its browser is signed in: a browser
    // that starts slowly on a loaded machine would miss a stream begun
    // before it.
    let out = Command::new("python3")
        .arg(root().join("tests/python/dashboard_progress.py"))
        .env("GLEITZEIT_SERVER", &host.url)
        .env("GLEITZEIT_TOKEN", &host.token)
        .env("WORKFLOW", workflow.to_string())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("ok"), "{stdout}\n{stderr}");
}

/// `gleitzeit batch`: every file of a directory asked about through the
/// test server, one that is not text failing alone; the Markdown and JSON
/// reports name each file; images go to the vision model.
#[test]
fn batch_asks_about_every_file_and_reports_each() {
    let ollama = fake_ollama(fake_ollama::Options::default());
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), ollama.port, "");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("one.txt"), "first text").unwrap();
    std::fs::write(files.join("two.txt"), "second text").unwrap();
    std::fs::write(files.join("bad.txt"), [0xff, 0x00, 0xfe]).unwrap();
    std::fs::write(files.join("skip.md"), "not matched").unwrap();
    let batch = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["batch", files.to_str().unwrap(), "--config", config.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = batch(&["--pattern", "*.txt", "--prompt", "Summarize ${this}", "--model", "llava"]);
    assert_eq!(out.status.code(), Some(1), "one file failed: {}", String::from_utf8_lossy(&out.stderr));
    let markdown = String::from_utf8_lossy(&out.stdout);
    assert!(markdown.starts_with("# Summarize ${this}\n\n3 files of"), "{markdown}");
    assert!(markdown.contains("## one.txt\n\nllava answers: Summarize ${this}\n\nfirst text\n"), "{markdown}");
    assert!(markdown.contains("## two.txt\n\nllava answers: Summarize ${this}\n\nsecond text"), "{markdown}");
    assert!(
        markdown.contains("## bad.txt\n\n**failed:** file 'bad.txt' in 'workflow' is not UTF-8 text"),
        "{markdown}"
    );
    assert!(!markdown.contains("skip.md"));

    let report_file = dir.path().join("report.json");
    let out = batch(&["--pattern", "*.md", "--prompt", "Title?", "--output", report_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["status"], "completed");
    assert_eq!(
        report["files"],
        json!([{"path": "skip.md", "status": "completed", "model": "llama3", "answer": "llama3 answers: Title?\n\nnot matched"}])
    );

    std::fs::write(files.join("dot.png"), [0x89, b'P', b'N', b'G']).unwrap();
    let out = batch(&["--pattern", "*.png", "--vision", "--prompt", "What is it?", "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"][0]["answer"], "llava sees 1 image(s) of 4 bytes: What is it?", "{report}");

    let out = batch(&["--pattern", "../*", "--prompt", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("leaves its directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A component built against the WIT of SDK 0.1 keeps loading and running.
/// `tests/fixtures/components/ollama-wit-0.1.0.wasm` is the bundled plugin
/// as built before `fetch` and its typed errors (kept as a binary, never
/// rebuilt): it calls `http-fetch`, `http-fetch-stream` and the body's
/// `next`, which the host still serves, with the texts it always gave.
#[test]
fn a_plugin_built_against_the_sdk_0_1_wit_loads_and_runs() {
    let server = fake_ollama(fake_ollama::Options::default());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(root().join("tests/fixtures/components/ollama-wit-0.1.0.wasm"), plugins.join("legacy.wasm")).unwrap();
    let settings = |base_port: u16| {
        let path = dir.path().join(format!("legacy-{base_port}.toml"));
        let text = format!(
            "plugins = \"{}\"\n[manifests.legacy]\nallowed_hosts = [\"http://127.0.0.1:{}\"]\n[manifests.legacy.config]\nbase_url = \"http://127.0.0.1:{base_port}\"\n",
            plugins.display(),
            server.port
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        "name: legacy\ntasks:\n  - {id: streamed, protocol: llm/v1, method: generate, params: {prompt: one two}}\n  - {id: whole, protocol: llm/v1, method: generate, params: {prompt: one two, stream: false}}\n",
    )
    .unwrap();
    let (out, report) = run(&file, &settings(server.port));
    for id in ["streamed", "whole"] {
        let done = task(&report, id);
        assert_eq!(done["status"], "completed", "{id}: {done}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(done["result"]["content"], "llama3 answers: one two", "{id}");
        assert_eq!(done["history"][0]["provider"], "wasm:legacy", "the old component served it, not the bundled one");
    }
    // A host it is not granted: refused with the words it always matched.
    let (_, report) = run(&file, &settings(closed));
    let denied = &task(&report, "whole")["error"];
    assert_eq!(denied["code"], -32024, "{denied}");
    assert!(denied["message"].as_str().unwrap().starts_with("http-fetch denied: plugin 'legacy'"), "{denied}");
}
