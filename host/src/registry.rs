//! The protocol registry: which providers serve which protocol, and the
//! [`Provider`] interface every kind of provider (WASM plugin, later remote
//! Socket.IO peer) implements.
//!
//! It routes, within each provider's and protocol's rate limits (see
//! `rate`); it does not run, queue or retry anything. Providers can be added
//! and removed while tasks run (hot reload, remote peers), so lookups hand out
//! `Arc`s and never hold the lock across a call.

use crate::locks::lock;
use crate::model::{ProviderSpec, TaskError};
use crate::rate::{Limited, Limiter, RateLimit};
use crate::schema::ParamsSchema;
use crate::workflow::Catalog;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Receives a call's partial output (LLM tokens, steps), for subscribers.
pub type Progress = Arc<dyn Fn(Value) + Send + Sync>;

/// One method call for one task attempt.
#[derive(Clone)]
pub struct Call {
    pub task_id: String,
    pub workflow_id: Option<String>,
    /// Who owns the workflow (a token's name): who may see its progress.
    pub owner: Option<Arc<str>>,
    /// Starts at 1.
    pub attempt: u32,
    pub method: String,
    /// The params after `${…}` substitution.
    pub params: Arc<Value>,
    /// The attempt must end by then; providers should stop work at it.
    pub deadline: Instant,
    /// Where partial output goes, when someone listens.
    pub progress: Option<Progress>,
}

/// The future a provider returns for a call.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;
/// A provider's start before its first call (see [`Provider::starting`]).
pub type Starting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Something that serves one protocol.
pub trait Provider: Send + Sync {
    /// A unique id, e.g. `wasm:echo` (shown in listings and logs).
    fn id(&self) -> &Arc<str>;
    /// What it serves.
    fn spec(&self) -> &ProviderSpec;
    /// Start one call; a provider with limited slots takes one here, before
    /// the future is first polled. The engine also enforces `call.deadline`.
    fn call(&self, call: Call) -> CallFuture;
    /// What it must do before it can take a call, if anything (a plugin
    /// whose compiling was deferred to its first call): the engine waits
    /// for it before the call, off its own thread, and the time does not
    /// count against the task's deadline. A start that fails shows in the
    /// call that follows.
    fn starting(&self) -> Option<Starting> {
        None
    }
    /// Where it runs, for listings and for which protocols remote peers
    /// may take on.
    fn kind(&self) -> ProviderKind {
        ProviderKind::Builtin
    }
    /// How many calls it takes at once and has running now.
    fn load(&self) -> Load {
        Load { capacity: None, in_flight: 0 }
    }
    /// The calls and tokens per minute it may use (its manifest's).
    fn rate_limit(&self) -> RateLimit {
        RateLimit::default()
    }
    /// Whether the results of `method` may be reused (`cache: {ttl}`); a
    /// manifest's `uncacheable` says which may not.
    fn cacheable(&self, method: &str) -> bool {
        let _ = method;
        true
    }
    /// Calls it can take now; `None` for no limit.
    fn free_slots(&self) -> Option<usize> {
        let load = self.load();
        load.capacity.map(|capacity| capacity.saturating_sub(load.in_flight))
    }
}

/// Where a provider runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// A WebAssembly plugin, in this process's sandbox.
    Wasm,
    /// A program connected over Socket.IO.
    Remote,
    /// The providers of the other hosts of a cluster: picked only when no
    /// provider of this host is free.
    Cluster,
    /// Rust code compiled into the host (tests and benchmarks).
    Builtin,
}

impl ProviderKind {
    /// As listings and metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Wasm => "wasm",
            ProviderKind::Remote => "remote",
            ProviderKind::Cluster => "cluster",
            ProviderKind::Builtin => "builtin",
        }
    }
}

/// A provider's capacity (`None`: no limit) and the calls it runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub capacity: Option<usize>,
    pub in_flight: usize,
}

