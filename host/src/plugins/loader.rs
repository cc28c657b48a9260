//! Finding and loading plugins: compile, link-check, ask `describe()`, and
//! check the spec it returns. A file that fails any step is reported with the
//! file and the step; it never stops other plugins from loading.
//!
//! The spec a plugin described is kept in the cache; with
//! [`CompileWhen::OnFirstCall`] a plugin whose spec is there is not compiled
//! until a task calls it, so a one-shot command pays only for the plugins it
//! uses. The spec is found again only for the same component, host version
//! and WIT world, config values and granted directories: what `describe()`
//! can see (an answer that depends on the network or the clock is not
//! supported).

use super::bindings::{self, ProviderPre};
use super::cache::Compiled;
use super::grants::Grants;
use super::manifest::{Manifest, Overrides};
use super::mcp_bridge::Bridge;
use super::runtime::StoreState;
use super::runtime::{CompileWhen, WasmRuntime};
use crate::locks::lock;
use crate::model::{MethodSpec, ProviderSpec};
use crate::schema::{MAX_SCHEMA_BYTES, ParamsSchema, SchemaError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// The contract the host links plugins against: part of a cached spec's key.
const WIT: &str = include_str!("../../../wit/provider.wit");

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

/// A checked plugin, ready to instantiate per call.
pub struct Plugin {
    pub name: Arc<str>,
    pub source: PluginSource,
    pub spec: ProviderSpec,
    /// The first 12 hex digits of the component's SHA-256: tells versions apart.
    pub hash: String,
    /// Its code linked against the host: set when it loaded, or at its
    /// first call when compiling was deferred.
    pre: OnceCell<ProviderPre<StoreState>>,
    /// The component, until it is compiled.
    deferred: Mutex<Option<Bytes>>,
    digest: [u8; 32],
    pub(super) grants: Arc<Grants>,
    pub(super) runtime: Arc<WasmRuntime>,
    /// The MCP bridges started for it: they stop when this version is
    /// dropped.
    _bridges: Vec<Arc<Bridge>>,
}

impl Plugin {
    /// Whether its code is compiled and linked (its calls start at once).
    pub(super) fn is_linked(&self) -> bool {
        self.pre.initialized()
    }

    /// The plugin's linked code, compiled (or read from the cache) now if
    /// that was deferred.
    pub(super) async fn pre(&self) -> Result<&ProviderPre<StoreState>, String> {
        self.pre
            .get_or_try_init(|| async {
                let bytes = lock(&self.deferred).clone().ok_or("its component is gone")?;
                let pre = link(&self.runtime, &self.name, bytes, self.digest)
                    .await
                    .map_err(|(step, reason)| format!("it {step}: {reason}"))?;
                *lock(&self.deferred) = None;
                Ok(pre)
            })
            .await
    }
}

/// Compile and check one plugin (or, with [`CompileWhen::OnFirstCall`],
/// take its spec from the cache and compile it at its first call).
pub async fn load_bytes(
    runtime: &Arc<WasmRuntime>,
    name: &str,
    source: PluginSource,
    bytes: Vec<u8>,
    grants: Grants,
) -> Result<Plugin, LoadError> {
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    load_described(runtime, name, source, (Bytes::from(bytes), digest), grants, None).await
}

/// [`load_bytes`] of a component and its SHA-256; or, given the plugin's
/// `describe()` answer (`described`, built with a bundled component),
/// registered with it and compiled at its first call, whatever
/// [`CompileWhen`] says: a component that carries an interpreter takes
/// seconds to compile and tens of megabytes to hold, which no start should
/// pay for a protocol it may never call.
async fn load_described(
    runtime: &Arc<WasmRuntime>,
    name: &str,
    source: PluginSource,
    (bytes, digest): (Bytes, [u8; 32]),
    grants: Grants,
    described: Option<&str>,
) -> Result<Plugin, LoadError> {
    let fail = |step, reason| LoadError::Plugin { plugin: name.to_owned(), origin: source.clone(), step, reason };
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    // Keyed by the grants as the manifest gave them: the bridges add
    // loopback addresses that change with every load.
    let key = spec_key(&digest, &grants);
    let (grants, bridges) =
        super::mcp_bridge::attach(name, grants).await.map_err(|reason| fail(LoadStep::Manifest, reason))?;
    let grants = Arc::new(grants);
    let plugin = |mut spec: ProviderSpec, pre: Option<ProviderPre<StoreState>>, deferred| Plugin {
        name: name.into(),
        source: source.clone(),
        spec: {
            if let Some(protocol) = &grants.protocol {
                spec.protocol = protocol.clone();
            }
            spec
        },
        hash: hash.clone(),
        pre: OnceCell::new_with(pre),
        deferred: Mutex::new(deferred),
        digest,
        grants: grants.clone(),
        runtime: runtime.clone(),
        _bridges: bridges.clone(),
    };
    if let Some(text) = described {
        let spec = serde_json::from_str::<SpecRecord>(text).map_err(|e| e.to_string()).and_then(check_spec);
        return Ok(plugin(spec.map_err(|reason| fail(LoadStep::Describe, reason))?, None, Some(bytes)));
    }
    if runtime.compile_when() == CompileWhen::OnFirstCall
        && let Some(spec) = cached_spec(runtime, &key)
    {
        tracing::debug!(plugin = name, "spec from the cache; compiled at its first call");
        return Ok(plugin(spec, None, Some(bytes)));
    }
    let pre = link(runtime, name, bytes, digest).await.map_err(|(step, reason)| fail(step, reason))?;
    let described = describe(runtime, name.into(), grants.clone(), &pre).await;
    let record = SpecRecord::from(described.map_err(|reason| fail(LoadStep::Describe, reason))?);
    let spec = check_spec(record.clone()).map_err(|reason| fail(LoadStep::Describe, reason))?;
    if let (Some(cache), Ok(json)) = (runtime.cache(), serde_json::to_string(&record)) {
        cache.put_spec(&key, &json);
    }
    Ok(plugin(spec, Some(pre), None))
}

/// Compile `bytes` (or load them from the cache) and link them against the
/// host; the failing step and why.
async fn link(
    runtime: &Arc<WasmRuntime>,
    name: &str,
    bytes: Bytes,
    digest: [u8; 32],
) -> Result<ProviderPre<StoreState>, (LoadStep, String)> {
    let compiler = runtime.clone();
    // Compilation takes tens of milliseconds of CPU: keep it off the async threads.
    let (component, compiled) = tokio::task::spawn_blocking(move || compiler.compile(&bytes, &digest))
        .await
        .map_err(|e| (LoadStep::Compile, e.to_string()))?
        .map_err(|e| (LoadStep::Compile, format!("{e:#}")))?;
    match &compiled {
        Compiled::Cached => tracing::debug!(plugin = name, "loaded from the compiled-plugin cache"),
        Compiled::Fresh => tracing::debug!(plugin = name, "compiled"),
        Compiled::Replaced(why) => {
            tracing::info!(plugin = name, "compiled again: its cache entry was unusable ({why})")
        }
    }
    runtime
        .linker()
        .instantiate_pre(&component)
        .and_then(ProviderPre::new)
        .map_err(|e| (LoadStep::Link, format!("{e:#}")))
}

/// Ask a linked plugin what it serves.
async fn describe(
    runtime: &WasmRuntime,
    name: Arc<str>,
    grants: Arc<Grants>,
    pre: &ProviderPre<StoreState>,
) -> Result<bindings::ProviderSpec, String> {
    let deadline = Instant::now() + DESCRIBE_TIMEOUT;
    let mut store = runtime.new_store(name, grants, "describe".into(), deadline);
    let described = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    };
    match tokio::time::timeout_at(deadline.into(), described).await {
        Ok(Ok(spec)) => Ok(spec),
        Ok(Err(e)) => Err(with_stderr(format!("{e:#}"), &store.data().stderr.finish())),
        Err(_) => Err(format!("no answer within {DESCRIBE_TIMEOUT:?}")),
    }
}

