//! The live plugin set: the bundled plugins plus the plugins directory, kept
//! in step with the directory while the host runs (hot reload).
//!
//! A new or changed `NAME.wasm` (or its `NAME.toml`) is compiled and checked
//! off the async threads, then swapped into the registry in one step: calls
//! already running finish on the old version (they hold it), new calls get
//! the new one, and the old one is dropped when its last call ends. A file
//! that fails any check leaves the old version serving and its error on
//! record. A deleted file's provider leaves the registry; its running calls
//! finish. A directory plugin that serves a bundled plugin's protocol stands
//! in for the bundled one, which comes back when the file goes.

use super::loader::{LoadError, Plugin, PluginSource, bundled, load_file, plugin_name, wasm_files};
use super::manifest::Overrides;
use super::provider::{InFlight, WasmProvider};
use super::runtime::WasmRuntime;
use crate::locks::lock;
use crate::registry::{Provider, Registry};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Quiet time after the last change to a file before it is loaded: copies
/// and editors write in several steps. A file renamed into place, or closed
/// by its writer, is complete at once and waits for nothing.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// A change to plugin `name`'s files, and whether the file is complete now.
struct Change {
    name: String,
    settled: bool,
}

/// Whether a file event changes what a plugin is. Opening and reading a file
/// are events too (inotify reports `IN_OPEN`), and loading a plugin reads its
/// files: reacting to those made every load trigger the next, forever.
///
/// A rename within the directory is reported three times (its old name,
/// its new name, then both together): the third repeats the first two, and
/// reacting to it loaded a renamed plugin twice.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Other => true,
    }
}

/// Whether the event leaves a complete file: the rename of a finished file
/// into place (the documented deploy), or its writer closing it. A removal
/// is not: an editor's save removes, then writes again.
fn is_settled(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Modify(ModifyKind::Name(RenameMode::To))
    )
}

/// The plugins an event is about: `NAME.wasm` and `NAME.toml` are plugin `NAME`.
fn plugins_changed(event: &Event) -> impl Iterator<Item = Change> + '_ {
    let relevant = is_change(&event.kind);
    let settled = is_settled(&event.kind);
    event
        .paths
        .iter()
        .filter(move |path| relevant && path.extension().is_some_and(|x| x == "wasm" || x == "toml"))
        .map(move |path| Change { name: plugin_name(path), settled })
}

/// Where a plugin stands, for `plugin list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    Loaded,
    /// The last attempt failed; an older version may still serve.
    Failed,
    /// A bundled plugin a directory plugin stands in for.
    Replaced,
}

/// One line of `plugin list`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub name: String,
    pub source: String,
    pub state: PluginState,
    pub protocol_id: Option<String>,
    pub version: Option<String>,
    pub hash: Option<String>,
    pub methods: Vec<String>,
    #[serde(serialize_with = "crate::report::rfc3339_option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub loaded_at: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Versions loaded since the host started (1 for a bundled plugin).
    pub loads: u64,
    /// Load attempts that failed since the host started.
    pub failures: u64,
    /// What the version that serves is granted (none for one that failed
    /// to load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<super::grants::Granted>,
}

/// What changed, for whoever listens (the daemon broadcasts it).
#[derive(Debug, Clone)]
pub enum PluginEvent {
    Loaded(PluginStatus),
    Failed(PluginStatus),
    Removed(String),
}

type Listener = Arc<dyn Fn(PluginEvent) + Send + Sync>;

/// The plugins a host serves, bundled and from its directory.
pub struct PluginSet {
    runtime: Arc<WasmRuntime>,
    registry: Arc<Registry>,
    dir: PathBuf,
    /// The host config's `[manifests.NAME]`, applied at every (re)load.
    overrides: Overrides,
    bundled: Vec<Arc<Plugin>>,
    /// Directory plugins that serve, by name.
    serving: Mutex<BTreeMap<String, Arc<Plugin>>>,
    status: Mutex<BTreeMap<String, PluginStatus>>,
    /// Calls in flight per plugin name, shared by its versions.
    in_flight: Mutex<BTreeMap<String, InFlight>>,
    listener: Mutex<Option<Listener>>,
}

fn status_of(plugin: &Plugin, state: PluginState) -> PluginStatus {
    PluginStatus {
        name: plugin.name.to_string(),
        source: plugin.source.to_string(),
        state,
        protocol_id: Some(plugin.spec.protocol.clone()),
        version: Some(plugin.spec.version.clone()),
        hash: Some(plugin.hash.clone()),
        methods: plugin.spec.methods.iter().map(|m| m.name.clone()).collect(),
        loaded_at: Some(SystemTime::now()),
        last_error: None,
        loads: 1,
        failures: 0,
        grants: Some(plugin.grants.shown()),
    }
}

fn provider_id(name: &str) -> String {
    format!("wasm:{name}")
}

