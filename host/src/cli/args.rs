//! The command line's shape: every command, flag and environment variable
//! (clap). What the flags come to, with the settings file and defaults, is
//! `settings`'s; what the commands do is `serve`'s, `local`'s and the
//! other command modules'.

use crate::auth::{self, Role};
use crate::store::StoreSpec;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "gleitzeit", version, about = "Run workflows of tasks through WASM and remote providers")]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand)]
pub(super) enum Command {
    /// Run the host daemon: WASM and remote providers, clients over Socket.IO.
    Serve(ServeArgs),
    /// Run a workflow file once, in this process, with the local plugins.
    Run(RunArgs),
    /// Ask a model the same thing about every file of a directory (a
    /// generated workflow run here), and report each file's answer.
    Batch(BatchArgs),
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
    /// The hosts of the cluster (docs/cluster.md), or this host alone.
    #[command(subcommand)]
    Host(ListCommand),
    /// The host's WASM plugins, and new plugin projects.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Tokens: who may connect to the host, and what each may do.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Secrets (API keys) the host adds to plugins' outbound requests.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print the HTTP API's OpenAPI 3 document (what a daemon serves at
    /// /api/v1/openapi.json).
    Openapi,
}

#[derive(Subcommand)]
pub(super) enum WorkflowCommand {
    /// Check a workflow file without running it.
    Validate(ValidateArgs),
    /// Submit a workflow file to a running host.
    Submit {
        #[command(flatten)]
        args: SubmitArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A workflow's status: each task's state, attempts, timing and result
    /// (running or finished, also before the host's last restart).
    Status {
        workflow_id: String,
        /// Also write the full result document (JSON) to this file.
        #[arg(long)]
        output_file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A workflow's results: every task's whole result or error.
    Results {
        workflow_id: String,
        /// Also write the full result document (JSON) to this file.
        #[arg(long)]
        output_file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Running and recently finished workflows.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a running workflow.
    Cancel {
        workflow_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start a new workflow from a failed or cancelled one: its completed
    /// tasks keep their results, the others run again.
    Rerun {
        workflow_id: String,
        /// Run this task and every task after it again too (also of a
        /// completed workflow).
        #[arg(long)]
        from: Option<String>,
        /// Wait for the new run to finish and print its report.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub(super) enum ScheduleCommand {
    /// Hand a workflow file to a running host to start at the due times of
    /// its `schedule:` block (these options set or replace its fields).
    Add {
        #[command(flatten)]
        args: ScheduleArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The host's schedules: next and last due times, last run.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a schedule (the runs it started go on).
    Remove {
        schedule_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub(super) enum TaskCommand {
    /// Submit one task to a running host; it runs at once.
    Submit {
        #[command(flatten)]
        args: TaskArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub(super) enum PluginCommand {
    /// List the plugins a running host serves.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write a new plugin project (one method with typed params, a test, the
    /// build command in its README), with a copy of the language's SDK.
    New {
        /// The plugin's name; it serves NAME/v1.
        name: String,
        /// Rust, Python or JavaScript.
        #[arg(long, value_enum)]
        lang: super::scaffold::Language,
        /// Where to write it [default: ./NAME]; must be new or empty.
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(super) enum ListCommand {
    /// List them.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(clap::Args)]
pub(super) struct PluginArgs {
    /// Directory of extra plugins (NAME.wasm), served beside the bundled
    /// ones [default: DATA_DIR/plugins, e.g. ~/.local/share/gleitzeit/plugins].
    #[arg(long, env = "GLEITZEIT_PLUGINS")]
    pub(super) plugins: Option<PathBuf>,
    /// Settings file (TOML), with per-plugin `[manifests.NAME]` overrides;
    /// flags and GLEITZEIT_* variables win over it.
    #[arg(long, env = "GLEITZEIT_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Directory of compiled plugins kept between starts (delete it to
    /// clear it) [default: DATA_DIR/cache].
    #[arg(long, env = "GLEITZEIT_CACHE_DIR")]
    pub(super) cache_dir: Option<PathBuf>,
    /// Compile every plugin at every start and keep nothing.
    #[arg(long, env = "GLEITZEIT_NO_CACHE")]
    pub(super) no_cache: bool,
}

#[derive(clap::Args)]
pub(super) struct ServeArgs {
    /// Address to listen on (loopback unless you say otherwise).
    #[arg(long, env = "GLEITZEIT_LISTEN")]
    pub(super) listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub(super) plugins: PluginArgs,
    /// Tasks running at once across all workflows.
    #[arg(long, env = "GLEITZEIT_CONCURRENCY")]
    pub(super) concurrency: Option<u32>,
    /// Seconds running work may take to finish after SIGINT/SIGTERM.
    #[arg(long, env = "GLEITZEIT_GRACE")]
    pub(super) grace: Option<f64>,
    /// Where state is kept: sqlite:PATH, redis://HOST[:PORT][/DB] or memory
    /// [default: sqlite in the data directory].
    #[arg(long, env = "GLEITZEIT_STORE")]
    pub(super) store: Option<StoreSpec>,
    /// Share the store (Redis) with other hosts started so: any host serves
    /// any client, and the others take over a host's work when it dies
    /// (docs/cluster.md).
    #[arg(long, env = "GLEITZEIT_CLUSTER")]
    pub(super) cluster: bool,
    /// With --cluster: how long a host may go unheard before the others
    /// take over its work, e.g. 3s [default: 3s].
    #[arg(long, env = "GLEITZEIT_LEASE")]
    pub(super) lease: Option<humantime::Duration>,
    /// Directory of the default SQLite store [default: $XDG_DATA_HOME/gleitzeit
    /// or ~/.local/share/gleitzeit].
    #[arg(long, env = "GLEITZEIT_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// How long finished workflows and their results are kept, e.g. 7d, 12h
    /// [default: 7d].
    #[arg(long, env = "GLEITZEIT_RETENTION")]
    pub(super) retention: Option<humantime::Duration>,
    /// Whether connections must show a token [default: tokens]; `off` is
    /// for the original system's unmodified clients, on loopback only.
    #[arg(long, value_enum, env = "GLEITZEIT_AUTH")]
    pub(super) auth: Option<auth::Mode>,
    #[command(flatten)]
    pub(super) files: FilesArgs,
    /// Most tasks one workflow may have, its for_each items' included
    /// [default: 100000].
    #[arg(long, env = "GLEITZEIT_MAX_WORKFLOW_TASKS")]
    pub(super) max_workflow_tasks: Option<usize>,
    /// Most MB of params, results and items one workflow may hold
    /// [default: 128].
    #[arg(long, env = "GLEITZEIT_MAX_WORKFLOW_MB")]
    pub(super) max_workflow_mb: Option<usize>,
    /// Most event streams one client token may have open [default: 100].
    #[arg(long, env = "GLEITZEIT_MAX_STREAMS_PER_TOKEN")]
    pub(super) max_streams_per_token: Option<usize>,
    /// Most workflows one client token may have running [default: 1000].
    #[arg(long, env = "GLEITZEIT_MAX_WORKFLOWS_PER_TOKEN")]
    pub(super) max_workflows_per_token: Option<usize>,
    /// Most schedules one client token may keep, at most 950 [default: 100].
    #[arg(long, env = "GLEITZEIT_MAX_SCHEDULES_PER_TOKEN")]
    pub(super) max_schedules_per_token: Option<usize>,
    /// The shortest time a schedule may leave between two runs, e.g. 1m
    /// [default: 1s].
    #[arg(long, env = "GLEITZEIT_MIN_SCHEDULE_INTERVAL")]
    pub(super) min_schedule_interval: Option<humantime::Duration>,
}

#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// The workflow file (YAML or JSON).
    pub(super) file: PathBuf,
    #[command(flatten)]
    pub(super) inputs: InputArgs,
    #[command(flatten)]
    pub(super) plugins: PluginArgs,
    /// How to print the results.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(super) output: Output,
    /// Also write the full result document (JSON) to this file.
    #[arg(long)]
    pub(super) output_file: Option<PathBuf>,
    /// Tasks running at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(super) concurrency: u32,
    /// Per-attempt timeout (seconds) for tasks that set none [default: 300,
    /// or the settings file's].
    #[arg(long)]
    pub(super) default_timeout: Option<f64>,
    /// Record the run in a store (sqlite:PATH or redis://...), so `workflow
    /// status` of a daemon on that store shows it [default: memory, none].
    #[arg(long)]
    pub(super) store: Option<StoreSpec>,
    #[command(flatten)]
    pub(super) files: FilesArgs,
}

/// The directories `for_each: {files: …}` may read.
#[derive(clap::Args)]
pub(super) struct FilesArgs {
    /// A directory workflows may read files from, by name (repeatable):
    /// `for_each: {files: "*.md", dir: NAME}`.
    #[arg(long = "files-dir", value_name = "NAME=PATH")]
    pub(super) files_dirs: Vec<String>,
}

#[derive(clap::Args)]
pub(super) struct ValidateArgs {
    /// The workflow file (YAML or JSON).
    pub(super) file: PathBuf,
    #[command(flatten)]
    pub(super) inputs: InputArgs,
    #[command(flatten)]
    pub(super) plugins: PluginArgs,
    /// Skip the check that protocols and methods exist (for workflows meant
    /// for a daemon whose providers are not local).
    #[arg(long)]
    pub(super) schema_only: bool,
    /// How to print the verdict (problems still go to stderr).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(super) output: Output,
}

/// Values for a workflow's declared `inputs`.
#[derive(clap::Args)]
pub(super) struct InputArgs {
    /// A value for one of the workflow's inputs (repeatable); it is read by
    /// the input's declared type (`count=3`, `tags=["a","b"]`).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub(super) inputs: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Output {
    Text,
    Json,
}

#[derive(clap::Args)]
pub(super) struct BatchArgs {
    /// The directory whose files are asked about.
    pub(super) dir: PathBuf,
    /// Which files: a glob relative to DIR (`*.txt`, `**/*.md`).
    #[arg(long, default_value = "*")]
    pub(super) pattern: String,
    /// What to ask about each file; the file's text follows it.
    #[arg(long)]
    pub(super) prompt: String,
    /// The model [default: the llm plugin's, llama3 or llava with --vision].
    #[arg(long)]
    pub(super) model: Option<String>,
    /// The files are images: ask a vision model about each.
    #[arg(long)]
    pub(super) vision: bool,
    /// `markdown` or `json` on stdout, or a file to write the report to
    /// (`.json` for JSON, anything else Markdown).
    #[arg(long, default_value = "markdown")]
    pub(super) output: String,
    /// Files asked about at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(super) concurrency: u32,
    #[command(flatten)]
    pub(super) plugins: PluginArgs,
}

#[derive(clap::Args)]
pub(super) struct ServerArgs {
    /// The host's URL.
    #[arg(long, env = "GLEITZEIT_SERVER", default_value = "http://127.0.0.1:8000")]
    pub(super) server: String,
    /// The token to show the host [default: the local admin token a host
    /// on this machine wrote to DATA_DIR/token].
    #[arg(long, env = "GLEITZEIT_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
    /// Where to look for the local token [default: $XDG_DATA_HOME/gleitzeit
    /// or ~/.local/share/gleitzeit].
    #[arg(long, env = "GLEITZEIT_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// How to print the answer.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(super) output: Output,
}

#[derive(clap::Args)]
pub(super) struct SubmitArgs {
    /// The workflow file (YAML or JSON); validated here and again by the host.
    pub(super) file: PathBuf,
    #[command(flatten)]
    pub(super) inputs: InputArgs,
    /// Wait for the workflow to finish and print its results (exit 1 if it failed).
    #[arg(long)]
    pub(super) wait: bool,
    /// With --wait: also write the full result document (JSON) to this file.
    #[arg(long)]
    pub(super) output_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(super) struct ScheduleArgs {
    /// The workflow file (YAML or JSON).
    pub(super) file: PathBuf,
    /// The cron pattern: minute hour day month weekday, or six fields with
    /// seconds first ("0 7 * * *": every day at 07:00).
    #[arg(long)]
    pub(super) cron: Option<String>,
    /// The IANA time zone the pattern's hours are in [default: UTC].
    #[arg(long)]
    pub(super) timezone: Option<String>,
    /// The schedule's id [default: the workflow's id, or its name as an id].
    #[arg(long)]
    pub(super) id: Option<String>,
    /// A declared string input that gets each run's due time.
    #[arg(long)]
    pub(super) due_input: Option<String>,
    /// Values of the workflow's inputs for every run.
    #[command(flatten)]
    pub(super) inputs: InputArgs,
    /// Replace this token's schedule of the same id (it keeps its last due
    /// time, so no run starts twice).
    #[arg(long)]
    pub(super) replace: bool,
}

#[derive(clap::Args)]
pub(super) struct TaskArgs {
    #[arg(long)]
    pub(super) protocol: String,
    #[arg(long)]
    pub(super) method: String,
    /// The params as a JSON object.
    #[arg(long, default_value = "{}")]
    pub(super) params: String,
    /// Wait for the task to finish and print its result.
    #[arg(long)]
    pub(super) wait: bool,
}

#[derive(clap::Subcommand)]
pub(super) enum TokenCommand {
    /// Make a token; its secret is printed once (only a hash is kept).
    Create {
        /// A unique name: workflows submitted with the token belong to it.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// For provider tokens: a protocol it may serve (repeat for more).
        #[arg(long = "protocol")]
        protocols: Vec<String>,
        #[command(flatten)]
        dir: TokenPlace,
    },
    /// The tokens made with `token create` (names, roles, grants).
    List {
        #[command(flatten)]
        dir: TokenPlace,
    },
    /// Revoke a token: new connections with it are refused.
    Revoke {
        name: String,
        #[command(flatten)]
        dir: TokenPlace,
    },
}

#[derive(clap::Subcommand)]
pub(super) enum SecretCommand {
    /// Keep a secret. Its value is read from stdin (not echoed when typed),
    /// never from the command line, where other users could see it.
    Set {
        name: String,
        #[command(flatten)]
        place: SecretPlace,
    },
    /// The host's secrets by name, and where each is kept; never a value.
    List {
        #[command(flatten)]
        place: SecretPlace,
    },
    /// Remove a secret kept with `secret set`.
    Rm {
        name: String,
        #[command(flatten)]
        place: SecretPlace,
    },
}

/// Where a host's secrets are: its data directory, and the references of
/// its settings file.
#[derive(clap::Args)]
pub(super) struct SecretPlace {
    /// The host's data directory [default: $XDG_DATA_HOME/gleitzeit or
    /// ~/.local/share/gleitzeit].
    #[arg(long, env = "GLEITZEIT_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// The settings file, whose `[secrets]` refer to values kept elsewhere.
    #[arg(long, env = "GLEITZEIT_CONFIG")]
    pub(super) config: Option<PathBuf>,
}

/// Where tokens are kept: a host's data directory, or the store a cluster
/// shares.
#[derive(clap::Args)]
pub(super) struct TokenPlace {
    /// The host's data directory [default: $XDG_DATA_HOME/gleitzeit or
    /// ~/.local/share/gleitzeit].
    #[arg(long, env = "GLEITZEIT_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// The tokens every host of the cluster on this store accepts
    /// (redis://…) instead of one host's (docs/cluster.md).
    #[arg(long)]
    pub(super) store: Option<StoreSpec>,
}
