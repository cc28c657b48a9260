//! Gleitzeit: a workflow orchestration host.
//!
//! A workflow file is parsed and validated (`workflow`), its tasks ordered by
//! their dependencies (`resolver`) and run by the `engine`, which takes ready
//! tasks from the shared priority `queue` and sends each to a provider of its
//! protocol found in the `registry`. Providers are WebAssembly components
//! (`plugins`) or remote peers connected to the `daemon`'s Socket.IO server;
//! clients drive the daemon over Socket.IO or its HTTP API. The daemon
//! writes its state to a `store` (SQLite or Redis) so that it survives a
//! crash. `model` holds the shared data types, `report` the result document,
//! `listing` how workflow lists are filtered and paged, `schema` how params
//! are checked against the JSON Schema a provider declares, `files` which
//! files a `for_each` may read, `schedule` when a scheduled workflow is
//! due, `cli` the command line.

pub mod auth;
pub mod cadence;
pub mod cli;
pub mod client;
pub mod clock;
/// The JSON-RPC error codes: the plugin SDK's table, compiled here from the
/// same file so that host and plugins share one.
#[path = "../../plugin-sdk/src/codes.rs"]
pub mod codes;
pub mod daemon;
pub mod engine;
pub mod files;
pub mod fuzzing;
pub mod ids;
pub mod listing;
mod locks;
pub mod metrics;
pub mod model;
pub mod plugins;
pub mod private_files;
pub mod queue;
pub mod rate;
pub mod registry;
pub mod report;
pub mod resolver;
pub mod schedule;
pub mod schema;
pub mod secrets;
pub mod store;
pub mod text;
pub mod workflow;
