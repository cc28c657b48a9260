//! Entry points for fuzzing: each takes arbitrary bytes, drives one input
//! path of the host the way untrusted input reaches it, and panics only on a
//! bug (a panic inside the host, or a broken invariant it checks).
//!
//! The libFuzzer targets in `fuzz/` call these; `tests/fuzz.rs` replays
//! their corpora and regressions, and mutates them for a few seconds, in
//! the normal test run. They change nothing outside the process except the
//! loopback daemon [`server_payload`] starts for itself.

// A fuzz entry point reports a bug by panicking: that is its whole job.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::workflow::{self, Format};
use serde_json::{Value, json};

/// Workflow text, YAML or JSON (by the first byte): parse and validate; a
/// workflow that passes must survive the store's round trip unchanged.
pub fn workflow_text(data: &[u8]) {
    let Some((&first, text)) = data.split_first() else { return };
    let format = if first % 2 == 0 { Format::Yaml } else { Format::Json };
    let Ok(parsed) = workflow::parse("fuzz", text, format) else { return };
    let stored = crate::store::workflow_json("fuzz", &parsed).expect("a valid workflow encodes");
    let again = crate::store::workflow_from_json("fuzz", &parsed.id, &stored).expect("a stored workflow reads back");
    assert_eq!(again, parsed, "the store's round trip changed the workflow");
}

/// A string with `${…}` references: find them, then substitute them from a
/// fixed set of results.
pub fn references(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let params = json!({ "s": text, "list": [text] });
    let _ = crate::resolver::substitution::references(&params);
    let results = json!({ "a": [1, {"b": "x"}], "c": null });
    let _ = crate::resolver::substitution::substitute(&std::sync::Arc::new(params), |root| match root {
        crate::resolver::Root::Task(task) => (task == "a").then_some(&results),
        crate::resolver::Root::Item => Some(&results),
        crate::resolver::Root::ItemIndex | crate::resolver::Root::Input(_) => None,
    });
}

/// One frame from a host, as the Socket.IO client decodes it.
pub fn client_packet(data: &[u8]) {
    crate::client::decode(&String::from_utf8_lossy(data));
}

/// A plugin manifest (`NAME.toml`) and a host settings file (`gleitzeit.toml`).
pub fn settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(manifest) = crate::plugins::Manifest::parse(&text) {
        let overrides = crate::plugins::Overrides::default();
        let _ = manifest.within(&overrides, "fuzz");
        let _ = manifest.grants(&crate::plugins::RuntimeConfig::default().default_grants());
    }
    crate::cli::check_settings_text(&text);
}

/// One event (the first line: its name) with a payload (the rest) sent to a
/// live daemon on loopback; the daemon must answer it (result or error) and
/// keep serving.
pub fn server_payload(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (event, payload) = text.split_once('\n').unwrap_or((&text, ""));
    let payload: Value = serde_json::from_str(payload).unwrap_or(Value::String(payload.to_owned()));
    daemon::ask(event, payload);
}

mod daemon;