impl PluginSet {
    /// Load the bundled plugins and every plugin in `dir`; broken files are
    /// reported (returned) and skipped.
    pub async fn load(
        runtime: Arc<WasmRuntime>,
        registry: Arc<Registry>,
        dir: &Path,
        overrides: Overrides,
    ) -> Result<(Arc<Self>, Vec<LoadError>), LoadError> {
        let bundled =
            bundled(&runtime, &overrides).await.into_iter().map(|p| p.map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        let set = Arc::new(Self {
            runtime,
            registry,
            dir: dir.to_owned(),
            overrides,
            bundled,
            serving: Mutex::default(),
            status: Mutex::default(),
            in_flight: Mutex::default(),
            listener: Mutex::default(),
        });
        for plugin in &set.bundled {
            lock(&set.status).insert(plugin.name.to_string(), status_of(plugin, PluginState::Loaded));
        }
        let mut problems = Vec::new();
        match wasm_files(dir) {
            Ok(paths) => {
                for path in paths {
                    if let Err(e) = set.apply(&path, load_file(&set.runtime, &path, &set.overrides).await) {
                        problems.push(e);
                    }
                }
            }
            Err(e) => problems.push(e),
        }
        set.sync_bundled();
        // A bundled plugin the operator switched off is not "no plugin".
        let switched_off = |name: &str| set.overrides.get(name).is_some_and(|m| !m.enabled());
        for name in set.overrides.keys().filter(|name| !lock(&set.status).contains_key(*name) && !switched_off(name)) {
            tracing::warn!(
                "[manifests.{name}] in the host config names no plugin loaded now; it applies if {name}.wasm appears"
            );
        }
        Ok((set, problems))
    }

    /// Load the code of the registered plugins that serve `protocols` now,
    /// side by side, where compiling it was deferred to the first call
    /// ([`CompileWhen::OnFirstCall`](super::CompileWhen)): a one-shot run
    /// then does not count a plugin's start in its first task's time. A
    /// plugin that fails here fails the calls made to it, with the reason.
    pub async fn prepare(&self, protocols: &BTreeSet<&str>) {
        let registered: BTreeSet<String> = self.registry.providers().iter().map(|p| p.id().to_string()).collect();
        let serving: Vec<Arc<Plugin>> = lock(&self.serving).values().cloned().collect();
        let needed: Vec<Arc<Plugin>> = (self.bundled.iter().cloned().chain(serving))
            .filter(|p| protocols.contains(p.spec.protocol.as_str()) && registered.contains(&provider_id(&p.name)))
            .collect();
        futures_util::future::join_all(needed.iter().map(|p| p.pre())).await;
    }

    /// The plugins directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every plugin's status, bundled ones first.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        lock(&self.status).values().cloned().collect()
    }

    /// Call `listener` with every later change.
    pub fn on_change(&self, listener: impl Fn(PluginEvent) + Send + Sync + 'static) {
        *lock(&self.listener) = Some(Arc::new(listener));
    }

    fn tell(&self, event: PluginEvent) {
        let listener = lock(&self.listener).clone();
        if let Some(listener) = listener {
            listener(event);
        }
    }

