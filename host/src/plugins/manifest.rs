//! `NAME.toml` beside `NAME.wasm`: what a plugin is granted and its limits.
//! Deny by default: without a manifest a plugin gets the runtime's defaults,
//! no configuration and no outbound access.
//!
//! ```toml
//! allowed_hosts = ["http://127.0.0.1:11434"]  # what http-fetch may reach (default: nothing)
//! read_dirs = ["/srv/images"]                 # directories it may read, read-only (default: none)
//! max_response_bytes = 1048576                # largest http-fetch response (default 16 MiB)
//! memory_mb = 128          # linear memory per call (default 64)
//! timeout_s = 30           # longest call, whatever the task asks (default: the task's)
//! max_concurrency = 16     # calls at once (default: the runtime's instance limit)
//!
//! protocol = "llm-remote/v1"  # serve under this protocol instead of its own
//! rate_limit = { requests_per_minute = 300, tokens_per_minute = 90000 }  # (default: none)
//! uncacheable = ["list_models"]  # methods whose results `cache: {ttl}` never reuses
//! enabled = false          # bundled plugins only: not loaded (default true)
//! bundled = "openai"       # only in the host config's [manifests.NAME]: NAME is
//!                          # another instance of that bundled plugin
//!
//! [headers."https://api.openai.com"]   # headers the host adds for a granted origin
//! Authorization = "Bearer {secret:openai}"  # (see credentials; the plugin never sees the value)
//!
//! [config]                 # values the plugin reads with config("key")
//! model = "llama3"         # tables and arrays arrive as JSON text
//!
//! [mcp_stdio.files]        # an MCP server the host runs and bridges (see mcp_bridge);
//!                          # only in the host config's [manifests.NAME]
//! command = ["npx", "@modelcontextprotocol/server-filesystem", "/srv/data"]
//! ```
//!
//! The host's config file may override any of these per plugin
//! (`[manifests.NAME]`); see [`Manifest::overlay`]. Only there may
//! `mcp_stdio` appear: a file dropped into the plugins directory must never
//! start a process on the host ([`Manifest::read_dropped`]); and a dropped
//! file's `headers` may name only the secrets `[plugin_policy] secrets`
//! lists.

use super::credentials::{Credentials, HostHeader};
use super::grants::{Grants, StdioServer};
use super::origins::HostPattern;
use super::outbound::{DEFAULT_MAX_RESPONSE_BYTES, Outbound};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAX_MEMORY_MB: u32 = 4096;
/// The longest `timeout_s`: one day.
const MAX_TIMEOUT_S: f64 = 86_400.0;
/// The largest `max_response_bytes`: 1 GiB.
const MAX_RESPONSE_BYTES: u64 = 1 << 30;
/// The most memory a manifest may grant, in bytes.
pub const MAX_MEMORY_BYTES: usize = MAX_MEMORY_MB as usize * 1024 * 1024;

/// What the host's settings file says about plugins: per-plugin manifests
/// (`[manifests.NAME]`, laid over the plugin's own `NAME.toml`, and trusted:
/// they are the operator's) and the policy that bounds what a plugin's own
/// `NAME.toml` may grant (`[plugin_policy]`).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub manifests: BTreeMap<String, Manifest>,
    pub policy: PluginPolicy,
}

impl Overrides {
    pub fn get(&self, plugin: &str) -> Option<&Manifest> {
        self.manifests.get(plugin)
    }

    pub fn contains_key(&self, plugin: &str) -> bool {
        self.manifests.contains_key(plugin)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.manifests.keys()
    }
}

/// `[plugin_policy]`: the most a `NAME.toml` dropped into the plugins
/// directory may grant its plugin. Anything beyond is refused, naming the
/// grant and the line that would allow it. The defaults grant no host and
/// no directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginPolicy {
    /// Patterns the manifests' `allowed_hosts` entries must fall within.
    allowed_hosts: Vec<String>,
    /// Directories the manifests' `read_dirs` must be inside.
    read_dirs: Vec<PathBuf>,
    /// Secrets the manifests' `headers` may name.
    secrets: Vec<String>,
    max_memory_mb: u32,
    max_timeout_s: f64,
    max_response_bytes: u64,
}

