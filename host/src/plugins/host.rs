//! The host imports a plugin may use (`log`, `config`, `http-fetch`,
//! `progress`): the WIT's host interface, implemented on the per-call
//! [`StoreState`] (`runtime`'s).
//!
//! Capabilities are deny-by-default: `http-fetch` reaches only the hosts a
//! plugin's manifest grants (see `outbound`), and refuses the rest saying
//! how to grant them.

use super::bindings::gleitzeit::provider::{host, types};
use super::outbound::{self, BodyStream};
use super::runtime::StoreState;
use wasmtime::component::Resource;
use wasmtime_wasi::{WasiCtxView, WasiView};

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
        let body = self.table.get_mut(&body).map_err(|e| format!("body-stream: {e}"))?;
        body.next().await.map_err(|e| e.to_string())
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
        let answer = self.grants.outbound.fetch(plugin, outbound_request(request)).await.map_err(|e| e.to_string())?;
        Ok(host::HttpResponse { status: answer.status, headers: answer.headers, body: answer.body })
    }

    async fn http_fetch_stream(&mut self, request: host::HttpRequest) -> Result<host::HttpStreamResponse, String> {
        let plugin = &*self.identity.plugin;
        tracing::debug!(target: "plugin", plugin, task = %self.identity.task_id, "http-fetch-stream {} {}", request.method, request.url);
        if self.open_streams >= MAX_OPEN_STREAMS {
            return Err(format!("http-fetch-stream: at most {MAX_OPEN_STREAMS} streams may be open at once"));
        }
        let (status, headers, body) =
            self.grants.outbound.fetch_stream(plugin, outbound_request(request)).await.map_err(|e| e.to_string())?;
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

/// A WIT request as the outbound client takes it.
fn outbound_request(request: host::HttpRequest) -> outbound::Request {
    let host::HttpRequest { method, url, headers, body, timeout_ms } = request;
    outbound::Request { method, url, headers, body, timeout_ms }
}
