//! The wasmtime engine and linker shared by every plugin, with the engine
//! settings and why each is chosen.

use super::bindings::Provider as ProviderWorld;
use super::cache::{Compiled, ComponentCache, FunctionCache};
use super::grants::Grants;
use super::outbound::Outbound;
use super::output::{LogPipe, Stream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// How often the epoch advances: the granularity of deadlines, and how often
/// a busy plugin yields its thread to other tasks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each pooled memory and table kept mapped between instances.
const KEEP_RESIDENT: usize = 16 * 1024 * 1024;

/// Limits of the runtime as a whole.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances alive at once (running calls). Sizes the pooling allocator.
    pub max_instances: u32,
    /// Linear memory one call may use, in bytes.
    pub memory_limit: usize,
    /// Where compiled components are kept between starts (see `cache`);
    /// none compiles every component at every start.
    pub cache_dir: Option<std::path::PathBuf>,
    /// When a plugin whose `describe()` answer the cache holds is compiled.
    pub compile: CompileWhen,
    /// The secrets manifests' `headers` may name.
    pub secrets: Arc<crate::secrets::SecretBook>,
}

/// When a plugin is compiled (or its compiled code loaded from the cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompileWhen {
    /// As it loads: a plugin that does not compile, link or describe itself
    /// is refused before it serves (the daemon, whose reloads must keep a
    /// working version serving).
    #[default]
    OnLoad,
    /// At its first call, when the cache already holds its spec: a one-shot
    /// command (`run`, `workflow validate`) loads only the plugins its
    /// tasks call, and validation loads none.
    OnFirstCall,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            memory_limit: 64 * 1024 * 1024,
            cache_dir: None,
            compile: CompileWhen::OnLoad,
            secrets: Arc::default(),
        }
    }
}

/// The engine, linker and epoch ticker.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<StoreState>,
    config: RuntimeConfig,
    /// None if its thread could not start (deadlines then rest on the
    /// async timeout alone).
    ticker: Option<Arc<EpochTicker>>,
    cache: Option<ComponentCache>,
    functions: Arc<FunctionCache>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the WASM runtime: {0}")]
pub struct RuntimeError(String);

impl RuntimeConfig {
    /// What a plugin without a manifest gets: no config, no outbound hosts,
    /// the default memory limit, no timeout of its own, as many calls as
    /// instances.
    pub fn default_grants(&self) -> Grants {
        Grants {
            config: Default::default(),
            memory_limit: self.memory_limit,
            timeout: None,
            max_concurrency: self.max_instances as usize,
            outbound: Outbound::deny_all(self.secrets.clone()),
            read_dirs: Vec::new(),
            mcp_stdio: Default::default(),
            protocol: None,
            rate_limit: Default::default(),
            uncacheable: Vec::new(),
        }
    }
}