impl Default for PluginPolicy {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            read_dirs: Vec::new(),
            secrets: Vec::new(),
            max_memory_mb: 256,
            max_timeout_s: 300.0,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES as u64,
        }
    }
}

impl PluginPolicy {
    /// Check the policy itself (at start, naming the table).
    pub fn check(&self) -> Result<(), String> {
        for (i, text) in self.allowed_hosts.iter().enumerate() {
            text.parse::<HostPattern>().map_err(|e| format!("allowed_hosts[{i}]: {e}"))?;
        }
        if let Some(dir) = self.read_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(format!("read_dirs: '{}' must be an absolute path", dir.display()));
        }
        if !(1..=MAX_MEMORY_MB).contains(&self.max_memory_mb) {
            return Err(format!("max_memory_mb must be from 1 to {MAX_MEMORY_MB}, got {}", self.max_memory_mb));
        }
        if !(self.max_timeout_s > 0.0 && self.max_timeout_s <= MAX_TIMEOUT_S) {
            return Err(format!(
                "max_timeout_s must be more than 0 and at most {MAX_TIMEOUT_S}, got {}",
                self.max_timeout_s
            ));
        }
        if !(1..=MAX_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(format!(
                "max_response_bytes must be from 1 to {MAX_RESPONSE_BYTES}, got {}",
                self.max_response_bytes
            ));
        }
        Ok(())
    }

    fn covers_host(&self, asked: &HostPattern) -> bool {
        self.allowed_hosts.iter().filter_map(|p| p.parse::<HostPattern>().ok()).any(|p| p.covers(asked))
    }

    fn covers_dir(&self, asked: &Path) -> bool {
        let Ok(asked) = asked.canonicalize() else { return true }; // `grants` reports a missing directory
        self.read_dirs.iter().filter_map(|d| d.canonicalize().ok()).any(|allowed| asked.starts_with(allowed))
    }
}

/// The manifest as written; unknown keys are errors.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    allowed_hosts: Option<Vec<String>>,
    /// Per origin pattern: header name and value template.
    headers: Option<BTreeMap<String, BTreeMap<String, String>>>,
    mcp_stdio: Option<BTreeMap<String, StdioServer>>,
    read_dirs: Option<Vec<PathBuf>>,
    max_response_bytes: Option<u64>,
    memory_mb: Option<u32>,
    timeout_s: Option<f64>,
    max_concurrency: Option<u32>,
    protocol: Option<String>,
    enabled: Option<bool>,
    bundled: Option<String>,
    rate_limit: Option<crate::rate::RateLimit>,
    uncacheable: Option<Vec<String>>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
}

