//! Commands that talk to a running `gleitzeit serve` over Socket.IO.

use super::Failure;
use super::args::{InputArgs, Output, ScheduleArgs, ServerArgs, SubmitArgs, TaskArgs};
use super::local::{print_report, write_document};
use crate::client::{Client, ClientError};
use crate::report::RunReport;
use anyhow::Context as _;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Answers to simple requests come quickly; submissions of large workflows
/// may take longer to validate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl ScheduleArgs {
    /// The fields of the `schedule:` block these options set.
    fn overrides(&self) -> Result<serde_json::Map<String, Value>, Failure> {
        let mut block = serde_json::Map::new();
        let fields =
            [("cron", &self.cron), ("timezone", &self.timezone), ("id", &self.id), ("due_input", &self.due_input)];
        for (field, value) in fields {
            if let Some(value) = value {
                block.insert(field.to_owned(), Value::String(value.clone()));
            }
        }
        let inputs = self.inputs.values()?;
        if !inputs.is_empty() {
            block.insert("inputs".to_owned(), Value::Object(inputs));
        }
        Ok(block)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Input(e.into())
    }
}

async fn connect(server: &ServerArgs) -> Result<Client, Failure> {
    // The local admin token goes only to a host on this machine, never to
    // whatever --server names.
    let local_dir = server.data_dir.clone().or_else(super::settings::default_data_dir);
    let token = match (&server.token, local_dir) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(dir)) if crate::client::is_loopback_url(&server.server) => {
            crate::auth::read_local_token(&dir).map_err(|e| Failure::Input(e.into()))?
        }
        (None, _) => None,
    };
    match Client::connect(&server.server, token.as_deref()).await {
        Err(ClientError::Refused(reason)) if token.is_none() => Err(Failure::Input(anyhow::anyhow!(
            "the host refused the connection: {reason}. No token was found: pass --token or GLEITZEIT_TOKEN, or run on the host's machine as its user (the local token is DATA_DIR/token)"
        ))),
        connected => Ok(connected?),
    }
}

/// Ask the host; a JSON-RPC error in the answer becomes an input failure.
async fn request(client: &Client, event: &str, data: Value) -> Result<Value, Failure> {
    let reply = client.call(event, &data, REQUEST_TIMEOUT).await?;
    match reply.get("error") {
        Some(error) => {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("request failed");
            // Messages for all clients name the event; this one says it already.
            let message = message.strip_prefix(event).and_then(|m| m.strip_prefix(": ")).unwrap_or(message);
            Err(Failure::Input(anyhow::anyhow!("the host refused {event}: {message}")))
        }
        None => Ok(reply),
    }
}

fn print_json(value: &Value) -> Result<(), Failure> {
    out!("{}", serde_json::to_string_pretty(value).context("cannot encode the answer").map_err(Failure::Internal)?);
    Ok(())
}