/// The name of the cache entry for a `describe()` answer: a hash of what
/// the answer may depend on (see the module doc).
fn spec_key(digest: &[u8], grants: &Grants) -> String {
    let mut hasher = Sha256::new();
    for part in [env!("CARGO_PKG_VERSION").as_bytes(), WIT.as_bytes(), digest] {
        hasher.update(part.len().to_le_bytes());
        hasher.update(part);
    }
    for (key, value) in &grants.config {
        for part in [key, value] {
            hasher.update(part.len().to_le_bytes());
            hasher.update(part);
        }
    }
    for dir in &grants.read_dirs {
        hasher.update(dir.as_os_str().len().to_le_bytes());
        hasher.update(dir.as_os_str().as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The spec kept under `key`, if it is there and still passes the checks.
fn cached_spec(runtime: &WasmRuntime, key: &str) -> Option<ProviderSpec> {
    let text = runtime.cache()?.spec(key)?;
    let checked = serde_json::from_str::<SpecRecord>(&text).map_err(|e| e.to_string()).and_then(check_spec);
    checked.inspect_err(|why| tracing::debug!("a cached spec is not used ({why})")).ok()
}

/// A `describe()` answer as the cache keeps it: the WIT record, unchecked.
#[derive(Clone, Serialize, Deserialize)]
struct SpecRecord {
    protocol: String,
    name: String,
    version: String,
    description: String,
    methods: Vec<MethodRecord>,
}

#[derive(Clone, Serialize, Deserialize)]
struct MethodRecord {
    name: String,
    description: String,
    params_schema: Option<String>,
}

impl From<bindings::ProviderSpec> for SpecRecord {
    fn from(spec: bindings::ProviderSpec) -> Self {
        let methods = (spec.methods.into_iter())
            .map(|m| MethodRecord { name: m.name, description: m.description, params_schema: m.params_schema })
            .collect();
        Self { protocol: spec.protocol, name: spec.name, version: spec.version, description: spec.description, methods }
    }
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

fn check_spec(spec: SpecRecord) -> Result<ProviderSpec, String> {
    if !crate::ids::is_protocol(&spec.protocol) {
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

/// The bundled python/v1 plugin's name: `[manifests.python]` sets its grants.
const PYTHON_PLUGIN: &str = "python";

/// A plugin built into this binary: its code, its built-in manifest, and
/// (python/v1's) its spec as taken when it was built.
struct Builtin {
    name: &'static str,
    component: (Bytes, [u8; 32]),
    manifest: Option<&'static str>,
    described: Option<&'static str>,
}

fn builtins() -> Vec<Builtin> {
    let rust = embedded::BUNDLED.iter().map(|(name, bytes, manifest)| Builtin {
        name,
        component: (Bytes::from_static(bytes), Sha256::digest(bytes).into()),
        manifest: *manifest,
        described: None,
    });
    // Its digest was taken when it was built: its pages are not read
    // before its first call.
    let python = embedded::BUNDLED_PYTHON.map(|(bytes, spec, digest)| Builtin {
        name: PYTHON_PLUGIN,
        component: (Bytes::from_static(bytes), *digest),
        manifest: None,
        described: Some(spec),
    });
    rust.chain(python).collect()
}

/// The plugins built into this binary, with the host config's overrides,
/// and the instances of them the host config adds ([`instances`]).
pub async fn bundled(runtime: &Arc<WasmRuntime>, overrides: &Overrides) -> Vec<Result<Plugin, LoadError>> {
    let builtins = builtins();
    let (instances, mut loaded) = instances(&builtins, overrides);
    let plugins = builtins.iter().map(|b| (b.name, b, false)).chain(instances.into_iter().map(|(n, b)| (n, b, true)));
    for (name, builtin, instance) in plugins {
        let manifest = Manifest::parse(builtin.manifest.unwrap_or(""))
            .map(|m| if instance { m.switched_on() } else { m })
            .map(|m| m.overlay_from(overrides, name));
        if manifest.as_ref().is_ok_and(|m| !m.enabled()) {
            tracing::debug!(plugin = name, "not loaded: enabled = false");
            continue;
        }
        let grants = manifest.map_err(|r| format!("its built-in manifest: {r}")).and_then(|m| {
            let with = if overrides.contains_key(name) {
                format!(" with [manifests.{name}] of the host config")
            } else {
                String::new()
            };
            m.grants(&runtime.default_grants()).map_err(|r| format!("its grants{with}: {r}"))
        });
        let plugin = match grants {
            Ok(grants) => {
                let component = builtin.component.clone();
                load_described(runtime, name, PluginSource::Bundled, component, grants, builtin.described).await
            }
            Err(reason) => Err(LoadError::Plugin {
                plugin: name.to_owned(),
                origin: PluginSource::Bundled,
                step: LoadStep::Manifest,
                reason,
            }),
        };
        loaded.push(plugin);
    }
    loaded
}

/// A plugin loaded, or why not.
type Loaded = Result<Plugin, LoadError>;

/// The instances of bundled plugins the host config declares
/// (`[manifests.NAME]` with `bundled = "PLUGIN"`: PLUGIN's code under the
/// name NAME, with PLUGIN's built-in manifest under NAME's, on unless it
/// says `enabled = false`), each with its code; and the declarations that
/// name no bundled plugin, or take a bundled plugin's own name.
fn instances<'a>(builtins: &'a [Builtin], overrides: &'a Overrides) -> (Vec<(&'a str, &'a Builtin)>, Vec<Loaded>) {
    let (mut found, mut refused) = (Vec::new(), Vec::new());
    for (name, manifest) in &overrides.manifests {
        let Some(of) = manifest.bundled_plugin() else { continue };
        let own_name = !builtins.iter().any(|b| b.name == name);
        match builtins.iter().find(|b| b.name == of).filter(|_| own_name) {
            Some(builtin) => found.push((name.as_str(), builtin)),
            None => {
                let names: Vec<&str> = builtins.iter().map(|b| b.name).collect();
                let why = if own_name { "no such bundled plugin" } else { "an instance needs a name of its own" };
                let reason = format!("[manifests.{name}] bundled = '{of}': {why} (bundled: {})", names.join(", "));
                let (plugin, origin, step) = (name.clone(), PluginSource::Bundled, LoadStep::Manifest);
                refused.push(Err(LoadError::Plugin { plugin, origin, step, reason }));
            }
        }
    }
    (found, refused)
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
