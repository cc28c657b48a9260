//! The per-call store state and the host imports a plugin may use (`log`,
//! `config`, `http-fetch`, `progress`).
//!
//! Capabilities are deny-by-default: `http-fetch` reaches only the hosts a
//! plugin's manifest grants (see `outbound`), and refuses the rest saying
//! how to grant them.

use super::bindings::gleitzeit::provider::{host, types};
use super::outbound::{BodyStream, Outbound};
use super::output::LogPipe;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::StoreLimits;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What a plugin is allowed and its limits, fixed when it loads (from its
/// manifest, else the runtime's defaults).
#[derive(Debug, Clone)]
pub struct Grants {
    /// `[config]` values returned by `config()`.
    pub config: BTreeMap<String, String>,
    /// Linear memory one call may use, in bytes.
    pub memory_limit: usize,
    /// The longest a call may run, whatever its task allows.
    pub timeout: Option<std::time::Duration>,
    /// Calls at once.
    pub max_concurrency: usize,
    /// Hosts `http-fetch` may reach, and its response cap.
    pub outbound: Outbound,
    /// Directories the plugin may read (read-only), at the same paths.
    pub read_dirs: Vec<std::path::PathBuf>,
    /// stdio MCP servers to bridge (started when the plugin loads).
    pub mcp_stdio: BTreeMap<String, super::mcp_bridge::StdioServer>,
    /// The running bridges; they stop when the plugin version is dropped.
    pub bridges: Vec<Arc<super::mcp_bridge::Bridge>>,
}

/// Who a call runs for, for logs.
#[derive(Debug)]
pub struct CallIdentity {
    pub plugin: Arc<str>,
    pub task_id: String,
}

/// The data of one store: one instance, one call.
pub struct StoreState {
    /// Where `progress` chunks go, if anyone listens.
    pub progress: Option<crate::registry::Progress>,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub grants: Arc<Grants>,
    pub identity: CallIdentity,
    pub stdout: LogPipe,
    pub stderr: LogPipe,
    /// Streamed bodies the plugin holds (each keeps a connection open).
    pub open_streams: usize,
    /// Keeps the epoch (deadlines, yielding) advancing while the store lives.
    pub _ticking: Option<super::runtime::Ticking>,
}

/// Streamed bodies one call may hold open at once.
const MAX_OPEN_STREAMS: usize = 16;

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for StoreState {}

impl host::HostBodyStream for StoreState {
    async fn next(&mut self, body: Resource<BodyStream>) -> Result<Option<Vec<u8>>, String> {
        self.table.get_mut(&body).map_err(|e| format!("body-stream: {e}"))?.next().await
    }

    fn drop(&mut self, body: Resource<BodyStream>) -> wasmtime::Result<()> {
        self.table.delete(body)?;
        self.open_streams = self.open_streams.saturating_sub(1);
        Ok(())
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        let plugin = &*self.identity.plugin;
        let task = &self.identity.task_id;
        match level {
            host::LogLevel::Trace => tracing::trace!(target: "plugin", plugin, task, "{message}"),
            host::LogLevel::Debug => tracing::debug!(target: "plugin", plugin, task, "{message}"),
            host::LogLevel::Info => tracing::info!(target: "plugin", plugin, task, "{message}"),
            host::LogLevel::Warn => tracing::warn!(target: "plugin", plugin, task, "{message}"),
            host::LogLevel::Error => tracing::error!(target: "plugin", plugin, task, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.grants.config.get(&key).cloned()
    }

    async fn http_fetch(&mut self, request: host::HttpRequest) -> Result<host::HttpResponse, String> {
        let plugin = &*self.identity.plugin;
        tracing::debug!(target: "plugin", plugin, task = %self.identity.task_id, "http-fetch {} {}", request.method, request.url);
        self.grants.outbound.fetch(plugin, request).await
    }

    async fn http_fetch_stream(&mut self, request: host::HttpRequest) -> Result<host::HttpStreamResponse, String> {
        let plugin = &*self.identity.plugin;
        tracing::debug!(target: "plugin", plugin, task = %self.identity.task_id, "http-fetch-stream {} {}", request.method, request.url);
        if self.open_streams >= MAX_OPEN_STREAMS {
            return Err(format!("http-fetch-stream: at most {MAX_OPEN_STREAMS} streams may be open at once"));
        }
        let (status, headers, body) = self.grants.outbound.fetch_stream(plugin, request).await?;
        let body = self.table.push(body).map_err(|e| format!("http-fetch-stream: {e}"))?;
        self.open_streams += 1;
        Ok(host::HttpStreamResponse { status, headers, body })
    }

    fn progress(&mut self, chunk: String) {
        tracing::trace!(target: "plugin", plugin = &*self.identity.plugin, task = %self.identity.task_id, "progress: {chunk}");
        if let Some(progress) = &self.progress {
            // A chunk that is not JSON is passed on as text.
            progress(serde_json::from_str(&chunk).unwrap_or(serde_json::Value::String(chunk)));
        }
    }
}
