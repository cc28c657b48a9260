//! What a plugin is allowed and its limits: policy, fixed when it loads
//! (from its manifest, else the runtime's defaults). It holds nothing that
//! runs; the bridges started for its `mcp_stdio` servers belong to the
//! loaded plugin (`loader::Plugin`).

use super::outbound::Outbound;
use serde::Deserialize;
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
