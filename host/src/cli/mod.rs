//! The `gleitzeit` command line.
//!
//! Exit codes: 0 every task completed (or the file is valid), 1 the workflow
//! failed, 2 invalid input or usage. Errors print as one readable paragraph on
//! stderr. Output goes through [`out!`]: a reader that stops reading
//! (`| head`) ends the command quietly. This module wires the library
//! together; it holds no engine logic.

/// `println!` for a command's output, without the panic when stdout is a
/// pipe its reader closed: the command ends then, with exit code 0.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*)) };
}

mod batch;
mod remote;
mod scaffold;
mod token;

use crate::auth;
use crate::engine::{Engine, EngineConfig, EngineError, WorkflowLimits};
use crate::model::{Workflow, WorkflowStatus};
use crate::plugins::{CompileWhen, Manifest, Overrides, PluginPolicy, PluginSet, RuntimeConfig, WasmRuntime};
use crate::registry::Registry;
use crate::report::RunReport;
use crate::store::{Store, StoreSpec};
use crate::workflow::{self, WorkflowError};
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Write one line of output (see [`out!`]).
fn write_out(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(line).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            std::process::exit(2)
        }
        Ok(()) => {}
    }
}

#[derive(Parser)]
#[command(name = "gleitzeit", version, about = "Run workflows of tasks through WASM and remote providers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host daemon: WASM and remote providers, clients over Socket.IO.
    Serve(ServeArgs),
    /// Run a workflow file once, in this process, with the local plugins.
    Run(RunArgs),
    /// Ask a model the same thing about every file of a directory (a
    /// generated workflow run here), and report each file's answer.
    Batch(batch::BatchArgs),
    /// Work with workflow files and a host's workflows.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Submit single tasks to a host.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Workflows a host starts on its own, at the due times of a cron
    /// pattern.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// The host's providers (WASM and remote).
    #[command(subcommand)]
    Provider(ListCommand),
    /// The protocols the host serves.
    #[command(subcommand)]
    Protocol(ListCommand),
    /// The host's WASM plugins, and new plugin projects.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Tokens: who may connect to the host, and what each may do.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print the HTTP API's OpenAPI 3 document (what a daemon serves at
    /// /api/v1/openapi.json).
    Openapi,
}

