//! WASM providers: the wasmtime runtime, the host side of our WIT world, and
//! the loader that finds plugins (bundled and in a plugins directory).
//!
//! Each plugin is compiled once into an `InstancePre`; every call gets a fresh
//! `Store` and instance from the pooling allocator, with a memory limit and an
//! epoch deadline, and WASI with nothing granted (no files, env, sockets).
//! This module turns plugins into [`crate::registry::Provider`]s; it does not
//! queue, retry or route tasks.

mod bindings;
mod cache;
mod credentials;
mod grants;
mod imports;
mod live;
mod loader;
mod manifest;
mod mcp_bridge;
mod origins;
mod outbound;
mod output;
mod provider;
mod runtime;

pub use cache::{Compiled, MAX_CACHE_BYTES};
pub use live::{PluginEvent, PluginSet, PluginState, PluginStatus};
pub use loader::{LoadError, LoadStep, Plugin, PluginSource, bundled, load_bytes, load_file};
pub use manifest::{Manifest, Overrides, PluginPolicy};
pub use provider::WasmProvider;
pub use runtime::{CompileWhen, RuntimeConfig, WasmRuntime};

#[cfg(test)]
mod tests;
