//! `gleitzeit plugin new NAME --lang rust|python|js DIR`: each project is
//! written outside this repository, passes its own tests, builds with the
//! commands its README gives, and serves a task through the real binary.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `program args` in `dir`; its stdout, or a panic with its output.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = support::succeeded(Command::new(program).args(args).current_dir(dir).env_remove("GLEITZEIT_LOG"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gleitzeit plugin new NAME --lang LANG` in a fresh directory outside the
/// repository; the project's directory.
fn new_project(parent: &Path, name: &str, lang: &str) -> PathBuf {
    let dir = parent.join(name);
    let said = run_in(parent, env!("CARGO_BIN_EXE_gleitzeit"), &["plugin", "new", name, "--lang", lang]);
    assert!(said.contains(&format!("{name}/v1")), "{said}");
    assert!(dir.join("README.md").is_file(), "{said}");
    dir
}

/// The project's README commands, as written, between its first line that
/// starts with `first` and the `cp` into the plugins directory.
fn readme_commands(project: &Path, first: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let session = support::fenced_blocks(&readme, "sh").into_iter().next().unwrap();
    let commands: Vec<String> = session
        .lines()
        .map(|line| line.split(" # ").next().unwrap().trim().to_owned())
        .skip_while(|line| !line.starts_with(first))
        .take_while(|line| !line.starts_with("cp "))
        .collect();
    assert!(!commands.is_empty(), "no '{first}' in {readme}");
    commands
}

/// Serve `component` from a plugins directory and run the README's task on
/// it, with `excited: true`.
fn serves_greet(name: &str, component: &Path) {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(component, plugins.path().join(format!("{name}.wasm"))).unwrap();
    let workflow = plugins.path().join("hello.yaml");
    let task = format!("{{id: hello, protocol: {name}/v1, method: greet, params: {{name: Ada, excited: true}}}}");
    std::fs::write(&workflow, format!("name: hello\ntasks:\n  - {task}\n")).unwrap();
    let out = support::gleitzeit_with_plugins(plugins.path(), &["run", workflow.to_str().unwrap(), "--output", "json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["tasks"][0]["result"], json!({"greeting": "Hello, Ada!"}), "{report:#}");

    std::fs::write(
        &workflow,
        "name: bad\ntasks:\n  - {id: b, protocol: NAME/v1, method: greet, params: {name: 5}}\n".replace("NAME", name),
    )
    .unwrap();
    let out = support::gleitzeit_with_plugins(plugins.path(), &["workflow", "validate", workflow.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("task 'b', field 'params.name': 5 is not of type \"string\""), "{stderr}");
}

#[test]
fn a_new_rust_plugin_tests_builds_and_serves() {
    let parent = tempfile::tempdir().unwrap();
    let project = new_project(parent.path(), "hello", "rust");
    // The versions this repository built and tested, and one target
    // directory for every run (the SDK's dependencies compile once).
    std::fs::copy(support::root().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let target = support::root().join("target/scaffold");
    let target = target.to_str().unwrap();
    let tested = run_in(&project, "cargo", &["test", "--quiet", "--target-dir", target]);
    assert!(tested.contains("1 passed"), "{tested}");
    // The README's `cargo build --release --target wasm32-wasip2`, through
    // the script that picks this machine's wasm toolchain.
    let build = readme_commands(&project, "cargo build");
    assert_eq!(build, ["cargo build --release --target wasm32-wasip2"]);
    let wasm_cargo = support::root().join("scripts/wasm-cargo.sh");
    run_in(&project, wasm_cargo.to_str().unwrap(), &["build", "--quiet", "--release", "--target-dir", target]);
    serves_greet("hello", &Path::new(target).join("wasm32-wasip2/release/hello.wasm"));

    // docs/plugins.md shows this provider as `plugin new` writes it.
    let doc = std::fs::read_to_string(support::root().join("docs/plugins.md")).unwrap();
    let code = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
    assert!(
        support::fenced_blocks(&doc, "rust").contains(&code),
        "docs/plugins.md must show `gleitzeit plugin new hello --lang rust`'s src/lib.rs as it is:\n{code}"
    );
}

#[test]
fn a_new_python_plugin_tests_builds_and_serves() {
    let parent = tempfile::tempdir().unwrap();
    let project = new_project(parent.path(), "hello", "python");
    let requirements = std::fs::read_to_string(project.join("requirements.txt")).unwrap();
    assert!(requirements.contains("componentize-py=="), "{requirements}");
    // The README: the unit tests, then the build (componentize-py is
    // installed by scripts/test.sh from the same pin).
    let commands = readme_commands(&project, "python3 -m unittest");
    assert_eq!(commands[0], "python3 -m unittest");
    for command in commands.iter().filter(|c| !c.starts_with("pip ")) {
        run_in(&project, "bash", &["-euc", command]);
    }
    serves_greet("hello", &project.join("hello.wasm"));
}

#[test]
fn a_new_js_plugin_tests_builds_and_serves() {
    let parent = tempfile::tempdir().unwrap();
    let project = new_project(parent.path(), "hello", "js");
    let commands = readme_commands(&project, "npm install");
    assert_eq!(commands, ["npm install", "npm test", "npm run build"]);
    // npm install from the cache scripts/test.sh filled (same pins).
    run_in(&project, "npm", &["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"]);
    for command in &commands[1..] {
        run_in(&project, "bash", &["-euc", command]);
    }
    serves_greet("hello", &project.join("hello.wasm"));
}

/// The Rust SDK is self-contained when packaged (or copied into a new
/// project): the WIT, kept once at the repository's top in `wit/`, and the
/// table of error codes come with it.
#[test]
fn the_rust_sdk_packages_with_the_wit_and_the_codes() {
    let cargo = env!("CARGO");
    let listed = run_in(&support::root(), cargo, &["package", "-p", "gleitzeit-plugin-sdk", "--list", "--allow-dirty"]);
    for file in ["Cargo.toml", "src/lib.rs", "src/codes.rs", "wit/provider.wit"] {
        assert!(listed.lines().any(|line| line == file), "{file} is not in the package:\n{listed}");
    }
}
