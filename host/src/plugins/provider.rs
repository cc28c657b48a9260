//! A loaded plugin as a [`Provider`]: one fresh instance per call.

use super::bindings::gleitzeit::provider::types::TaskContext;
use super::loader::{Plugin, with_stderr};
use crate::model::{MAX_RESULT_BYTES, ProviderSpec, TaskError, codes};
use crate::registry::{Call, CallFuture, Load, Provider, ProviderKind, Starting};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use wasmtime::Trap;

pub struct WasmProvider {
    id: Arc<str>,
    plugin: Arc<Plugin>,
    /// Calls it takes at once (instances alive at once, at most).
    max_concurrency: usize,
    in_flight: InFlight,
}

/// Gives the call's slot back however the call ends.
struct Slot(InFlight);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Calls in flight of one plugin, counted across its versions: while a
/// replaced version drains, its calls still count against the limit.
pub type InFlight = Arc<AtomicUsize>;

impl WasmProvider {
    pub fn new(plugin: Arc<Plugin>) -> Self {
        Self::sharing(plugin, InFlight::default())
    }

    /// A provider whose calls count in `in_flight` with those of the
    /// plugin's earlier versions.
    pub fn sharing(plugin: Arc<Plugin>, in_flight: InFlight) -> Self {
        let max_concurrency = plugin.grants.max_concurrency;
        Self { id: format!("wasm:{}", plugin.name).into(), plugin, max_concurrency, in_flight }
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

impl Provider for WasmProvider {
    fn id(&self) -> &Arc<str> {
        &self.id
    }

    fn spec(&self) -> &ProviderSpec {
        &self.plugin.spec
    }

    fn call(&self, call: Call) -> CallFuture {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.in_flight.clone());
        let running = execute(self.plugin.clone(), call);
        Box::pin(async move {
            let _slot = slot;
            running.await
        })
    }

    fn starting(&self) -> Option<Starting> {
        let plugin = self.plugin.clone();
        (!plugin.is_linked()).then(|| {
            Box::pin(async move {
                // A failure is the next call's error.
                let _ = plugin.pre().await;
            }) as Starting
        })
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Wasm
    }

    fn load(&self) -> Load {
        Load { capacity: Some(self.max_concurrency), in_flight: self.in_flight.load(Ordering::Relaxed) }
    }

    fn rate_limit(&self) -> crate::rate::RateLimit {
        self.plugin.grants.rate_limit
    }

    fn cacheable(&self, method: &str) -> bool {
        !self.plugin.grants.uncacheable.iter().any(|m| m == method)
    }
}

/// How a call can end besides the guest's own answer.
enum Stop {
    Instantiate(wasmtime::Error),
    Trap(wasmtime::Error),
}

async fn execute(plugin: Arc<Plugin>, call: Call) -> Result<serde_json::Value, TaskError> {
    let name = plugin.name.clone();
    // Loading deferred code is the plugin's start, not the task's work: it
    // does not count against the task's deadline.
    let pre = plugin
        .pre()
        .await
        .map_err(|reason| TaskError::new(codes::PLUGIN_TRAP, format!("plugin '{name}' cannot be loaded: {reason}")))?;
    // The plugin's own timeout (manifest) caps the task's.
    let deadline = plugin.grants.timeout.map_or(call.deadline, |t| call.deadline.min(Instant::now() + t));
    let mut store = plugin.runtime.new_store(name.clone(), plugin.grants.clone(), call.task_id.clone(), deadline);
    store.data_mut().progress = call.progress.clone();
    let ctx = TaskContext { task_id: call.task_id, workflow_id: call.workflow_id, attempt: call.attempt };
    let params = call.params.to_string();
    // The epoch deadline stops a busy guest; this timeout stops one that
    // waits in a host call (a sleep, later HTTP).
    let outcome = tokio::time::timeout_at(deadline.into(), async {
        let instance = pre.instantiate_async(&mut store).await.map_err(Stop::Instantiate)?;
        instance.call_execute(&mut store, &ctx, &call.method, &params).await.map_err(Stop::Trap)
    })
    .await;
    store.data().stdout.finish();
    let stderr = store.data().stderr.finish();
    let timeout = || {
        TaskError::new(
            codes::TIMEOUT,
            format!("plugin '{name}' was stopped at the task's deadline in '{}'", call.method),
        )
        .retryable()
    };
    match outcome {
        Ok(Ok(Ok(json))) if json.len() > MAX_RESULT_BYTES => {
            Err(TaskError::result_too_large(&format!("plugin '{name}'"), json.len(), &call.method))
        }
        Ok(Ok(Ok(json))) => serde_json::from_str(&json).map_err(|e| {
            TaskError::new(codes::INTERNAL_ERROR, format!("plugin '{name}' returned a result that is not JSON ({e})"))
        }),
        Ok(Ok(Err(rpc))) => Err(TaskError {
            code: rpc.code,
            message: rpc.message,
            data: rpc.data.map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d))),
            retryable: rpc.retryable,
            requeue: false,
        }),
        Err(_elapsed) => Err(timeout()),
        Ok(Err(Stop::Trap(e))) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Err(timeout()),
        // Usually a full instance pool: worth another attempt later.
        Ok(Err(Stop::Instantiate(e))) => {
            Err(TaskError::new(codes::PLUGIN_TRAP, format!("plugin '{name}': cannot instantiate: {e:#}")).retryable())
        }
        Ok(Err(Stop::Trap(e))) => Err(TaskError::new(
            codes::PLUGIN_TRAP,
            with_stderr(format!("plugin '{name}' trapped in '{}': {}", call.method, trap_reason(&e)), &stderr),
        )),
    }
}

/// What went wrong, in one line: the trap's own words (out of bounds,
/// unreachable, ...) rather than the whole wasm backtrace.
fn trap_reason(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    }
}