/// The outcome of looking for a provider.
pub enum Selection {
    Provider(Arc<dyn Provider>),
    /// Providers exist but none has a free slot.
    Busy,
    /// No provider serves the protocol.
    Missing,
    /// A provider would be free but for a rate limit: none may start a
    /// call before `until`.
    Limited {
        until: Instant,
        why: String,
    },
}

#[derive(Default)]
struct Entry {
    providers: Vec<Served>,
    next: AtomicUsize,
}

/// A provider with its limiter, found with it when a call is routed.
struct Served {
    provider: Arc<dyn Provider>,
    limiter: Arc<Limiter>,
}

/// Providers by protocol.
#[derive(Default)]
pub struct Registry {
    protocols: RwLock<BTreeMap<String, Entry>>,
    /// Each protocol's limits that the host config sets, shared by all its
    /// providers.
    protocol_limits: Mutex<HashMap<String, Arc<Limiter>>>,
    /// Each provider's limiter, by id: its own limits and its backend's
    /// pauses (kept while it serves, and across a reload). Routing takes
    /// it from the provider's entry, without this lock.
    limiters: Mutex<HashMap<Arc<str>, Arc<Limiter>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Limit all calls of `protocol` to `limit` (the host config's).
    pub fn limit_protocol(&self, protocol: &str, limit: RateLimit) {
        lock(&self.protocol_limits).insert(protocol.to_owned(), Arc::new(Limiter::new(limit)));
    }

    /// The limiter of the provider `id`, made from `limit` if it is new or
    /// its limits changed.
    fn limiter_of(&self, id: &Arc<str>, limit: RateLimit) -> Arc<Limiter> {
        let mut limiters = lock(&self.limiters);
        match limiters.get(id) {
            Some(limiter) if limiter.limit() == limit => limiter.clone(),
            _ => {
                let limiter = Arc::new(Limiter::new(limit));
                limiters.insert(id.clone(), limiter.clone());
                limiter
            }
        }
    }

    /// The limiters that limit anything, each named as the hosts of a
    /// cluster know it: `provider ID`, `protocol NAME`.
    pub fn limiters(&self) -> Vec<(String, Arc<Limiter>)> {
        let mut named: Vec<(String, Arc<Limiter>)> =
            lock(&self.limiters).iter().map(|(id, l)| (format!("provider {id}"), l.clone())).collect();
        named.extend(lock(&self.protocol_limits).iter().map(|(p, l)| (format!("protocol {p}"), l.clone())));
        named.retain(|(_, l)| !l.limit().is_none());
        named
    }

    /// A call of provider `id` ended, having used `tokens` (its result's
    /// usage) and asked for a pause until `pause` (a 429's Retry-After).
    pub fn call_ended(&self, protocol: &str, id: &str, tokens: u64, pause: Option<Instant>) {
        if tokens == 0 && pause.is_none() {
            return; // most calls: nothing to count, no lock taken
        }
        let now = Instant::now();
        if let Some(limiter) = lock(&self.protocol_limits).get(protocol) {
            limiter.spend(tokens, now);
        }
        if let Some(limiter) = lock(&self.limiters).get(id) {
            limiter.spend(tokens, now);
            if let Some(until) = pause {
                limiter.pause(until);
            }
        }
    }

    /// Whether every provider of `protocol` lets results of `method` be
    /// reused.
    pub fn cacheable(&self, protocol: &str, method: &str) -> bool {
        self.read().get(protocol).is_some_and(|e| e.providers.iter().all(|s| s.provider.cacheable(method)))
    }

    /// `name@version` of each provider of `protocol`, sorted: part of a
    /// cached result's key, so that a new version is a new key.
    pub fn versions(&self, protocol: &str) -> Vec<String> {
        let protocols = self.read();
        let mut versions: Vec<String> = (protocols.get(protocol).into_iter())
            .flat_map(|e| {
                e.providers.iter().map(|s| format!("{}@{}", s.provider.spec().name, s.provider.spec().version))
            })
            .collect();
        versions.sort();
        versions.dedup();
        versions
    }

    /// Whether any provider serves `protocol`.
    pub fn serves(&self, protocol: &str) -> bool {
        self.read().get(protocol).is_some_and(|e| !e.providers.is_empty())
    }

    /// Add a provider; it serves alongside others of the same protocol.
    /// A provider with the same id replaces the old one.
    pub fn register(&self, provider: Arc<dyn Provider>) {
        let limiter = self.limiter_of(provider.id(), provider.rate_limit());
        let mut protocols = self.write();
        let entry = protocols.entry(provider.spec().protocol.clone()).or_default();
        entry.providers.retain(|s| s.provider.id() != provider.id());
        entry.providers.push(Served { provider, limiter });
    }

    /// Register `provider` in place of any provider with its id, in one step
    /// (its protocol may differ from the old one's).
    pub fn replace(&self, provider: Arc<dyn Provider>) {
        let limiter = self.limiter_of(provider.id(), provider.rate_limit());
        let mut protocols = self.write();
        protocols.retain(|_, entry| {
            entry.providers.retain(|s| s.provider.id() != provider.id());
            !entry.providers.is_empty()
        });
        let entry = protocols.entry(provider.spec().protocol.clone()).or_default();
        entry.providers.push(Served { provider, limiter });
    }

    /// Remove a provider by id; returns whether it was registered.
    pub fn unregister(&self, id: &str) -> bool {
        let mut protocols = self.write();
        let mut removed = false;
        protocols.retain(|_, entry| {
            let before = entry.providers.len();
            entry.providers.retain(|s| &**s.provider.id() != id);
            removed |= entry.providers.len() != before;
            !entry.providers.is_empty()
        });
        removed
    }

    /// The provider of `protocol` with the most free slots that its rate
    /// limits let start a call now (which the call then counts against),
    /// rotating among equals; this host's own first, the other hosts' of a
    /// cluster ([`ProviderKind::Cluster`]) only when none of its own is
    /// free or limited.
    pub fn select(&self, protocol: &str) -> Selection {
        self.choose(protocol, true)
    }

    /// Like [`select`](Self::select), among this host's own providers only
    /// (for a task another host passed on).
    pub fn select_own(&self, protocol: &str) -> Selection {
        self.choose(protocol, false)
    }

    fn choose(&self, protocol: &str, elsewhere_too: bool) -> Selection {
        let protocols = self.read();
        let Some(entry) = protocols.get(protocol).filter(|e| !e.providers.is_empty()) else {
            return Selection::Missing;
        };
        let now = Instant::now();
        let of_protocol = lock(&self.protocol_limits).get(protocol).cloned();
        let protocol_wait = of_protocol.as_ref().and_then(|l| l.wait(now)).map(|(until, why)| (until, why, protocol));
        let n = entry.providers.len();
        let start = entry.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, &Served)> = None;
        let mut limited: Option<(Instant, Limited, &str)> = None;
        let (mut own, mut elsewhere, mut others_full) = (false, None, false);
        for i in 0..n {
            let served = &entry.providers[(start + i) % n];
            let provider = &served.provider;
            if provider.kind() == ProviderKind::Cluster {
                match provider.free_slots() {
                    Some(0) => others_full = true,
                    _ => elsewhere = Some(provider),
                }
                continue;
            }
            own = true;
            let free = provider.free_slots().unwrap_or(usize::MAX);
            if free == 0 || best.is_some_and(|(most, _)| free <= most) {
                continue;
            }
            let wait =
                protocol_wait.or_else(|| served.limiter.wait(now).map(|(until, why)| (until, why, &**provider.id())));
            match wait {
                Some(wait) => limited = Some(limited.map_or(wait, |was| if wait.0 < was.0 { wait } else { was })),
                None => best = Some((free, served)),
            }
        }
        match (best, limited, elsewhere.filter(|_| elsewhere_too)) {
            (Some((_, served)), _, _) => {
                of_protocol.inspect(|l| l.take(now));
                served.limiter.take(now);
                Selection::Provider(served.provider.clone())
            }
            (None, Some((until, why, whose)), _) => {
                Selection::Limited { until, why: format!("rate limit of {whose}: {why}") }
            }
            (None, None, Some(provider)) => Selection::Provider(provider.clone()),
            (None, None, None) if own || (others_full && elsewhere_too) => Selection::Busy,
            (None, None, None) => Selection::Missing,
        }
    }

