//! What `serve`'s and the other commands' flags come to: each setting from
//! its flag (or `GLEITZEIT_*` variable), else the settings file, else its
//! default, checked against its documented bounds; the settings file
//! itself; the data directory; the open-file limit.

use super::Failure;
use super::args::{FilesArgs, InputArgs, PluginArgs, ServeArgs};
use crate::auth;
use crate::engine::WorkflowLimits;
use crate::model::Workflow;
use crate::plugins::{Manifest, PluginPolicy, RuntimeConfig};
use crate::secrets::{SecretBook, SecretRef};
use crate::store::{Store, StoreSpec};
use crate::workflow::{self};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where plugins come from, where their compiled forms are kept, and the
/// secrets their manifests' headers may name.
pub(super) struct PluginDirs {
    pub(super) plugins: PathBuf,
    pub(super) cache: Option<PathBuf>,
    pub(super) secrets: Arc<SecretBook>,
}

impl PluginArgs {
    /// The settings file (empty without one) and the plugins directory: the
    /// flag's, else the file's, else `plugins` in the data directory (never
    /// one relative to wherever the command happens to start).
    pub(super) fn resolve(&self, data_dir_flag: Option<&Path>) -> Result<(ConfigFile, PluginDirs), Failure> {
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
        let secrets = SecretBook::new(data_dir(data_dir_flag, &file).as_deref(), file.secrets.clone())
            .map_err(|e| Failure::Input(anyhow::anyhow!("[secrets] of the settings file: {e}")))?;
        Ok((file, PluginDirs { plugins, cache, secrets: Arc::new(secrets) }))
    }
}

/// `gleitzeit.toml`: the same settings as the `serve` flags, plus plugin
/// manifest overrides (`[manifests.NAME]`, the keys of `NAME.toml`).
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) listen: Option<std::net::SocketAddr>,
    pub(super) plugins: Option<PathBuf>,
    pub(super) concurrency: Option<u32>,
    pub(super) grace: Option<f64>,
    pub(super) default_timeout: Option<f64>,
    pub(super) store: Option<String>,
    pub(super) cluster: Option<bool>,
    pub(super) lease: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) retention: Option<String>,
    pub(super) max_workflow_tasks: Option<usize>,
    pub(super) max_workflow_mb: Option<usize>,
    pub(super) max_streams_per_token: Option<usize>,
    pub(super) max_workflows_per_token: Option<usize>,
    pub(super) max_schedules_per_token: Option<usize>,
    pub(super) min_schedule_interval: Option<String>,
    #[serde(default)]
    pub(super) manifests: std::collections::BTreeMap<String, Manifest>,
    /// Rate limits of protocols, shared by all their providers
    /// (`[rate_limits."llm/v1"] requests_per_minute = 300`).
    #[serde(default)]
    pub(super) rate_limits: std::collections::BTreeMap<String, crate::rate::RateLimit>,
    /// Secrets kept outside the data directory, by reference
    /// (docs/security.md).
    #[serde(default)]
    pub(super) secrets: std::collections::BTreeMap<String, SecretRef>,
    /// The most a plugin's own `NAME.toml` may grant (docs/security.md).
    #[serde(default)]
    pub(super) plugin_policy: PluginPolicy,
    #[serde(default)]
    pub(super) auth: AuthSettings,
    /// Where it was read from, for error messages.
    #[serde(skip)]
    pub(super) path: Option<PathBuf>,
}