impl WasmRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let functions = Arc::new(FunctionCache::default());
        let engine = Self::engine(&config, functions.clone())?;
        let mut linker = Linker::new(&engine);
        // WASI p2 is linked so ordinary Rust guests (std) instantiate; what it
        // may touch is decided per store in `new_store`: nothing by default.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| RuntimeError(format!("{e:#}")))?;
        ProviderWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| RuntimeError(format!("{e:#}")))?;
        let ticker = EpochTicker::start(&engine).map(Arc::new);
        let cache = config.cache_dir.as_deref().and_then(|dir| ComponentCache::open(dir, &engine));
        Ok(Self { engine, linker, config, ticker, cache, functions })
    }

    fn engine(config: &RuntimeConfig, functions: Arc<FunctionCache>) -> Result<Engine, RuntimeError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true);
        // Deadlines without the cost of fuel: a ticker bumps the epoch and a
        // store past its deadline traps (or yields, see `new_store`).
        wasm.epoch_interruption(true);
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component holds a few core instances (main module plus
        // wit-component shims), each with tables; one memory is typical.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            // Per-plugin limits (manifests) are enforced by each store's
            // limiter; a slot can hold the largest a manifest may grant.
            .max_memory_size(super::manifest::MAX_MEMORY_BYTES)
            // Reset a slot by rewriting only the pages the last instance
            // dirtied (Linux PAGEMAP_SCAN, kernel 6.7+) instead of madvise:
            // no page faults on reuse and no TLB shootdowns across threads.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        // A new version of a plugin compiles only the functions that changed.
        wasm.enable_incremental_compilation(functions).map_err(|e| RuntimeError(format!("{e:#}")))?;
        let mut pooled = wasm.clone();
        // Pre-reserved slots make instantiation a few microseconds: no mmap
        // per instance, copy-on-write initial memory.
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&pooled) {
            Ok(engine) => Ok(engine),
            Err(e) => {
                // Too little virtual address space (e.g. a ulimit): fall back
                // to allocating per instance, slower but correct.
                tracing::warn!("pooling allocator unavailable ({e:#}); allocating instances on demand");
                Engine::new(&wasm).map_err(|e| RuntimeError(format!("{e:#}")))
            }
        }
    }

    /// What a plugin without a manifest gets (see [`RuntimeConfig::default_grants`]).
    pub fn default_grants(&self) -> Grants {
        self.config.default_grants()
    }

    pub fn linker(&self) -> &Linker<StoreState> {
        &self.linker
    }

    /// The functions compilations took from the function cache so far.
    pub fn functions_reused(&self) -> u64 {
        self.functions.hits()
    }

    /// When plugins are compiled.
    pub fn compile_when(&self) -> CompileWhen {
        self.config.compile
    }

    /// The cache, if there is one.
    pub(super) fn cache(&self) -> Option<&ComponentCache> {
        self.cache.as_ref()
    }

    /// Compile a component whose SHA-256 is `digest`, or load it from the
    /// cache (compiling is CPU-heavy: call off the async threads).
    pub fn compile(&self, bytes: &[u8], digest: &[u8]) -> wasmtime::Result<(Component, Compiled)> {
        match &self.cache {
            Some(cache) => cache.component(&self.engine, bytes, digest),
            None => Ok((Component::new(&self.engine, bytes)?, Compiled::Fresh)),
        }
    }

    /// A fresh store for one call: WASI with nothing granted but the
    /// plugin's `read_dirs`, output to
    /// `tracing`, the memory limit, and a deadline that traps at `deadline`
    /// while yielding the thread every tick before it.
    pub fn new_store(
        &self,
        plugin: Arc<str>,
        grants: Arc<Grants>,
        task_id: String,
        deadline: Instant,
    ) -> Store<StoreState> {
        let stdout = LogPipe::new(plugin.clone(), Stream::Stdout);
        let stderr = LogPipe::new(plugin.clone(), Stream::Stderr);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for dir in &grants.read_dirs {
            // Read-only, at the same path, so a plugin opens the paths users give it.
            let opened = wasi.preopened_dir(dir, dir.to_string_lossy(), FsPerms::ReadOnly);
            if let Err(e) = opened {
                tracing::warn!(plugin = &*plugin, "cannot open granted directory {}: {e:#}", dir.display());
            }
        }
        let wasi = wasi.build();
        let limits = StoreLimitsBuilder::new().memory_size(grants.memory_limit).build();
        let state = StoreState {
            progress: None,
            wasi,
            table: ResourceTable::new(),
            limits,
            grants,
            identity: CallIdentity { plugin, task_id },
            stdout,
            stderr,
            open_streams: 0,
            _ticking: self.ticker.as_ref().map(EpochTicker::ticking),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline { Ok(UpdateDeadline::Interrupt) } else { Ok(UpdateDeadline::Yield(1)) }
        });
        store
    }
}

/// Advance the engine's epoch every tick, until the engine is dropped.
/// Advances the engine's epoch every [`EPOCH_TICK`] while any store is
/// alive, and sleeps otherwise: an idle host does not wake a hundred times a
/// second (it looks once every [`IDLE_CHECK`] whether the engine is gone).
pub struct EpochTicker {
    live: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

/// How often a sleeping ticker checks that its engine still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Who a call runs for, for logs.
#[derive(Debug)]
pub struct CallIdentity {
    pub plugin: Arc<str>,
    pub task_id: String,
}

/// The data of one store: one instance, one call.
pub struct StoreState {
    /// Where `progress` chunks go, if anyone listens.
    pub progress: Option<crate::registry::Progress>,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub grants: Arc<Grants>,
    pub identity: CallIdentity,
    pub stdout: LogPipe,
    pub stderr: LogPipe,
    /// Streamed bodies the plugin holds (each keeps a connection open).
    pub open_streams: usize,
    /// Keeps the epoch (deadlines, yielding) advancing while the store lives.
    pub _ticking: Option<Ticking>,
}

/// Keeps the epoch ticking while the store holding it lives.
pub struct Ticking(Arc<EpochTicker>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EpochTicker {
    fn start(engine: &Engine) -> Option<Self> {
        let weak = engine.weak();
        let live = Arc::new(AtomicUsize::new(0));
        let counted = live.clone();
        let spawned = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                if counted.load(Ordering::Acquire) == 0 {
                    drop(engine);
                    // Woken at once by the first new store (`ticking`).
                    std::thread::park_timeout(IDLE_CHECK);
                    continue;
                }
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
        match spawned {
            Ok(handle) => Some(Self { live, thread: handle.thread().clone() }),
            Err(e) => {
                tracing::error!(
                    "cannot start the epoch ticker ({e}); plugin deadlines rely on the async timeout alone"
                );
                None
            }
        }
    }

    fn ticking(self: &Arc<Self>) -> Ticking {
        if self.live.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        Ticking(self.clone())
    }
}