    /// Every provider, ordered by protocol.
    pub fn providers(&self) -> Vec<Arc<dyn Provider>> {
        self.read().values().flat_map(|e| e.providers.iter().map(|s| s.provider.clone())).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is a single insert or retain), so poison is harmless.
        self.protocols.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.protocols.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Catalog for Registry {
    fn methods(&self, protocol: &str) -> Option<Vec<String>> {
        let protocols = self.read();
        let entry = protocols.get(protocol)?;
        let mut methods: Vec<String> =
            entry.providers.iter().flat_map(|s| s.provider.spec().methods.iter().map(|m| m.name.clone())).collect();
        methods.sort();
        methods.dedup();
        Some(methods)
    }

    fn protocols(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn schemas(&self, protocol: &str, method: &str) -> Vec<ParamsSchema> {
        let protocols = self.read();
        let mut schemas: Vec<ParamsSchema> = Vec::new();
        let providers = protocols.get(protocol).map(|e| e.providers.as_slice()).unwrap_or_default();
        for schema in providers.iter().filter_map(|s| s.provider.spec().params_schema(method)) {
            if !schemas.contains(schema) {
                schemas.push(schema.clone());
            }
        }
        schemas
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::MethodSpec;

    /// An in-process provider for engine and registry tests.
    pub struct FnProvider<F> {
        pub id: Arc<str>,
        pub spec: ProviderSpec,
        pub f: F,
    }

    impl<F> Provider for FnProvider<F>
    where
        F: Fn(Call) -> CallFuture + Send + Sync,
    {
        fn id(&self) -> &Arc<str> {
            &self.id
        }
        fn spec(&self) -> &ProviderSpec {
            &self.spec
        }
        fn call(&self, call: Call) -> CallFuture {
            (self.f)(call)
        }
    }

    pub fn spec(protocol: &str, methods: &[&str]) -> ProviderSpec {
        ProviderSpec {
            protocol: protocol.into(),
            name: "test".into(),
            version: "0".into(),
            description: String::new(),
            methods: methods
                .iter()
                .map(|m| MethodSpec { name: (*m).into(), description: String::new(), params_schema: None })
                .collect(),
        }
    }

    fn provider(id: &str, protocol: &str) -> Arc<dyn Provider> {
        let id_owned = id.to_owned();
        Arc::new(FnProvider {
            id: id.into(),
            spec: spec(protocol, &["m"]),
            f: move |_call: Call| -> CallFuture {
                let id = id_owned.clone();
                Box::pin(async move { Ok(Value::String(id)) })
            },
        })
    }

    #[test]
    fn rotates_among_providers_and_unregisters() {
        let registry = Registry::new();
        registry.register(provider("a", "p/v1"));
        registry.register(provider("b", "p/v1"));
        registry.register(provider("c", "q/v1"));
        let ids: Vec<String> = (0..4)
            .filter_map(|_| match registry.select("p/v1") {
                Selection::Provider(p) => Some(p.id().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["a", "b", "a", "b"]);
        assert_eq!(registry.protocols(), ["p/v1", "q/v1"]);
        assert!(registry.unregister("c"));
        assert!(!registry.unregister("c"));
        assert!(matches!(registry.select("q/v1"), Selection::Missing));
        assert_eq!(registry.methods("p/v1"), Some(vec!["m".to_owned()]));
    }
}
