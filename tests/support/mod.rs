//! Helpers shared by the integration tests.

// Not every test file uses every helper.
#![allow(dead_code)]

pub mod api;
pub mod daemon;
pub mod process;
pub mod servers;

// Not every test file uses each.
#[allow(unused_imports)]
pub use daemon::{Daemon, PATIENCE, Served, until};

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

/// Run `command`; its output, or a panic that shows what it printed.
pub fn succeeded(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
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

/// A `redis-server` on a free port, without persistence, stopped when
/// dropped (installed by `.ci/run`).
pub struct RedisServer {
    pub child: std::process::Child,
    pub url: String,
    pub port: u16,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn redis_server() -> RedisServer {
    redis_server_with(&[])
}

/// A `redis-server` with `args` besides its port and directory (e.g.
/// `--appendonly yes`).
pub fn redis_server_with(args: &[&str]) -> RedisServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let child = start_redis(port, dir.path(), args);
    RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}"),
        port,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        _dir: dir,
    }
}

fn start_redis(port: u16, dir: &Path, args: &[&str]) -> std::process::Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir", dir.to_str().unwrap()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed (.ci/run installs it)");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "redis-server did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

impl RedisServer {
    /// Kill it (SIGKILL: what its append-only file has is what it keeps)
    /// and start it again on the same port and directory.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = start_redis(self.port, self._dir.path(), &args);
    }
}

/// A `gleitzeit serve` on a free port with `args` (see [`Daemon`]).
pub fn serve(args: &[&str]) -> Served {
    Daemon::new().args(args).start()
}

/// The original system's example files (not part of this repository):
/// `../shared/brief/upstream-examples` beside the checkout, or the folder
/// `GLEITZEIT_UPSTREAM_EXAMPLES` names. Without either the caller's test
/// says so (here) and checks nothing of them.
pub fn upstream_examples() -> Option<PathBuf> {
    let given = std::env::var_os("GLEITZEIT_UPSTREAM_EXAMPLES").map(PathBuf::from);
    let beside = root().join("../shared/brief/upstream-examples");
    let found = given.or(Some(beside)).filter(|folder| folder.join("examples").is_dir());
    if found.is_none() {
        eprintln!(
            "skipped: no copy of the original's examples (../shared/brief/upstream-examples or GLEITZEIT_UPSTREAM_EXAMPLES)"
        );
    }
    found
}

/// Submit `workflow` over Socket.IO with python-socketio and wait for its
/// report, which gains the `task_progress` events seen (`progress_events`).
pub fn submit_with_python(host: &Served, workflow: &serde_json::Value) -> serde_json::Value {
    let mut submit = Command::new("python3")
        .arg(root().join("tests/python/submit_file.py"))
        .env("GLEITZEIT_SERVER", &host.url)
        .env("GLEITZEIT_TOKEN", &host.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut submit.stdin.take().unwrap(), workflow.to_string().as_bytes()).unwrap();
    let out = submit.wait_with_output().unwrap();
    assert!(out.status.success(), "the submitter failed");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    reports[0].clone()
}

/// The local admin token a daemon with data directory `data_dir` wrote
/// (none with authentication off).
pub fn local_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("token")).ok().map(|t| t.trim().to_owned())
}

/// `gleitzeit run ARGS --output json` from the repository's root: the exit
/// status and the result document (null if none was printed).
pub fn run_json(args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .arg("run")
        .args(args)
        .args(["--output", "json"])
        .current_dir(root())
        .env_remove("GLEITZEIT_PLUGINS")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, report)
}

/// Where the tests keep compiled plugins between processes (the daemon's
/// `--cache-dir`): a Python component takes seconds to compile, once.
pub fn plugin_cache() -> PathBuf {
    root().join("target/test-plugin-cache")
}

/// `gleitzeit ARGS` of the real binary with the plugins of `plugins` and
/// the tests' shared compiled-plugin cache, run from the repository's root.
pub fn gleitzeit_with_plugins(plugins: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(args)
        .args(["--plugins", plugins.to_str().unwrap(), "--cache-dir", plugin_cache().to_str().unwrap()])
        .current_dir(root())
        .env_remove("GLEITZEIT_LOG")
        .output()
        .unwrap()
}

/// A Python plugin of `plugin-sdk/python/examples/NAME`, built as its
/// authors build it (the SDK's build command, componentize-py from PyPI).
pub fn python_plugin(name: &str) -> PathBuf {
    source_plugin(Language::Python, &root().join("plugin-sdk/python/examples").join(name))
}

/// A JavaScript plugin of `plugin-sdk/js/examples/NAME` (or any project
/// directory given by path), built with the JS SDK's build command
/// (componentize-js from npm).
pub fn js_plugin(project: &Path) -> PathBuf {
    source_plugin(Language::Js, project)
}

#[derive(Clone, Copy)]
pub enum Language {
    Python,
    Js,
}

/// The component built from the plugin project `project` with the SDK of
/// this checkout, once per content of the project, the SDK and the WIT:
/// `target/source-plugins/NAME-HASH.wasm`.
pub fn source_plugin(language: Language, project: &Path) -> PathBuf {
    use sha2::Digest as _;
    let (sdk, sources, extensions): (PathBuf, PathBuf, &[&str]) = match language {
        Language::Python => {
            let sdk = root().join("plugin-sdk/python");
            (sdk.clone(), sdk.join("gleitzeit_plugin"), &["py", "wit"])
        }
        Language::Js => (root().join("plugin-sdk/js"), root().join("plugin-sdk/js"), &["js", "json", "wit"]),
    };
    let mut hasher = sha2::Sha256::new();
    for dir in [project.to_owned(), sources, root().join("wit")] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.retain(|f| f.extension().is_some_and(|e| extensions.iter().any(|x| e == *x)));
        files.sort();
        for file in files {
            hasher.update(file.to_string_lossy().as_bytes());
            hasher.update(std::fs::read(&file).unwrap());
        }
    }
    let hash: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = project.file_name().unwrap().to_string_lossy();
    let out = root().join(format!("target/source-plugins/{name}-{hash}.wasm"));
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // One test process builds (and compiles) it; the others wait for it.
    let lock = std::fs::File::create(out.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if out.is_file() {
        return out;
    }
    let partial = out.with_extension("partial");
    let mut command = match language {
        Language::Python => {
            let mut command = Command::new("python3");
            command.args(["-m", "gleitzeit_plugin.build", "build"]).env("PYTHONPATH", &sdk);
            command
        }
        Language::Js => {
            let mut command = Command::new("node");
            command.arg(sdk.join("build.js")).arg("build");
            command
        }
    };
    let status = command.arg(project).arg("-o").arg(&partial).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "building the plugin {} failed (are the SDK's tools installed?)", project.display());
    warm_plugin_cache(&partial);
    std::fs::rename(&partial, &out).unwrap();
    out
}

/// Compile `component` into [`plugin_cache`], so the tests that load it
/// next do not each compile it (seconds of CPU for a Python component).
fn warm_plugin_cache(component: &Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(component, dir.path().join("warm.wasm")).unwrap();
    let workflow = dir.path().join("w.yaml");
    std::fs::write(&workflow, "name: warm\ntasks:\n  - {id: a, protocol: echo/v1, method: ping}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(["workflow", "validate", workflow.to_str().unwrap(), "--plugins", dir.path().to_str().unwrap()])
        .args(["--cache-dir", plugin_cache().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
