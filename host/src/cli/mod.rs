//! The `gleitzeit` command line.
//!
//! Exit codes: 0 every task completed (or the file is valid), 1 the workflow
//! failed, 2 invalid input or usage. Errors print as one readable paragraph on
//! stderr. Output goes through [`out!`]: a reader that stops reading
//! (`| head`) ends the command quietly. This module wires the library
//! together; it holds no engine logic. The commands' shape is `args`'s,
//! what their flags come to `settings`'s; `serve` runs the daemon, `local`
//! runs and validates workflows here, the rest talk to a daemon (`remote`)
//! or manage tokens (`token`) and plugin projects (`scaffold`).

/// `println!` for a command's output, without the panic when stdout is a
/// pipe its reader closed: the command ends then, with exit code 0.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*)) };
}

mod args;
mod batch;
mod local;
mod remote;
mod scaffold;
mod secret;
mod serve;
mod settings;
mod token;

use args::{Cli, Command, ListCommand, PluginCommand, ScheduleCommand, TaskCommand, WorkflowCommand};
pub use settings::check_settings_text;

use crate::workflow::WorkflowError;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// Write one line of output (see [`out!`]).
pub(crate) fn write_out(line: std::fmt::Arguments) {
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
            Command::Serve(args) => serve::serve(args).await,
            Command::Run(args) => local::run(args).await,
            Command::Batch(args) => batch::run(args).await,
            Command::Workflow(WorkflowCommand::Validate(args)) => local::validate(args).await,
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
            Command::Workflow(WorkflowCommand::Rerun { workflow_id, from, wait, server }) => {
                remote::rerun(&server, &workflow_id, from.as_deref(), wait).await
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
            Command::Host(ListCommand::List { server }) => {
                let columns = ["host_id", "status", "address", "last_seen", "epoch", "running", "providers"];
                remote::list(&server, "list_hosts", "hosts", &columns).await
            }
            Command::Token(command) => token::run(command),
            Command::Secret(command) => secret::run(command),
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
            Command::Plugin(PluginCommand::List { server }) => remote::plugins(&server).await,
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
