//! `gleitzeit serve`: the settings resolved, the plugins loaded, the store
//! opened, and the daemon run until a shutdown signal.

use super::Failure;
use super::args::ServeArgs;
use super::local::load_plugins;
use super::settings::{
    MAX_CONCURRENCY, MAX_DEFAULT_TIMEOUT_SECS, MAX_GRACE_SECS, auth_policy, event_streams_that_fit, join_cluster,
    min_schedule_interval, open_store, quota, retention, schedules_per_token, seconds, store_spec, workflow_limits,
};

use crate::engine::EngineConfig;
use crate::plugins::CompileWhen;
use anyhow::Context as _;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) async fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let max_streams = event_streams_that_fit();
    let (file, plugins) = args.plugins.resolve(args.data_dir.as_deref())?;
    let listen = args.listen.or(file.listen).unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8000)));
    let mut engine = EngineConfig { file_dirs: args.files.dirs(None)?, ..EngineConfig::default() };
    if let Some(n) = args.concurrency.or(file.concurrency) {
        if !(1..=MAX_CONCURRENCY).contains(&n) {
            return Err(Failure::Input(anyhow::anyhow!("concurrency must be from 1 to {MAX_CONCURRENCY}, got {n}")));
        }
        engine.concurrency = n as usize;
    }
    if let Some(s) = file.default_timeout {
        engine.default_timeout = seconds("default_timeout", s, MAX_DEFAULT_TIMEOUT_SECS)?;
    }
    let grace = seconds("--grace", args.grace.or(file.grace).unwrap_or(30.0), MAX_GRACE_SECS)?;
    let data_dir = args.data_dir.clone().or_else(|| file.data_dir.clone());
    let policy = auth_policy(&args, &file, listen)?;
    let spec = store_spec(&args, &file)?;
    let cluster = join_cluster(&args, &file, &spec, data_dir.as_deref())?.map(Arc::new);
    let store = match &cluster {
        Some(cluster) => Some(cluster.store()),
        None => open_store(&spec, data_dir.as_deref())?,
    };
    let retention = retention(&args, &file)?;
    engine.limits = workflow_limits(&args, &file)?;
    let (registry, plugin_set) = load_plugins(&plugins, &file, CompileWhen::OnLoad).await?;
    // Hot reload: the directory stays live while the daemon runs.
    let _watcher = plugin_set.watch().map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(Failure::Input)?;
    let config = crate::daemon::ServeConfig {
        engine,
        grace,
        store,
        cluster,
        retention,
        policy: Arc::new(policy),
        max_streams,
        max_streams_per_token: quota("max_streams_per_token", args.max_streams_per_token, file.max_streams_per_token)?
            .unwrap_or(crate::daemon::DEFAULT_STREAMS_PER_TOKEN),
        max_workflows_per_token: quota(
            "max_workflows_per_token",
            args.max_workflows_per_token,
            file.max_workflows_per_token,
        )?
        .unwrap_or(crate::daemon::DEFAULT_WORKFLOWS_PER_TOKEN),
        max_schedules_per_token: schedules_per_token(&args, &file)?,
        min_schedule_interval: min_schedule_interval(&args, &file)?,
    };
    crate::daemon::serve(config, listener, registry, plugin_set, shutdown_signal())
        .await
        .map_err(|e| Failure::Input(e.into()))?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT (Ctrl-C) or SIGTERM.
pub(super) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    eprintln!("shutting down: no new work; waiting for running workflows");
}
