//! `gleitzeit plugin new NAME --lang rust|python|js [DIR]`: a plugin project
//! that builds and serves as it is written, outside this repository.
//!
//! Each project gets a copy of its language's SDK (with the WIT contract
//! inside), taken from this binary, so it builds against the host that made
//! it with nothing cloned by hand; the templates in `host/templates/plugin`
//! add one method with typed params, a unit test and a README that says how
//! to build and deploy. The SDK files are embedded from `plugin-sdk/`, their
//! one home; the tools' version pins come from the SDKs' own manifests.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};

/// A plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    Js,
}

/// One file of a project: its path and its text, with `{{name}}`,
/// `{{protocol}}` and `{{crate}}` still to fill in.
type File = (&'static str, &'static str);

const WIT: &str = include_str!("../../../wit/provider.wit");

const RUST: &[File] = &[
    ("Cargo.toml", include_str!("../../templates/plugin/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../../templates/plugin/rust/src/lib.rs")),
    ("README.md", include_str!("../../templates/plugin/rust/README.md")),
    (".gitignore", "target/\n"),
    ("gleitzeit-plugin-sdk/Cargo.toml", include_str!("../../../plugin-sdk/Cargo.toml")),
    ("gleitzeit-plugin-sdk/src/lib.rs", include_str!("../../../plugin-sdk/src/lib.rs")),
    ("gleitzeit-plugin-sdk/src/codes.rs", include_str!("../../../plugin-sdk/src/codes.rs")),
    ("gleitzeit-plugin-sdk/src/llm.rs", include_str!("../../../plugin-sdk/src/llm.rs")),
    ("gleitzeit-plugin-sdk/wit/provider.wit", WIT),
];

const PYTHON: &[File] = &[
    ("app.py", include_str!("../../templates/plugin/python/app.py")),
    ("test_app.py", include_str!("../../templates/plugin/python/test_app.py")),
    ("README.md", include_str!("../../templates/plugin/python/README.md")),
    (".gitignore", "*.wasm\n__pycache__/\n"),
    ("gleitzeit_plugin/__init__.py", include_str!("../../../plugin-sdk/python/gleitzeit_plugin/__init__.py")),
    ("gleitzeit_plugin/_world.py", include_str!("../../../plugin-sdk/python/gleitzeit_plugin/_world.py")),
    ("gleitzeit_plugin/build.py", include_str!("../../../plugin-sdk/python/gleitzeit_plugin/build.py")),
    ("gleitzeit_plugin/host.py", include_str!("../../../plugin-sdk/python/gleitzeit_plugin/host.py")),
    ("gleitzeit_plugin/params.py", include_str!("../../../plugin-sdk/python/gleitzeit_plugin/params.py")),
    ("gleitzeit_plugin/py.typed", ""),
    ("gleitzeit_plugin/wit/provider.wit", WIT),
];
const PYTHON_SDK_MANIFEST: &str = include_str!("../../../plugin-sdk/python/pyproject.toml");

const JS: &[File] = &[
    ("app.js", include_str!("../../templates/plugin/js/app.js")),
    ("app.test.js", include_str!("../../templates/plugin/js/app.test.js")),
    ("README.md", include_str!("../../templates/plugin/js/README.md")),
    (".gitignore", "node_modules/\n*.wasm\n"),
    ("gleitzeit-plugin/package.json", JS_SDK_MANIFEST),
    ("gleitzeit-plugin/index.js", include_str!("../../../plugin-sdk/js/index.js")),
    ("gleitzeit-plugin/host.js", include_str!("../../../plugin-sdk/js/host.js")),
    ("gleitzeit-plugin/build.js", include_str!("../../../plugin-sdk/js/build.js")),
    ("gleitzeit-plugin/wit/provider.wit", WIT),
];
const JS_SDK_MANIFEST: &str = include_str!("../../../plugin-sdk/js/package.json");

/// Most bytes of a plugin name: it names a file, a crate, a package and a
/// protocol.
const MAX_NAME_BYTES: usize = 64;

