//! Compiled components kept on disk, so that a start or a reload of a
//! plugin this engine compiled before loads its machine code instead of
//! compiling it again (Cranelift takes about 0.2 s per bundled plugin, and
//! seconds for a component that carries an interpreter).
//!
//! An entry is named for what makes compiled code valid: the SHA-256 of
//! the component's bytes and wasmtime's hash of the engine (its version,
//! its settings and the CPU features it compiles for), so another wasmtime,
//! other settings or another CPU look for other entries. A file starts with
//! the SHA-256 of the rest, checked before wasmtime reads it (and wasmtime
//! checks its own header): an entry that fails either is compiled again and
//! replaced, never used. Entries are written to a temporary file and
//! renamed into place, so a crash leaves no half entry, and the directory
//! is kept to [`MAX_CACHE_BYTES`], oldest entries leaving first.
//!
//! Beside the compiled code it keeps each plugin's `describe()` answer
//! (`KEY.spec.json`, KEY naming what the answer may depend on, see
//! `loader`), so that a command that only needs to know what a plugin
//! serves loads no component at all. A spec that does not parse is ignored
//! and written again.
//!
//! Loading compiled code means trusting whoever can write the directory as
//! much as the host binary: it is created private (0700) and not used if
//! anyone but its owner may write to it.
//!
//! In memory it keeps Cranelift's incremental compilation cache
//! ([`FunctionCache`]): a new version of a plugin compiles only the
//! functions that differ from those this process compiled before.
//!
//! This module owns the cache directory's files and the function cache. It
//! does not decide which plugins load or what they may do.

use crate::locks::lock;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::{CacheStore, Engine};

/// The most the cache directory holds; older entries are removed past it.
pub const MAX_CACHE_BYTES: u64 = 512 * 1024 * 1024;

const DIGEST_LEN: usize = 32;

/// The largest spec file read: a spec holds at most 256 methods with a
/// schema of at most 64 KiB each, and real ones are a few KiB.
const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// A temporary file older than this is a crashed writer's, not a live one's.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The most bytes of machine code (and keys) the function cache holds; when
/// full it starts again empty.
pub const MAX_FUNCTION_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Cranelift's incremental compilation cache, in memory: the compiled form
/// of each function this process compiled, keyed by the function's body
/// and the compiler's settings. A plugin rebuilt after an edit shares most
/// of its functions (std, serde, the SDK, an interpreter) with the version
/// before, so a hot reload compiles only what changed.
#[derive(Debug, Default)]
pub struct FunctionCache {
    entries: Mutex<FunctionEntries>,
    /// Functions found compiled, since the start.
    hits: AtomicU64,
}

impl FunctionCache {
    /// How many functions compilations found here instead of compiling.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct FunctionEntries {
    by_key: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let found = lock(&self.entries).by_key.get(key).map(|value| Cow::Owned(value.clone()));
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if size > MAX_FUNCTION_CACHE_BYTES {
            return false;
        }
        let mut entries = lock(&self.entries);
        if entries.bytes + size > MAX_FUNCTION_CACHE_BYTES {
            *entries = FunctionEntries::default();
        }
        entries.bytes += size;
        entries.by_key.insert(key.to_vec(), value);
        true
    }
}

/// Where a compiled component came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    /// Loaded from the cache.
    Cached,
    /// Compiled (no entry yet, or no usable cache); stored for next time
    /// when there is a cache.
    Fresh,
    /// An entry was there but could not be used (why); compiled again and
    /// replaced.
    Replaced(String),
}

/// A directory of compiled components for one engine.
pub struct ComponentCache {
    dir: PathBuf,
    /// wasmtime's compatibility hash of the engine, as hex.
    engine_key: String,
}