impl Manifest {
    /// Read `path` if it exists (no file: the defaults).
    pub fn read(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read it: {e}")),
        }
    }

    /// Read a manifest from the plugins directory, which may not name
    /// commands: those come only from the host's settings file.
    pub fn read_dropped(path: &Path, plugin: &str) -> Result<Self, String> {
        let manifest = Self::read(path)?;
        if manifest.enabled.is_some() {
            return Err(format!(
                "enabled: only bundled plugins are switched on and off; to stop serving {plugin}, remove {plugin}.wasm"
            ));
        }
        if let Some(of) = &manifest.bundled {
            return Err(format!(
                "bundled = '{of}': instances of bundled plugins are the operator's; put it under [manifests.{plugin}] in gleitzeit.toml"
            ));
        }
        match manifest.mcp_stdio.as_ref().and_then(|servers| servers.keys().next()) {
            Some(server) => Err(format!(
                "[mcp_stdio.{server}] asks the host to run a command, and a file in the plugins directory may not; commands come only from the host's settings file: put it under [manifests.{plugin}.mcp_stdio.{server}] in gleitzeit.toml"
            )),
            None => Ok(manifest),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }

    /// This manifest with `over`'s settings on top: each setting `over`
    /// gives replaces this one's, `[config]` keys one by one.
    pub fn overlay(mut self, over: &Manifest) -> Manifest {
        self.allowed_hosts = over.allowed_hosts.clone().or(self.allowed_hosts);
        // Headers belong to the hosts they were written for: an override
        // that names other hosts names their headers too.
        self.headers = match (&over.headers, &over.allowed_hosts) {
            (Some(headers), _) => Some(headers.clone()),
            (None, Some(_)) => None,
            (None, None) => self.headers,
        };
        self.read_dirs = over.read_dirs.clone().or(self.read_dirs);
        if let Some(servers) = &over.mcp_stdio {
            self.mcp_stdio.get_or_insert_default().extend(servers.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.max_response_bytes = over.max_response_bytes.or(self.max_response_bytes);
        self.memory_mb = over.memory_mb.or(self.memory_mb);
        self.timeout_s = over.timeout_s.or(self.timeout_s);
        self.max_concurrency = over.max_concurrency.or(self.max_concurrency);
        self.protocol = over.protocol.clone().or(self.protocol);
        self.enabled = over.enabled.or(self.enabled);
        self.rate_limit = over.rate_limit.or(self.rate_limit);
        self.uncacheable = over.uncacheable.clone().or(self.uncacheable);
        self.config.extend(over.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// Refuse what this manifest (a plugin's own `NAME.toml`) grants beyond
    /// the operator's `[plugin_policy]`. Settings the host config's
    /// `[manifests.NAME]` gives instead are the operator's and not checked.
    pub fn within(&self, overrides: &Overrides, plugin: &str) -> Result<(), String> {
        let policy = &overrides.policy;
        let operator = overrides.get(plugin).cloned().unwrap_or_default();
        let beyond = |asked: String, policy_line: String, own_line: String| {
            Err(format!(
                "{asked} is beyond the host's plugin policy; allow it for every plugin with {policy_line} under [plugin_policy] in the host config, or for this one with {own_line} under [manifests.{plugin}]"
            ))
        };
        let hosts = self.allowed_hosts.as_ref().filter(|_| operator.allowed_hosts.is_none());
        for (i, text) in hosts.into_iter().flatten().enumerate() {
            let Ok(asked) = text.parse::<HostPattern>() else { continue }; // `grants` reports it
            if !policy.covers_host(&asked) {
                let line = format!("allowed_hosts = [\"{text}\"]");
                return beyond(format!("allowed_hosts[{i}] '{text}'"), line.clone(), line);
            }
        }
        let headers = self.headers.as_ref().filter(|_| operator.headers.is_none());
        for (pattern, values) in headers.into_iter().flatten() {
            for (name, template) in values {
                let Ok(template) = template.parse::<crate::secrets::Template>() else { continue }; // `grants` reports it
                if let Some(secret) = template.names().find(|s| !policy.secrets.iter().any(|p| p == s)) {
                    let line = format!("secrets = [\"{secret}\"]");
                    let own = format!("[manifests.{plugin}.headers.\"{pattern}\"] {name} = \"{template}\"");
                    return Err(format!(
                        "headers.\"{pattern}\".{name} names secret '{secret}', which is beyond the host's plugin policy; allow it for every plugin with {line} under [plugin_policy] in the host config, or give this plugin the header there with {own}"
                    ));
                }
            }
        }
        let dirs = self.read_dirs.as_ref().filter(|_| operator.read_dirs.is_none());
        for (i, dir) in dirs.into_iter().flatten().enumerate() {
            if !policy.covers_dir(dir) {
                let line = format!("read_dirs = [\"{}\"]", dir.display());
                return beyond(format!("read_dirs[{i}] '{}'", dir.display()), line.clone(), line);
            }
        }
        if let (Some(mb), None) = (self.memory_mb, operator.memory_mb)
            && mb > policy.max_memory_mb
        {
            return beyond(format!("memory_mb = {mb}"), format!("max_memory_mb = {mb}"), format!("memory_mb = {mb}"));
        }
        if let (Some(s), None) = (self.timeout_s, operator.timeout_s)
            && s > policy.max_timeout_s
        {
            return beyond(format!("timeout_s = {s}"), format!("max_timeout_s = {s}"), format!("timeout_s = {s}"));
        }
        if let (Some(n), None) = (self.max_response_bytes, operator.max_response_bytes)
            && n > policy.max_response_bytes
        {
            let line = format!("max_response_bytes = {n}");
            return beyond(line.clone(), line.clone(), line);
        }
        Ok(())
    }

    /// This manifest with the override for plugin `name`, if there is one.
    pub fn overlay_from(self, overrides: &Overrides, name: &str) -> Manifest {
        match overrides.get(name) {
            Some(over) => self.overlay(over),
            None => self,
        }
    }

    /// The bundled plugin this names an instance of (`bundled`).
    pub fn bundled_plugin(&self) -> Option<&str> {
        self.bundled.as_deref()
    }

    /// This manifest, switched on (an instance of a bundled plugin is on
    /// whatever its plugin's built-in manifest says; its own may say off).
    pub fn switched_on(mut self) -> Self {
        self.enabled = Some(true);
        self
    }

    /// Whether a bundled plugin is loaded (`enabled`, default true).
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// The grants, checked against the runtime's limits.
    pub fn grants(self, defaults: &Grants) -> Result<Grants, String> {
        let outbound = self.outbound(&defaults.outbound)?;
        let read_dirs = self.read_dirs()?;
        let mcp_stdio = self.mcp_stdio.clone().unwrap_or_default();
        if let Some(bad) = self.protocol.as_deref().filter(|p| !crate::ids::is_protocol(p)) {
            return Err(format!("protocol '{}' is not of the form name/version", crate::text::excerpt(bad)));
        }
        let protocol = self.protocol.clone();
        let rate_limit = self.rate_limit.unwrap_or_default();
        rate_limit.check().map_err(|e| format!("rate_limit: {e}"))?;
        for (name, server) in &mcp_stdio {
            server.check(name)?;
        }
        let memory_limit = match self.memory_mb {
            Some(mb) if mb == 0 || mb > MAX_MEMORY_MB => {
                return Err(format!("memory_mb must be from 1 to {MAX_MEMORY_MB}, got {mb}"));
            }
            Some(mb) => mb as usize * 1024 * 1024,
            None => defaults.memory_limit,
        };
        let timeout = match self.timeout_s {
            Some(s) => Some(
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero() && d.as_secs_f64() <= MAX_TIMEOUT_S)
                    .ok_or_else(|| format!("timeout_s must be more than 0 and at most {MAX_TIMEOUT_S}, got {s}"))?,
            ),
            None => defaults.timeout,
        };
        let max_concurrency = match self.max_concurrency {
            Some(n) if n == 0 || n as usize > defaults.max_concurrency => {
                return Err(format!("max_concurrency must be from 1 to {}, got {n}", defaults.max_concurrency));
            }
            Some(n) => n as usize,
            None => defaults.max_concurrency,
        };
        let config = self
            .config
            .into_iter()
            .map(|(key, value)| match value {
                toml::Value::String(s) => Ok((key, s)),
                // Tables and arrays reach the plugin as JSON text.
                other @ (toml::Value::Table(_) | toml::Value::Array(_)) => serde_json::to_string(&other)
                    .map(|json| (key.clone(), json))
                    .map_err(|e| format!("config.{key} cannot be passed on as JSON: {e}")),
                other => Ok((key, other.to_string())),
            })
            .collect::<Result<_, String>>()?;
        Ok(Grants {
            config,
            memory_limit,
            timeout,
            max_concurrency,
            outbound,
            read_dirs,
            mcp_stdio,
            protocol,
            rate_limit,
            uncacheable: self.uncacheable.clone().unwrap_or_default(),
        })
    }

    /// Directories the plugin may read, each checked to exist now.
    fn read_dirs(&self) -> Result<Vec<PathBuf>, String> {
        let check = |(i, dir): (usize, &PathBuf)| {
            if !dir.is_absolute() {
                return Err(format!("read_dirs[{i}]: '{}' must be an absolute path", dir.display()));
            }
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(dir.clone()),
                Ok(_) => Err(format!("read_dirs[{i}]: '{}' is not a directory", dir.display())),
                Err(e) => Err(format!("read_dirs[{i}]: '{}': {e}", dir.display())),
            }
        };
        self.read_dirs.iter().flatten().enumerate().map(check).collect()
    }

    fn outbound(&self, defaults: &Outbound) -> Result<Outbound, String> {
        let allowed = self
            .allowed_hosts
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, text)| text.parse::<HostPattern>().map_err(|e| format!("allowed_hosts[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let max_response_bytes = match self.max_response_bytes {
            Some(n) if n == 0 || n > MAX_RESPONSE_BYTES => {
                return Err(format!("max_response_bytes must be from 1 to {MAX_RESPONSE_BYTES}, got {n}"));
            }
            Some(n) => n as usize,
            None => DEFAULT_MAX_RESPONSE_BYTES,
        };
        let headers = self.headers(&allowed)?;
        Outbound::new(allowed, max_response_bytes, Credentials::new(headers, defaults.credentials().book().clone()))
    }

    /// The `headers` table, each origin within `allowed`.
    fn headers(&self, allowed: &[HostPattern]) -> Result<Vec<HostHeader>, String> {
        let mut headers = Vec::new();
        for (text, values) in self.headers.iter().flatten() {
            let pattern = text.parse::<HostPattern>().map_err(|e| format!("headers.\"{text}\": {e}"))?;
            if !allowed.iter().any(|a| a.covers(&pattern)) {
                return Err(format!("headers.\"{text}\": the plugin may not reach it; add it to allowed_hosts first"));
            }
            for (name, template) in values {
                let header = HostHeader::from_manifest(pattern.clone(), name, template)
                    .map_err(|e| format!("headers.\"{text}\": {e}"))?;
                headers.push(header);
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Grants {
        Grants {
            config: BTreeMap::new(),
            memory_limit: 64 << 20,
            timeout: None,
            max_concurrency: 1000,
            outbound: Outbound::deny_all(Default::default()),
            read_dirs: Vec::new(),
            mcp_stdio: BTreeMap::new(),
            protocol: None,
            rate_limit: Default::default(),
            uncacheable: Vec::new(),
        }
    }

    #[test]
    fn grants_follow_the_manifest() {
        let m = Manifest::parse(
            "memory_mb = 128\ntimeout_s = 2.5\nmax_concurrency = 4\n[config]\nmodel = \"llama3\"\nretries = 3\n",
        )
        .unwrap();
        let g = m.grants(&defaults()).unwrap();
        assert_eq!(g.memory_limit, 128 << 20);
        assert_eq!(g.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(g.max_concurrency, 4);
        assert_eq!(g.config.get("model").map(String::as_str), Some("llama3"));
        assert_eq!(g.config.get("retries").map(String::as_str), Some("3"));
        let none = Manifest::default().grants(&defaults()).unwrap();
        assert_eq!((none.memory_limit, none.timeout, none.config.len()), (64 << 20, None, 0));
        assert!(none.outbound.allowed().is_empty(), "nothing granted by default");
        assert_eq!(none.outbound.max_response_bytes(), DEFAULT_MAX_RESPONSE_BYTES);
    }

    #[test]
    fn a_dropped_manifest_may_not_switch_plugins_or_make_instances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        for (text, refused) in [
            ("enabled = true\n", "enabled: only bundled plugins are switched on and off"),
            ("bundled = \"openai\"\n", "bundled = 'openai': instances of bundled plugins are the operator's"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Manifest::read_dropped(&path, "p").unwrap_err();
            assert!(error.starts_with(refused), "{error}");
        }
    }

    #[test]
    fn outbound_grants_are_parsed() {
        let m = Manifest::parse(
            "allowed_hosts = [\"http://127.0.0.1:11434\", \"https://*.example.com\"]\nmax_response_bytes = 4096\n",
        )
        .unwrap();
        let g = m.grants(&defaults()).unwrap();
        let allowed: Vec<String> = g.outbound.allowed().iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["http://127.0.0.1:11434", "https://*.example.com"]);
        assert_eq!(g.outbound.max_response_bytes(), 4096);
    }

    #[test]
    fn the_host_config_overrides_setting_by_setting() {
        let file = Manifest::parse("memory_mb = 128\ntimeout_s = 5\n[config]\nmodel = \"a\"\nurl = \"u\"\n").unwrap();
        let over =
            Manifest::parse("timeout_s = 9\nallowed_hosts = [\"http://h:1\"]\n[config]\nmodel = \"b\"\n").unwrap();
        let g = file.overlay(&over).grants(&defaults()).unwrap();
        assert_eq!((g.memory_limit, g.timeout), (128 << 20, Some(Duration::from_secs(9))));
        assert_eq!(g.config.get("model").map(String::as_str), Some("b"));
        assert_eq!(g.config.get("url").map(String::as_str), Some("u"));
        assert_eq!(g.outbound.allowed().len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let e = Manifest::parse("memroy_mb = 1\n").unwrap_err();
        assert!(e.contains("unknown field `memroy_mb`") && e.contains("line 1"), "{e}");
        let e = Manifest::parse("memory_mb = \"lots\"\n").unwrap_err();
        assert!(e.contains("memory_mb") || e.contains("invalid type"), "{e}");
        let e = Manifest::parse("memory_mb = 0\n").unwrap().grants(&defaults()).unwrap_err();
        assert_eq!(e, "memory_mb must be from 1 to 4096, got 0");
        let e = Manifest::parse("max_concurrency = 5000\n").unwrap().grants(&defaults()).unwrap_err();
        assert_eq!(e, "max_concurrency must be from 1 to 1000, got 5000");
        let e = Manifest::parse("timeout_s = -1\n").unwrap().grants(&defaults()).unwrap_err();
        assert!(e.starts_with("timeout_s must be more than 0"), "{e}");
        let e = Manifest::parse("[mcp_stdio.files]\ncommand = []\n").unwrap().grants(&defaults()).unwrap_err();
        assert!(e.starts_with("mcp_stdio.files: command must name a program"), "{e}");
        let e =
            Manifest::parse("allowed_hosts = [\"http://a\", \"ftp://b\"]\n").unwrap().grants(&defaults()).unwrap_err();
        assert_eq!(e, "allowed_hosts[1]: 'ftp://b': the scheme must be http, https or *, not 'ftp'");
        let e = Manifest::parse("allowed_hosts = \"http://a\"\n").unwrap_err();
        assert!(e.contains("allowed_hosts") || e.contains("invalid type"), "{e}");
        let e = Manifest::parse("read_dirs = [\"images\"]\n").unwrap().grants(&defaults()).unwrap_err();
        assert_eq!(e, "read_dirs[0]: 'images' must be an absolute path");
        let e = Manifest::parse("read_dirs = [\"/nonexistent/x\"]\n").unwrap().grants(&defaults()).unwrap_err();
        assert!(e.starts_with("read_dirs[0]: '/nonexistent/x': No such file"), "{e}");
        let e = Manifest::parse("max_response_bytes = 0\n").unwrap().grants(&defaults()).unwrap_err();
        assert_eq!(e, "max_response_bytes must be from 1 to 1073741824, got 0");
    }
}
