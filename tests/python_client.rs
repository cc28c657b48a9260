//! The `gleitzeit` Python package (clients/python) as a user gets it:
//! installed with pip into a fresh virtual environment and checked with
//! strict mypy, then used against a real host: the checks of
//! tests/python/client_session.py, and the example of docs/python.md run
//! as the page shows it.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::path::Path;
use std::process::{Command, Output};

/// Run `program` from the repository's root; its output, which must say
/// it succeeded.
fn ran(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    support::succeeded(Command::new(program).args(args).envs(env.iter().copied()).current_dir(support::root()))
}

/// Wait until the host at `url` serves `protocol` (`gleitzeit protocol
/// list`, with `token` if any).
fn until_served(url: &str, token: &str, protocol: &str) {
    let started = std::time::Instant::now();
    loop {
        let mut list = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
        list.args(["protocol", "list", "--output", "json", "--server", url]);
        if !token.is_empty() {
            list.args(["--token", token]);
        }
        let out = list.output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&format!("\"{protocol}\"")) {
            return;
        }
        assert!(started.elapsed() < support::PATIENCE, "{protocol} never served");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The original's `examples/python_api_demo.py`, its Ollama URL changed to
/// the test server's (`ollama`) and nothing else, run by `python` from a
/// copy of its folder against a host with `llm/v1` (the Ollama test
/// server), `mcp/v1` (FastMCP with the tools it calls) and its bundled
/// `python/v1`. Two files it names are not in the copy here;
/// the test writes its own.
fn the_originals_api_demo_runs(python: &Path, upstream: &Path, ollama: &str) {
    let folder = tempfile::tempdir().unwrap();
    ran(Path::new("cp"), &["-r", upstream.join("examples").to_str().unwrap(), folder.path().to_str().unwrap()], &[]);
    let examples = folder.path().join("examples");
    std::fs::write(
        examples.join("scripts/generate_numbers.py"),
        "import random\nresult = sorted(random.sample(range(1, 101), 5))\nprint(result)\n",
    )
    .unwrap();
    std::fs::write(
        examples.join("simple_llm_workflow.yaml"),
        "name: Simple\ntasks:\n  - name: greet\n    method: llm/chat\n    parameters: {model: llama3.2:latest, messages: [{role: user, content: Hello}]}\n",
    )
    .unwrap();
    let demo = std::fs::read_to_string(examples.join("python_api_demo.py")).unwrap();
    assert!(demo.contains("http://localhost:11434"), "the demo asks Ollama there");
    std::fs::write(examples.join("python_api_demo.py"), demo.replace("http://localhost:11434", ollama)).unwrap();

    let mcp = support::servers::Server::fastmcp();
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("gleitzeit.toml");
    let mcp = format!("http://127.0.0.1:{}", mcp.port);
    std::fs::write(
        &settings,
        format!(
            "[manifests.ollama]\nallowed_hosts = [\"{ollama}\"]\n[manifests.ollama.config]\nbase_url = \"{ollama}\"\n\
             [manifests.mcp]\nallowed_hosts = [\"{mcp}\"]\n[manifests.mcp.config.servers]\ntest = \"{mcp}/mcp\"\n"
        ),
    )
    .unwrap();
    let cwd = format!("cwd={}", folder.path().display());
    let host = support::serve(&[
        "--config",
        settings.to_str().unwrap(),
        "--cache-dir",
        support::plugin_cache().to_str().unwrap(),
        "--files-dir",
        &cwd,
    ]);
    let out = support::succeeded(
        Command::new(python)
            .arg("examples/python_api_demo.py")
            .env("GLEITZEIT_SERVER", &host.url)
            .env("GLEITZEIT_TOKEN", &host.token)
            .current_dir(folder.path()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "✅ Ollama is available",
        "add: 42",
        "multiply: 126",
        "display: 15 + 27 = 42 | Result × 3 = 126",
        "replies to 1 message(s): What is the capital of France?",
        "Total files: 3",
        "Successful: 3",
        "  - greet: completed",
        "All demos completed successfully!",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
}

#[test]
fn the_python_client_installs_with_pip_and_drives_a_host() {
    let venv = tempfile::tempdir().unwrap();
    ran(Path::new("python3"), &["-m", "venv", venv.path().to_str().unwrap()], &[]);
    let (pip, python) = (venv.path().join("bin/pip"), venv.path().join("bin/python"));
    ran(&pip, &["install", "--quiet", "--disable-pip-version-check", "./clients/python", "mypy"], &[]);
    // Typed, as its py.typed says: strict mypy finds nothing.
    ran(&python, &["-m", "mypy", "--strict", "--no-incremental", "clients/python/src/gleitzeit"], &[]);

    let host = support::serve(&[]);
    let env = [("GLEITZEIT_SERVER", host.url.as_str()), ("GLEITZEIT_TOKEN", host.token.as_str())];
    let session = ran(&python, &["tests/python/client_session.py"], &env);
    assert_eq!(String::from_utf8_lossy(&session.stdout).trim(), "ok");

    // The model helpers, through a host whose llm/v1 plugin asks the
    // Ollama test server, and execute_python through the bundled python/v1.
    let server = support::servers::fake_ollama(fake_ollama::Options::default());
    let ollama = server.port;
    let config = tempfile::tempdir().unwrap();
    let settings = config.path().join("gleitzeit.toml");
    let base = format!("http://127.0.0.1:{ollama}");
    let text =
        format!("[manifests.ollama]\nallowed_hosts = [\"{base}\"]\n[manifests.ollama.config]\nbase_url = \"{base}\"\n");
    std::fs::write(&settings, text).unwrap();
    let cache = support::plugin_cache();
    let asking = support::serve(&["--config", settings.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()]);
    let env = [("GLEITZEIT_SERVER", asking.url.as_str()), ("GLEITZEIT_TOKEN", asking.token.as_str())];
    let session = ran(&python, &["tests/python/client_llm.py"], &env);
    assert_eq!(String::from_utf8_lossy(&session.stdout).trim(), "ok");
    if let Some(upstream) = support::upstream_examples() {
        the_originals_api_demo_runs(&python, &upstream, &base);
    }
    let env = [("GLEITZEIT_SERVER", host.url.as_str()), ("GLEITZEIT_TOKEN", host.token.as_str())];

    // A provider on the package's base class: typed methods whose schema
    // the host checks, its bound on calls at once, progress, a drain on
    // SIGTERM.
    let session = ran(&python, &["tests/python/provider_session.py"], &env);
    assert_eq!(String::from_utf8_lossy(&session.stdout).trim(), "ok");

    let page = std::fs::read_to_string(support::root().join("docs/python.md")).unwrap();
    // The page's provider example serves text/v1 for the protocol page's
    // submitter, as the bare-protocol socketio_provider.py does.
    let example = std::fs::read_to_string(support::root().join("docs/examples/python/provider.py")).unwrap();
    let body = example.split_once("\"\"\"\n").unwrap().1;
    assert!(support::fenced_blocks(&page, "python").iter().any(|b| b == body), "docs/python.md shows provider.py");
    let mut serving = Command::new(&python);
    serving.arg("docs/examples/python/provider.py").envs(env.iter().copied()).current_dir(support::root());
    let _text = support::process::Proc::spawn(serving);
    until_served(&host.url, &host.token, "text/v1");
    let out = ran(&python, &["docs/examples/python/submit.py"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["status"], "completed", "{report}");

    // The page's example is the file the test runs, and prints each task.
    // The provider registers again when its host comes back.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (url, data) = (format!("http://127.0.0.1:{port}"), tempfile::tempdir().unwrap());
    let at_port = || {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
        serve.args(["serve", "--auth", "off", "--listen", &url["http://".len()..], "--data-dir"]).arg(data.path());
        support::process::Running(serve.env_remove("GLEITZEIT_PLUGINS").spawn().unwrap())
    };
    let first = at_port();
    let mut serving = Command::new(&python);
    serving.arg("docs/examples/python/provider.py").env("GLEITZEIT_SERVER", &url);
    serving.env_remove("GLEITZEIT_TOKEN").current_dir(support::root());
    let _provider = support::process::Proc::spawn(serving);
    until_served(&url, "", "text/v1");
    drop(first);
    let _second = at_port();
    until_served(&url, "", "text/v1");

    let example = std::fs::read_to_string(support::root().join("docs/examples/python/client.py")).unwrap();
    let body = example.split_once("\"\"\"\n").unwrap().1;
    assert!(support::fenced_blocks(&page, "python").iter().any(|b| b == body), "docs/python.md shows client.py");
    let printed = String::from_utf8(ran(&python, &["docs/examples/python/client.py"], &env).stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    assert_eq!(lines[0], "greet completed Hello from Gleitzeit", "{printed}");
    assert!(lines[2].starts_with("summary completed The greeting was: Hello from Gleitzeit"), "{printed}");
}