impl ComponentCache {
    /// The cache in `dir` (created, private, if missing) for `engine`;
    /// `None`, with a warning, if it cannot be used safely.
    pub fn open(dir: &Path, engine: &Engine) -> Option<Self> {
        if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            tracing::warn!("not caching compiled plugins: cannot create {}: {e}", dir.display());
            return None;
        }
        match std::fs::metadata(dir) {
            Ok(meta) if meta.permissions().mode() & 0o022 != 0 => {
                tracing::warn!(
                    "not caching compiled plugins: {} may be written by others than its owner (chmod 700 it)",
                    dir.display()
                );
                None
            }
            Ok(_) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                engine.precompile_compatibility_hash().hash(&mut hasher);
                Some(Self { dir: dir.to_owned(), engine_key: format!("{:016x}", hasher.finish()) })
            }
            Err(e) => {
                tracing::warn!("not caching compiled plugins: {}: {e}", dir.display());
                None
            }
        }
    }

    /// The compiled form of the component `bytes`: from the cache when it
    /// holds a sound entry, else compiled and stored. A cache that cannot be
    /// written only costs the next start a compilation.
    /// `digest` is the SHA-256 of `bytes`.
    pub fn component(&self, engine: &Engine, bytes: &[u8], digest: &[u8]) -> wasmtime::Result<(Component, Compiled)> {
        let path = self.entry(digest);
        let replaced = match self.read(engine, &path) {
            Ok(Some(component)) => return Ok((component, Compiled::Cached)),
            Ok(None) => None,
            Err(why) => Some(why),
        };
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.write(&path, &component) {
            tracing::warn!("cannot cache the compiled plugin in {}: {e}", path.display());
        }
        Ok((component, replaced.map_or(Compiled::Fresh, Compiled::Replaced)))
    }

    fn entry(&self, digest: &[u8]) -> PathBuf {
        let digest: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The entry at `path`: none if missing, an error saying why if unsound.
    fn read(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let Some((digest, code)) = data.split_at_checked(DIGEST_LEN) else {
            return Err(format!("it is {} bytes, too short to be an entry", data.len()));
        };
        if Sha256::digest(code).as_slice() != digest {
            return Err("its content does not match its checksum".to_owned());
        }
        // SAFETY: `code` is what `Component::serialize` wrote for an engine
        // with this compatibility hash (the name says so) and is unchanged
        // since (the checksum says so); the directory is writable by its
        // owner only. wasmtime checks the artifact's header itself.
        unsafe { Component::deserialize(engine, code) }.map(Some).map_err(|e| format!("wasmtime refused it: {e:#}"))
    }

    fn write(&self, path: &Path, component: &Component) -> Result<(), String> {
        let code = component.serialize().map_err(|e| format!("{e:#}"))?;
        self.write_atomically(path, &[&Sha256::digest(&code), &code])
    }

    /// The `describe()` answer kept under `key`, if there is a readable one.
    pub fn spec(&self, key: &str) -> Option<String> {
        let path = self.spec_entry(key);
        let file = std::fs::File::open(&path).ok()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_SPEC_BYTES), &mut text).ok()?;
        Some(text)
    }

    /// Keep `spec` under `key`; a cache that cannot be written only costs
    /// the next start a load.
    pub fn put_spec(&self, key: &str, spec: &str) {
        let path = self.spec_entry(key);
        if let Err(e) = self.write_atomically(&path, &[spec.as_bytes()]) {
            tracing::warn!("cannot cache the plugin's spec in {}: {e}", path.display());
        }
    }

    fn spec_entry(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.spec.json"))
    }

    /// Write `parts` to `path` through a temporary file renamed into place.
    fn write_atomically(&self, path: &Path, parts: &[&[u8]]) -> Result<(), String> {
        let temporary = self.dir.join(format!(".{}-{:016x}.tmp", std::process::id(), fastrand::u64(..)));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| {
                for part in parts {
                    file.write_all(part)?;
                }
                file.sync_data()
            })
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(e.to_string());
        }
        self.trim();
        Ok(())
    }

    /// Remove the oldest entries while the directory holds more than
    /// [`MAX_CACHE_BYTES`], and temporary files a crashed writer left.
    fn trim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .filter(|(modified, _, path)| match path.extension().and_then(|x| x.to_str()) {
                Some("cwasm" | "json") => true,
                Some("tmp") if modified.elapsed().is_ok_and(|age| age > STALE_TEMPORARY) => {
                    let _ = std::fs::remove_file(path);
                    false
                }
                _ => false,
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= MAX_CACHE_BYTES {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_function_cache_answers_what_it_holds_and_starts_again_when_full() {
        let cache = FunctionCache::default();
        assert!(cache.insert(b"f", vec![1, 2]));
        assert_eq!(cache.get(b"f").as_deref(), Some(&[1u8, 2][..]));
        assert_eq!((cache.get(b"g"), cache.hits()), (None, 1));
        assert!(!cache.insert(b"huge", vec![0; MAX_FUNCTION_CACHE_BYTES]), "larger than the whole cache");
        assert!(cache.insert(b"big", vec![0; MAX_FUNCTION_CACHE_BYTES - 3]), "as large as the whole cache");
        assert_eq!(cache.get(b"f"), None, "full: it started again");
        assert!(cache.get(b"big").is_some());
    }

    fn echo_bytes() -> &'static [u8] {
        super::super::loader::embedded::BUNDLED[0].1
    }

    fn compile(cache: &ComponentCache, engine: &Engine) -> Compiled {
        let bytes = echo_bytes();
        cache.component(engine, bytes, &Sha256::digest(bytes)).unwrap().1
    }

    fn only_entry(dir: &Path) -> PathBuf {
        let entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].clone()
    }

    #[test]
    fn a_component_is_compiled_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ComponentCache::open(dir.path(), &engine).unwrap();
        assert_eq!(compile(&cache, &engine), Compiled::Fresh);
        assert_eq!(compile(&cache, &engine), Compiled::Cached);
        let entry = only_entry(dir.path());
        assert_eq!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777, 0o600);

        // Another engine (other settings) has its own entries.
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        let cache = ComponentCache::open(dir.path(), &other).unwrap();
        assert_eq!(compile(&cache, &other), Compiled::Fresh);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_unsound_entry_is_compiled_again_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ComponentCache::open(dir.path(), &engine).unwrap();
        compile(&cache, &engine);
        let entry = only_entry(dir.path());
        let sound = std::fs::read(&entry).unwrap();

        let mut flipped = sound.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let garbage: Vec<u8> = Sha256::digest(b"not code").into_iter().chain(*b"not code").collect();
        for (bad, why) in [
            (flipped, "does not match its checksum"),
            (b"short".to_vec(), "too short"),
            (garbage, "wasmtime refused it"),
        ] {
            std::fs::write(&entry, bad).unwrap();
            match compile(&cache, &engine) {
                Compiled::Replaced(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("expected a replaced entry ({why}), got {other:?}"),
            }
            assert_eq!(std::fs::read(&entry).unwrap(), sound, "the entry is written again");
            assert_eq!(compile(&cache, &engine), Compiled::Cached);
        }
    }

    #[test]
    fn a_crashed_writers_temporary_file_is_removed_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (stale, fresh) = (dir.path().join(".1-dead.tmp"), dir.path().join(".2-live.tmp"));
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&fresh, b"half").unwrap();
        let old = std::time::SystemTime::now() - 2 * STALE_TEMPORARY;
        std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
        let engine = Engine::default();
        compile(&ComponentCache::open(dir.path(), &engine).unwrap(), &engine);
        assert!(!stale.exists() && fresh.exists(), "only the stale one goes");
    }

    #[test]
    fn a_directory_others_may_write_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ComponentCache::open(dir.path(), &Engine::default()).is_none());
        let created = dir.path().join("new/cache");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(ComponentCache::open(&created, &Engine::default()).is_some());
        assert_eq!(std::fs::metadata(&created).unwrap().permissions().mode() & 0o777, 0o700, "created private");
    }
}
