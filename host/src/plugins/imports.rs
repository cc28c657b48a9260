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
    async fn read(&mut self, body: Resource<BodyStream>) -> Result<Option<Vec<u8>>, host::FetchError> {
        let body = self.table.get_mut(&body).map_err(|e| host::FetchError::Limited(format!("body-stream: {e}")))?;
        body.next().await.map_err(|e| fetch_error(&e))
    }

    async fn next(&mut self, body: Resource<BodyStream>) -> Result<Option<Vec<u8>>, String> {
        self.read(body).await.map_err(text_of)
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

    async fn fetch(&mut self, request: host::HttpRequest) -> Result<host::HttpResponse, host::FetchError> {
        let plugin = &*self.identity.plugin;
        tracing::debug!(target: "plugin", plugin, task = %self.identity.task_id, "fetch {} {}", request.method, request.url);
        let answer =
            self.grants.outbound.fetch(plugin, outbound_request(request)).await.map_err(|e| fetch_error(&e))?;
        Ok(host::HttpResponse { status: answer.status, headers: answer.headers, body: answer.body })
    }

    async fn fetch_stream(&mut self, request: host::HttpRequest) -> Result<host::HttpStreamResponse, host::FetchError> {
        let plugin = &*self.identity.plugin;
        tracing::debug!(target: "plugin", plugin, task = %self.identity.task_id, "fetch-stream {} {}", request.method, request.url);
        if self.open_streams >= MAX_OPEN_STREAMS {
            let message = format!("http-fetch-stream: at most {MAX_OPEN_STREAMS} streams may be open at once");
            return Err(host::FetchError::Limited(message));
        }
        let (status, headers, body) =
            self.grants.outbound.fetch_stream(plugin, outbound_request(request)).await.map_err(|e| fetch_error(&e))?;
        let body = self.table.push(body).map_err(|e| host::FetchError::Limited(format!("http-fetch-stream: {e}")))?;
        self.open_streams += 1;
        Ok(host::HttpStreamResponse { status, headers, body })
    }

    async fn http_fetch(&mut self, request: host::HttpRequest) -> Result<host::HttpResponse, String> {
        self.fetch(request).await.map_err(text_of)
    }

    async fn http_fetch_stream(&mut self, request: host::HttpRequest) -> Result<host::HttpStreamResponse, String> {
        self.fetch_stream(request).await.map_err(text_of)
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

/// An outbound failure as the WIT's `fetch-error`: its kind decides the
/// case, its words (those plugins have always been given) the text.
fn fetch_error(error: &outbound::FetchError) -> host::FetchError {
    use outbound::FetchError as E;
    let text = error.to_string();
    match error {
        E::Denied { .. } | E::Secret { .. } => host::FetchError::Denied(text),
        E::InvalidUrl { .. } | E::Scheme { .. } | E::Method { .. } => host::FetchError::InvalidRequest(text),
        E::TooLarge { .. } => host::FetchError::TooLarge(text),
        E::Failed { .. } => host::FetchError::Failed(text),
    }
}

/// A `fetch-error` as components built against SDK 0.1 get it: its text.
fn text_of(error: host::FetchError) -> String {
    use host::FetchError as E;
    match error {
        E::Denied(text) | E::InvalidRequest(text) | E::TooLarge(text) | E::Failed(text) | E::Limited(text) => text,
    }
}
