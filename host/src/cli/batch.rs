//! `gleitzeit batch DIR`: the original system's batch command, as a
//! generated workflow. One `for_each` over the directory's files asks
//! `llm/v1` the same thing about each (`generate` with the file's text, or
//! `vision` with the image), and the report lists every file's answer, as
//! Markdown or JSON. It runs in this process, like `run`, and reads only
//! the directory it is given.

use super::Failure;
use super::args::BatchArgs;
use super::local::{load_plugins, run_here};
use crate::engine::EngineConfig;
use crate::files::{FileDirs, WORKFLOW_DIR};
use crate::model::{TaskStatus, WorkflowStatus};
use crate::plugins::CompileWhen;
use crate::report::{RunReport, TaskReport};
use crate::store::StoreSpec;
use anyhow::Context as _;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The generated task's id; the files' tasks are `ask[0]`, `ask[1]`, ….
const TASK: &str = "ask";

/// Where the report goes, in which form.
enum Report {
    Markdown(Option<PathBuf>),
    Json(Option<PathBuf>),
}

impl Report {
    fn from_arg(output: &str) -> Self {
        match output {
            "markdown" | "md" => Report::Markdown(None),
            "json" => Report::Json(None),
            file if file.ends_with(".json") => Report::Json(Some(file.into())),
            file => Report::Markdown(Some(file.into())),
        }
    }
}

pub(super) async fn run(args: BatchArgs) -> Result<ExitCode, Failure> {
    let mut dirs = FileDirs::default();
    dirs.allow(WORKFLOW_DIR, &args.dir).map_err(|e| Failure::Input(e.into()))?;
    let origin = format!("gleitzeit batch {}", args.dir.display());
    let workflow = crate::workflow::from_value(&origin, document(&args))?;
    let (file, plugins) = args.plugins.resolve(None)?;
    let loaded = load_plugins(&plugins, &file, CompileWhen::OnFirstCall).await?;
    crate::workflow::check_catalog(&origin, &workflow, loaded.0.as_ref())?;
    let config = EngineConfig { file_dirs: Arc::new(dirs), ..EngineConfig::default() };
    let report = run_here(workflow, loaded, config, &StoreSpec::Memory, &file).await?;
    let answers = answers(&report);
    match Report::from_arg(&args.output) {
        Report::Markdown(to) => emit(&markdown(&args, &answers), to.as_deref())?,
        Report::Json(to) => {
            let json = serde_json::to_string_pretty(&to_json(&args, &report, &answers))
                .context("cannot encode the report")
                .map_err(Failure::Internal)?;
            emit(&(json + "\n"), to.as_deref())?
        }
    }
    if answers.is_empty() {
        eprintln!("no file in {} matches '{}'", args.dir.display(), args.pattern);
    }
    // Every file gets its place in the report, so the workflow allows
    // failures; the exit code still says if one failed.
    let all_answered = answers.iter().all(|a| a.task.status == TaskStatus::Completed);
    Ok(if report.status == WorkflowStatus::Completed && all_answered { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The generated workflow: one task over the files (failures allowed, so
/// every file gets its line in the report).
fn document(args: &BatchArgs) -> Value {
    // The prompt is the user's text, not a template.
    let prompt = args.prompt.replace("${", "$${");
    let mut params = if args.vision {
        json!({"prompt": prompt, "images": ["${item.base64}"]})
    } else {
        json!({"prompt": format!("{prompt}\n\n${{item.text}}")})
    };
    if let Some(model) = &args.model {
        params["model"] = json!(model);
    }
    json!({
        "name": format!("batch {}", args.dir.display()),
        "tasks": [{
            "id": TASK,
            "protocol": "llm/v1",
            "method": if args.vision { "vision" } else { "generate" },
            "for_each": {"files": args.pattern},
            "max_parallel": args.concurrency,
            "allow_failures": true,
            "params": params,
        }],
    })
}

/// One file's outcome.
struct Answer<'r> {
    path: &'r str,
    task: &'r TaskReport,
}

/// The files' tasks in file order, with the file each was for.
fn answers(report: &RunReport) -> Vec<Answer<'_>> {
    report
        .tasks
        .iter()
        .filter(|t| t.parent.as_deref() == Some(TASK))
        .map(|task| Answer { path: task.item.as_ref().and_then(|i| i["path"].as_str()).unwrap_or_default(), task })
        .collect()
}

fn content(task: &TaskReport) -> Result<&str, String> {
    match (task.status, &task.result, &task.error) {
        (TaskStatus::Completed, Some(result), _) => Ok(result["content"].as_str().unwrap_or_default()),
        (_, _, Some(error)) => Err(format!("{} (code {})", error.message, error.code)),
        (status, _, None) => Err(status.to_string()),
    }
}

fn markdown(args: &BatchArgs, answers: &[Answer]) -> String {
    let mut out = format!("# {}\n\n", args.prompt.lines().next().unwrap_or_default());
    let _ = writeln!(out, "{} files of `{}` matching `{}`.\n", answers.len(), args.dir.display(), args.pattern);
    for answer in answers {
        let _ = writeln!(out, "## {}\n", answer.path);
        match content(answer.task) {
            Ok(text) => out.push_str(text.trim_end()),
            Err(why) => out.push_str(&format!("**failed:** {why}")),
        }
        out.push_str("\n\n");
    }
    out
}

fn to_json(args: &BatchArgs, report: &RunReport, answers: &[Answer]) -> Value {
    let files: Vec<Value> = answers
        .iter()
        .map(|a| match content(a.task) {
            Ok(text) => json!({"path": a.path, "status": "completed", "answer": text, "model": a.task.result.as_ref().map(|r| &r["model"])}),
            Err(why) => json!({"path": a.path, "status": a.task.status, "error": why}),
        })
        .collect();
    json!({
        "directory": args.dir,
        "pattern": args.pattern,
        "prompt": args.prompt,
        "status": report.status,
        "files": files,
    })
}

fn emit(text: &str, to: Option<&Path>) -> Result<(), Failure> {
    match to {
        None => out!("{}", text.trim_end_matches('\n')),
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write the report to {}", path.display()))
            .map_err(Failure::Input)?,
    }
    Ok(())
}
