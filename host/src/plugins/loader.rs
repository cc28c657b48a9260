//! Finding and loading plugins: compile, link-check, ask `describe()`, and
//! check the spec it returns. A file that fails any step is reported with the
//! file and the step; it never stops other plugins from loading.

use super::bindings::ProviderPre;
use super::cache::Compiled;
use super::host::{Grants, StoreState};
use super::manifest::{Manifest, Overrides};
use super::runtime::WasmRuntime;
use crate::model::{MethodSpec, ProviderSpec};
use crate::schema::{MAX_SCHEMA_BYTES, ParamsSchema, SchemaError};
use sha2::Digest as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `describe()` must answer within this.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The plugins built into the binary (see `build.rs`).
pub(super) mod embedded {
    include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    Bundled,
    File(PathBuf),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Bundled => f.write_str("bundled"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The loading step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStep {
    Manifest,
    Compile,
    Link,
    Describe,
}

impl fmt::Display for LoadStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadStep::Manifest => "has an invalid manifest",
            LoadStep::Compile => "is not a valid component",
            LoadStep::Link => "does not fit the gleitzeit:provider world",
            LoadStep::Describe => "failed its describe() check",
        })
    }
}

/// Why a plugin did not load, naming the plugin, its source and the step.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("plugin '{plugin}' ({origin}) {step}: {reason}")]
    Plugin { plugin: String, origin: PluginSource, step: LoadStep, reason: String },
}

/// A compiled, checked plugin, ready to instantiate per call.
pub struct Plugin {
    pub name: Arc<str>,
    pub source: PluginSource,
    pub spec: ProviderSpec,
    /// The first 12 hex digits of the component's SHA-256: tells versions apart.
    pub hash: String,
    pub(super) pre: ProviderPre<StoreState>,
    pub(super) grants: Arc<Grants>,
    pub(super) runtime: Arc<WasmRuntime>,
}

/// Compile and check one plugin.
pub async fn load_bytes(
    runtime: &Arc<WasmRuntime>,
    name: &str,
    source: PluginSource,
    bytes: Vec<u8>,
    grants: Grants,
) -> Result<Plugin, LoadError> {
    let fail = |step, reason| LoadError::Plugin { plugin: name.to_owned(), origin: source.clone(), step, reason };
    let digest = sha2::Sha256::digest(&bytes);
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let compiler = runtime.clone();
    // Compilation takes tens of milliseconds of CPU: keep it off the async threads.
    let (component, compiled) = tokio::task::spawn_blocking(move || compiler.compile(&bytes, &digest))
        .await
        .map_err(|e| fail(LoadStep::Compile, e.to_string()))?
        .map_err(|e| fail(LoadStep::Compile, format!("{e:#}")))?;
    match &compiled {
        Compiled::Cached => tracing::debug!(plugin = name, "loaded from the compiled-plugin cache"),
        Compiled::Fresh => tracing::debug!(plugin = name, "compiled"),
        Compiled::Replaced(why) => {
            tracing::info!(plugin = name, "compiled again: its cache entry was unusable ({why})")
        }
    }
    let pre = runtime
        .linker()
        .instantiate_pre(&component)
        .and_then(ProviderPre::new)
        .map_err(|e| fail(LoadStep::Link, format!("{e:#}")))?;
    let grants = super::mcp_bridge::attach(name, grants).await.map_err(|reason| fail(LoadStep::Manifest, reason))?;
    let grants = Arc::new(grants);
    let name: Arc<str> = name.into();
    let deadline = Instant::now() + DESCRIBE_TIMEOUT;
    let mut store = runtime.new_store(name.clone(), grants.clone(), "describe".into(), deadline);
    let described = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    };
    let spec = match tokio::time::timeout_at(deadline.into(), described).await {
        Ok(Ok(spec)) => spec,
        Ok(Err(e)) => {
            let stderr = store.data().stderr.finish();
            return Err(fail(LoadStep::Describe, with_stderr(format!("{e:#}"), &stderr)));
        }
        Err(_) => {
            return Err(fail(LoadStep::Describe, format!("no answer within {DESCRIBE_TIMEOUT:?}")));
        }
    };
    let spec = check_spec(spec).map_err(|reason| fail(LoadStep::Describe, reason))?;
    Ok(Plugin { name, source, spec, hash, pre, grants, runtime: runtime.clone() })
}

