//! The checks across tasks, made once every task reads well: duplicate
//! ids, unknown and self dependencies, cycles, and `${…}` references that
//! must name declared inputs or ancestors.
//!
//! It owns no field rules (those are `super::fields`') and rewrites only
//! one thing: a dependency given by a task's name becomes its id.

use super::Problem;
use crate::model::Workflow;
use crate::resolver::Dag;
use crate::resolver::Root;
use crate::resolver::substitution;
use crate::text::excerpt;
use serde_json::Value;
use std::collections::HashMap;

/// Duplicate ids, unknown and self dependencies, cycles and references.
/// Dependencies given by task name are rewritten to ids.
pub(super) fn check_graph(workflow: &mut Workflow) -> Vec<Problem> {
    let (problems, renames) = graph_problems(workflow);
    for (task, dep, target) in renames {
        let id = workflow.tasks[target].id.clone();
        workflow.tasks[task].dependencies[dep] = id;
    }
    problems
}

/// The problems, and the dependencies named by task name as
/// `(task, dependency position, target task)`.
fn graph_problems(workflow: &Workflow) -> (Vec<Problem>, Vec<(usize, usize, usize)>) {
    let mut problems = Vec::new();
    let located = |id: &str, field: &str, message: String| Problem {
        task: Some(format!("task '{id}'")),
        field: Some(field.to_owned()),
        message,
    };
    // With duplicate ids the first task keeps the id.
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(workflow.tasks.len());
    for (i, task) in workflow.tasks.iter().enumerate() {
        if let Some(&first) = index.get(task.id.as_str()) {
            let message = format!("duplicate id: tasks #{} and #{} both use it", first + 1, i + 1);
            problems.push(located(&task.id, "id", message));
        } else {
            index.insert(&task.id, i);
        }
    }
    let mut by_name: Option<HashMap<&str, &str>> = None;
    let mut renames = Vec::new();
    let mut deps = vec![Vec::new(); workflow.tasks.len()];
    for (t, task) in workflow.tasks.iter().enumerate() {
        for (d, dep) in task.dependencies.iter().enumerate() {
            let target = index.get(dep.as_str()).copied().or_else(|| {
                let names = by_name.get_or_insert_with(|| names_to_ids(workflow));
                let target = names.get(dep.as_str()).and_then(|id| index.get(id)).copied();
                renames.extend(target.map(|target| (t, d, target)));
                target
            });
            match target {
                Some(target) if target == t => {
                    problems.push(located(&task.id, "dependencies", "a task cannot depend on itself".into()))
                }
                Some(target) => deps[t].push(target as u32),
                None => {
                    let message = format!("unknown task '{}'{}", excerpt(dep), suggest(dep, workflow));
                    problems.push(located(&task.id, "dependencies", message));
                }
            }
        }
    }
    let dag = Dag::new(deps);
    for cycle in dag.cycles() {
        let mut path: Vec<&str> = cycle.iter().map(|&t| workflow.tasks[t as usize].id.as_str()).collect();
        path.push(path[0]);
        let message = format!("dependency cycle: {} (each task depends on the next)", path.join(" -> "));
        problems.push(located(path[0], "dependencies", message));
    }
    problems.extend(check_references(workflow, &dag, &index));
    (problems, renames)
}

/// Names that map to exactly one task, for dependencies given by name.
fn names_to_ids(workflow: &Workflow) -> HashMap<&str, &str> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in &workflow.tasks {
        *count.entry(&t.name).or_default() += 1;
    }
    workflow.tasks.iter().filter(|t| count[t.name.as_str()] == 1).map(|t| (t.name.as_str(), t.id.as_str())).collect()
}

fn suggest(dep: &str, workflow: &Workflow) -> String {
    workflow
        .tasks
        .iter()
        .map(|t| (strsim::jaro_winkler(&t.id, dep), &t.id))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, id)| format!("; did you mean '{id}'?"))
        .unwrap_or_default()
}

/// Every `${…}` must be well formed, and a `${id.result…}` must name an
/// ancestor; `${item}` is for the params of a `for_each` task or one
/// that reads a `file`. Descendant
/// sets are computed once per referenced task.
fn check_references(workflow: &Workflow, dag: &Dag, index: &HashMap<&str, usize>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut wanted: HashMap<usize, Vec<(usize, &'static str)>> = HashMap::new();
    for (t, task) in workflow.tasks.iter().enumerate() {
        let when = task.when.clone().map(Value::String);
        let key = task.concurrency.as_ref().map(|c| Value::String(c.key.clone()));
        let fields = [
            ("params", Some(task.params.as_ref())),
            ("for_each", task.for_each.as_ref().map(|f| f.items.as_ref())),
            ("when", when.as_ref()),
            ("concurrency", key.as_ref()),
        ];
        for (field, value) in fields {
            let Some(value) = value else { continue };
            let located = |message: String| Problem {
                task: Some(format!("task '{}'", task.id)),
                field: Some(field.into()),
                message,
            };
            for found in substitution::references(value) {
                let r = match found {
                    Err(e) => {
                        problems.push(located(e.to_string()));
                        continue;
                    }
                    Ok(r) => r,
                };
                if let Root::Input(name) = &r.root {
                    if !workflow.inputs.iter().any(|i| i.name == *name) {
                        let declared: Vec<&str> = workflow.inputs.iter().map(|i| i.name.as_str()).collect();
                        let declared = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
                        problems.push(located(format!("'{r}' names no declared input (inputs: {declared})")));
                    }
                    continue;
                }
                let Some(id) = r.task() else {
                    if !matches!(field, "params" | "concurrency") {
                        problems.push(located(format!("'{r}': the items are not known yet in '{field}'")));
                    } else if task.for_each.is_none() && (task.file.is_none() || r.root == Root::ItemIndex) {
                        let needs = if r.root == Root::ItemIndex { "'for_each'" } else { "'for_each' or 'file'" };
                        problems.push(located(format!("'{r}' needs {needs} on the task (it names the item)")));
                    }
                    continue;
                };
                match index.get(id) {
                    None => problems.push(located(format!("'{r}' refers to unknown task '{id}'"))),
                    Some(&target) if target == t => problems.push(located(format!("'{r}' refers to the task itself"))),
                    Some(&target) if dag.deps(t).contains(&(target as u32)) => {}
                    Some(&target) => wanted.entry(target).or_default().push((t, field)),
                }
            }
        }
    }
    let dependents = if wanted.is_empty() { Vec::new() } else { dag.dependents() };
    let mut targets: Vec<_> = wanted.into_iter().collect();
    targets.sort_unstable();
    for (target, users) in targets {
        let descendants = dag.descendants(target, &dependents);
        for (user, field) in users.into_iter().filter(|&(u, _)| !descendants[u]) {
            let (user, target) = (&workflow.tasks[user].id, &workflow.tasks[target].id);
            problems.push(Problem {
                task: Some(format!("task '{user}'")),
                field: Some(field.into()),
                message: format!(
                    "refers to the result of task '{target}', which is not among its dependencies (direct or indirect); add '{target}' to 'dependencies'"
                ),
            });
        }
    }
    problems
}
