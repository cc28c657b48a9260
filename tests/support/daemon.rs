//! The one way tests start `gleitzeit serve`, and the one way they wait.
//!
//! `Daemon::new().args(&[..]).start()` runs the real binary on a free
//! loopback port with a fresh data home of its own (never the user's),
//! waits until it listens, and hands back a [`Served`]: its URL, its local
//! admin token, its log (stderr, collected and echoed to the test's
//! output) and its CLI. Dropping it kills the process (SIGKILL).
//! [`until`] is the poll loop for what no event announces.

use super::{local_token, root};
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for a log line or a condition by default: wide,
/// for a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A `gleitzeit serve` to start.
#[derive(Default)]
pub struct Daemon {
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    dir: Option<PathBuf>,
}

impl Daemon {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arguments after `serve --listen 127.0.0.1:0`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Start it in `dir` (default: the repository's root).
    pub fn current_dir(mut self, dir: &std::path::Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// Start it through `wrapper`, which gets the binary and its arguments
    /// after its own (e.g. `sh -c 'ulimit -Sn 1024; exec "$0" "$@"'`).
    pub fn under(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Start it and wait until it listens.
    pub fn start(self) -> Served {
        let data_home = tempfile::tempdir().unwrap();
        let binary = env!("CARGO_BIN_EXE_gleitzeit");
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&self.args)
            .current_dir(self.dir.clone().unwrap_or_else(root))
            .env_remove("GLEITZEIT_PLUGINS")
            .env("XDG_DATA_HOME", data_home.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let log = Log::collect(child.stderr.take().unwrap());
        let stdout = Log::collect(child.stdout.take().unwrap());
        let (listening, _) = stdout.wait_for(0, "listening on http://", PATIENCE);
        let url = listening.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_default().to_owned();
        let data_dir = match self.args.iter().position(|a| a == "--data-dir") {
            Some(at) => PathBuf::from(&self.args[at + 1]),
            None => data_home.path().join("gleitzeit"),
        };
        let token = local_token(&data_dir).unwrap_or_default();
        Served { child, url, data_home, data_dir, token, log, stdout, read: Mutex::new(0) }
    }
}

/// A running `gleitzeit serve`, killed (SIGKILL) when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub url: String,
    /// Its default data home (`XDG_DATA_HOME`), its own.
    pub data_home: tempfile::TempDir,
    /// Its data directory: `--data-dir` if given, else in `data_home`.
    pub data_dir: PathBuf,
    /// The local admin token it wrote to its data directory (empty with
    /// authentication off).
    pub token: String,
    log: Log,
    /// What it printed (the address it listens on, announcements).
    stdout: Log,
    /// How many log lines [`Served::log_line`] has looked at.
    read: Mutex<usize>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// The next log line (after those this found before) that contains
    /// `marker`, within [`PATIENCE`].
    pub fn log_line(&self, marker: &str) -> String {
        let mut read = self.read.lock().unwrap();
        let (line, at) = self.log.wait_for(*read, marker, PATIENCE);
        *read = at + 1;
        line
    }

    /// The first line it printed that contains `marker`, within
    /// [`PATIENCE`].
    pub fn stdout_line(&self, marker: &str) -> String {
        self.stdout.wait_for(0, marker, PATIENCE).0
    }

    /// The CLI as the daemon's local admin runs it.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
        command.env("GLEITZEIT_SERVER", &self.url).env("GLEITZEIT_TOKEN", &self.token);
        command
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }
}

/// A stream of a process (its stdout or stderr), line by line as it comes,
/// each echoed to the test's output; read to its end, so the process never
/// blocks on a full pipe.
#[derive(Clone)]
struct Log(Arc<(Mutex<Lines>, Condvar)>);

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// The stream ended (the process exited or closed it).
    ended: bool,
}

impl Log {
    fn collect(stream: impl std::io::Read + Send + 'static) -> Self {
        let log = Self(Arc::default());
        let filled = log.clone();
        std::thread::spawn(move || {
            let (state, changed) = &*filled.0;
            let mut reader = std::io::BufReader::new(stream);
            let mut bytes = Vec::new();
            // Bytes, not `lines()`: a line that is not UTF-8 must not stop
            // the draining (the process would block on a full pipe).
            while reader.read_until(b'\n', &mut bytes).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&bytes).trim_end_matches(['\n', '\r']).to_owned();
                bytes.clear();
                println!("  | {line}");
                state.lock().unwrap().lines.push(line);
                changed.notify_all();
            }
            state.lock().unwrap().ended = true;
            changed.notify_all();
        });
        log
    }

    fn text(&self) -> String {
        self.0.0.lock().unwrap().lines.join("\n")
    }

    /// The first line from `from` on that contains `marker`, and its index.
    fn wait_for(&self, from: usize, marker: &str, limit: Duration) -> (String, usize) {
        let (state, changed) = &*self.0;
        let deadline = Instant::now() + limit;
        let mut state = state.lock().unwrap();
        loop {
            if let Some(at) = (from..state.lines.len()).find(|&i| state.lines[i].contains(marker)) {
                return (state.lines[at].clone(), at);
            }
            assert!(!state.ended, "no line with {marker:?} before the stream ended:\n{}", state.lines.join("\n"));
            let left = deadline.checked_duration_since(Instant::now());
            let left = left.unwrap_or_else(|| panic!("no line with {marker:?} within {limit:?}"));
            state = changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

/// Poll `probe` every 50 ms until `ready` holds for what it gives, within
/// `limit`; what it gave then. For what no event announces (a state seen
/// through the CLI or the API).
pub fn until<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> T,
    ready: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    loop {
        let seen = probe();
        if ready(&seen) {
            return seen;
        }
        assert!(started.elapsed() < limit, "never happened within {limit:?}: {what}; last seen: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