pub(super) async fn submit(server: &ServerArgs, args: SubmitArgs) -> Result<ExitCode, Failure> {
    let workflow = read_tree(&args.file, &args.inputs)?;
    let mut client = connect(server).await?;
    let inputs = args.inputs.values()?;
    let reply = request(&client, "submit_workflow", json!({ "workflow": workflow, "inputs": inputs })).await?;
    let workflow_id = reply["workflow_id"].as_str().unwrap_or_default().to_owned();
    let task_count = reply["task_count"].as_u64().unwrap_or(0);
    if !args.wait {
        match server.output {
            Output::Json => print_json(&reply)?,
            Output::Text => out!("submitted workflow {workflow_id} ({task_count} tasks)"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_and_print(&mut client, server, &workflow_id, task_count, args.output_file.as_deref()).await
}

/// Rerun workflow `workflow_id` (from task `from` on), and wait for the
/// new run if asked.
pub(super) async fn rerun(
    server: &ServerArgs,
    workflow_id: &str,
    from: Option<&str>,
    wait: bool,
) -> Result<ExitCode, Failure> {
    let mut client = connect(server).await?;
    let reply = request(&client, "rerun_workflow", json!({ "workflow_id": workflow_id, "from": from })).await?;
    let new_id = reply["workflow_id"].as_str().unwrap_or_default().to_owned();
    if !wait {
        match server.output {
            Output::Json => print_json(&reply)?,
            Output::Text => out!("submitted workflow {new_id}, a rerun of {workflow_id}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let task_count = reply["task_count"].as_u64().unwrap_or(0);
    wait_and_print(&mut client, server, &new_id, task_count, None).await
}

/// The file as a JSON tree, after the same local validation `run` does
/// (with its inputs), so mistakes are reported with the file's name.
fn read_tree(path: &Path, inputs: &InputArgs) -> Result<Value, Failure> {
    let tree = crate::workflow::load_tree(path)?;
    let origin = path.display().to_string();
    let mut workflow = crate::workflow::from_value(&origin, tree.clone())?;
    crate::workflow::inputs::bind(&origin, &mut workflow, inputs.values()?)?;
    Ok(tree)
}

/// Follow the workflow's events with a progress bar, then print its report.
async fn wait_and_print(
    client: &mut Client,
    server: &ServerArgs,
    workflow_id: &str,
    task_count: u64,
    output_file: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let bar = indicatif::ProgressBar::new(task_count);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} tasks [{bar:30}] {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Subscribing covers a workflow submitted by someone else, too.
    request(client, "subscribe", json!({ "workflow_id": workflow_id })).await?;
    // A workflow that finished before we subscribed has a report already.
    let finished = |report: &Value| report["status"].as_str().is_some_and(|s| s != "running");
    let mut report = request(client, "get_workflow", json!({ "workflow_id": workflow_id })).await?;
    while !finished(&report) {
        let event = client.next_event().await.ok_or(ClientError::Closed)?;
        let ours = event.data["workflow_id"].as_str() == Some(workflow_id);
        match event.name.as_str() {
            "task_result" if ours => {
                bar.inc(1);
                bar.set_message(format!(
                    "{} {}",
                    event.data["task_id"].as_str().unwrap_or("?"),
                    event.data["status"].as_str().unwrap_or("")
                ));
            }
            "workflow_completed" if ours => {
                report = request(client, "get_workflow", json!({ "workflow_id": workflow_id })).await?;
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    client.disconnect();
    let report: RunReport =
        serde_json::from_value(report).context("the host sent a malformed report").map_err(Failure::Internal)?;
    print_report(&report, server.output, output_file)?;
    Ok(if report.status == crate::model::WorkflowStatus::Completed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn fetch_report(server: &ServerArgs, workflow_id: &str) -> Result<RunReport, Failure> {
    let client = connect(server).await?;
    let report = request(&client, "get_workflow", json!({ "workflow_id": workflow_id })).await?;
    serde_json::from_value(report).context("the host sent a malformed report").map_err(Failure::Internal)
}

pub(super) async fn status(
    server: &ServerArgs,
    workflow_id: &str,
    output_file: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let report = fetch_report(server, workflow_id).await?;
    print_report(&report, server.output, output_file)?;
    Ok(ExitCode::SUCCESS)
}

/// Every task's whole result (or error): as JSON, `{task_id: {status,
/// result, error}}`; as text, each task's id and status, then its result.
pub(super) async fn results(
    server: &ServerArgs,
    workflow_id: &str,
    output_file: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let report = fetch_report(server, workflow_id).await?;
    if let Some(path) = output_file {
        write_document(&report, path)?;
    }
    let outcome = |t: &crate::report::TaskReport| match (&t.result, &t.error) {
        (Some(result), _) => result.clone(),
        (None, Some(error)) => json!({ "error": error }),
        (None, None) => Value::Null,
    };
    match server.output {
        Output::Json => {
            let all: serde_json::Map<String, Value> = report
                .tasks
                .iter()
                .map(|t| (t.id.clone(), json!({ "status": t.status, "result": t.result, "error": t.error })))
                .collect();
            print_json(&Value::Object(all))?;
        }
        Output::Text => {
            for task in &report.tasks {
                let text = serde_json::to_string_pretty(&outcome(task)).unwrap_or_default();
                out!(
                    "{} ({}):\n{text}\n",
                    task.id,
                    serde_json::to_value(task.status).unwrap_or_default().as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn cancel(server: &ServerArgs, workflow_id: &str) -> Result<ExitCode, Failure> {
    let client = connect(server).await?;
    let reply = request(&client, "cancel_workflow", json!({ "workflow_id": workflow_id })).await?;
    match server.output {
        Output::Json => print_json(&reply)?,
        Output::Text => out!("cancelled workflow {workflow_id}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn task(server: &ServerArgs, args: TaskArgs) -> Result<ExitCode, Failure> {
    let params: Value = serde_json::from_str(&args.params)
        .with_context(|| format!("--params is not JSON: {}", args.params))
        .map_err(Failure::Input)?;
    let mut client = connect(server).await?;
    let task = json!({ "name": args.method, "protocol": args.protocol, "method": args.method, "params": params });
    let reply = request(&client, "submit_task", json!({ "task": task })).await?;
    let workflow_id = reply["workflow_id"].as_str().unwrap_or_default().to_owned();
    if args.wait {
        return wait_and_print(&mut client, server, &workflow_id, 1, None).await;
    }
    match server.output {
        Output::Json => print_json(&reply)?,
        Output::Text => {
            out!("submitted task {} in workflow {workflow_id}", reply["task_id"].as_str().unwrap_or("?"))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `schedule add`: checked here as the host will (so mistakes name the
/// file), then kept by the host.
pub(super) async fn add_schedule(server: &ServerArgs, args: ScheduleArgs) -> Result<ExitCode, Failure> {
    let tree = crate::workflow::load_tree(&args.file)?;
    let overrides = args.overrides()?;
    let origin = args.file.display().to_string();
    let workflow =
        crate::workflow::from_value(&origin, crate::workflow::schedule_overlay(tree.clone(), overrides.clone()))?;
    if workflow.schedule.is_none() {
        return Err(Failure::Input(anyhow::anyhow!("{origin} has no schedule: block; give one, or --cron PATTERN")));
    }
    let client = connect(server).await?;
    let request_data = json!({ "workflow": tree, "schedule": overrides, "replace": args.replace });
    let reply = request(&client, "add_schedule", request_data).await?;
    match server.output {
        Output::Json => print_json(&reply)?,
        Output::Text => out!(
            "schedule {}: {} ({}); next run {}",
            reply["schedule_id"].as_str().unwrap_or("?"),
            reply["cron"].as_str().unwrap_or("?"),
            reply["timezone"].as_str().unwrap_or("?"),
            reply["next_due"].as_str().unwrap_or("never")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn remove_schedule(server: &ServerArgs, schedule_id: &str) -> Result<ExitCode, Failure> {
    let client = connect(server).await?;
    let reply = request(&client, "remove_schedule", json!({ "schedule_id": schedule_id })).await?;
    match server.output {
        Output::Json => print_json(&reply)?,
        Output::Text => out!("removed schedule {schedule_id}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// One of the listing requests, printed as a table or JSON.
pub(super) async fn list(server: &ServerArgs, event: &str, key: &str, columns: &[&str]) -> Result<ExitCode, Failure> {
    listed(server, event, key, columns).await?;
    Ok(ExitCode::SUCCESS)
}

/// `plugin list`: the table, then what each plugin may reach, read and
/// use (`--output json` has its grants whole).
pub(super) async fn plugins(server: &ServerArgs) -> Result<ExitCode, Failure> {
    let columns = ["name", "protocol_id", "version", "source", "methods"];
    let reply = listed(server, "list_plugins", "plugins", &columns).await?;
    if server.output == Output::Json {
        return Ok(ExitCode::SUCCESS);
    }
    let granted: Vec<String> = (reply["plugins"].as_array().into_iter().flatten())
        .filter_map(|p| Some((p["name"].as_str()?, granted(&p["grants"])?)))
        .map(|(name, grants)| format!("  {name}: {grants}"))
        .collect();
    if !granted.is_empty() {
        out!("\ngrants:\n{}", granted.join("\n"));
    }
    if let Some(directory) = reply["directory"].as_str() {
        out!("directory: {directory} (watched)");
    }
    Ok(ExitCode::SUCCESS)
}

/// A plugin's grants in a line: what it may reach and read, the headers
/// the host adds (by the secrets they name), its rate limits and MCP
/// servers; none if it has none of these.
fn granted(grants: &Value) -> Option<String> {
    let texts = |key: &str| -> Vec<String> {
        grants[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    let mut parts = Vec::new();
    if let hosts @ [_, ..] = texts("allowed_hosts").as_slice() {
        parts.push(format!("reaches {}", hosts.join(", ")));
    }
    for header in grants["headers"].as_array().into_iter().flatten() {
        let secrets: Vec<&str> = header["secrets"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let from = if secrets.is_empty() {
            "the host's own value".to_owned()
        } else {
            format!("secret {}", secrets.join(", "))
        };
        parts.push(format!("adds {} for {} from {from}", cell(&header["header"]), cell(&header["origin"])));
    }
    if let dirs @ [_, ..] = texts("read_dirs").as_slice() {
        parts.push(format!("reads {}", dirs.join(", ")));
    }
    for (key, unit) in [("requests_per_minute", "requests"), ("tokens_per_minute", "tokens")] {
        if let Some(n) = grants["rate_limit"][key].as_u64() {
            parts.push(format!("{n} {unit} a minute"));
        }
    }
    if let servers @ [_, ..] = texts("mcp_stdio").as_slice() {
        parts.push(format!("runs MCP server {}", servers.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `protocol list`: the table, then each method's params as its schema
/// gives them (`--output json` has the schemas whole).
pub(super) async fn protocols(server: &ServerArgs) -> Result<ExitCode, Failure> {
    let reply = listed(server, "list_protocols", "protocols", &["protocol_id", "methods", "providers"]).await?;
    if server.output == Output::Json {
        return Ok(ExitCode::SUCCESS);
    }
    let signatures: Vec<String> = (reply["protocols"].as_array().into_iter().flatten())
        .flat_map(|p| {
            let protocol = p["protocol_id"].as_str().unwrap_or_default();
            let schemas = p["params_schemas"].as_object().into_iter().flatten();
            schemas.map(move |(method, schema)| format!("  {protocol}.{method}({})", signature(schema)))
        })
        .collect();
    if !signatures.is_empty() {
        out!("\nparams:\n{}", signatures.join("\n"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Ask for a list and print it: as JSON, or as a table of `columns`.
async fn listed(server: &ServerArgs, event: &str, key: &str, columns: &[&str]) -> Result<Value, Failure> {
    let client = connect(server).await?;
    let reply = request(&client, event, json!({})).await?;
    if server.output == Output::Json {
        print_json(&reply[key])?;
        return Ok(reply);
    }
    let rows: Vec<Vec<String>> = reply[key]
        .as_array()
        .map(|items| items.iter().map(|item| columns.iter().map(|c| cell(&item[*c])).collect()).collect())
        .unwrap_or_default();
    out!("{}", table(columns, &rows).trim_end_matches('\n'));
    Ok(reply)
}

/// `text: string, top?: integer` for an object schema's properties (`?`
/// where not required); nothing for an object without any, `…` for a
/// schema that is not a plain object.
fn signature(schema: &Value) -> String {
    let Some(properties) = schema["properties"].as_object() else {
        let open = schema["type"] != "object" || schema.get("additionalProperties").is_some_and(|a| a != false);
        return if open { "…" } else { "" }.into();
    };
    let required: Vec<&str> = (schema["required"].as_array().into_iter().flatten()).filter_map(Value::as_str).collect();
    let field = |(name, property): (&String, &Value)| {
        let optional = if required.contains(&name.as_str()) { "" } else { "?" };
        let types: Vec<&str> = match &property["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
            _ => Vec::new(),
        };
        let shown = if types.is_empty() { "any".to_owned() } else { types.join("|") };
        format!("{name}{optional}: {shown}")
    };
    properties.iter().map(field).collect::<Vec<_>>().join(", ")
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Null => "-".into(),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Left-aligned columns separated by two spaces.
fn table(columns: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([columns[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