/// Append the plugin's last stderr lines (a panic message, say) to an error,
/// without Rust's advice about backtraces.
pub(super) fn with_stderr(message: String, stderr: &str) -> String {
    let lines: Vec<&str> =
        stderr.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("note: run with")).collect();
    match lines.len() {
        0 => message,
        n => format!("{message}; plugin stderr: {}", lines[n.saturating_sub(2)..].join(" ")),
    }
}

fn check_spec(spec: super::bindings::ProviderSpec) -> Result<ProviderSpec, String> {
    if !crate::workflow::is_protocol(&spec.protocol) {
        return Err(format!("protocol '{}' is not of the form 'name/version' (e.g. echo/v1)", spec.protocol));
    }
    if spec.methods.is_empty() {
        return Err(format!("protocol '{}' declares no methods", spec.protocol));
    }
    let methods = spec
        .methods
        .into_iter()
        .map(|m| {
            let schema = match m.params_schema {
                None => None,
                Some(text) if text.len() > MAX_SCHEMA_BYTES => {
                    return Err(format!("method '{}': {}", m.name, SchemaError::TooLarge(text.len())));
                }
                Some(text) => {
                    let source = serde_json::from_str(&text)
                        .map_err(|e| format!("method '{}': params-schema is not JSON: {e}", m.name))?;
                    Some(ParamsSchema::compile(source).map_err(|e| format!("method '{}': {e}", m.name))?)
                }
            };
            Ok(MethodSpec { name: m.name, description: m.description, params_schema: schema })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ProviderSpec {
        protocol: spec.protocol,
        name: spec.name,
        version: spec.version,
        description: spec.description,
        methods,
    })
}

/// The plugins built into this binary, with the host config's overrides.
pub async fn bundled(runtime: &Arc<WasmRuntime>, overrides: &Overrides) -> Vec<Result<Plugin, LoadError>> {
    let mut loaded = Vec::new();
    for (name, bytes, manifest) in embedded::BUNDLED {
        let grants =
            Manifest::parse(manifest.unwrap_or("")).map_err(|r| format!("its built-in manifest: {r}")).and_then(|m| {
                let with = if overrides.contains_key(name) {
                    format!(" with [manifests.{name}] of the host config")
                } else {
                    String::new()
                };
                m.overlay_from(overrides, name)
                    .grants(&runtime.default_grants())
                    .map_err(|r| format!("its grants{with}: {r}"))
            });
        let plugin = match grants {
            Ok(grants) => load_bytes(runtime, name, PluginSource::Bundled, bytes.to_vec(), grants).await,
            Err(reason) => Err(LoadError::Plugin {
                plugin: (*name).to_owned(),
                origin: PluginSource::Bundled,
                step: LoadStep::Manifest,
                reason,
            }),
        };
        loaded.push(plugin);
    }
    loaded
}

/// The `*.wasm` files directly in `dir`, sorted. A missing directory holds
/// no plugins.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LoadError::Read { path: dir.to_owned(), reason: e.to_string() }),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

/// The plugin's name: the file name without `.wasm`.
pub fn plugin_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Load `NAME.wasm` with the grants of `NAME.toml` beside it, overridden
/// by the host config's `[manifests.NAME]`.
pub async fn load_file(runtime: &Arc<WasmRuntime>, path: &Path, overrides: &Overrides) -> Result<Plugin, LoadError> {
    let name = plugin_name(path);
    let origin = PluginSource::File(path.to_owned());
    let manifest_path = path.with_extension("toml");
    let grants = Manifest::read_dropped(&manifest_path, &name)
        .and_then(|m| m.within(overrides, &name).map(|()| m))
        .and_then(|m| m.overlay_from(overrides, &name).grants(&runtime.default_grants()))
        .map_err(|reason| {
            let also = if overrides.contains_key(&name) {
                format!(" (with [manifests.{name}] of the host config)")
            } else {
                String::new()
            };
            LoadError::Plugin {
                plugin: name.clone(),
                origin: origin.clone(),
                step: LoadStep::Manifest,
                reason: format!("{}{also}: {reason}", manifest_path.display()),
            }
        })?;
    let bytes = std::fs::read(path).map_err(|e| LoadError::Read { path: path.to_owned(), reason: e.to_string() })?;
    load_bytes(runtime, &name, origin, bytes, grants).await
}