#[derive(Subcommand)]
enum WorkflowCommand {
    /// Check a workflow file without running it.
    Validate(ValidateArgs),
    /// Submit a workflow file to a running host.
    Submit {
        #[command(flatten)]
        args: remote::SubmitArgs,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// A workflow's status: each task's state, attempts, timing and result
    /// (running or finished, also before the host's last restart).
    Status {
        workflow_id: String,
        /// Also write the full result document (JSON) to this file.
        #[arg(long)]
        output_file: Option<PathBuf>,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// A workflow's results: every task's whole result or error.
    Results {
        workflow_id: String,
        /// Also write the full result document (JSON) to this file.
        #[arg(long)]
        output_file: Option<PathBuf>,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// Running and recently finished workflows.
    List {
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// Cancel a running workflow.
    Cancel {
        workflow_id: String,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Hand a workflow file to a running host to start at the due times of
    /// its `schedule:` block (these options set or replace its fields).
    Add {
        #[command(flatten)]
        args: remote::ScheduleArgs,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// The host's schedules: next and last due times, last run.
    List {
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// Remove a schedule (the runs it started go on).
    Remove {
        schedule_id: String,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Submit one task to a running host; it runs at once.
    Submit {
        #[command(flatten)]
        args: remote::TaskArgs,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins a running host serves.
    List {
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// Write a new plugin project (one method with typed params, a test, the
    /// build command in its README), with a copy of the language's SDK.
    New {
        /// The plugin's name; it serves NAME/v1.
        name: String,
        /// Rust, Python or JavaScript.
        #[arg(long, value_enum)]
        lang: scaffold::Language,
        /// Where to write it [default: ./NAME]; must be new or empty.
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ListCommand {
    /// List them.
    List {
        #[command(flatten)]
        server: remote::ServerArgs,
    },
}

#[derive(clap::Args)]
struct PluginArgs {
    /// Directory of extra plugins (NAME.wasm), served beside the bundled
    /// ones [default: DATA_DIR/plugins, e.g. ~/.local/share/gleitzeit/plugins].
    #[arg(long, env = "GLEITZEIT_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Settings file (TOML), with per-plugin `[manifests.NAME]` overrides;
    /// flags and GLEITZEIT_* variables win over it.
    #[arg(long, env = "GLEITZEIT_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of compiled plugins kept between starts (delete it to
    /// clear it) [default: DATA_DIR/cache].
    #[arg(long, env = "GLEITZEIT_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every plugin at every start and keep nothing.
    #[arg(long, env = "GLEITZEIT_NO_CACHE")]
    no_cache: bool,
}

/// Where plugins come from and where their compiled forms are kept.
struct PluginDirs {
    plugins: PathBuf,
    cache: Option<PathBuf>,
}

impl PluginArgs {
    /// The settings file (empty without one) and the plugins directory: the
    /// flag's, else the file's, else `plugins` in the data directory (never
    /// one relative to wherever the command happens to start).
    fn resolve(&self, data_dir_flag: Option<&Path>) -> Result<(ConfigFile, PluginDirs), Failure> {
        let file = ConfigFile::load(self.config.as_deref())?;
        let plugins = match self.plugins.clone().or_else(|| file.plugins.clone()) {
            Some(dir) => dir,
            None => data_dir(data_dir_flag, &file).map(|d| d.join("plugins")).ok_or_else(|| {
                Failure::Input(anyhow::anyhow!("no plugins directory: set --plugins, --data-dir or HOME"))
            })?,
        };
        let cache = match self.no_cache {
            true => None,
            false => self
                .cache_dir
                .clone()
                .or_else(|| file.cache_dir.clone())
                .or_else(|| data_dir(data_dir_flag, &file).map(|d| d.join("cache"))),
        };
        Ok((file, PluginDirs { plugins, cache }))
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (loopback unless you say otherwise).
    #[arg(long, env = "GLEITZEIT_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    plugins: PluginArgs,
    /// Tasks running at once across all workflows.
    #[arg(long, env = "GLEITZEIT_CONCURRENCY")]
    concurrency: Option<u32>,
    /// Seconds running work may take to finish after SIGINT/SIGTERM.
    #[arg(long, env = "GLEITZEIT_GRACE")]
    grace: Option<f64>,
    /// Where state is kept: sqlite:PATH, redis://HOST[:PORT][/DB] or memory
    /// [default: sqlite in the data directory].
    #[arg(long, env = "GLEITZEIT_STORE")]
    store: Option<StoreSpec>,
    /// Directory of the default SQLite store [default: $XDG_DATA_HOME/gleitzeit
    /// or ~/.local/share/gleitzeit].
    #[arg(long, env = "GLEITZEIT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long finished workflows and their results are kept, e.g. 7d, 12h
    /// [default: 7d].
    #[arg(long, env = "GLEITZEIT_RETENTION")]
    retention: Option<humantime::Duration>,
    /// Whether connections must show a token [default: tokens]; `off` is
    /// for the original system's unmodified clients, on loopback only.
    #[arg(long, value_enum, env = "GLEITZEIT_AUTH")]
    auth: Option<auth::Mode>,
    #[command(flatten)]
    files: FilesArgs,
    /// Most tasks one workflow may have, its for_each items' included
    /// [default: 100000].
    #[arg(long, env = "GLEITZEIT_MAX_WORKFLOW_TASKS")]
    max_workflow_tasks: Option<usize>,
    /// Most MB of params, results and items one workflow may hold
    /// [default: 128].
    #[arg(long, env = "GLEITZEIT_MAX_WORKFLOW_MB")]
    max_workflow_mb: Option<usize>,
    /// Most event streams one client token may have open [default: 100].
    #[arg(long, env = "GLEITZEIT_MAX_STREAMS_PER_TOKEN")]
    max_streams_per_token: Option<usize>,
    /// Most workflows one client token may have running [default: 1000].
    #[arg(long, env = "GLEITZEIT_MAX_WORKFLOWS_PER_TOKEN")]
    max_workflows_per_token: Option<usize>,
    /// Most schedules one client token may keep, at most 950 [default: 100].
    #[arg(long, env = "GLEITZEIT_MAX_SCHEDULES_PER_TOKEN")]
    max_schedules_per_token: Option<usize>,
    /// The shortest time a schedule may leave between two runs, e.g. 1m
    /// [default: 1s].
    #[arg(long, env = "GLEITZEIT_MIN_SCHEDULE_INTERVAL")]
    min_schedule_interval: Option<humantime::Duration>,
}

/// `gleitzeit.toml`: the same settings as the `serve` flags, plus plugin
/// manifest overrides (`[manifests.NAME]`, the keys of `NAME.toml`).
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<std::net::SocketAddr>,
    plugins: Option<PathBuf>,
    concurrency: Option<u32>,
    grace: Option<f64>,
    default_timeout: Option<f64>,
    store: Option<String>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    retention: Option<String>,
    max_workflow_tasks: Option<usize>,
    max_workflow_mb: Option<usize>,
    max_streams_per_token: Option<usize>,
    max_workflows_per_token: Option<usize>,
    max_schedules_per_token: Option<usize>,
    min_schedule_interval: Option<String>,
    #[serde(default)]
    manifests: std::collections::BTreeMap<String, Manifest>,
    /// The most a plugin's own `NAME.toml` may grant (docs/security.md).
    #[serde(default)]
    plugin_policy: PluginPolicy,
    #[serde(default)]
    auth: AuthSettings,
    /// Where it was read from, for error messages.
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl ConfigFile {
    fn load(path: Option<&Path>) -> Result<Self, Failure> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))
            .map_err(Failure::Input)?;
        let mut file: Self = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))
            .map_err(Failure::Input)?;
        file.path = Some(path.to_owned());
        file.check()
            .map_err(|reason| Failure::Input(anyhow::anyhow!("invalid config file {}: {reason}", path.display())))?;
        Ok(file)
    }

    /// Check every table on its own, so a mistake stops the start with the
    /// file and table named: each `[manifests.NAME]`, `[plugin_policy]`
    /// and `[auth]`.
    fn check(&self) -> Result<(), String> {
        let defaults = RuntimeConfig::default().default_grants();
        for (name, manifest) in &self.manifests {
            Manifest::default()
                .overlay(manifest)
                .grants(&defaults)
                .map_err(|reason| format!("[manifests.{name}]: {reason}"))?;
        }
        self.plugin_policy.check().map_err(|reason| format!("[plugin_policy]: {reason}"))?;
        self.auth.check().map_err(|reason| format!("[auth] {reason}"))
    }
}

/// Check a settings file's text as `--config` would, for the fuzzer.
pub fn check_settings_text(text: &str) {
    if let Ok(file) = toml::from_str::<ConfigFile>(text) {
        let _ = file.check();
    }
}

/// `[auth]` of `gleitzeit.toml` (see docs/security.md).
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSettings {
    mode: Option<auth::Mode>,
    /// Browser origins allowed besides the host's own loopback pages.
    #[serde(default)]
    allowed_origins: Vec<String>,
    /// Protocols of WASM plugins remote providers may serve as well.
    #[serde(default)]
    remote_may_serve: Vec<String>,
    /// Tokens (hashes only) besides those of `DATA_DIR/tokens.toml`.
    #[serde(default)]
    tokens: Vec<auth::TokenEntry>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The workflow file (YAML or JSON).
    file: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    plugins: PluginArgs,
    /// How to print the results.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Also write the full result document (JSON) to this file.
    #[arg(long)]
    output_file: Option<PathBuf>,
    /// Tasks running at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Per-attempt timeout (seconds) for tasks that set none [default: 300,
    /// or the settings file's].
    #[arg(long)]
    default_timeout: Option<f64>,
    /// Record the run in a store (sqlite:PATH or redis://...), so `workflow
    /// status` of a daemon on that store shows it [default: memory, none].
    #[arg(long)]
    store: Option<StoreSpec>,
    #[command(flatten)]
    files: FilesArgs,
}

/// The directories `for_each: {files: …}` may read.
#[derive(clap::Args)]
struct FilesArgs {
    /// A directory workflows may read files from, by name (repeatable):
    /// `for_each: {files: "*.md", dir: NAME}`.
    #[arg(long = "files-dir", value_name = "NAME=PATH")]
    files_dirs: Vec<String>,
}

impl FilesArgs {
    /// The named directories, plus (for `run`) the workflow file's own as
    /// `workflow`.
    fn dirs(&self, workflow_file: Option<&Path>) -> Result<Arc<crate::files::FileDirs>, Failure> {
        let mut dirs = crate::files::FileDirs::default();
        let input = |e: crate::files::FilesError| Failure::Input(e.into());
        if let Some(file) = workflow_file {
            let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            dirs.allow(crate::files::WORKFLOW_DIR, parent).map_err(input)?;
        }
        for flag in &self.files_dirs {
            dirs.allow_flag(flag).map_err(input)?;
        }
        Ok(Arc::new(dirs))
    }
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// The workflow file (YAML or JSON).
    file: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    plugins: PluginArgs,
    /// Skip the check that protocols and methods exist (for workflows meant
    /// for a daemon whose providers are not local).
    #[arg(long)]
    schema_only: bool,
    /// How to print the verdict (problems still go to stderr).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Values for a workflow's declared `inputs`.
#[derive(clap::Args)]
struct InputArgs {
    /// A value for one of the workflow's inputs (repeatable); it is read by
    /// the input's declared type (`count=3`, `tags=["a","b"]`).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
}

impl InputArgs {
    fn values(&self) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
        workflow::inputs::from_pairs(&self.inputs).map_err(|e| Failure::Input(anyhow::anyhow!("--input {e}")))
    }

    /// Read and validate `file`, its inputs bound to these values; with
    /// notes on what was read from the original's dialect.
    fn load(&self, file: &Path) -> Result<(Workflow, Vec<workflow::Problem>), Failure> {
        let (mut workflow, notes) = workflow::load_noted(file)?;
        workflow::inputs::bind(&file.display().to_string(), &mut workflow, self.values()?)?;
        Ok((workflow, notes))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Why a command failed, and so its exit code.
enum Failure {
    /// Bad input or usage: exit 2.
    Input(anyhow::Error),
    /// The host itself failed: exit 2 as well, but worded as an internal error.
    Internal(anyhow::Error),
}

impl From<WorkflowError> for Failure {
    fn from(e: WorkflowError) -> Self {
        Failure::Input(e.into())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(Failure::Internal(anyhow::anyhow!("cannot start the async runtime: {e}")));
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Run(args) => run(args).await,
            Command::Batch(args) => batch::run(args).await,
            Command::Workflow(WorkflowCommand::Validate(args)) => validate(args).await,
            Command::Workflow(WorkflowCommand::Submit { args, server }) => remote::submit(&server, args).await,
            Command::Workflow(WorkflowCommand::Status { workflow_id, output_file, server }) => {
                remote::status(&server, &workflow_id, output_file.as_deref()).await
            }
            Command::Workflow(WorkflowCommand::Results { workflow_id, output_file, server }) => {
                remote::results(&server, &workflow_id, output_file.as_deref()).await
            }
            Command::Workflow(WorkflowCommand::List { server }) => {
                remote::list(&server, "list_workflows", "workflows", &["workflow_id", "name", "status", "summary"])
                    .await
            }
            Command::Workflow(WorkflowCommand::Cancel { workflow_id, server }) => {
                remote::cancel(&server, &workflow_id).await
            }
            Command::Task(TaskCommand::Submit { args, server }) => remote::task(&server, args).await,
            Command::Schedule(ScheduleCommand::Add { args, server }) => remote::add_schedule(&server, args).await,
            Command::Schedule(ScheduleCommand::List { server }) => {
                let columns = ["schedule_id", "name", "cron", "timezone", "next_due", "last_due", "last_run"];
                remote::list(&server, "list_schedules", "schedules", &columns).await
            }
            Command::Schedule(ScheduleCommand::Remove { schedule_id, server }) => {
                remote::remove_schedule(&server, &schedule_id).await
            }
            Command::Provider(ListCommand::List { server }) => {
                let columns = ["provider_id", "kind", "protocol_id", "methods", "max_concurrent", "in_flight"];
                remote::list(&server, "list_providers", "providers", &columns).await
            }
            Command::Protocol(ListCommand::List { server }) => remote::protocols(&server).await,
            Command::Token(command) => token::run(command),
            Command::Openapi => {
                let document = crate::daemon::openapi().to_pretty_json().map_err(|e| Failure::Internal(e.into()))?;
                out!("{document}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Plugin(PluginCommand::New { name, lang, dir }) => {
                let (dir, files) = scaffold::create(&name, lang, dir.as_deref()).map_err(Failure::Input)?;
                out!("wrote {} ({name}/v1): {}", dir.display(), files.join(", "));
                out!("build and deploy it as {} says", dir.join("README.md").display());
                Ok(ExitCode::SUCCESS)
            }
            Command::Plugin(PluginCommand::List { server }) => {
                remote::list(
                    &server,
                    "list_plugins",
                    "plugins",
                    &["name", "protocol_id", "version", "source", "methods"],
                )
                .await
            }
        }
    });
    // A store call still blocked (a store that stopped answering) does not
    // hold the exit: what matters is written, or will be redone.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(code) => code,
        Err(failure) => fail(failure),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GLEITZEIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn fail(failure: Failure) -> ExitCode {
    let (kind, e) = match failure {
        Failure::Input(e) => ("error", e),
        Failure::Internal(e) => ("internal error", e),
    };
    eprintln!("{kind}: {e:#}");
    ExitCode::from(2)
}

/// The ranges of the settings that feed time arithmetic: beyond them a sum
/// like `Instant::now() + grace` could overflow (and panic), and no real
/// use needs more. Documented in the README.
const MAX_GRACE_SECS: f64 = 86_400.0;
const MAX_DEFAULT_TIMEOUT_SECS: f64 = 7.0 * 86_400.0;
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Most tasks running at once (`--concurrency`).
const MAX_CONCURRENCY: u32 = 100_000;

/// `value` seconds, more than 0 and at most `max`.
fn seconds(name: &str, value: f64, max: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value).ok().filter(|d| !d.is_zero() && value <= max).ok_or_else(|| {
        Failure::Input(anyhow::anyhow!("{name} must be more than 0 and at most {max} seconds, got {value}"))
    })
}

/// Raise the soft open-file limit to the hard one, as Go programs do at
/// start (many systems start services with a soft limit of 1,024, below
/// the event-stream cap alone), and return how many event streams fit in
/// half of what the process may open (the other half is for Socket.IO
/// connections, requests, the store and plugins): past its limit a
/// connection is not refused with a clear error, it waits unaccepted.
fn event_streams_that_fit() -> usize {
    let max = crate::daemon::MAX_STREAMS;
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            return max;
        }
    };
    let fit = usize::try_from(limit / 2).unwrap_or(max).clamp(1, max);
    if fit < max {
        tracing::warn!(
            "this process may open only {limit} files (its hard limit), so at most {fit} event streams \
             are served at once instead of {max}; raise the limit (ulimit -Hn, LimitNOFILE= in a systemd unit)"
        );
    }
    fit
}

async fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let max_streams = event_streams_that_fit();
    let (file, plugins) = args.plugins.resolve(args.data_dir.as_deref())?;
    let listen = args.listen.or(file.listen).unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8000)));
    let mut engine = EngineConfig { file_dirs: args.files.dirs(None)?, ..EngineConfig::default() };
    if let Some(n) = args.concurrency.or(file.concurrency) {
        if !(1..=MAX_CONCURRENCY).contains(&n) {
            return Err(Failure::Input(anyhow::anyhow!("concurrency must be from 1 to {MAX_CONCURRENCY}, got {n}")));
        }
        engine.concurrency = n as usize;
    }
    if let Some(s) = file.default_timeout {
        engine.default_timeout = seconds("default_timeout", s, MAX_DEFAULT_TIMEOUT_SECS)?;
    }
    let grace = seconds("--grace", args.grace.or(file.grace).unwrap_or(30.0), MAX_GRACE_SECS)?;
    let data_dir = args.data_dir.clone().or_else(|| file.data_dir.clone());
    let policy = auth_policy(&args, &file, listen)?;
    let store = open_store(&store_spec(&args, &file)?, data_dir.as_deref())?;
    let retention = retention(&args, &file)?;
    engine.limits = workflow_limits(&args, &file)?;
    let (registry, plugin_set) = load_plugins(&plugins, &file, CompileWhen::OnLoad).await?;
    // Hot reload: the directory stays live while the daemon runs.
    let _watcher = plugin_set.watch().map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(Failure::Input)?;
    let config = crate::daemon::ServeConfig {
        engine,
        grace,
        store,
        retention,
        policy: Arc::new(policy),
        max_streams,
        max_streams_per_token: quota("max_streams_per_token", args.max_streams_per_token, file.max_streams_per_token)?
            .unwrap_or(crate::daemon::DEFAULT_STREAMS_PER_TOKEN),
        max_workflows_per_token: quota(
            "max_workflows_per_token",
            args.max_workflows_per_token,
            file.max_workflows_per_token,
        )?
        .unwrap_or(crate::daemon::DEFAULT_WORKFLOWS_PER_TOKEN),
        max_schedules_per_token: schedules_per_token(&args, &file)?,
        min_schedule_interval: min_schedule_interval(&args, &file)?,
    };
    crate::daemon::serve(config, listener, registry, plugin_set, shutdown_signal())
        .await
        .map_err(|e| Failure::Input(e.into()))?;
    Ok(ExitCode::SUCCESS)
}

impl AuthSettings {
    fn check(&self) -> Result<(), String> {
        if let Some(bad) = self.remote_may_serve.iter().find(|p| !crate::ids::is_protocol(p)) {
            let shown = crate::text::excerpt(bad);
            return Err(format!("remote_may_serve: '{shown}' is not of the form name/version"));
        }
        if let Some(bad) = self.allowed_origins.iter().find(|o| !is_origin(o)) {
            let shown = crate::text::excerpt(bad);
            return Err(format!("allowed_origins: '{shown}' is not an origin such as https://example.com:8443"));
        }
        self.tokens.iter().try_for_each(|entry| entry.check().map_err(|reason| format!("tokens: {reason}")))
    }
}

/// Who the daemon accepts: tokens (the local admin token, made on the first
/// start, and the configured and created ones) unless `auth` is `off`, which
/// is refused on anything but loopback. (The settings were checked when the
/// file was read.)
fn auth_policy(args: &ServeArgs, file: &ConfigFile, listen: std::net::SocketAddr) -> Result<auth::Policy, Failure> {
    let settings = &file.auth;
    let mut policy = auth::Policy::open();
    policy.allowed_origins = settings.allowed_origins.clone();
    policy.remote_may_serve = settings.remote_may_serve.clone();
    match args.auth.or(settings.mode).unwrap_or_default() {
        auth::Mode::Off if !listen.ip().is_loopback() => Err(Failure::Input(anyhow::anyhow!(
            "refusing to listen on {listen} with authentication off: anyone who reaches it could run, read and cancel any work. Listen on loopback (127.0.0.1), or leave [auth] mode (--auth, GLEITZEIT_AUTH) at \"tokens\""
        ))),
        auth::Mode::Off => Ok(policy),
        auth::Mode::Tokens => {
            let dir = data_dir(args.data_dir.as_deref(), file).ok_or_else(|| {
                Failure::Input(anyhow::anyhow!("no data directory for the local token: set --data-dir or HOME"))
            })?;
            let local = auth::ensure_local_token(&dir).map_err(|e| Failure::Input(e.into()))?;
            let tokens = auth::Tokens::new(&settings.tokens, &local, &dir).map_err(|e| Failure::Input(e.into()))?;
            policy.tokens = Some(tokens);
            Ok(policy)
        }
    }
}

/// `scheme://host[:port]`, nothing after: what a browser sends as `Origin`.
fn is_origin(text: &str) -> bool {
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    rest.is_some_and(|rest| !rest.is_empty() && !rest.trim_end_matches('/').contains(['/', '?', '#', ' ']))
}

/// The store `serve` uses: the flag's, else the file's, else SQLite in the
/// data directory.
fn store_spec(args: &ServeArgs, file: &ConfigFile) -> Result<StoreSpec, Failure> {
    if let Some(spec) = &args.store {
        return Ok(spec.clone());
    }
    if let Some(text) = &file.store {
        return text.parse().map_err(|e| Failure::Input(anyhow::anyhow!("invalid config file: store: {e}")));
    }
    let dir = data_dir(args.data_dir.as_deref(), file).ok_or_else(|| {
        Failure::Input(anyhow::anyhow!("no data directory: set --data-dir (or HOME), or choose --store"))
    })?;
    Ok(StoreSpec::Sqlite(dir.join("gleitzeit.db")))
}

/// The data directory: the flag's, else the settings file's, else the default.
fn data_dir(flag: Option<&Path>, file: &ConfigFile) -> Option<PathBuf> {
    flag.map(Path::to_owned).or_else(|| file.data_dir.clone()).or_else(default_data_dir)
}

/// `$XDG_DATA_HOME/gleitzeit`, else `~/.local/share/gleitzeit`.
fn default_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = xdg.or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))?;
    Some(base.join("gleitzeit"))
}

