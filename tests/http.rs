//! The HTTP API against a real daemon: every route with allowed and refused
//! tokens, owners' workflows hidden from others, event streams that resume
//! with `Last-Event-ID`, the OpenAPI document against the routes, bad
//! input, and the `curl` session of docs/http.md run as written.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};
use support::api::{Api, Sse, Stream};
use support::{Daemon, Served, root, serve};

/// The tokens of a test: the daemon's local admin token, two clients and a
/// provider, made with `gleitzeit token create` while it runs.
struct Tokens {
    admin: String,
    alice: String,
    bob: String,
    worker: String,
}

fn tokens(host: &Served) -> Tokens {
    let data_dir = host.data_home.path().join("gleitzeit");
    let create = |name: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
            .args(["token", "create", "--name", name])
            .args(extra)
            .env("GLEITZEIT_DATA_DIR", &data_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    Tokens {
        admin: host.token.clone(),
        alice: create("alice", &["--role", "client"]),
        bob: create("bob", &["--role", "client"]),
        worker: create("worker", &["--role", "provider", "--protocol", "text/v1"]),
    }
}

fn delayed(name: &str, seconds: f64) -> Value {
    json!({"name": name, "tasks": [
        {"id": "wait", "protocol": "echo/v1", "method": "delay", "params": {"seconds": seconds}},
        {"id": "after", "protocol": "echo/v1", "method": "echo", "dependencies": ["wait"],
         "params": {"message": "${wait.result.message}"}},
    ]})
}

/// Who may call a route: `None` for anyone (no token needed).
type Roles = Option<&'static [&'static str]>;
const READERS: Roles = Some(&["client", "admin"]);
const ADMINS: Roles = Some(&["admin"]);
const EVERY_ROLE: Roles = Some(&["client", "provider", "admin"]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_allowed_tokens_and_refuses_the_rest() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let tokens = tokens(&host);
    let alices = api.submit(&tokens.alice, &delayed("alice's", 0.0)).await;
    api.finished(&tokens.alice, &alices).await;
    let hello = json!({"name": "w", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]});
    let task = json!({"protocol": "echo/v1", "method": "echo", "params": {"message": "hi"}});
    let yearly = json!({"name": "yearly", "schedule": {"cron": "0 0 1 1 *"},
                        "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]});
    let workflow = format!("/api/v1/workflows/{alices}");
    // (method, path as the document names it, path requested, body, who may)
    let routes: Vec<(&str, &str, String, Option<Value>, Roles)> = vec![
        ("POST", "/api/v1/workflows", "/api/v1/workflows".into(), Some(hello), READERS),
        ("GET", "/api/v1/workflows", "/api/v1/workflows".into(), None, READERS),
        ("POST", "/api/v1/tasks", "/api/v1/tasks".into(), Some(task), READERS),
        ("GET", "/api/v1/workflows/{id}", workflow.clone(), None, READERS),
        ("GET", "/api/v1/workflows/{id}/results", format!("{workflow}/results"), None, READERS),
        ("GET", "/api/v1/workflows/{id}/tasks/{task}", format!("{workflow}/tasks/after"), None, READERS),
        ("POST", "/api/v1/workflows/{id}/cancel", format!("{workflow}/cancel"), None, READERS),
        ("POST", "/api/v1/workflows/{id}/rerun", format!("{workflow}/rerun?from=after"), None, READERS),
        ("GET", "/api/v1/workflows/{id}/events", format!("{workflow}/events"), None, READERS),
        ("GET", "/api/v1/events", "/api/v1/events".into(), None, READERS),
        ("POST", "/api/v1/schedules", "/api/v1/schedules?replace=true".into(), Some(yearly.clone()), READERS),
        ("GET", "/api/v1/schedules", "/api/v1/schedules".into(), None, READERS),
        ("GET", "/api/v1/schedules/{id}", "/api/v1/schedules/yearly".into(), None, READERS),
        ("DELETE", "/api/v1/schedules/{id}", "/api/v1/schedules/yearly".into(), None, READERS),
        ("GET", "/api/v1/providers", "/api/v1/providers".into(), None, ADMINS),
        ("GET", "/api/v1/protocols", "/api/v1/protocols".into(), None, EVERY_ROLE),
        ("GET", "/api/v1/plugins", "/api/v1/plugins".into(), None, ADMINS),
        ("GET", "/api/v1/hosts", "/api/v1/hosts".into(), None, ADMINS),
        ("GET", "/api/v1/health", "/api/v1/health".into(), None, None),
        ("GET", "/api/v1/ready", "/api/v1/ready".into(), None, None),
        ("GET", "/metrics", "/metrics".into(), None, ADMINS), // and metrics tokens (tests/metrics.rs)
    ];

    // The routes tried here are the document's, no more and no fewer.
    let document = api.send(api.request("GET", "/api/v1/openapi.json", None)).await.body;
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(|m| (m.to_uppercase(), path.clone())))
        .collect();
    let tried: BTreeSet<(String, String)> = routes.iter().map(|r| (r.0.to_owned(), r.1.to_owned())).collect();
    assert_eq!(documented, tried, "the OpenAPI document names exactly the routes there are");

    let who = [("admin", &tokens.admin), ("client", &tokens.alice), ("provider", &tokens.worker)];
    for (method, _, path, body, roles) in &routes {
        let request = |token: Option<&str>| {
            let request = api.request(method, path, token).timeout(Duration::from_secs(30));
            match body {
                Some(body) => request.header("Content-Type", "application/json").body(body.to_string()),
                None => request,
            }
        };
        // Event streams answer 200 at once; their bodies are not read.
        for (role, token) in who {
            let answer = request(Some(token)).send().await.unwrap();
            let allowed = roles.is_none_or(|roles| roles.contains(&role));
            let code = answer.status().as_u16();
            if allowed {
                assert!(
                    ![401, 403, 404, 405].contains(&code) || path.ends_with("/cancel") || path.contains("/schedules/"),
                    "{role} {method} {path}: {code}"
                );
            } else {
                assert_eq!(code, 403, "{role} {method} {path}");
                let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
                assert_eq!(body["code"], -32015, "{role} {method} {path}: {body}");
                assert!(body["message"].as_str().unwrap().contains("role"), "{body}");
            }
        }
        for token in [None, Some("gzt_not-a-token")] {
            let answer = request(token).send().await.unwrap();
            let code = answer.status().as_u16();
            if roles.is_none() {
                assert_eq!(code, 200, "{method} {path} needs no token");
                continue;
            }
            assert_eq!(code, 401, "{method} {path} with {token:?}");
            assert_eq!(answer.headers()["www-authenticate"], "Bearer");
            let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
            assert_eq!((body["code"].clone(), body["problems"].clone()), (json!(-32014), json!([])), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_workflow_does_not_exist_for_a_client() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let tokens = tokens(&host);
    let id = api.submit(&tokens.alice, &delayed("alice's", 5.0)).await;
    for path in [
        format!("/api/v1/workflows/{id}"),
        format!("/api/v1/workflows/{id}/results"),
        format!("/api/v1/workflows/{id}/tasks/wait"),
        format!("/api/v1/workflows/{id}/events"),
    ] {
        let answer = api.get(&path, &tokens.bob).await;
        assert_eq!((answer.status, answer.body["code"].clone()), (404, json!(-32011)), "bob {path}: {answer:?}");
        assert_eq!(answer.body["message"], format!("no workflow '{id}'"), "as for an unknown id");
    }
    let cancel = format!("/api/v1/workflows/{id}/cancel");
    assert_eq!(api.post_json(&cancel, &tokens.bob, &json!({})).await.status, 404);
    let listed = |token: String| {
        let api = &api;
        async move {
            let page = api.get("/api/v1/workflows", &token).await.body;
            page["workflows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["workflow_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(listed(tokens.bob.clone()).await.is_empty(), "bob lists nothing of alice's");
    assert_eq!(listed(tokens.alice.clone()).await, std::slice::from_ref(&id));
    assert_eq!(listed(tokens.admin.clone()).await, std::slice::from_ref(&id), "the admin sees every workflow");
    let report = api.get(&format!("/api/v1/workflows/{id}"), &tokens.admin).await.body;
    assert_eq!((report["owner"].clone(), report["status"].clone()), (json!("alice"), json!("running")));

    // Bob's event stream carries none of alice's events; alice cancels.
    let mut bobs = Stream::open(&api, "/api/v1/events", &tokens.bob, None).await;
    let mut alices = Stream::open(&api, "/api/v1/events", &tokens.alice, None).await;
    let answer = api.post_json(&cancel, &tokens.alice, &json!({})).await;
    assert_eq!((answer.status, answer.body.clone()), (200, json!({"workflow_id": id, "cancelled": true})));
    let ended = loop {
        let event = alices.next().await.unwrap();
        if event.event == "workflow_completed" {
            break event;
        }
    };
    assert_eq!(ended.data["status"], "cancelled");
    let bobs_own = api
        .submit(&tokens.bob, &json!({"name": "bob's", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]}))
        .await;
    let first = bobs.next().await.unwrap();
    assert_eq!(
        (first.event.as_str(), first.data["workflow_id"].as_str()),
        ("workflow_started", Some(bobs_own.as_str())),
        "bob's stream skipped alice's events"
    );
    let report = api.get(&format!("/api/v1/workflows/{id}"), &tokens.alice).await.body;
    assert_eq!(report["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_resume_after_the_last_event_seen() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let token = host.token.clone();
    let mut all = Stream::open(&api, "/api/v1/events", &token, None).await;
    let id = api.submit(&token, &delayed("resumed", 1.0)).await;
    let path = format!("/api/v1/workflows/{id}/events");

    // A fresh stream starts with a snapshot of the report.
    let mut stream = Stream::open(&api, &path, &token, None).await;
    let snapshot = stream.next().await.unwrap();
    assert_eq!((snapshot.event.as_str(), snapshot.data["workflow_id"].as_str()), ("snapshot", Some(id.as_str())));
    assert_eq!(snapshot.data["tasks"].as_array().unwrap().len(), 2);
    drop(stream);

    // The whole run as the global stream saw it.
    let mut seen = Vec::new();
    while seen.last().is_none_or(|e: &Sse| e.event != "workflow_completed") {
        seen.push(all.next().await.unwrap());
    }
    let names: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        ["workflow_started", "task_status", "task_result", "task_status", "task_result", "workflow_completed"]
    );
    assert_eq!(seen[4].data["result"]["echoed"], "Delayed for 1 seconds");

    // Reconnecting after the second event gets the rest, each once.
    let mut resumed = Stream::open(&api, &path, &token, Some(&seen[1].id)).await;
    let mut rest = Vec::new();
    while let Some(event) = resumed.next().await {
        rest.push(event);
    }
    let ids: Vec<&str> = rest.iter().map(|e| e.id.as_str()).collect();
    let expected: Vec<&str> = seen[2..].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, expected, "the rest, in order, and the stream ends with workflow_completed");

    // Once the last event was seen, the finished workflow's stream is over.
    let over = api.send(api.request("GET", &path, Some(&token)).header("Last-Event-ID", &seen[5].id)).await;
    assert_eq!(over.status, 204, "204 tells EventSource to stop reconnecting");

    // An id of another run (a restarted daemon) starts over with a snapshot.
    let mut again = Stream::open(&api, &path, &token, Some("00000000-3")).await;
    let first = again.next().await.unwrap();
    assert_eq!((first.event.as_str(), first.data["status"].as_str()), ("snapshot", Some("completed")));
    assert!(again.next().await.is_none(), "a finished workflow's snapshot is all there is");

    // The global stream resumes too, and says so when it cannot.
    let mut global = Stream::open(&api, "/api/v1/events", &token, Some(&seen[3].id)).await;
    assert_eq!(global.next().await.unwrap().id, seen[4].id);
    let mut foreign = Stream::open(&api, "/api/v1/events", &token, Some("garbage")).await;
    assert_eq!(foreign.next().await.unwrap().event, "reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_one_error_shape_naming_what_is_wrong() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let token = host.token.as_str();
    let post = |content_type: &'static str, body: Vec<u8>| {
        api.request("POST", "/api/v1/workflows", Some(token)).header("Content-Type", content_type).body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, i64, &str)> = vec![
        (
            post(
                "application/yaml",
                b"name: x\ntasks:\n  - {id: b, protocol: echo/v1, method: ping, dependencies: [zz]}\n".to_vec(),
            ),
            422,
            -32602,
            "unknown task 'zz'",
        ),
        (
            post("application/yaml", b"name: x\ntasks:\n  - {id: a, protocol: nope/v1, method: m}\n".to_vec()),
            422,
            -32602,
            "nope/v1",
        ),
        (post("application/yaml", b"name: [x\n".to_vec()), 400, -32700, "invalid YAML"),
        (
            post("application/json", b"{\"name\": \"a\", \"name\": \"b\", \"tasks\": []}".to_vec()),
            400,
            -32700,
            "'name'",
        ),
        (post("application/json", "[".repeat(100_000).into_bytes()), 400, -32700, "invalid JSON"),
        (post("text/plain", b"x".to_vec()), 415, -32016, "Content-Type 'text/plain'"),
        (post("application/json", vec![b' '; 65 * 1024 * 1024]), 413, -32013, "64 MiB"),
        (api.request("DELETE", "/api/v1/workflows", Some(token)), 405, -32601, "does not take DELETE"),
        (api.request("GET", "/api/v1/nope", Some(token)), 404, -32601, "no route /api/v1/nope"),
        (api.request("GET", "/api/v1/workflows?limit=0", Some(token)), 422, -32602, "field 'limit'"),
        (api.request("GET", "/api/v1/workflows?status=weird", Some(token)), 422, -32602, "field 'status'"),
        (api.request("GET", "/api/v1/workflows?status=", Some(token)), 422, -32602, "got ''"),
        (api.request("GET", "/api/v1/workflows?since=yesterday", Some(token)), 422, -32602, "RFC 3339"),
        (api.request("GET", "/api/v1/workflows?cursor=zz", Some(token)), 422, -32602, "field 'cursor'"),
        (api.request("GET", "/api/v1/workflows/nope/results?task=x", Some(token)), 404, -32011, "no workflow 'nope'"),
        (api.request("GET", "/api/v1/workflows/nope/tasks/x", Some(token)), 404, -32011, "no workflow 'nope'"),
        (
            api.request("POST", "/api/v1/tasks", Some(token)).header("Content-Type", "application/json").body("[1]"),
            400,
            -32600,
            "one task",
        ),
        (api.request("GET", "/api/v1/health", None).header("Origin", "http://evil.example"), 403, -32015, "origin"),
        (
            api.request("GET", "/api/v1/workflows?limit=1&limit=2", Some(token)),
            422,
            -32602,
            "query field 'limit' is given twice",
        ),
        (
            api.request("GET", "/api/v1/workflows", Some(token)).header("Authorization", "Bearer other"),
            400,
            -32600,
            "more than one Authorization header",
        ),
        // The path's own decoder refuses it, in plain text: reshaped.
        (api.request("GET", "/api/v1/workflows/%FF%FE", Some(token)), 400, -32600, "UTF-8"),
    ];
    for (request, status, code, says) in cases {
        let answer = api.send(request).await;
        assert_eq!(answer.status, status, "{answer:?}");
        assert_eq!(answer.body["code"], code, "{answer:?}");
        assert!(answer.body["message"].as_str().unwrap().contains(says), "{says}: {answer:?}");
        assert!(answer.body["problems"].is_array(), "{answer:?}");
    }
    let invalid = api
        .send(post(
            "application/yaml",
            b"name: x\ntasks:\n  - {id: b, protocol: echo/v1, method: ping, dependencies: [zz]}\n".to_vec(),
        ))
        .await;
    assert_eq!(
        invalid.body["problems"],
        json!([{"task": "task 'b'", "field": "dependencies", "message": "unknown task 'zz'"}])
    );
    // Requests hyper cannot parse get its own answers, in the same shape.
    for (request, status, says) in [
        (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)), 414, "longer than 64 KiB"),
        ("G@T / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 400, "not valid HTTP/1.1"),
        (format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(2_000_000)), 431, "too large"),
    ] {
        let answer = raw_exchange(&host.url, request.as_bytes()).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], -32600, "{body}");
        assert!(body["message"].as_str().unwrap().contains(says) && body["problems"] == json!([]), "{body}");
    }
    let healthy = api.send(api.request("GET", "/api/v1/health", None)).await;
    assert_eq!(healthy.body, json!({"status": "ok"}), "the daemon is fine after all that");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_filter_and_page_newest_first() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let token = host.token.as_str();
    let mut ids = Vec::new();
    for name in ["nightly one", "hourly", "Nightly two"] {
        let task = json!({"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": name}});
        let id = api.submit(token, &json!({"name": name, "tasks": [task]})).await;
        api.finished(token, &id).await;
        ids.push(id);
    }
    let page = api.get("/api/v1/workflows?limit=2", token).await.body;
    let names = |page: &Value| -> Vec<String> {
        page["workflows"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&page), ["Nightly two", "hourly"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = api.get(&format!("/api/v1/workflows?limit=2&cursor={cursor}"), token).await.body;
    assert_eq!((names(&next), next["next_cursor"].clone()), (vec!["nightly one".to_owned()], Value::Null));
    let nightly = api.get("/api/v1/workflows?name=NIGHTLY&status=completed", token).await.body;
    assert_eq!(names(&nightly), ["Nightly two", "nightly one"]);
    let first = &page["workflows"][1];
    assert_eq!(first["summary"]["completed"], 1);
    let since = first["submitted_at"].as_str().unwrap();
    let later = api.get(&format!("/api/v1/workflows?since={since}"), token).await.body;
    assert_eq!(names(&later), ["Nightly two", "hourly"], "since is inclusive");
    let results = api.get(&format!("/api/v1/workflows/{}/results", ids[1]), token).await.body;
    assert_eq!(results["results"]["a"]["echoed"], "hourly");
}

/// At most 1,000 event streams are open at once: the next is refused with
/// 429 and -32017 while the rest of the API answers, and a closed stream
/// frees its place. A daemon started with a soft open-file limit below the
/// cap (many systems give services 1,024) raises it itself; one whose hard
/// limit is that low serves fewer streams (half its files) and refuses
/// the rest the same way, rather than leaving connections unaccepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_and_a_closed_one_frees_its_place() {
    rlimit::increase_nofile_limit(4096).unwrap(); // this side's ends of the streams
    for (limit, cap) in [("ulimit -Sn 512", 1000), ("ulimit -n 512", 256)] {
        let host = Daemon::new().under(&["sh", "-c", &format!(r#"{limit} && exec "$0" "$@""#)]).start();
        let api = Api::of(&host);
        let token = host.token.as_str();
        let open_stream = || async {
            let request = api.request("GET", "/api/v1/events", Some(token)).send();
            tokio::time::timeout(Duration::from_secs(30), request).await.expect("an answer within 30 s").unwrap()
        };
        let mut open = Vec::new();
        for n in 0..cap {
            let stream = open_stream().await;
            assert_eq!(stream.status(), 200, "{limit}: stream {n}");
            open.push(stream);
        }
        let refused = api.get("/api/v1/events", token).await;
        assert_eq!((refused.status, refused.body["code"].clone()), (429, json!(-32017)), "{limit}: {refused:?}");
        let message = refused.body["message"].as_str().unwrap();
        assert!(message.contains(&format!("{cap} event streams are open")), "{limit}: {message}");
        assert_eq!(api.get("/api/v1/workflows", token).await.status, 200, "the rest of the API answers");

        drop(open.pop());
        let deadline = Instant::now() + Duration::from_secs(60);
        while open_stream().await.status() != 200 {
            assert!(Instant::now() < deadline, "{limit}: the closed stream's place was never freed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A task's route has what the report leaves out: the params it was called
/// with, each call's provider and timings, and its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_shows_its_params_calls_and_result() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let token = host.token.as_str();
    let workflow = json!({"name": "details", "tasks": [
        {"id": "flaky", "protocol": "echo/v1", "method": "flaky", "params": {"succeed_on_attempt": 2, "message": "second time"},
         "retry": {"max_attempts": 2, "base_delay": 0.01}},
        {"id": "after", "protocol": "echo/v1", "method": "echo", "dependencies": ["flaky"],
         "params": {"message": "got ${flaky.result.message}"}},
    ]});
    let id = api.submit(token, &workflow).await;
    api.finished(token, &id).await;

    let after = api.get(&format!("/api/v1/workflows/{id}/tasks/after"), token).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(after.body["params"], json!({"message": "got second time"}), "references resolved");
    assert_eq!(after.body["result"]["echoed"], "got second time");
    let flaky = api.get(&format!("/api/v1/workflows/{id}/tasks/flaky"), token).await.body;
    let calls = flaky["history"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{flaky}");
    for (n, call) in calls.iter().enumerate() {
        assert_eq!((call["attempt"].clone(), call["provider"].clone()), (json!(n + 1), json!("wasm:echo")), "{call}");
        assert!(call["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{call}");
        assert!(call["started_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{call}");
    }
    assert!(calls[0]["error"]["message"].as_str().unwrap().contains("attempt 1 fails"), "{}", calls[0]);
    assert!(calls[1]["error"].is_null());

    // The report stays lean: no results, params or calls.
    let report = api.get(&format!("/api/v1/workflows/{id}"), token).await.body;
    for task in report["tasks"].as_array().unwrap() {
        assert!(task["result"].is_null() && task.get("params").is_none() && task.get("history").is_none(), "{task}");
    }
    let missing = api.get(&format!("/api/v1/workflows/{id}/tasks/nope"), token).await;
    assert_eq!(
        (missing.status, missing.body["message"].clone()),
        (404, json!(format!("workflow '{id}' has no task 'nope'")))
    );
}

/// docs/http.md's session, run by `sh` as written, against a daemon.
#[test]
fn the_documented_curl_session_runs_as_written() {
    let host = serve(&[]);
    let doc = std::fs::read_to_string(root().join("docs/http.md")).unwrap();
    let session = support::fenced_blocks(&doc, "sh").into_iter().find(|b| b.contains("curl")).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("workflows")).unwrap();
    std::fs::copy(root().join("workflows/hello.yaml"), cwd.path().join("workflows/hello.yaml")).unwrap();
    let out = Command::new("sh")
        .args(["-e", "-c", &session])
        .current_dir(cwd.path())
        .env("GLEITZEIT_SERVER", &host.url)
        .env("GLEITZEIT_TOKEN", &host.token)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("\"status\":\"completed\""), "{stdout}");
    assert!(stdout.contains("event: workflow_completed"), "{stdout}");
    assert!(stdout.contains("The greeting was: Hello from Gleitzeit"), "{stdout}");
}

/// docs/openapi.json is what `gleitzeit openapi` prints: the document in
/// the repository is the one the code generates.
#[test]
fn the_committed_openapi_document_is_current() {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit")).arg("openapi").output().unwrap();
    assert!(out.status.success());
    let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("docs/openapi.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
    assert!(generated["openapi"].as_str().unwrap().starts_with("3."), "an OpenAPI 3 document");
    assert!(generated == committed, "docs/openapi.json is out of date: run `cargo run -- openapi > docs/openapi.json`");
}

/// schemathesis (PyPI) sends the API what its OpenAPI document allows and
/// much that it does not: no answer may be a server error, and every
/// answer must match the document (status, content type, schema). Event
/// streams are left out (they do not end); workflows it makes up are
/// refused for protocols nobody serves, so "valid data accepted" is not
/// checked.
#[test]
fn the_api_holds_up_to_schemathesis() {
    let host = serve(&[]);
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new("schemathesis")
        .args(["run", &format!("{}/api/v1/openapi.json", host.url)])
        .args(["-H", &format!("Authorization: Bearer {}", host.token)])
        .args(["--max-examples", "40", "--seed", "20261201", "--exclude-path-regex", "events"])
        .args(["--exclude-checks", "positive_data_acceptance", "--no-color"])
        .current_dir(cwd.path())
        .output()
        .expect("schemathesis is installed (scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("passed") && !stdout.contains("failures"), "{stdout}");
    let health = Command::new("curl").args(["-sf", &format!("{}/api/v1/health", host.url)]).output().unwrap();
    assert!(health.status.success(), "the daemon still answers");
}

/// Context switches of all of `pid`'s threads so far: how often they woke.
fn wakeups(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let field = |status: &str, name: &str| -> u64 {
        status.lines().find_map(|l| l.strip_prefix(name)).map_or(0, |v| v.trim().parse().unwrap())
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("status")).ok())
        .map(|status| field(&status, "voluntary_ctxt_switches:") + field(&status, "nonvoluntary_ctxt_switches:"))
        .sum()
}

/// After work, and event streams that came and went, the daemon sleeps:
/// all its threads together wake only a few times a second. (Its WASM
/// epoch ticker used to wake 100 times a second for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_sleeps_after_work_and_streams() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(Stream::open(&api, "/api/v1/events", &host.token, None).await);
    }
    let id = api.submit(&host.token, &delayed("then idle", 0.3)).await;
    assert_eq!(api.finished(&host.token, &id).await["status"], "completed");
    for stream in &mut streams {
        while stream.next().await.is_some_and(|e| e.event != "workflow_completed") {}
    }
    drop(streams);
    // A window to watch the idle daemon in, not a wait for an event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = wakeups(host.child.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let woke = wakeups(host.child.id()) - before;
    assert!(woke <= 60, "the idle daemon's threads woke {woke} times in 3 s");
}

/// The dashboard in a real headless Chromium (tests/python/dashboard.py):
/// sign in, submit from the page, watch tasks complete live, read a
/// result, cancel, see a broken plugin's error. It saves the screenshots
/// docs/ and the README show, so they stay current.
#[test]
fn the_dashboard_works_in_a_real_browser() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("broken.wasm"), b"\0asm not a component").unwrap();
    let host = serve(&["--plugins", plugins.path().to_str().unwrap()]);
    let shots = root().join("docs/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("python3")
        .arg(root().join("tests/python/dashboard.py"))
        .env("GLEITZEIT_SERVER", &host.url)
        .env("GLEITZEIT_TOKEN", &host.token)
        .env("BROKEN_PLUGIN", "broken")
        .env("SCREENSHOTS", &shots)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("ok"), "{stdout}\n{stderr}");
    for page in ["workflows", "workflow", "submit", "providers"] {
        assert!(shots.join(format!("{page}.png")).metadata().is_ok_and(|m| m.len() > 10_000), "{page}.png");
    }
}

/// dashboard/dist (what the host embeds) is what `npm run build` makes of
/// dashboard/src with the locked packages.
#[test]
fn the_committed_dashboard_build_is_current() {
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(root().join("dashboard"))
        .env("OUT", out_dir.path())
        .output()
        .expect("npm is installed (scripts/test.sh runs npm ci in dashboard/)");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    for file in ["index.html", "app.js", "app.css", "app.js.LEGAL.txt"] {
        let fresh = std::fs::read(out_dir.path().join(file)).unwrap();
        let committed = std::fs::read(root().join("dashboard/dist").join(file)).unwrap_or_default();
        assert!(fresh == committed, "dashboard/dist/{file} is out of date: run `npm run build` in dashboard/");
    }
}

/// `POST /api/v1/workflows?input=NAME=VALUE`: each value read by its
/// input's type; a wrong one is a 422 naming the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_gives_inputs_in_the_query() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let token = host.token.as_str();
    let yaml = "name: inputs\ninputs: {topic: string, count: integer}\ntasks:\n  - {id: a, protocol: echo/v1, method: echo, params: {message: {topic: \"${inputs.topic}\", count: \"${inputs.count}\"}}}\n";
    let post = |query: &str| {
        let request = api.request("POST", &format!("/api/v1/workflows{query}"), Some(token));
        api.send(request.header("Content-Type", "application/yaml").body(yaml))
    };
    let answer = post("?input=topic=owls%20%26%20bats&input=count=3").await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let id = answer.body["workflow_id"].as_str().unwrap();
    assert_eq!(api.finished(token, id).await["status"], "completed");
    let results = api.get(&format!("/api/v1/workflows/{id}/results"), token).await.body;
    assert_eq!(results["results"]["a"]["echoed"], json!({"topic": "owls & bats", "count": 3}), "{results}");
    let answer = post("?input=topic=owls&input=count=many").await;
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(
        answer.body["message"].as_str().unwrap().contains("field 'inputs.count': must be an integer, found 'many'"),
        "{answer:?}"
    );
    let answer = post("?input=topic").await;
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body["message"].as_str().unwrap().contains("input 'topic' is not NAME=VALUE"), "{answer:?}");
}

/// `POST /api/v1/schedules` keeps a workflow file's schedule (the query
/// sets its fields); the host starts its runs as the token's, and they are
/// listed like any workflow. Others see no such schedule; removed, it
/// starts no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_kept_runs_and_is_removed_over_http() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let tokens = tokens(&host);
    let token = tokens.alice.as_str();
    let yaml = "name: ticks\ninputs: {at: string, topic: string}\ntasks:\n  - {id: a, protocol: echo/v1, method: echo, params: {message: \"${inputs.topic} at ${inputs.at}\"}}\n";
    let add = |query: &str| {
        let request = api.request("POST", &format!("/api/v1/schedules{query}"), Some(token));
        api.send(request.header("Content-Type", "application/yaml").body(yaml))
    };
    let answer = add("?cron=*%20*%20*%20*%20*%20*&timezone=Asia/Tokyo&id=ticks&due_input=at&input=topic=owls").await;
    assert_eq!(answer.status, 201, "{answer:?}");
    // A client token's ids are its own: the host keeps this one as alice:ticks.
    assert_eq!(
        (answer.body["schedule_id"].clone(), answer.body["owner"].clone()),
        (json!("alice:ticks"), json!("alice"))
    );
    assert!(answer.body["next_due"].as_str().unwrap().ends_with("+09:00"), "in the schedule's zone: {answer:?}");
    let listed = api.get("/api/v1/schedules", token).await.body;
    assert_eq!(listed["schedules"][0]["cron"], "* * * * * *", "{listed}");

    // Its first run, found in the workflow listing and finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let page = api.get("/api/v1/workflows?name=ticks", token).await.body;
        if let Some(run) = page["workflows"].as_array().unwrap().iter().find(|w| w["status"] == "completed") {
            break run["workflow_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no run of the schedule: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(run.starts_with("alice:ticks-") && run.ends_with('Z'), "{run}");
    let results = api.get(&format!("/api/v1/workflows/{run}/results"), token).await.body;
    let echoed = results["results"]["a"]["echoed"].as_str().unwrap();
    assert!(echoed.starts_with("owls at ") && echoed.ends_with("+09:00"), "{echoed}");

    // Bob's view: no such schedule, whichever way he names it.
    for id in ["ticks", "alice:ticks"] {
        assert_eq!(api.get(&format!("/api/v1/schedules/{id}"), &tokens.bob).await.status, 404);
        let theirs = api.send(api.request("DELETE", &format!("/api/v1/schedules/{id}"), Some(&tokens.bob))).await;
        assert_eq!(theirs.status, 404, "{theirs:?}");
    }
    assert!(api.get("/api/v1/schedules", &tokens.bob).await.body["schedules"].as_array().unwrap().is_empty());

    let removed = api.send(api.request("DELETE", "/api/v1/schedules/ticks", Some(token))).await;
    assert_eq!((removed.status, removed.body["removed"].clone()), (200, json!(true)), "{removed:?}");
    assert_eq!(api.get("/api/v1/schedules/ticks", token).await.status, 404);

    // Mistakes are 422s naming the field.
    for (query, says) in [
        ("?cron=61%20*%20*%20*%20*", "field 'schedule.cron': '61 * * * *' is not a cron pattern"),
        ("?cron=@daily&timezone=Mars/Olympus", "field 'schedule.timezone': unknown time zone 'Mars/Olympus'"),
        ("?cron=@daily&due_input=nope", "field 'schedule.due_input': 'nope' is not a declared input"),
        (
            "?cron=@daily&input=topic=owls&input=colour=red",
            "field 'schedule.inputs.colour': the workflow declares no such input",
        ),
        ("?cron=@daily&every=day", "unknown query field 'every'"),
        ("?cron=@daily&cron=*+*+*+*+*", "query field 'cron' is given twice"),
        ("?cron=@daily&replace=true&replace=false", "query field 'replace' is given twice"),
    ] {
        let answer = add(query).await;
        assert_eq!(answer.status, 422, "{query}: {answer:?}");
        assert!(answer.body["message"].as_str().unwrap().contains(says), "{query}: {answer:?}");
    }
    let plain = json!({"name": "plain", "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]});
    let answer = api.post_json("/api/v1/schedules", token, &plain).await;
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body["message"].as_str().unwrap().contains("the workflow has no schedule"), "{answer:?}");
}

/// A host keeps at most 1,000 schedules; one more is a 429 that says so,
/// and removing one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_bounded() {
    let host = serve(&["--store", "memory"]);
    let api = Api::of(&host);
    let token = host.token.as_str();
    let yearly = json!({"name": "yearly", "schedule": {"cron": "0 0 1 1 *"},
                        "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]});
    let add = |i: usize| {
        let path = format!("/api/v1/schedules?id=s{i}");
        let (api, yearly) = (&api, &yearly);
        async move { api.post_json(&path, token, yearly).await }
    };
    for i in 0..1000 {
        let answer = add(i).await;
        assert_eq!(answer.status, 201, "{i}: {answer:?}");
    }
    let answer = add(1000).await;
    assert_eq!(answer.status, 429, "{answer:?}");
    assert!(answer.body["message"].as_str().unwrap().contains("at most 1000 schedules"), "{answer:?}");
    assert_eq!(api.send(api.request("DELETE", "/api/v1/schedules/s7", Some(token))).await.status, 200);
    assert_eq!(add(1000).await.status, 201);
    let listed = api.get("/api/v1/schedules", token).await.body;
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 1000);
    assert_eq!(api.send(api.request("DELETE", "/api/v1/schedules/s8", Some(token))).await.status, 200);
    let big = json!({"name": "big", "schedule": {"cron": "0 0 1 1 *"},
                     "tasks": [{"id": "a", "protocol": "echo/v1", "method": "echo", "params": {"message": "x".repeat(2 << 20)}}]});
    let answer = api.post_json("/api/v1/schedules", token, &big).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.body["message"].as_str().unwrap().contains("a schedule keeps at most 1048576"), "{answer:?}");
}

/// Send `request` as it is on a connection of its own; all that comes
/// back until the host closes it.
async fn raw_exchange(url: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    // The host may answer (and close) before it has read it all.
    let _ = connection.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), connection.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The dashboard's rerun button (tests/python/dashboard_rerun.py, in a
/// real browser): a workflow that failed because its file was missing runs
/// again once the file is there, as a new workflow that names its origin.
#[test]
fn a_failed_workflow_is_rerun_from_the_dashboard() {
    let notes = tempfile::tempdir().unwrap();
    let host = serve(&["--files-dir", &format!("notes={}", notes.path().display())]);
    let file = notes.path().join("workflow.yaml");
    std::fs::write(
        &file,
        "name: reads a note\ntasks:\n  - {id: hello, protocol: echo/v1, method: echo, params: {message: hi}}\n  - {id: note, protocol: echo/v1, method: echo, dependencies: [hello], file: {path: note.txt, dir: notes}, params: {message: \"${item.text}\"}}\n",
    )
    .unwrap();
    let submitted = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["workflow", "submit", file.to_str().unwrap(), "--wait", "--output", "json"])
        .args(["--server", &host.url, "--token", &host.token])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(report["status"], "failed", "{report:#}");
    std::fs::write(notes.path().join("note.txt"), "written since").unwrap();
    let out = Command::new("python3")
        .arg(root().join("tests/python/dashboard_rerun.py"))
        .env("GLEITZEIT_SERVER", &host.url)
        .env("GLEITZEIT_TOKEN", &host.token)
        .env("WORKFLOW_ID", report["workflow_id"].as_str().unwrap())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("ok"), "{stdout}\n{stderr}");
}

/// A rerun is its caller's own: a client cannot rerun (or learn of)
/// another client's workflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_rerun_another_clients_workflow() {
    let host = serve(&[]);
    let api = Api::of(&host);
    let tokens = tokens(&host);
    let alices = api.submit(&tokens.alice, &delayed("alice's", 0.0)).await;
    api.finished(&tokens.alice, &alices).await;
    let rerun = |token: &str| api.request("POST", &format!("/api/v1/workflows/{alices}/rerun?from=after"), Some(token));
    let bobs = api.send(rerun(&tokens.bob)).await;
    assert_eq!((bobs.status, &bobs.body["code"]), (404, &json!(-32011)), "{bobs:?}");
    let hers = api.send(rerun(&tokens.alice)).await;
    assert_eq!(hers.status, 201, "{hers:?}");
    assert_eq!(hers.body["rerun_of"], alices.as_str());
}
