//! What the daemon and cluster benches share: a workflow submitted over
//! Socket.IO and waited for.

use gleitzeit::client::Client;
use gleitzeit::report::RunReport;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Submit `workflow` and wait for its `workflow_completed`; the wall time
/// (submission to that event) and its report.
pub async fn submit_and_wait(client: &mut Client, workflow: &Value, timeout: Duration) -> (Duration, RunReport) {
    let started = Instant::now();
    let reply = client.call("submit_workflow", &json!({ "workflow": workflow }), timeout).await.unwrap();
    let id = reply["workflow_id"].as_str().unwrap_or_else(|| panic!("not submitted: {reply}")).to_owned();
    loop {
        let event = client.next_event().await.unwrap();
        if event.name == "workflow_completed" && event.data["workflow_id"] == id.as_str() {
            break;
        }
    }
    let wall = started.elapsed();
    let report = client.call("get_workflow", &json!({ "workflow_id": id }), timeout).await.unwrap();
    (wall, serde_json::from_value(report).unwrap())
}
