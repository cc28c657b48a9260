//! `workflow rerun`: a new workflow from a failed or cancelled one. Its
//! completed tasks keep their results (copied, each marked as taken from
//! the workflow it reruns), and only its failed, skipped and cancelled
//! tasks run again, with the same document and inputs; from a task
//! (`--from`), that task and every task after it run again too. The new
//! run names its origin (`rerun_of`); the old one is unchanged.
//!
//! A `for_each` task keeps the items it had: those that completed keep
//! their results, the others run again.

use super::core::Core;
use super::rpc::{RpcError, errors};
use crate::auth::Caller;
use crate::engine::Submitted;
use crate::model::{RERUN_OF, TaskStatus, Workflow, WorkflowStatus};
use crate::report::{RunReport, TaskReport};
use crate::store::TaskRecord;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// A rerun accepted: the new workflow, the one it reruns (as the host
/// keeps its id), and the new one's documented tasks.
pub(super) struct Rerun {
    pub(super) submitted: Submitted,
    pub(super) rerun_of: String,
    pub(super) task_count: usize,
}

impl Core {
    /// Rerun `caller`'s workflow `id` (see the module's doc); from task
    /// `from` on if given.
    pub(super) async fn rerun(&self, caller: &Caller, id: &str, from: Option<&str>) -> Result<Rerun, RpcError> {
        let not_found = || RpcError::new(errors::NOT_FOUND, format!("no workflow '{}'", crate::text::excerpt(id)));
        let report = self.report(caller, id).await?.ok_or_else(not_found)?;
        match (report.status, from) {
            (WorkflowStatus::Running, _) => {
                return Err(RpcError::new(errors::CONFLICT, format!("workflow '{id}' is still running")));
            }
            (WorkflowStatus::Completed, None) => {
                let message =
                    format!("workflow '{id}' completed: name a task to run it and what follows again (--from TASK)");
                return Err(RpcError::new(errors::CONFLICT, message));
            }
            _ => {}
        }
        let Some(store) = &self.store else {
            return Err(RpcError::new(
                errors::CONFLICT,
                "a rerun needs the workflow's document: this host keeps none (--store memory)",
            ));
        };
        let origin = report.workflow_id.clone();
        let wanted = origin.clone();
        let document =
            store.call("read a workflow", move |store| store.document(&wanted)).await.map_err(RpcError::internal)?;
        let mut workflow = document.ok_or_else(not_found)?;
        let kept = kept_records(&report, &workflow, from).map_err(|e| RpcError::new(errors::INVALID_PARAMS, e))?;
        rename(&mut workflow, &origin);
        let task_count = workflow.tasks.len();
        let submitted = self.intake.submit_keeping(caller, workflow, kept).await?;
        Ok(Rerun { submitted, rerun_of: origin, task_count })
    }
}

/// The workflow as its rerun: a new id, and `metadata.rerun_of` naming
/// `origin`.
fn rename(workflow: &mut Workflow, origin: &str) {
    workflow.id = format!("wf-{}", uuid::Uuid::new_v4().simple());
    if !workflow.metadata.is_object() {
        workflow.metadata = Value::Object(serde_json::Map::new());
    }
    workflow.metadata[RERUN_OF] = Value::String(origin.to_owned());
}

/// The tasks of `report` the rerun keeps: those that completed, but for
/// `from` and every task after it; a `for_each` task with its items.
fn kept_records(report: &RunReport, workflow: &Workflow, from: Option<&str>) -> Result<Vec<TaskRecord>, String> {
    let again = match from {
        Some(from) => after(workflow, from)?,
        None => HashSet::new(),
    };
    let runs_again = |t: &TaskReport| again.contains(t.parent.as_deref().unwrap_or(&t.id));
    let mut kept = Vec::new();
    for task in report.tasks.iter().filter(|t| !runs_again(t)) {
        let record = match (task.items, task.status) {
            (None, TaskStatus::Completed) => record_of(task, TaskStatus::Completed, &report.workflow_id, None),
            // Its items are made again as they were; they run as they need.
            (Some(_), status) => {
                let items: Vec<Value> = report
                    .tasks
                    .iter()
                    .filter(|i| i.parent.as_deref() == Some(&task.id))
                    .filter_map(|i| i.item.clone())
                    .collect();
                if items.len() != task.items.unwrap_or(0) {
                    continue;
                }
                let status = if status == TaskStatus::Completed { status } else { TaskStatus::Running };
                record_of(task, status, &report.workflow_id, Some(Arc::new(items)))
            }
            (None, _) => continue,
        };
        kept.push(record);
    }
    Ok(kept)
}

