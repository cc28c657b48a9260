//! The daemon [`super::server_payload`] talks to: one `serve` on a loopback
//! port in this process (memory store, the bundled plugins, authentication
//! on, so the admin token reaches every handler), and one connected client.

#![allow(clippy::expect_used)] // a harness that cannot start is a failed run

use crate::client::Client;
use crate::daemon::{ServeConfig, serve};
use crate::engine::EngineConfig;
use futures_util::FutureExt as _;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Longer than any answer takes unless the daemon stalls.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

struct Harness {
    runtime: tokio::runtime::Runtime,
    client: tokio::sync::Mutex<Client>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        // Its data directory (the local token), one per process.
        let data = std::env::temp_dir().join(format!("gleitzeit-fuzz-{}", std::process::id()));
        let client = runtime.block_on(start(&data));
        Harness { runtime, client: tokio::sync::Mutex::new(client) }
    })
}

async fn start(data: &std::path::Path) -> Client {
    let token = crate::auth::ensure_local_token(data).expect("a local token");
    let mut policy = crate::auth::Policy::open();
    policy.tokens = Some(crate::auth::Tokens::new(&[], &token, data).expect("tokens"));
    let registry = Arc::new(crate::registry::Registry::new());
    let wasm = Arc::new(crate::plugins::WasmRuntime::new(Default::default()).expect("a WASM runtime"));
    let (plugins, _) =
        crate::plugins::PluginSet::load(wasm, registry.clone(), &data.join("plugins"), Default::default())
            .await
            .expect("the bundled plugins");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let config = ServeConfig {
        engine: EngineConfig { default_timeout: Duration::from_secs(5), ..EngineConfig::default() },
        grace: Duration::from_secs(1),
        cluster: None,
        store: None,
        retention: Duration::from_secs(3600),
        policy: Arc::new(policy),
        max_streams: crate::daemon::MAX_STREAMS,
        max_streams_per_token: crate::daemon::DEFAULT_STREAMS_PER_TOKEN,
        max_workflows_per_token: crate::daemon::DEFAULT_WORKFLOWS_PER_TOKEN,
        max_schedules_per_token: crate::daemon::DEFAULT_SCHEDULES_PER_TOKEN,
        min_schedule_interval: crate::daemon::DEFAULT_MIN_SCHEDULE_INTERVAL,
    };
    tokio::spawn(serve(config, listener, registry, plugins, std::future::pending()));
    Client::connect(&url, Some(&token)).await.expect("the daemon accepts its admin")
}

/// Send `event` with `payload` and wait for the answer; a daemon that does
/// not answer, or drops the connection, is a bug.
pub(super) fn ask(event: &str, payload: Value) {
    let harness = harness();
    harness.runtime.block_on(async {
        let mut client = harness.client.lock().await;
        match client.call(event, &payload, ANSWER_WITHIN).await {
            Ok(_) => {}
            Err(e) => panic!("the daemon did not answer {event:?}: {e}"),
        }
        // Events of submitted workflows are not read by anyone else.
        while let Some(Some(_)) = client.next_event().now_or_never() {}
    });
}
