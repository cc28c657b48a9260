//! Tasks this host takes from the other hosts of its cluster: while its own
//! providers of a protocol have free slots, it takes offers of that
//! protocol (`store::redis::work`), runs each on one of them, and answers
//! the host that offered it. A call's progress goes to every host on the
//! bus, for the clients that follow its workflow.

use super::elsewhere::encode;
use super::{Membership, What};
use crate::daemon::events::{self, Passed};
use crate::engine::{EngineEvent, ProgressEvent};
use crate::locks::lock;
use crate::model::{TaskError, codes};
use crate::registry::{Call, Progress, ProviderKind, Registry, Selection};
use crate::store::redis::cluster::Cluster;
use crate::store::redis::work::Taken;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one read for offers waits (an offer ends the wait at once;
/// longer, an idle host wakes less).
const TAKE_WAIT: Duration = Duration::from_secs(2);
/// How often this host looks again for a free slot while its providers
/// are all busy (a local look, no Redis command).
const FULL_WAIT: Duration = Duration::from_millis(5);
/// Offers taken at once for providers without a limit of their own (WASM
/// plugins), and at most for any protocol.
const UNLIMITED_TAKE: usize = 64;
const MOST_TAKEN: usize = 512;
/// How long a taken offer waits for a provider that was free when it was
/// taken and is busy now (this host's own work took it), before it goes
/// back to its offerer to be offered again.
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// Offers taken and not yet handed to a provider, by protocol: their slots
/// are spoken for.
type Starting = Arc<Mutex<HashMap<String, usize>>>;

/// The other hosts' calls this host took and has not answered yet, by
/// protocol (its part of the cluster's queue, in its announcement).
#[derive(Default)]
pub(super) struct Serving(Mutex<HashMap<String, u64>>);

impl Serving {
    pub(super) fn counts(&self) -> Vec<(String, u64)> {
        lock(&self.0).iter().filter(|(_, n)| **n > 0).map(|(protocol, n)| (protocol.clone(), *n)).collect()
    }

    fn add(&self, protocol: &str, n: i64) {
        let mut counts = lock(&self.0);
        let count = counts.entry(protocol.to_owned()).or_default();
        *count = count.saturating_add_signed(n);
    }
}

/// Take and run the other hosts' tasks until the lease is lost: one thread
/// per protocol this host's own providers serve (each waits on its own
/// stream, so a busy protocol never delays another's offers), started as
/// such providers come and ending when they go.
pub(super) fn start(cluster: Arc<Cluster>, registry: Arc<Registry>, membership: Arc<Membership>) {
    let runtime = tokio::runtime::Handle::current();
    let watching = std::thread::Builder::new().name("cluster-worker".into()).spawn(move || {
        let starting = Starting::default();
        let taking: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        while cluster.lease.lost().is_none() {
            for protocol in own_protocols(&registry) {
                if !lock(&taking).insert(protocol.clone()) {
                    continue;
                }
                let running = Running {
                    cluster: cluster.clone(),
                    registry: registry.clone(),
                    membership: membership.clone(),
                    starting: starting.clone(),
                };
                let (runtime, taking) = (runtime.clone(), taking.clone());
                let spawned = std::thread::Builder::new().name("cluster-taker".into()).spawn(move || {
                    running.take(&protocol, &runtime);
                    lock(&taking).remove(&protocol);
                });
                if let Err(e) = spawned {
                    tracing::error!("cannot take the other hosts' tasks: {e}");
                }
            }
            std::thread::sleep(PROTOCOLS_WAIT);
        }
    });
    if let Err(e) = watching {
        tracing::error!("cannot take the other hosts' tasks: {e}");
    }
}

/// How often the worker looks for protocols this host newly serves.
const PROTOCOLS_WAIT: Duration = Duration::from_secs(1);

/// The protocols this host's own providers serve.
fn own_protocols(registry: &Registry) -> Vec<String> {
    let mut protocols: Vec<String> = (registry.providers().iter())
        .filter(|p| p.kind() != ProviderKind::Cluster)
        .map(|p| p.spec().protocol.clone())
        .collect();
    protocols.dedup();
    protocols
}

/// How many offers of `protocol` this host's own providers can take now;
/// none if it has no provider of it any more.
fn free_slots(registry: &Registry, starting: &Starting, protocol: &str) -> Option<usize> {
    let own: Vec<_> = (registry.providers().into_iter())
        .filter(|p| p.kind() != ProviderKind::Cluster && p.spec().protocol == protocol)
        .collect();
    if own.is_empty() {
        return None;
    }
    let slots: usize = own.iter().map(|p| p.free_slots().unwrap_or(UNLIMITED_TAKE).min(MOST_TAKEN)).sum();
    let spoken_for = lock(starting).get(protocol).copied().unwrap_or(0);
    Some(slots.min(MOST_TAKEN).saturating_sub(spoken_for))
}

/// How many calls of `protocol` this host's own providers take at once
/// (one without a limit counts as [`UNLIMITED_TAKE`]).
pub(super) fn slots(registry: &Registry, protocol: &str) -> usize {
    let own = registry.providers().into_iter().filter(|p| p.kind() != ProviderKind::Cluster);
    let slots = own.filter(|p| p.spec().protocol == protocol).map(|p| p.load().capacity.unwrap_or(UNLIMITED_TAKE));
    slots.sum::<usize>().min(MOST_TAKEN)
}

struct Running {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    membership: Arc<Membership>,
    starting: Starting,
}

impl Running {
    /// Take offers of `protocol` while this host has providers of it and
    /// its lease holds, each run on `runtime`.
    fn take(self, protocol: &str, runtime: &tokio::runtime::Handle) {
        let mut taker = match self.cluster.work.taker() {
            Ok(taker) => taker,
            Err(e) => return tracing::error!("cannot take the other hosts' tasks: {e}"),
        };
        let running = Arc::new(self);
        while running.cluster.lease.lost().is_none() {
            let Some(free) = free_slots(&running.registry, &running.starting, protocol) else { return };
            if free == 0 {
                std::thread::sleep(FULL_WAIT);
                continue;
            }
            match taker.take(protocol, free, TAKE_WAIT) {
                Ok(taken) => {
                    running.membership.serving.add(protocol, taken.len() as i64);
                    for taken in taken {
                        *lock(&running.starting).entry(taken.protocol.clone()).or_default() += 1;
                        runtime.spawn(running.clone().run(taken));
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot take the other hosts' tasks: {e}");
                    std::thread::sleep(TAKE_WAIT);
                }
            }
        }
    }

    async fn run(self: Arc<Self>, taken: Taken) {
        let outcome = self.call(&taken).await;
        self.membership.counts.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.membership.serving.add(&taken.protocol, -1);
        self.cluster.work.answer(taken, encode(&outcome));
    }

    /// Run the offered call on one of this host's providers.
    async fn call(&self, taken: &Taken) -> Result<serde_json::Value, TaskError> {
        let offer = &taken.offer;
        let deadline = Instant::now() + Duration::from_millis(offer.timeout_ms);
        let handed = Handed { starting: self.starting.clone(), protocol: taken.protocol.clone() };
        let waited = Instant::now();
        let provider = loop {
            match self.registry.select_own(&taken.protocol) {
                Selection::Provider(provider) => break provider,
                Selection::Busy | Selection::Limited { .. } if waited.elapsed() < BUSY_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Selection::Busy | Selection::Limited { .. } | Selection::Missing => {
                    let message =
                        format!("host {} has no free provider of {} now", self.cluster.lease.host, taken.protocol);
                    return Err(TaskError::new(codes::SERVER_ERROR, message).requeue());
                }
            }
        };
        let call = Call {
            task_id: offer.task_id.clone(),
            workflow_id: Some(offer.workflow_id.clone()),
            owner: offer.owner.as_deref().map(Arc::from),
            attempt: offer.attempt,
            method: offer.method.clone(),
            params: offer.params.clone(),
            deadline,
            progress: Some(self.progress(taken)),
        };
        let pending = provider.call(call);
        drop(handed);
        match tokio::time::timeout_at(deadline.into(), pending).await {
            Ok(outcome) => outcome,
            Err(_) => {
                Err(TaskError::new(codes::TIMEOUT, format!("timed out after {} ms", offer.timeout_ms)).retryable())
            }
        }
    }

    /// Where the call's progress goes: to every host, for the clients that
    /// follow its workflow.
    fn progress(&self, taken: &Taken) -> Progress {
        let membership = self.membership.clone();
        let offer = taken.offer.clone();
        Arc::new(move |chunk| {
            let event = EngineEvent::Progress(ProgressEvent {
                workflow_id: offer.workflow_id.clone(),
                owner: offer.owner.as_deref().map(Arc::from),
                task_id: offer.task_id.clone(),
                chunk,
            });
            membership.say(What::Progress(vec![Passed::of(&events::payload(&event))]));
        })
    }
}

/// An offer's slot, spoken for until its call is handed to a provider.
struct Handed {
    starting: Starting,
    protocol: String,
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(count) = lock(&self.starting).get_mut(&self.protocol) {
            *count = count.saturating_sub(1);
        }
    }
}