/// Whether `name` may name a new plugin: a lowercase letter, then lowercase
/// letters, digits or single '-' between them.
pub fn is_plugin_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_BYTES
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Write the project for `name` into `dir` (`./NAME` when `None`); the files
/// written, relative to it.
pub fn create(name: &str, language: Language, dir: Option<&Path>) -> anyhow::Result<(PathBuf, Vec<String>)> {
    if !is_plugin_name(name) {
        bail!(
            "'{}' is not a plugin name: a lowercase letter, then lowercase letters, digits or single '-', at most {MAX_NAME_BYTES} bytes",
            crate::text::excerpt(name)
        );
    }
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_owned);
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} exists and is not empty; give a new directory", dir.display());
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{protocol}}", &format!("{name}/v1"))
            .replace("{{crate}}", &name.replace('-', "_"))
    };
    let (templates, sdk_dir): (&[File], &str) = match language {
        Language::Rust => (RUST, "gleitzeit-plugin-sdk/"),
        Language::Python => (PYTHON, "gleitzeit_plugin/"),
        Language::Js => (JS, "gleitzeit-plugin/"),
    };
    // The SDK's files are copied as they are; the project's are filled in.
    let mut files: Vec<(String, String)> = (templates.iter())
        .map(|(path, text)| {
            let text = if path.starts_with(sdk_dir) { (*text).to_owned() } else { fill(text) };
            ((*path).to_owned(), text)
        })
        .collect();
    match language {
        Language::Rust => {}
        Language::Python => files.push(("requirements.txt".into(), python_requirements()?)),
        Language::Js => files.push(("package.json".into(), js_package(name)?)),
    }
    for (path, text) in &files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
    }
    let mut written: Vec<String> = files.into_iter().map(|(path, _)| path).collect();
    written.sort();
    Ok((dir, written))
}

/// The Python SDK's dependencies (componentize-py, pinned), one per line.
fn python_requirements() -> anyhow::Result<String> {
    let manifest: toml::Table = PYTHON_SDK_MANIFEST.parse().context("the Python SDK's pyproject.toml")?;
    let dependencies = manifest
        .get("project")
        .and_then(|p| p.get("dependencies"))
        .and_then(toml::Value::as_array)
        .context("the Python SDK's pyproject.toml has no project.dependencies")?;
    let mut text = String::from("# What builds the component (componentize-py carries its own CPython).\n");
    for dependency in dependencies.iter().filter_map(toml::Value::as_str) {
        text.push_str(dependency);
        text.push('\n');
    }
    Ok(text)
}

/// The project's package.json: the SDK by path, and the SDK's build tools at
/// the SDK's own pins.
fn js_package(name: &str) -> anyhow::Result<String> {
    let sdk: serde_json::Value = serde_json::from_str(JS_SDK_MANIFEST).context("the JS SDK's package.json")?;
    let mut dependencies = sdk["dependencies"].as_object().cloned().context("the JS SDK's package.json")?;
    dependencies.insert("@gleitzeit/plugin".into(), "file:./gleitzeit-plugin".into());
    let package = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "private": true,
        "type": "module",
        "scripts": {"test": "node --test", "build": format!("node gleitzeit-plugin/build.js build . -o {name}.wasm")},
        "dependencies": dependencies,
    });
    Ok(format!("{}\n", serde_json::to_string_pretty(&package)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn plugin_names_fit_every_place_they_go() {
        for good in ["hello", "text-stats", "a1", "x"] {
            assert!(is_plugin_name(good), "{good}");
        }
        for bad in ["", "Hello", "1abc", "a_b", "a--b", "a-", "a/b", "../x", &"a".repeat(65)] {
            assert!(!is_plugin_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_project_is_written_with_its_sdk_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (root, files) = create("hi", Language::Js, Some(&dir.path().join("hi"))).unwrap();
        assert!(files.contains(&"gleitzeit-plugin/index.js".to_owned()), "{files:?}");
        let package: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("package.json")).unwrap()).unwrap();
        assert_eq!(package["dependencies"]["@gleitzeit/plugin"], "file:./gleitzeit-plugin");
        assert!(package["dependencies"]["@bytecodealliance/componentize-js"].is_string());
        assert!(std::fs::read_to_string(root.join("app.js")).unwrap().contains("'hi/v1'"));
        let again = create("hi", Language::Js, Some(&root)).unwrap_err();
        assert!(again.to_string().contains("exists and is not empty"), "{again}");
        let requirements = python_requirements().unwrap();
        assert!(requirements.contains("componentize-py=="), "{requirements}");
    }
}
