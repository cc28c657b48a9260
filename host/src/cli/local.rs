//! The commands that run here, without a daemon: `run` (a workflow, to its
//! report) and `workflow validate`; and the loading of plugins they share
//! with `batch`.

use super::Failure;
use super::args::{InputArgs, Output, RunArgs, ValidateArgs};
use super::settings::{ConfigFile, MAX_DEFAULT_TIMEOUT_SECS, PluginDirs, data_dir_or_here, open_store, seconds};

use crate::engine::{Engine, EngineConfig, EngineError};
use crate::model::{Workflow, WorkflowStatus};
use crate::plugins::{CompileWhen, Overrides, PluginSet, RuntimeConfig, WasmRuntime};
use crate::registry::Registry;
use crate::report::RunReport;
use crate::store::sqlite::SqliteCache;
use crate::store::{MemoryCache, ResultCache, StoreSpec};
use crate::workflow::{self};
use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) async fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let (file, plugins) = args.plugins.resolve(None)?;
    let (workflow, notes, registry, plugin_set) =
        load_against_registry(&args.file, &args.inputs, &plugins, &file).await?;
    for note in notes {
        eprintln!("note: {note}");
    }
    if let Some(spec) = &workflow.schedule {
        eprintln!(
            "note: the schedule ({}, {}) is a host's to keep: this runs the workflow once, now; `gleitzeit schedule add {}` hands it to a host",
            spec.cron,
            spec.timezone,
            args.file.display()
        );
    }
    let default_timeout = seconds(
        "--default-timeout",
        args.default_timeout.or(file.default_timeout).unwrap_or(300.0),
        MAX_DEFAULT_TIMEOUT_SECS,
    )?;
    let config = EngineConfig {
        concurrency: args.concurrency as usize,
        default_timeout,
        file_dirs: args.files.dirs(Some(&args.file))?,
        ..EngineConfig::default()
    };
    let store = args.store.as_ref().unwrap_or(&StoreSpec::Memory);
    let report = run_here(workflow, (registry, plugin_set), config, store, &file).await?;
    print_report(&report, args.output, args.output_file.as_deref())?;
    Ok(if report.status == WorkflowStatus::Completed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Run a validated workflow to its end in this process, on `plugins`.
pub(super) async fn run_here(
    workflow: Workflow,
    (registry, plugin_set): (Arc<Registry>, Arc<PluginSet>),
    config: EngineConfig,
    store: &StoreSpec,
    file: &ConfigFile,
) -> Result<Arc<RunReport>, Failure> {
    let protocols = workflow.tasks.iter().map(|t| t.protocol.as_str()).collect();
    plugin_set.prepare(&protocols).await;
    let engine = match open_store(store, file.data_dir.as_deref())? {
        None if workflow.tasks.iter().any(|task| task.cache.is_some()) => {
            Engine::start_cached(registry, config, run_cache(file))
        }
        None => Engine::start(registry, config),
        Some(store) => {
            let started = Engine::start_durable(registry, config, store).context("cannot start the store's journal");
            started.map_err(Failure::Internal)?.0
        }
    };
    engine.run(workflow).await.map_err(|e| match e {
        EngineError::DuplicateId(_) | EngineError::FinishedId(_) | EngineError::TooLarge(_) | EngineError::Busy(_) => {
            Failure::Input(e.into())
        }
        EngineError::Stopped | EngineError::Store(_) => Failure::Internal(e.into()),
    })
}

/// The file in the data directory that holds a run's cached results.
const RUN_CACHE_FILE: &str = "results.db";

/// Where a run without a store keeps the results of `cache: {ttl}` calls:
/// `DATA_DIR/results.db`, shared by the runs of its user (else this process's
/// memory, with a warning).
fn run_cache(file: &ConfigFile) -> Arc<dyn ResultCache> {
    let path = data_dir_or_here(file.data_dir.as_deref()).join(RUN_CACHE_FILE);
    match SqliteCache::open(&path) {
        Ok(cache) => Arc::new(cache),
        Err(e) => {
            tracing::warn!("{e}; results are cached for this run only");
            Arc::new(MemoryCache::default())
        }
    }
}

/// Write the full result document (JSON) to `path`.
pub(super) fn write_document(report: &RunReport, path: &Path) -> Result<(), Failure> {
    let text =
        serde_json::to_string_pretty(report).context("cannot encode the result document").map_err(Failure::Internal)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the result document to {}", path.display()))
        .map_err(Failure::Input)
}

pub(super) fn print_report(report: &RunReport, output: Output, file: Option<&Path>) -> Result<(), Failure> {
    let json = || serde_json::to_string_pretty(report).context("cannot encode the result document");
    if let Some(path) = file {
        write_document(report, path)?;
    }
    match output {
        Output::Text => out!("{}", report.to_text()),
        Output::Json => out!("{}", json().map_err(Failure::Internal)?),
    }
    Ok(())
}

pub(super) async fn validate(args: ValidateArgs) -> Result<ExitCode, Failure> {
    let (workflow, notes) = if args.schema_only {
        args.inputs.load(&args.file)?
    } else {
        let (file, plugins) = args.plugins.resolve(None)?;
        let (workflow, notes, ..) = load_against_registry(&args.file, &args.inputs, &plugins, &file).await?;
        (workflow, notes)
    };
    let levels = level_count(&workflow);
    let upcoming = upcoming_runs(&workflow);
    match args.output {
        Output::Json => {
            let notes: Vec<String> = notes.iter().map(ToString::to_string).collect();
            let mut verdict = serde_json::json!({ "valid": true, "file": args.file, "name": workflow.name, "tasks": workflow.tasks.len(), "levels": levels, "notes": notes });
            if let Some((spec, next)) = &upcoming {
                verdict["schedule"] =
                    serde_json::json!({ "id": spec.id, "cron": spec.cron, "timezone": spec.timezone, "next": next });
            }
            out!("{verdict}")
        }
        Output::Text => {
            out!(
                "{} is valid: workflow '{}', {} tasks in {levels} levels",
                args.file.display(),
                workflow.name,
                workflow.tasks.len()
            );
            for note in notes {
                out!("  note: {note}");
            }
            if let Some((spec, next)) = &upcoming {
                out!("  schedule {}: {} ({}); next runs {}", spec.id, spec.cron, spec.timezone, next.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A scheduled workflow's schedule and its next three due times.
pub(super) fn upcoming_runs(workflow: &Workflow) -> Option<(&crate::schedule::Spec, Vec<String>)> {
    let spec = workflow.schedule.as_ref()?;
    let cadence = spec.cadence().ok()?;
    Some((spec, cadence.upcoming(std::time::SystemTime::now(), 3)))
}

pub(super) fn level_count(workflow: &Workflow) -> usize {
    let ids: Vec<&str> = workflow.tasks.iter().map(|t| t.id.as_str()).collect();
    let dag =
        crate::resolver::Dag::from_ids(&ids, |t| workflow.tasks[t].dependencies.iter().map(String::as_str).collect());
    dag.levels().map_or(0, |l| l.len())
}

/// Load and validate `file` with its inputs, then check its protocols and
/// methods against the local plugins.
pub(super) async fn load_against_registry(
    file: &Path,
    inputs: &InputArgs,
    plugins: &PluginDirs,
    config: &ConfigFile,
) -> Result<(Workflow, Vec<workflow::Problem>, Arc<Registry>, Arc<PluginSet>), Failure> {
    let (workflow, notes) = inputs.load(file)?;
    // A one-shot command compiles only the plugins its tasks call.
    let (registry, plugin_set) = load_plugins(plugins, config, CompileWhen::OnFirstCall).await?;
    workflow::check_catalog(&file.display().to_string(), &workflow, registry.as_ref())?;
    Ok((workflow, notes, registry, plugin_set))
}

/// The bundled plugins plus those in `dirs.plugins` (a plugin there that serves a
/// bundled protocol stands in for the bundled one), with the config's
/// manifest overrides; broken files are reported and skipped.
pub(super) async fn load_plugins(
    dirs: &PluginDirs,
    config: &ConfigFile,
    compile: CompileWhen,
) -> Result<(Arc<Registry>, Arc<PluginSet>), Failure> {
    let runtime_config = RuntimeConfig {
        cache_dir: dirs.cache.clone(),
        compile,
        secrets: dirs.secrets.clone(),
        ..RuntimeConfig::default()
    };
    let runtime = Arc::new(WasmRuntime::new(runtime_config).map_err(|e| Failure::Internal(e.into()))?);
    let registry = Arc::new(Registry::new());
    for (protocol, limit) in &config.rate_limits {
        registry.limit_protocol(protocol, *limit);
    }
    let overrides = Overrides { manifests: config.manifests.clone(), policy: config.plugin_policy.clone() };
    let (plugins, problems) = PluginSet::load(runtime, registry.clone(), &dirs.plugins, overrides)
        .await
        .map_err(|e| Failure::Internal(e.into()))?;
    for problem in problems {
        eprintln!("warning: {problem}");
    }
    Ok((registry, plugins))
}
