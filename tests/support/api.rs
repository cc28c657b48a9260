//! A client of a daemon's HTTP API for tests: requests with a token,
//! answers as JSON, and event streams read event by event.

use super::Served;
use serde_json::Value;
use std::time::Duration;

/// A client of one daemon's API.
pub struct Api {
    pub client: reqwest::Client,
    pub url: String,
}

/// An answer: the status and the body as JSON (null if it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn of(host: &Served) -> Self {
        Self { client: reqwest::Client::new(), url: host.url.clone() }
    }

    pub fn request(&self, method: &str, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self.client.request(method, format!("{}{path}", self.url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(self.request("GET", path, Some(token))).await
    }

    /// GET `path` as `token`: the status and the body as text.
    pub async fn get_text(&self, path: &str, token: &str) -> (u16, String) {
        let response = self.request("GET", path, Some(token)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Answer {
        let request = self.request("POST", path, Some(token)).header("Content-Type", "application/json");
        self.send(request.body(body.to_string())).await
    }

    /// Submit `workflow` as `token`; its id.
    pub async fn submit(&self, token: &str, workflow: &Value) -> String {
        let answer = self.post_json("/api/v1/workflows", token, workflow).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["workflow_id"].as_str().unwrap().to_owned()
    }

    /// Wait (on its event stream) until workflow `id` ends; its report.
    pub async fn finished(&self, token: &str, id: &str) -> Value {
        let mut stream = Stream::open(self, &format!("/api/v1/workflows/{id}/events"), token, None).await;
        while stream.next().await.is_some() {}
        self.get(&format!("/api/v1/workflows/{id}"), token).await.body
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// An open event stream, read event by event.
pub struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    pub async fn open(api: &Api, path: &str, token: &str, last_event_id: Option<&str>) -> Stream {
        let mut request = api.request("GET", path, Some(token));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream { response, buffer: String::new() }
    }

    /// The next event (comments skipped); none once the stream ends.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()));
                let Some(event) = field("event:") else { continue }; // a keep-alive comment
                let data = serde_json::from_str(&field("data:").unwrap_or_default()).unwrap();
                return Some(Sse { event, id: field("id:").unwrap_or_default(), data });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.response.chunk()).await;
            match chunk.expect("an event within 60 s").unwrap() {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }
}