/// Task `from` and every task that depends on it, however indirectly.
fn after(workflow: &Workflow, from: &str) -> Result<HashSet<String>, String> {
    if !workflow.tasks.iter().any(|t| t.id == from) {
        return Err(format!("--from: workflow '{}' has no task '{}'", workflow.id, crate::text::excerpt(from)));
    }
    let mut again: HashSet<String> = HashSet::from([from.to_owned()]);
    loop {
        let more: Vec<String> = (workflow.tasks.iter())
            .filter(|t| !again.contains(&t.id) && t.dependencies.iter().any(|d| again.contains(d)))
            .map(|t| t.id.clone())
            .collect();
        if more.is_empty() {
            return Ok(again);
        }
        again.extend(more);
    }
}

fn record_of(task: &TaskReport, status: TaskStatus, origin: &str, items: Option<Arc<Vec<Value>>>) -> TaskRecord {
    TaskRecord {
        workflow_id: String::new(), // the new run's, when it stores it
        task_id: task.id.clone(),
        status,
        attempts: task.attempts,
        started_at: task.started_at,
        finished_at: task.finished_at.filter(|_| status.is_final()),
        result: task.result.clone().filter(|_| status == TaskStatus::Completed),
        error: None,
        retry_at: None,
        params: task.params.clone(),
        history: task.history.clone(),
        items,
        taken_from: Some(origin.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow() -> Workflow {
        let yaml = "name: r\ntasks:\n  - {id: a, protocol: t/v1, method: m}\n  - {id: b, protocol: t/v1, method: m, dependencies: [a]}\n  - {id: c, protocol: t/v1, method: m, dependencies: [b]}\n  - {id: d, protocol: t/v1, method: m}\n";
        crate::workflow::parse("r.yaml", yaml.as_bytes(), crate::workflow::Format::Yaml).unwrap()
    }

    fn report(statuses: &[(&str, TaskStatus)]) -> RunReport {
        let tasks = statuses
            .iter()
            .map(|(id, status)| {
                let mut t: TaskReport = serde_json::from_value(serde_json::json!({
                    "id": id, "name": id, "protocol": "t/v1", "method": "m", "status": status, "attempts": 1,
                    "started_at": null, "finished_at": null, "queued_ms": null, "duration_ms": null, "error": null,
                }))
                .unwrap();
                t.result = (*status == TaskStatus::Completed).then(|| serde_json::json!({"of": id}));
                t
            })
            .collect();
        RunReport::new("wf-old".into(), "r".into(), std::time::SystemTime::now(), std::time::Duration::ZERO, tasks)
    }

    #[test]
    fn completed_tasks_are_kept_and_from_reruns_what_follows() {
        use TaskStatus::*;
        let old = report(&[("a", Completed), ("b", Failed), ("c", Skipped), ("d", Completed)]);
        let kept: Vec<String> = kept_records(&old, &workflow(), None).unwrap().into_iter().map(|r| r.task_id).collect();
        assert_eq!(kept, ["a", "d"]);
        let records = kept_records(&old, &workflow(), Some("a")).unwrap();
        assert_eq!(records.iter().map(|r| r.task_id.as_str()).collect::<Vec<_>>(), ["d"]);
        assert_eq!(
            (records[0].result.clone(), records[0].taken_from.as_deref()),
            (Some(serde_json::json!({"of": "d"})), Some("wf-old"))
        );
        assert!(kept_records(&old, &workflow(), Some("zz")).unwrap_err().contains("has no task 'zz'"));
    }
}
