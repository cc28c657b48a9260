//! Hot reload against a running daemon: add, replace (also with another
//! protocol), break (the old version keeps serving), remove, half-written
//! copies.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};

use std::process::{Command, Output, Stdio};

use std::time::{Duration, Instant};

/// A daemon with a plugins directory of its own (`dir`), in memory, logging
/// at info level.
struct Daemon {
    served: support::Served,
    dir: tempfile::TempDir,
}

fn daemon() -> Daemon {
    daemon_with(&[])
}

fn daemon_with(args: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let served = support::Daemon::new()
        .args(&["--store", "memory", "--plugins", dir.path().to_str().unwrap()])
        .args(args)
        .env("GLEITZEIT_LOG", "info")
        .start();
    Daemon { served, dir }
}

impl Daemon {
    /// The CLI as the daemon's local user runs it.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
        command.env("GLEITZEIT_SERVER", &self.served.url).env("XDG_DATA_HOME", self.served.data_home.path());
        command.env_remove("GLEITZEIT_TOKEN").env_remove("GLEITZEIT_DATA_DIR");
        command
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn plugins(&self) -> Vec<Value> {
        let out = self.cli(&["plugin", "list", "--output", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    fn plugin(&self, name: &str) -> Option<Value> {
        self.plugins().into_iter().find(|p| p["name"] == name)
    }

    /// Wait (up to 10 s) until `check` holds for the plugin list.
    fn until(&self, what: &str, check: impl Fn(&Daemon) -> bool) -> Duration {
        self.until_within(Duration::from_secs(10), what, check)
    }

    /// Wait (up to `limit`) until `check` holds for the plugin list.
    fn until_within(&self, limit: Duration, what: &str, check: impl Fn(&Daemon) -> bool) -> Duration {
        let started = Instant::now();
        support::until(what, limit, || check(self), |held| *held);
        started.elapsed()
    }

    /// Deploy the safe way: write beside, then rename into place.
    fn deploy(&self, name: &str, bytes: &[u8]) {
        let staging = self.dir.path().join(format!(".{name}.partial"));
        std::fs::write(&staging, bytes).unwrap();
        std::fs::rename(&staging, self.dir.path().join(format!("{name}.wasm"))).unwrap();
    }

    /// How many times the daemon has loaded, refused or removed `NAME.wasm`
    /// (each logs one line naming the file).
    fn load_attempts(&self, name: &str) -> usize {
        let file = self.dir.path().join(format!("{name}.wasm")).display().to_string();
        self.served.log().lines().filter(|line| line.contains(&file)).count()
    }

    /// The daemon's CPU time (user and system) so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.served.pid())).unwrap();
        // Fields after the command name, which is in parentheses: utime and
        // stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn task(&self, protocol: &str, method: &str, params: &str) -> Value {
        let out = self.cli(&[
            "task",
            "submit",
            "--protocol",
            protocol,
            "--method",
            method,
            "--params",
            params,
            "--wait",
            "--output",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["tasks"][0]["result"].clone()
    }
}

#[test]
fn plugins_are_added_replaced_broken_and_removed_while_the_daemon_runs() {
    let daemon = daemon();
    let hostile = std::fs::read(support::component("hostile")).unwrap();
    let echo = std::fs::read(support::component("echo")).unwrap();

    // Add.
    daemon.deploy("extra", &hostile);
    daemon.until("extra loads", |d| d.plugin("extra").is_some_and(|p| p["state"] == "loaded"));
    assert_eq!(daemon.task("hostile/v1", "config", r#"{"key": "x"}"#), serde_json::json!({"value": null}));
    let first_hash = daemon.plugin("extra").unwrap()["hash"].clone();

    // Replace with a component serving another protocol: hostile/v1 goes,
    // and `extra` now stands in for the bundled echo.
    daemon.deploy("extra", &echo);
    daemon.until("extra serves echo/v1", |d| d.plugin("extra").is_some_and(|p| p["protocol_id"] == "echo/v1"));
    assert_ne!(daemon.plugin("extra").unwrap()["hash"], first_hash, "a new version hash");
    assert_eq!(daemon.plugin("echo").unwrap()["state"], "replaced");
    let out = daemon.cli(&["task", "submit", "--protocol", "hostile/v1", "--method", "config", "--params", "{}"]);
    assert_eq!(out.status.code(), Some(2), "hostile/v1 is gone");
    assert_eq!(daemon.task("echo/v1", "echo", r#"{"message": "from extra"}"#)["echoed"], "from extra");

    // Break: a corrupt file is refused; the previous version keeps serving.
    daemon.deploy("extra", b"\0asm not really a component");
    daemon.until("extra fails", |d| d.plugin("extra").is_some_and(|p| p["state"] == "failed"));
    let status = daemon.plugin("extra").unwrap();
    assert!(status["last_error"].as_str().unwrap().contains("is not a valid component"), "{status}");
    assert_eq!(daemon.task("echo/v1", "echo", r#"{"message": "still"}"#)["echoed"], "still");

    // Remove: the bundled echo serves again.
    std::fs::remove_file(daemon.dir.path().join("extra.wasm")).unwrap();
    daemon.until("extra is gone", |d| d.plugin("extra").is_none());
    assert_eq!(daemon.plugin("echo").unwrap()["state"], "loaded");
    assert_eq!(daemon.task("echo/v1", "echo", r#"{"message": "bundled"}"#)["echoed"], "bundled");
}

/// Python and JS plugins deploy like Rust ones: added, replaced (by the same
/// protocol in the other language, then by another protocol), removed, and
/// the daemon idles after.
#[test]
fn python_and_js_plugins_are_added_replaced_and_removed_while_the_daemon_runs() {
    let daemon = daemon_with(&["--cache-dir", support::plugin_cache().to_str().unwrap()]);
    let textstats = std::fs::read(support::python_plugin("textstats")).unwrap();
    let textstats_js =
        std::fs::read(support::js_plugin(&support::root().join("plugin-sdk/js/examples/textstats"))).unwrap();
    let run_python = std::fs::read(support::python_plugin("run-python")).unwrap();
    // A first compile of a Python component takes seconds on a loaded
    // machine; later loads come from the compiled-plugin cache.
    let compile = Duration::from_secs(180);

    daemon.deploy("py", &textstats);
    daemon.until_within(compile, "py loads", |d| d.plugin("py").is_some_and(|p| p["state"] == "loaded"));
    assert_eq!(
        daemon.task("textstats/v1", "count", r#"{"text": "a b a"}"#)["top"][0],
        json!({"word": "a", "count": 2})
    );
    let python_hash = daemon.plugin("py").unwrap()["hash"].clone();

    daemon.deploy("py", &textstats_js);
    daemon.until_within(compile, "py is the JS build", |d| d.plugin("py").is_some_and(|p| p["hash"] != python_hash));
    let counted = daemon.task("textstats/v1", "count", r#"{"text": "a b\na"}"#);
    assert_eq!((&counted["lines"], &counted["top"][0]), (&json!(2), &json!({"word": "a", "count": 2})));

    daemon.deploy("py", &run_python);
    daemon.until_within(compile, "py serves python/v1", |d| {
        d.plugin("py").is_some_and(|p| p["protocol_id"] == "python/v1")
    });
    assert_eq!(daemon.task("python/v1", "execute", r#"{"code": "result = 6 * 7"}"#)["result"], 42);
    let out = daemon.cli(&["task", "submit", "--protocol", "textstats/v1", "--method", "count", "--params", "{}"]);
    assert_eq!(out.status.code(), Some(2), "textstats/v1 is gone");

    std::fs::remove_file(daemon.dir.path().join("py.wasm")).unwrap();
    daemon.until("py is gone", |d| d.plugin("py").is_none());
    let before = daemon.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = daemon.cpu_ticks() - before;
    assert!(used <= 20, "the idle daemon used {used} ticks of CPU in 2 s");
}

/// A load opens the plugin's files, and opening a file is a file event: a
/// watcher that took it for a change reloaded the plugin forever, using both
/// cores of an idle host.
#[test]
fn each_change_loads_the_plugin_once_and_the_daemon_then_idles() {
    let daemon = daemon();
    let hostile = std::fs::read(support::component("hostile")).unwrap();
    let echo = std::fs::read(support::component("echo")).unwrap();
    let manifest = daemon.dir.path().join("once.toml");
    type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let changes: [Change; 5] = [
        ("add", Box::new(|| daemon.deploy("once", &hostile))),
        ("replace", Box::new(|| daemon.deploy("once", &echo))),
        ("change the manifest", Box::new(|| std::fs::write(&manifest, "max_concurrency = 3\n").unwrap())),
        ("corrupt", Box::new(|| daemon.deploy("once", b"\0asm not a component"))),
        ("remove", Box::new(|| std::fs::remove_file(daemon.dir.path().join("once.wasm")).unwrap())),
    ];
    for (attempts, (change, apply)) in (1..).zip(changes) {
        apply();
        let started = Instant::now();
        while daemon.load_attempts("once") < attempts {
            assert!(started.elapsed() < Duration::from_secs(10), "{change}: never reloaded");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A window to see the idle daemon in, not a wait for an event.
        let before = daemon.cpu_ticks();
        std::thread::sleep(Duration::from_secs(2));
        let used = daemon.cpu_ticks() - before;
        assert_eq!(daemon.load_attempts("once"), attempts, "{change}: one change, one reload");
        // Clock ticks are 10 ms: a looping reload used about 400 of them.
        assert!(used <= 20, "{change}: the idle daemon used {used} ticks of CPU in 2 s");
    }
}

#[test]
fn a_half_written_copy_is_not_served_half_written() {
    let daemon = daemon();
    let hostile = std::fs::read(support::component("hostile")).unwrap();
    let target = daemon.dir.path().join("slow-copy.wasm");
    std::fs::write(&target, &hostile[..hostile.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_ne!(daemon.plugin("slow-copy").map(|p| p["state"].clone()), Some(Value::from("loaded")));
    std::fs::write(&target, &hostile).unwrap();
    daemon.until("the finished copy loads", |d| d.plugin("slow-copy").is_some_and(|p| p["state"] == "loaded"));
    assert_eq!(daemon.task("hostile/v1", "config", r#"{"key": "k"}"#)["value"], Value::Null);
}

#[test]
fn ten_thousand_tasks_survive_twenty_swaps() {
    let daemon = daemon();
    let manifest = |version: usize| format!("max_concurrency = 200\n[config]\nversion = \"{version}\"\n");
    std::fs::write(daemon.dir.path().join("versioned.toml"), manifest(0)).unwrap();
    daemon.deploy("versioned", &std::fs::read(support::component("hostile")).unwrap());
    daemon.until("versioned loads", |d| d.plugin("versioned").is_some_and(|p| p["state"] == "loaded"));

    let tasks: Vec<Value> = (0..10_000)
        .map(|i| serde_json::json!({"id": format!("t{i}"), "protocol": "hostile/v1", "method": "nap", "params": {"ms": 50, "key": "version"}}))
        .collect();
    let file = daemon.dir.path().join("load.json");
    std::fs::write(&file, serde_json::json!({"name": "load", "tasks": tasks}).to_string()).unwrap();
    let submitter = daemon
        .command()
        .args(["workflow", "submit", file.to_str().unwrap(), "--wait", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for version in 1..=20 {
        std::thread::sleep(Duration::from_millis(100));
        // The manifest is swapped the safe way too: write beside, rename.
        let staging = daemon.dir.path().join(".versioned.partial");
        std::fs::write(&staging, manifest(version)).unwrap();
        std::fs::rename(&staging, daemon.dir.path().join("versioned.toml")).unwrap();
    }
    let out = submitter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["completed"], 10_000, "zero failed tasks: {}", report["summary"]);
    let mut versions = std::collections::BTreeSet::new();
    for task in report["tasks"].as_array().unwrap() {
        let version: usize = task["result"]["value"].as_str().unwrap().parse().unwrap();
        assert!(version <= 20);
        assert_eq!(task["attempts"], 1);
        versions.insert(version);
    }
    // Swaps that come faster than the debounce coalesce, so how many
    // versions served varies; that the load spanned swaps does not.
    assert!(versions.len() >= 2, "tasks were served by several versions: {versions:?}");
}

#[test]
fn a_component_of_another_world_is_refused_by_name_and_the_old_version_serves() {
    let daemon = daemon();
    daemon.deploy("worker", &std::fs::read(support::component("hostile")).unwrap());
    daemon.until("worker loads", |d| d.plugin("worker").is_some_and(|p| p["state"] == "loaded"));
    daemon.deploy("worker", &std::fs::read(support::component("wrong-world")).unwrap());
    daemon.until("worker fails", |d| d.plugin("worker").is_some_and(|p| p["state"] == "failed"));
    let error = daemon.plugin("worker").unwrap()["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains("does not fit the gleitzeit:provider world"), "{error}");
    assert!(error.contains("describe"), "the missing export is named: {error}");
    assert_eq!(daemon.task("hostile/v1", "config", r#"{"key": "k"}"#)["value"], Value::Null, "the old version serves");
}

#[test]
fn a_removed_plugin_finishes_its_running_call_and_its_queued_tasks_fail_after_their_timeout() {
    let daemon = daemon();
    std::fs::write(daemon.dir.path().join("extra.toml"), "max_concurrency = 1\n").unwrap();
    daemon.deploy("extra", &std::fs::read(support::component("hostile")).unwrap());
    daemon.until("extra loads", |d| d.plugin("extra").is_some_and(|p| p["state"] == "loaded"));
    let workflow = daemon.dir.path().join("remove.yaml");
    std::fs::write(
        &workflow,
        "name: remove\ntasks:\n  - {id: running, protocol: hostile/v1, method: nap, params: {ms: 1500, key: k}}\n  - {id: queued, protocol: hostile/v1, method: config, params: {key: k}, timeout: 1}\n",
    )
    .unwrap();
    let submit = daemon
        .command()
        .args(["workflow", "submit", workflow.to_str().unwrap(), "--wait", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // `running` runs, `queued` waits for the one slot
    // A new version (new manifest) shares the limit with the draining one:
    // `queued` keeps waiting.
    let loaded_at = daemon.plugin("extra").unwrap()["loaded_at"].clone();
    std::fs::write(daemon.dir.path().join("extra.toml"), "max_concurrency = 1\n[config]\nk = \"v2\"\n").unwrap();
    daemon.until("extra reloads", |d| d.plugin("extra").is_some_and(|p| p["loaded_at"] != loaded_at));
    std::fs::remove_file(daemon.dir.path().join("extra.wasm")).unwrap();
    daemon.until("extra is gone", |d| d.plugin("extra").is_none());
    let out = submit.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let task = |id: &str| report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap().clone();
    assert_eq!(task("running")["status"], "completed", "the running call finished on the removed version");
    let queued = task("queued");
    assert_eq!(queued["error"]["code"], -32002, "{queued}");
    assert_eq!(queued["attempts"], 0, "it never ran: {queued}");
    assert_eq!(queued["error"]["message"], "no provider served protocol 'hostile/v1' within the task's timeout of 1s");
}

/// Without `--plugins`, the plugins directory is the data directory's, not a
/// `plugins/` folder that happens to be where `serve` starts; the start-up
/// output and `plugin list` say which it is.
#[test]
fn the_default_plugins_directory_is_in_the_data_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let component = std::fs::read(support::component("hostile")).unwrap();
    std::fs::create_dir(cwd.path().join("plugins")).unwrap();
    std::fs::write(cwd.path().join("plugins/stray.wasm"), &component).unwrap();
    let served = support::Daemon::new().args(&["--store", "memory"]).current_dir(cwd.path()).start();
    let expected = served.data_home.path().join("gleitzeit/plugins");
    let announced = served.stdout_line("plugins:");
    let daemon = Daemon { served, dir: tempfile::tempdir().unwrap() };
    assert_eq!(announced, format!("plugins: bundled, and {} (watched)", expected.display()));
    assert!(daemon.plugin("stray").is_none(), "./plugins is not loaded: {:?}", daemon.plugins());
    let listed = String::from_utf8(daemon.cli(&["plugin", "list"]).stdout).unwrap();
    assert!(listed.contains(&format!("directory: {} (watched)", expected.display())), "{listed}");

    std::fs::write(expected.join(".extra.partial"), &component).unwrap();
    std::fs::rename(expected.join(".extra.partial"), expected.join("extra.wasm")).unwrap();
    daemon.until("extra loads", |d| d.plugin("extra").is_some_and(|p| p["state"] == "loaded"));
}

/// A manifest dropped beside a plugin cannot make the host run a command:
/// the plugin is refused with where commands belong, and nothing runs.
#[test]
fn a_dropped_manifest_cannot_start_a_process() {
    let daemon = daemon();
    let marker = daemon.dir.path().join("ran");
    let manifest = format!("[mcp_stdio.x]\ncommand = [\"touch\", \"{}\"]\n", marker.display());
    std::fs::write(daemon.dir.path().join("dropped.toml"), manifest).unwrap();
    daemon.deploy("dropped", &std::fs::read(support::component("hostile")).unwrap());
    daemon.until("dropped is refused", |d| d.plugin("dropped").is_some_and(|p| p["state"] == "failed"));
    let error = daemon.plugin("dropped").unwrap()["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains("a file in the plugins directory may not"), "{error}");
    assert!(error.contains("[manifests.dropped.mcp_stdio.x] in gleitzeit.toml"), "{error}");
    assert!(!marker.exists(), "the command ran");
}