/// `min_schedule_interval`: the flag's, else the file's, else one second;
/// at most a day.
fn min_schedule_interval(args: &ServeArgs, file: &ConfigFile) -> Result<Duration, Failure> {
    let interval = match (args.min_schedule_interval, &file.min_schedule_interval) {
        (Some(d), _) => d.into(),
        (None, Some(text)) => humantime::parse_duration(text)
            .map_err(|e| Failure::Input(anyhow::anyhow!("invalid config file: min_schedule_interval '{text}': {e}")))?,
        (None, None) => crate::daemon::DEFAULT_MIN_SCHEDULE_INTERVAL,
    };
    if interval > Duration::from_secs(86_400) {
        return Err(Failure::Input(anyhow::anyhow!(
            "min_schedule_interval must be at most a day, got {}",
            humantime::format_duration(interval)
        )));
    }
    Ok(interval)
}

/// A per-token quota: the flag's, else the file's; from 1 to 1,000,000.
fn quota(name: &str, flag: Option<usize>, file: Option<usize>) -> Result<Option<usize>, Failure> {
    match flag.or(file) {
        Some(n) if !(1..=1_000_000).contains(&n) => {
            Err(Failure::Input(anyhow::anyhow!("{name} must be from 1 to 1000000, got {n}")))
        }
        other => Ok(other),
    }
}