    /// Record a load attempt of `path`: swap in the new version, or keep the
    /// old one and remember the error.
    fn apply(&self, path: &Path, loaded: Result<Plugin, LoadError>) -> Result<(), LoadError> {
        let name = plugin_name(path);
        match loaded {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                self.registry.replace(self.provider(&plugin));
                lock(&self.serving).insert(name.clone(), plugin.clone());
                let mut status = status_of(&plugin, PluginState::Loaded);
                let mut statuses = lock(&self.status);
                if let Some(before) = statuses.get(&name) {
                    (status.loads, status.failures) = (before.loads + 1, before.failures);
                }
                statuses.insert(name, status.clone());
                drop(statuses);
                tracing::info!(plugin = %plugin.name, hash = %plugin.hash, "loaded {} from {}", plugin.spec.protocol, path.display());
                self.tell(PluginEvent::Loaded(status));
                Ok(())
            }
            Err(error) => {
                let mut statuses = lock(&self.status);
                let status = statuses.entry(name.clone()).or_insert_with(|| PluginStatus {
                    name: name.clone(),
                    source: path.display().to_string(),
                    state: PluginState::Failed,
                    protocol_id: None,
                    version: None,
                    hash: None,
                    methods: Vec::new(),
                    loaded_at: None,
                    last_error: None,
                    loads: 0,
                    failures: 0,
                    grants: None,
                });
                status.state = PluginState::Failed;
                status.failures += 1;
                status.last_error = Some(error.to_string());
                let status = status.clone();
                drop(statuses);
                let keeps =
                    if lock(&self.serving).contains_key(&name) { "; the previous version keeps serving" } else { "" };
                tracing::error!("{error}{keeps}");
                self.tell(PluginEvent::Failed(status));
                Err(error)
            }
        }
    }

    /// The provider of a plugin version; its calls count with those of the
    /// plugin's earlier versions still draining.
    fn provider(&self, plugin: &Arc<Plugin>) -> Arc<dyn Provider> {
        let in_flight = lock(&self.in_flight).entry(plugin.name.to_string()).or_default().clone();
        Arc::new(WasmProvider::sharing(plugin.clone(), in_flight))
    }

    /// `NAME.wasm` is gone: its provider leaves (running calls finish).
    fn remove(&self, name: &str) {
        let removed = lock(&self.serving).remove(name);
        lock(&self.status).remove(name);
        if removed.is_some() {
            self.registry.unregister(&provider_id(name));
            tracing::info!(plugin = name, "removed {}", self.dir.join(format!("{name}.wasm")).display());
            self.tell(PluginEvent::Removed(name.to_owned()));
        }
    }

    /// A bundled plugin serves unless a directory plugin serves its protocol.
    fn sync_bundled(&self) {
        let taken: Vec<String> = lock(&self.serving).values().map(|p| p.spec.protocol.clone()).collect();
        for plugin in &self.bundled {
            let replaced = taken.contains(&plugin.spec.protocol) && !lock(&self.serving).contains_key(&*plugin.name);
            let state = if replaced { PluginState::Replaced } else { PluginState::Loaded };
            if replaced {
                self.registry.unregister(&provider_id(&plugin.name));
                let was = lock(&self.status).get(&*plugin.name).map(|s| s.state.clone());
                if was != Some(PluginState::Replaced) {
                    tracing::info!(
                        "{} from {} replaces the bundled plugin '{}'",
                        plugin.spec.protocol,
                        self.dir.display(),
                        plugin.name
                    );
                }
            } else if !lock(&self.serving).contains_key(&*plugin.name) {
                self.registry.replace(self.provider(plugin));
            }
            let from_dir = lock(&self.serving).contains_key(&*plugin.name);
            let mut statuses = lock(&self.status);
            let unchanged = statuses.get(&*plugin.name).is_some_and(|s| s.state == state);
            if !from_dir && !unchanged {
                let mut status = status_of(plugin, state);
                status.source = PluginSource::Bundled.to_string();
                statuses.insert(plugin.name.to_string(), status);
            }
        }
    }

    /// Bring `name` in step with the directory.
    pub async fn reload(&self, name: &str) {
        let path = self.dir.join(format!("{name}.wasm"));
        if path.is_file() {
            let _ = self.apply(&path, load_file(&self.runtime, &path, &self.overrides).await);
        } else {
            self.remove(name);
        }
        self.sync_bundled();
    }

    /// Watch the directory and reload what changes, until the returned
    /// watcher is dropped. Changes to one plugin within [`DEBOUNCE`] of each
    /// other make one reload.
    pub fn watch(self: &Arc<Self>) -> Result<RecommendedWatcher, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let (changed, changes) = mpsc::unbounded_channel::<Change>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) => {
                for change in plugins_changed(&event) {
                    let _ = changed.send(change);
                }
            }
            Err(e) => tracing::warn!("watching the plugins directory failed: {e}"),
        })
        .map_err(|e| e.to_string())?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", self.dir.display()))?;
        tokio::spawn(self.clone().reload_settled(changes));
        tracing::info!("watching {} for plugins", self.dir.display());
        Ok(watcher)
    }

    /// Reload each changed plugin once its files are complete: at once
    /// after a rename into place or its writer's close, else after
    /// [`DEBOUNCE`] without changes.
    async fn reload_settled(self: Arc<Self>, mut changes: mpsc::UnboundedReceiver<Change>) {
        while let Some(first) = changes.recv().await {
            let mut settled = first.settled;
            let mut pending = BTreeSet::from([first.name]);
            while !settled {
                let Ok(Some(change)) = tokio::time::timeout(DEBOUNCE, changes.recv()).await else { break };
                settled = change.settled;
                pending.insert(change.name);
            }
            while let Ok(change) = changes.try_recv() {
                pending.insert(change.name);
            }
            for name in pending {
                self.reload(&name).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    fn changes(kind: EventKind, paths: &[&str]) -> Vec<(String, bool)> {
        let event = paths.iter().fold(Event::new(kind), |event, path| event.add_path(PathBuf::from(path)));
        plugins_changed(&event).map(|c| (c.name, c.settled)).collect()
    }

    #[test]
    fn a_file_renamed_into_place_or_closed_by_its_writer_loads_at_once() {
        let moved_in = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(changes(moved_in, &["/p/a.wasm"]), [("a".into(), true)]);
        assert_eq!(changes(moved_in, &["/p/a.toml"]), [("a".into(), true)]);
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(changes(closed, &["/p/a.wasm"]), [("a".into(), true)]);
        // The rename's summary repeats its two sides, each reported already.
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(changes(both, &["/p/.a.tmp", "/p/a.wasm"]).is_empty());
    }

    #[test]
    fn a_file_still_being_written_or_removed_waits_for_quiet() {
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
        ] {
            assert_eq!(changes(kind, &["/p/a.wasm"]), [("a".into(), false)], "{kind:?}");
        }
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Read));
        assert!(changes(opened, &["/p/a.wasm"]).is_empty());
        assert!(changes(EventKind::Create(CreateKind::File), &["/p/a.wasm.partial"]).is_empty());
    }
}