impl ConfigFile {
    pub(super) fn load(path: Option<&Path>) -> Result<Self, Failure> {
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
    pub(super) fn check(&self) -> Result<(), String> {
        let defaults = RuntimeConfig::default().default_grants();
        for (name, manifest) in &self.manifests {
            Manifest::default()
                .overlay(manifest)
                .grants(&defaults)
                .map_err(|reason| format!("[manifests.{name}]: {reason}"))?;
        }
        self.plugin_policy.check().map_err(|reason| format!("[plugin_policy]: {reason}"))?;
        for (protocol, limit) in &self.rate_limits {
            if !crate::ids::is_protocol(protocol) {
                return Err(format!(
                    "[rate_limits.\"{}\"]: not a protocol (name/version)",
                    crate::text::excerpt(protocol)
                ));
            }
            limit.check().map_err(|reason| format!("[rate_limits.\"{protocol}\"]: {reason}"))?;
        }
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
pub(super) struct AuthSettings {
    pub(super) mode: Option<auth::Mode>,
    /// Browser origins allowed besides the host's own loopback pages.
    #[serde(default)]
    pub(super) allowed_origins: Vec<String>,
    /// Protocols of WASM plugins remote providers may serve as well.
    #[serde(default)]
    pub(super) remote_may_serve: Vec<String>,
    /// Tokens (hashes only) besides those of `DATA_DIR/tokens.toml`.
    #[serde(default)]
    pub(super) tokens: Vec<auth::TokenEntry>,
}

impl AuthSettings {
    pub(super) fn check(&self) -> Result<(), String> {
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

impl FilesArgs {
    /// The named directories, plus (for `run`) the workflow file's own as
    /// `workflow` and the one it runs in as `cwd` (the original's files
    /// name paths relative to that).
    pub(super) fn dirs(&self, workflow_file: Option<&Path>) -> Result<Arc<crate::files::FileDirs>, Failure> {
        let mut dirs = crate::files::FileDirs::default();
        let input = |e: crate::files::FilesError| Failure::Input(e.into());
        if let Some(file) = workflow_file {
            let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            dirs.allow(crate::files::WORKFLOW_DIR, parent).map_err(input)?;
            dirs.allow(crate::files::WORKING_DIR, Path::new(".")).map_err(input)?;
        }
        for flag in &self.files_dirs {
            dirs.allow_flag(flag).map_err(input)?;
        }
        Ok(Arc::new(dirs))
    }
}

impl InputArgs {
    pub(super) fn values(&self) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
        workflow::inputs::from_pairs(&self.inputs).map_err(|e| Failure::Input(anyhow::anyhow!("--input {e}")))
    }

    /// Read and validate `file`, its inputs bound to these values; with
    /// notes on what was read from the original's dialect.
    pub(super) fn load(&self, file: &Path) -> Result<(Workflow, Vec<workflow::Problem>), Failure> {
        let (mut workflow, notes) = workflow::load_noted(file)?;
        workflow::inputs::bind(&file.display().to_string(), &mut workflow, self.values()?)?;
        Ok((workflow, notes))
    }
}

/// The ranges of the settings that feed time arithmetic: beyond them a sum
/// like `Instant::now() + grace` could overflow (and panic), and no real
/// use needs more. Documented in the README.
pub(super) const MAX_GRACE_SECS: f64 = 86_400.0;

pub(super) const MAX_DEFAULT_TIMEOUT_SECS: f64 = 7.0 * 86_400.0;

pub(super) const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Most tasks running at once (`--concurrency`).
pub(super) const MAX_CONCURRENCY: u32 = 100_000;

/// `value` seconds, more than 0 and at most `max`.
pub(super) fn seconds(name: &str, value: f64, max: f64) -> Result<Duration, Failure> {
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
pub(super) fn event_streams_that_fit() -> usize {
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

/// Who the daemon accepts: tokens (the local admin token, made on the first
/// start, and the configured and created ones) unless `auth` is `off`, which
/// is refused on anything but loopback. (The settings were checked when the
/// file was read.)
pub(super) fn auth_policy(
    args: &ServeArgs,
    file: &ConfigFile,
    listen: std::net::SocketAddr,
) -> Result<auth::Policy, Failure> {
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
pub(super) fn is_origin(text: &str) -> bool {
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    rest.is_some_and(|rest| !rest.is_empty() && !rest.trim_end_matches('/').contains(['/', '?', '#', ' ']))
}

/// The store `serve` uses: the flag's, else the file's, else SQLite in the
/// data directory.
pub(super) fn store_spec(args: &ServeArgs, file: &ConfigFile) -> Result<StoreSpec, Failure> {
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
pub(super) fn data_dir(flag: Option<&Path>, file: &ConfigFile) -> Option<PathBuf> {
    flag.map(Path::to_owned).or_else(|| file.data_dir.clone()).or_else(default_data_dir)
}

/// `$XDG_DATA_HOME/gleitzeit`, else `~/.local/share/gleitzeit`.
pub(super) fn default_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = xdg.or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))?;
    Some(base.join("gleitzeit"))
}

/// `min_schedule_interval`: the flag's, else the file's, else one second;
/// at most a day.
pub(super) fn min_schedule_interval(args: &ServeArgs, file: &ConfigFile) -> Result<Duration, Failure> {
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
pub(super) fn quota(name: &str, flag: Option<usize>, file: Option<usize>) -> Result<Option<usize>, Failure> {
    match flag.or(file) {
        Some(n) if !(1..=1_000_000).contains(&n) => {
            Err(Failure::Input(anyhow::anyhow!("{name} must be from 1 to 1000000, got {n}")))
        }
        other => Ok(other),
    }
}

/// Schedules one client token may keep: at most what the host keeps for
/// tokens that are not admins.
pub(super) fn schedules_per_token(args: &ServeArgs, file: &ConfigFile) -> Result<usize, Failure> {
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
pub(super) fn workflow_limits(args: &ServeArgs, file: &ConfigFile) -> Result<WorkflowLimits, Failure> {
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

pub(super) fn retention(args: &ServeArgs, file: &ConfigFile) -> Result<Duration, Failure> {
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
pub(super) fn open_store(spec: &StoreSpec, data_dir: Option<&Path>) -> Result<Option<Arc<dyn Store>>, Failure> {
    spec.open(&data_dir_or_here(data_dir))
        .map_err(|e| Failure::Input(anyhow::anyhow!("{e}; not starting over a store that cannot be read")))
}

pub(super) fn data_dir_or_here(data_dir: Option<&Path>) -> PathBuf {
    data_dir.map(Path::to_owned).or_else(default_data_dir).unwrap_or_else(|| PathBuf::from("."))
}

/// With `--cluster` (or `cluster = true`): join the cluster on the shared
/// store with the lease the flag or file sets (from 1 s to 1 min).
pub(super) fn join_cluster(
    args: &ServeArgs,
    file: &ConfigFile,
    spec: &StoreSpec,
    data_dir: Option<&Path>,
) -> Result<Option<crate::store::redis::cluster::Cluster>, Failure> {
    use crate::store::redis::cluster::{DEFAULT_LEASE, MAX_LEASE, MIN_LEASE};
    if !(args.cluster || file.cluster == Some(true)) {
        if args.lease.is_some() {
            return Err(Failure::Input(anyhow::anyhow!("--lease is for hosts started with --cluster")));
        }
        return Ok(None);
    }
    let lease = match (args.lease, &file.lease) {
        (Some(d), _) => d.into(),
        (None, Some(text)) => humantime::parse_duration(text)
            .map_err(|e| Failure::Input(anyhow::anyhow!("invalid config file: lease '{text}': {e}")))?,
        (None, None) => DEFAULT_LEASE,
    };
    if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
        return Err(Failure::Input(anyhow::anyhow!(
            "the lease must be from {} to {}, got {}",
            humantime::format_duration(MIN_LEASE),
            humantime::format_duration(MAX_LEASE),
            humantime::format_duration(lease)
        )));
    }
    spec.open_cluster(&data_dir_or_here(data_dir), lease)
        .map(Some)
        .map_err(|e| Failure::Input(anyhow::anyhow!("{e}; not joining the cluster")))
}