/// Schedules one client token may keep: at most what the host keeps for
/// tokens that are not admins.
fn schedules_per_token(args: &ServeArgs, file: &ConfigFile) -> Result<usize, Failure> {
    let most = crate::daemon::MAX_SCHEDULES - crate::daemon::ADMINS_SCHEDULES;
    match args.max_schedules_per_token.or(file.max_schedules_per_token) {
        Some(n) if !(1..=most).contains(&n) => {
            Err(Failure::Input(anyhow::anyhow!("max_schedules_per_token must be from 1 to {most}, got {n}")))
        }
        n => Ok(n.unwrap_or(crate::daemon::DEFAULT_SCHEDULES_PER_TOKEN)),
    }
}

/// What one workflow may hold: the flags', else the file's, else the
/// defaults, each within its range.
fn workflow_limits(args: &ServeArgs, file: &ConfigFile) -> Result<WorkflowLimits, Failure> {
    use crate::engine::budget::{CEILING_MB, CEILING_TASKS, DEFAULT_MAX_MB, DEFAULT_MAX_TASKS};
    let within = |name: &str, value: usize, ceiling: usize| {
        if (1..=ceiling).contains(&value) {
            Ok(value)
        } else {
            Err(Failure::Input(anyhow::anyhow!("{name} must be from 1 to {ceiling}, got {value}")))
        }
    };
    let tasks = args.max_workflow_tasks.or(file.max_workflow_tasks).unwrap_or(DEFAULT_MAX_TASKS);
    let mb = args.max_workflow_mb.or(file.max_workflow_mb).unwrap_or(DEFAULT_MAX_MB);
    Ok(WorkflowLimits {
        max_tasks: within("max_workflow_tasks", tasks, CEILING_TASKS)?,
        max_bytes: within("max_workflow_mb", mb, CEILING_MB)? << 20,
    })
}

