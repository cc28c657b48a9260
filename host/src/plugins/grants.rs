//! What a plugin is allowed and its limits: policy, fixed when it loads
//! (from its manifest, else the runtime's defaults). It holds nothing that
//! runs; the bridges started for its `mcp_stdio` servers belong to the
//! loaded plugin (`loader::Plugin`).

use super::outbound::Outbound;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a plugin is allowed and its limits, fixed when it loads (from its
/// manifest, else the runtime's defaults).
#[derive(Debug, Clone)]
pub struct Grants {
    /// `[config]` values returned by `config()`.
    pub config: BTreeMap<String, String>,
    /// Linear memory one call may use, in bytes.
    pub memory_limit: usize,
    /// The longest a call may run, whatever its task allows.
    pub timeout: Option<std::time::Duration>,
    /// Calls at once.
    pub max_concurrency: usize,
    /// Hosts `http-fetch` may reach, and its response cap.
    pub outbound: Outbound,
    /// Directories the plugin may read (read-only), at the same paths.
    pub read_dirs: Vec<std::path::PathBuf>,
    /// stdio MCP servers to bridge (started when the plugin loads).
    pub mcp_stdio: BTreeMap<String, StdioServer>,
    /// The protocol it serves under, if the operator names another than
    /// the one it describes (two backends of `llm/v1`, say).
    pub protocol: Option<String>,
    /// Calls and tokens per minute (see `rate`).
    pub rate_limit: crate::rate::RateLimit,
    /// Methods whose results are never reused (`cache: {ttl}`).
    pub uncacheable: Vec<String>,
}

/// What a plugin is granted, as `plugin list` shows it to the operator:
/// names of secrets, never their values; names of MCP servers, not their
/// commands or environments (which may hold credentials).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Granted {
    /// Origins `http-fetch` may reach.
    pub allowed_hosts: Vec<String>,
    /// Headers the host adds to requests, by origin.
    pub headers: Vec<GrantedHeader>,
    /// Directories it may read.
    pub read_dirs: Vec<String>,
    pub memory_mb: usize,
    pub timeout_s: Option<f64>,
    pub max_concurrency: usize,
    #[schema(value_type = Object)]
    pub rate_limit: crate::rate::RateLimit,
    /// The stdio MCP servers the host runs for it.
    pub mcp_stdio: Vec<String>,
}

/// One header the host adds for a plugin.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantedHeader {
    pub origin: String,
    pub header: String,
    /// The secrets its value is made from (none: the host's own value).
    pub secrets: Vec<String>,
}

impl Grants {
    /// What it grants, for the operator's eyes.
    pub fn shown(&self) -> Granted {
        let headers = self.outbound.credentials().headers().iter().map(|h| GrantedHeader {
            origin: h.pattern().to_string(),
            header: h.name().to_owned(),
            secrets: h.secrets().into_iter().map(str::to_owned).collect(),
        });
        Granted {
            allowed_hosts: self.outbound.allowed().iter().map(ToString::to_string).collect(),
            headers: headers.collect(),
            read_dirs: self.read_dirs.iter().map(|d| d.display().to_string()).collect(),
            memory_mb: self.memory_limit >> 20,
            timeout_s: self.timeout.map(|t| t.as_secs_f64()),
            max_concurrency: self.max_concurrency,
            rate_limit: self.rate_limit,
            mcp_stdio: self.mcp_stdio.keys().cloned().collect(),
        }
    }
}

/// A stdio MCP server as a manifest names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioServer {
    /// The program and its arguments, e.g. `["npx", "@modelcontextprotocol/server-everything"]`.
    pub command: Vec<String>,
    /// Variables added to the host's environment for the process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory it runs in (default: the host's).
    pub cwd: Option<PathBuf>,
}

impl StdioServer {
    pub fn check(&self, name: &str) -> Result<(), String> {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!("mcp_stdio.{name}: a server name is letters, digits, '-' and '_'"));
        }
        if self.command.first().is_none_or(|program| program.is_empty()) {
            return Err(format!("mcp_stdio.{name}: command must name a program, e.g. [\"npx\", \"my-mcp-server\"]"));
        }
        Ok(())
    }
}
