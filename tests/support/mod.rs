//! Helpers shared by the integration tests.

// Not every test file uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_owned()
}

/// A component: a bundled plugin, or a fixture of tests/fixtures/plugins
/// (built once per test process; cargo serialises concurrent builds).
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(root().join("scripts/build-plugins.sh"))
            .args([root().join("target/wasm"), root().join("tests/fixtures/plugins")])
            .status()
            .expect("scripts/build-plugins.sh runs");
        assert!(status.success(), "building the fixture plugins failed");
    });
    root().join(format!("target/wasm/wasm32-wasip2/release/{name}.wasm"))
}

/// The fenced code blocks of `lang` in a markdown text, in order.
pub fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim_start() == open => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}