fn retention(args: &ServeArgs, file: &ConfigFile) -> Result<Duration, Failure> {
    let retention = match (args.retention, &file.retention) {
        (Some(d), _) => d.into(),
        (None, Some(text)) => humantime::parse_duration(text)
            .map_err(|e| Failure::Input(anyhow::anyhow!("invalid config file: retention '{text}': {e}")))?,
        (None, None) => Duration::from_secs(7 * 24 * 3600),
    };
    if retention > MAX_RETENTION {
        return Err(Failure::Input(anyhow::anyhow!(
            "retention must be at most 100 years, got {}",
            humantime::format_duration(retention)
        )));
    }
    Ok(retention)
}

/// Open the store; one that exists but cannot be read stops the start.
fn open_store(spec: &StoreSpec, data_dir: Option<&Path>) -> Result<Option<Arc<dyn Store>>, Failure> {
    let data_dir = data_dir.map(Path::to_owned).or_else(default_data_dir).unwrap_or_else(|| PathBuf::from("."));
    spec.open(&data_dir)
        .map_err(|e| Failure::Input(anyhow::anyhow!("{e}; not starting over a store that cannot be read")))
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    eprintln!("shutting down: no new work; waiting for running workflows");
}

async fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let (file, plugins) = args.plugins.resolve(None)?;
    let (workflow, notes, registry, plugin_set) =
        load_against_registry(&args.file, &args.inputs, &plugins, &file).await?;
    for note in notes {
        eprintln!("note: {note}");
    }
    if let Some(spec) = &workflow.schedule {
        eprintln!(
            "note: the schedule ({}, {}) is a host's to keep: this runs the workflow once, now; `gleitzeit schedule add {}` hands it to a host",
            spec.cron,
            spec.timezone,
            args.file.display()
        );
    }
    let default_timeout = seconds(
        "--default-timeout",
        args.default_timeout.or(file.default_timeout).unwrap_or(300.0),
        MAX_DEFAULT_TIMEOUT_SECS,
    )?;
    let config = EngineConfig {
        concurrency: args.concurrency as usize,
        default_timeout,
        file_dirs: args.files.dirs(Some(&args.file))?,
        ..EngineConfig::default()
    };
    let store = args.store.as_ref().unwrap_or(&StoreSpec::Memory);
    let report = run_here(workflow, (registry, plugin_set), config, store, &file).await?;
    print_report(&report, args.output, args.output_file.as_deref())?;
    Ok(if report.status == WorkflowStatus::Completed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Run a validated workflow to its end in this process, on `plugins`.
async fn run_here(
    workflow: Workflow,
    (registry, plugin_set): (Arc<Registry>, Arc<PluginSet>),
    config: EngineConfig,
    store: &StoreSpec,
    file: &ConfigFile,
) -> Result<Arc<RunReport>, Failure> {
    let protocols = workflow.tasks.iter().map(|t| t.protocol.as_str()).collect();
    plugin_set.prepare(&protocols).await;
    let engine = match open_store(store, file.data_dir.as_deref())? {
        None => Engine::start(registry, config),
        Some(store) => {
            let started = Engine::start_durable(registry, config, store).context("cannot start the store's journal");
            started.map_err(Failure::Internal)?.0
        }
    };
    engine.run(workflow).await.map_err(|e| match e {
        EngineError::DuplicateId(_) | EngineError::FinishedId(_) | EngineError::TooLarge(_) | EngineError::Busy(_) => {
            Failure::Input(e.into())
        }
        EngineError::Stopped | EngineError::Store(_) => Failure::Internal(e.into()),
    })
}

/// Write the full result document (JSON) to `path`.
fn write_document(report: &RunReport, path: &Path) -> Result<(), Failure> {
    let text =
        serde_json::to_string_pretty(report).context("cannot encode the result document").map_err(Failure::Internal)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the result document to {}", path.display()))
        .map_err(Failure::Input)
}

fn print_report(report: &RunReport, output: Output, file: Option<&Path>) -> Result<(), Failure> {
    let json = || serde_json::to_string_pretty(report).context("cannot encode the result document");
    if let Some(path) = file {
        write_document(report, path)?;
    }
    match output {
        Output::Text => out!("{}", report.to_text()),
        Output::Json => out!("{}", json().map_err(Failure::Internal)?),
    }
    Ok(())
}

async fn validate(args: ValidateArgs) -> Result<ExitCode, Failure> {
    let (workflow, notes) = if args.schema_only {
        args.inputs.load(&args.file)?
    } else {
        let (file, plugins) = args.plugins.resolve(None)?;
        let (workflow, notes, ..) = load_against_registry(&args.file, &args.inputs, &plugins, &file).await?;
        (workflow, notes)
    };
    let levels = level_count(&workflow);
    let upcoming = upcoming_runs(&workflow);
    match args.output {
        Output::Json => {
            let notes: Vec<String> = notes.iter().map(ToString::to_string).collect();
            let mut verdict = serde_json::json!({ "valid": true, "file": args.file, "name": workflow.name, "tasks": workflow.tasks.len(), "levels": levels, "notes": notes });
            if let Some((spec, next)) = &upcoming {
                verdict["schedule"] =
                    serde_json::json!({ "id": spec.id, "cron": spec.cron, "timezone": spec.timezone, "next": next });
            }
            out!("{verdict}")
        }
        Output::Text => {
            out!(
                "{} is valid: workflow '{}', {} tasks in {levels} levels",
                args.file.display(),
                workflow.name,
                workflow.tasks.len()
            );
            for note in notes {
                out!("  note: {note}");
            }
            if let Some((spec, next)) = &upcoming {
                out!("  schedule {}: {} ({}); next runs {}", spec.id, spec.cron, spec.timezone, next.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A scheduled workflow's schedule and its next three due times.
fn upcoming_runs(workflow: &Workflow) -> Option<(&crate::schedule::Spec, Vec<String>)> {
    let spec = workflow.schedule.as_ref()?;
    let cadence = spec.cadence().ok()?;
    Some((spec, cadence.upcoming(std::time::SystemTime::now(), 3)))
}

fn level_count(workflow: &Workflow) -> usize {
    let ids: Vec<&str> = workflow.tasks.iter().map(|t| t.id.as_str()).collect();
    let dag =
        crate::resolver::Dag::from_ids(&ids, |t| workflow.tasks[t].dependencies.iter().map(String::as_str).collect());
    dag.levels().map_or(0, |l| l.len())
}

/// Load and validate `file` with its inputs, then check its protocols and
/// methods against the local plugins.
async fn load_against_registry(
    file: &Path,
    inputs: &InputArgs,
    plugins: &PluginDirs,
    config: &ConfigFile,
) -> Result<(Workflow, Vec<workflow::Problem>, Arc<Registry>, Arc<PluginSet>), Failure> {
    let (workflow, notes) = inputs.load(file)?;
    // A one-shot command compiles only the plugins its tasks call.
    let (registry, plugin_set) = load_plugins(plugins, config, CompileWhen::OnFirstCall).await?;
    workflow::check_catalog(&file.display().to_string(), &workflow, registry.as_ref())?;
    Ok((workflow, notes, registry, plugin_set))
}

/// The bundled plugins plus those in `dirs.plugins` (a plugin there that serves a
/// bundled protocol stands in for the bundled one), with the config's
/// manifest overrides; broken files are reported and skipped.
async fn load_plugins(
    dirs: &PluginDirs,
    config: &ConfigFile,
    compile: CompileWhen,
) -> Result<(Arc<Registry>, Arc<PluginSet>), Failure> {
    let runtime_config = RuntimeConfig { cache_dir: dirs.cache.clone(), compile, ..RuntimeConfig::default() };
    let runtime = Arc::new(WasmRuntime::new(runtime_config).map_err(|e| Failure::Internal(e.into()))?);
    let registry = Arc::new(Registry::new());
    let overrides = Overrides { manifests: config.manifests.clone(), policy: config.plugin_policy.clone() };
    let (plugins, problems) = PluginSet::load(runtime, registry.clone(), &dirs.plugins, overrides)
        .await
        .map_err(|e| Failure::Internal(e.into()))?;
    for problem in problems {
        eprintln!("warning: {problem}");
    }
    Ok((registry, plugins))
}
