//! This host's part in a cluster (`--cluster`): every beat of its lease it
//! tells the others what it is and runs, and takes over (resumes) the
//! workflows of hosts whose lease is gone. It also answers "which hosts
//! are there" for `host list`, `GET /api/v1/hosts` and the dashboard, with
//! this host alone when there is no cluster.
//!
//! The lease, the register and the takeover itself are the store's
//! (`store::redis::cluster`); this module runs them and hands what it takes
//! to the engine. Tasks pass between hosts through `elsewhere` (a provider
//! for the other hosts' protocols) and `worker` (this host's providers
//! serving the others). It knows no transport.

mod elsewhere;
mod following;
mod worker;

pub use following::{Asks, Following};

use super::events::Passed;
use super::quota::Pool;
use crate::engine::Engine;
use crate::plugins::PluginSet;
use crate::registry::{ProviderKind, Registry};
use crate::store::AsyncStore;
use crate::store::redis::cluster::{Announcement, CallsBetween, Cluster, HostSeen, HostStatus};
use crate::store::redis::holds::Kind;
use crate::store::redis::work::MOST_PER_ENTRY;
use elsewhere::Reach;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one host tells the others on the cluster's bus.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Said {
    /// The host that says it (it does not listen to itself).
    pub from: String,
    /// Not flattened: a flattened field is read through serde's buffer,
    /// which cannot hold the events' data as raw JSON.
    pub what: What,
}

impl Said {
    /// How the text of what `host` says begins (`from` comes first): a
    /// host knows its own words without reading them.
    pub fn opening(host: &str) -> String {
        format!("{{\"from\":{},", serde_json::Value::from(host))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum What {
    /// Events of the workflows the sender drives, in order.
    Events(Vec<Passed>),
    /// Progress of calls the sender runs for another host's workflow: for
    /// every host's clients, the sender's too.
    Progress(Vec<Passed>),
    /// A client asked the sender to cancel a workflow; whichever host
    /// drives it does (the request is also stored, for a takeover).
    Cancel(String),
}

/// This host among the hosts: the cluster it is part of (if any), and what
/// it announces of itself.
pub struct Membership {
    cluster: Option<Arc<Cluster>>,
    /// Where clients reach it.
    address: String,
    started_at: std::time::SystemTime,
    counts: Counts,
    following: Following,
    /// The calls it offered the others, and waits for.
    offering: elsewhere::Offering,
    /// The others' calls it took.
    serving: worker::Serving,
}

/// What this host did for the cluster since it started (`/metrics`).
#[derive(Default)]
struct Counts {
    /// Calls it offered to the other hosts (also the calls' ids).
    offered: AtomicU64,
    /// Calls of the other hosts' workflows it ran.
    served: AtomicU64,
    /// Workflows it took over from gone hosts.
    taken_over: AtomicU64,
}

/// One protocol's calls in the cluster's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    pub protocol: String,
    /// Offered and not yet taken by any host.
    pub waiting: u64,
    /// Taken by a host, which runs them now.
    pub taken: u64,
}

/// The cluster's queue from the hosts' parts (`hosts` up; this host's
/// own, `mine`, as of now rather than its last announcement), for the
/// protocols any host serves.
fn depths(hosts: &[HostSeen], me: &str, mine: &BTreeMap<String, CallsBetween>) -> Vec<Depth> {
    let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for host in hosts.iter().filter(|h| h.status == HostStatus::Up) {
        for spec in &host.announced.serves {
            sums.entry(spec.protocol.as_str()).or_default();
        }
        let calls = if host.host_id == me { mine } else { &host.announced.calls };
        for (protocol, part) in calls {
            let (offered, taken) = sums.entry(protocol.as_str()).or_default();
            *offered += part.offered;
            *taken += part.taken;
        }
    }
    let depth = |(protocol, (offered, taken)): (&str, (u64, u64))| Depth {
        protocol: protocol.to_owned(),
        waiting: offered.saturating_sub(taken),
        taken,
    };
    sums.into_iter().map(depth).collect()
}

/// The cluster as one host's `/metrics` shows it.
pub struct Figures {
    pub hosts_up: usize,
    pub hosts_gone: usize,
    /// The cluster's queue, by protocol the hosts serve.
    pub queue: Vec<Depth>,
    pub offered: u64,
    pub served: u64,
    pub taken_over: u64,
}

/// What a host is made of, for its announcement.
pub(super) struct Parts<'a> {
    pub engine: &'a Engine,
    pub registry: &'a Registry,
    pub plugins: &'a PluginSet,
}

impl Membership {
    pub(super) fn new(cluster: Option<Arc<Cluster>>, address: String, following: Following) -> Self {
        Self {
            cluster,
            address,
            started_at: std::time::SystemTime::now(),
            counts: Counts::default(),
            following,
            offering: Default::default(),
            serving: Default::default(),
        }
    }

    /// What this host's clients follow of the others.
    pub(super) fn following(&self) -> &Following {
        &self.following
    }

    /// A client here starts to follow events (an event stream): hear the
    /// other hosts' too, from before this returns.
    pub(super) async fn hear_the_others(&self) {
        if self.cluster.is_some() {
            self.following.hear().await;
        }
    }

    /// A socket here subscribed to `workflow_id`: hear the other hosts'
    /// events (it may be theirs) until it ends.
    pub(super) async fn follow(&self, workflow_id: &str) {
        if self.cluster.is_some() {
            self.following.workflow(workflow_id).await;
        }
    }

    /// Where the event streams of every host are counted by token; none
    /// without a cluster.
    pub(super) fn streams_pool(&self) -> Option<Arc<dyn Pool>> {
        let cluster = self.cluster.clone()?;
        Some(Arc::new(Pooled { cluster, kind: Kind::Streams }))
    }

    /// The cluster's figures and this host's part in them; none without a
    /// cluster.
    pub(super) async fn figures(&self) -> Option<Result<Figures, crate::store::StoreError>> {
        let cluster = self.cluster.clone()?;
        let mine = self.calls();
        let read = tokio::task::spawn_blocking(move || {
            let hosts = cluster.hosts()?;
            let up = hosts.iter().filter(|h| h.status == HostStatus::Up).count();
            Ok((up, hosts.len() - up, depths(&hosts, &cluster.lease.host, &mine)))
        })
        .await
        .unwrap_or_else(|e| Err(stopped(&e)));
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Some(read.map(|(hosts_up, hosts_gone, queue)| Figures {
            hosts_up,
            hosts_gone,
            queue,
            offered: count(&self.counts.offered),
            served: count(&self.counts.served),
            taken_over: count(&self.counts.taken_over),
        }))
    }

    /// The cluster, if this host is part of one.
    pub(super) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Tell the other hosts `what`: events to those that hear them, the
    /// rest to all.
    pub(super) fn say(&self, what: What) {
        let Some(cluster) = &self.cluster else { return };
        let events = matches!(what, What::Events(_));
        let said = Said { from: cluster.lease.host.clone(), what };
        match serde_json::to_string(&said) {
            Ok(text) if events => cluster.bus.publish_events(text),
            Ok(text) => cluster.bus.publish(text),
            Err(e) => tracing::error!("cannot tell the other hosts: {e}"),
        }
    }

    /// This host's announcement: where it listens, its providers, plugins
    /// and running workflows.
    async fn announcement(&self, parts: &Parts<'_>) -> Announcement {
        let running = parts.engine.stats().await.map_or(0, |stats| stats.running_workflows);
        let own: Vec<_> =
            parts.registry.providers().into_iter().filter(|p| p.kind() != ProviderKind::Cluster).collect();
        let mut serves: Vec<crate::model::ProviderSpec> = Vec::new();
        for provider in &own {
            if !serves.iter().any(|spec| spec.protocol == provider.spec().protocol) {
                serves.push(provider.spec().clone());
            }
        }
        let mut calls = self.calls();
        for spec in &serves {
            calls.entry(spec.protocol.clone()).or_default().slots =
                worker::slots(parts.registry, &spec.protocol) as u64;
        }
        let lately = std::time::Instant::now().checked_sub(LIMITS_USED_LATELY);
        let limiters = parts.registry.limiters().into_iter();
        let limiting = limiters.filter(|(_, l)| lately.is_some_and(|at| l.wanted_since(at))).map(|(name, _)| name);
        Announcement {
            limiting: limiting.collect(),
            address: self.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Some(self.started_at),
            providers: own.iter().map(|p| p.id().to_string()).collect(),
            plugins: parts.plugins.statuses().into_iter().map(|p| p.name).collect(),
            running,
            calls,
            serves,
        }
    }

    /// Its calls between hosts, by protocol (without its slots).
    fn calls(&self) -> BTreeMap<String, CallsBetween> {
        let mut calls: BTreeMap<String, CallsBetween> = BTreeMap::new();
        for (protocol, offered) in self.offering.waiting() {
            calls.entry(protocol).or_default().offered = offered;
        }
        for (protocol, taken) in self.serving.counts() {
            calls.entry(protocol).or_default().taken = taken;
        }
        calls
    }

    /// The hosts: the cluster's register, or this host alone.
    pub(super) async fn hosts(&self, parts: &Parts<'_>) -> Result<Vec<HostSeen>, crate::store::StoreError> {
        let Some(cluster) = &self.cluster else {
            return Ok(vec![HostSeen {
                host_id: "local".into(),
                status: HostStatus::Up,
                last_seen: Some(std::time::SystemTime::now()),
                epoch: None,
                announced: self.announcement(parts).await,
            }]);
        };
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.hosts()).await.unwrap_or_else(|e| Err(stopped(&e)))
    }
}

/// What the hosts hold of one kind, counted in the cluster's store.
struct Pooled {
    cluster: Arc<Cluster>,
    kind: Kind,
}

impl Pool for Pooled {
    fn take(&self, token: &str, quota: usize) -> Result<bool, String> {
        self.cluster.holds.take(self.kind, token, quota).map_err(|e| e.to_string())
    }

    fn give_back(&self, token: &str) {
        if let Err(e) = self.cluster.holds.give_back(self.kind, token) {
            tracing::warn!("cluster: {e}");
        }
    }
}

/// A read of the cluster whose thread stopped.
fn stopped(e: &tokio::task::JoinError) -> crate::store::StoreError {
    crate::store::StoreError::Io { target: "redis".into(), action: "read the hosts", reason: e.to_string() }
}

/// How long after its last call a host still counts as using a rate
/// limit (and so takes its part of it).
const LIMITS_USED_LATELY: std::time::Duration = std::time::Duration::from_secs(5);

/// Each of this host's rate limits split equally among the living hosts
/// that used it lately, this one always among them (it may call at any
/// moment; the others learn that it does at its next beat).
fn share_limits(registry: &Registry, hosts: &[HostSeen], me: &str) {
    for (name, limiter) in registry.limiters() {
        let others = (hosts.iter().filter(|h| h.status == HostStatus::Up && h.host_id != me))
            .filter(|h| h.announced.limiting.contains(&name))
            .count();
        limiter.set_share(1.0 / (others + 1) as f64);
    }
}

/// What a host of a cluster runs beside its engine: the beat, the
/// answers it waits for, and the worker that serves the others.
pub(super) struct Duties {
    pub membership: Arc<Membership>,
    pub cluster: Arc<Cluster>,
    pub engine: Engine,
    pub registry: Arc<Registry>,
    pub plugins: Arc<PluginSet>,
    pub store: AsyncStore,
    /// Whose tokens the cluster's shared ones join.
    pub policy: Arc<crate::auth::Policy>,
    /// Kept in step with the store, where the other hosts change them.
    pub schedules: Arc<super::schedules::Schedules>,
}

impl Duties {
    /// Start them all; they end when the lease is lost.
    pub(super) fn start(self) {
        if let Some(tokens) = &self.policy.tokens {
            // A token made a moment ago on another host is known at once.
            let cluster = self.cluster.clone();
            tokens.look_up_shared_with(Box::new(move || {
                let read = || cluster.tokens().map_err(|e| tracing::warn!("cluster: {e}")).ok();
                match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                    Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read),
                    _ => read(),
                }
            }));
        }
        match self.cluster.work.answers() {
            Ok(answers) => elsewhere::pump_answers(answers, self.membership.clone(), self.cluster.clone()),
            Err(e) => tracing::error!("cannot read the other hosts' answers: {e}"),
        }
        worker::start(self.cluster.clone(), self.registry.clone(), self.membership.clone());
        tokio::spawn(self.beat());
    }

    /// Every beat until the lease is lost: announce this host, take over
    /// gone hosts' workflows (and the tasks they took), act on cancellation
    /// requests it missed, keep one provider per protocol the other hosts
    /// serve, and take up the cluster's tokens and schedules as they are
    /// now.
    async fn beat(self) {
        let mut beat = tokio::time::interval(self.cluster.lease.beat());
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beat.tick().await;
            if self.cluster.lease.lost().is_some() {
                return;
            }
            let parts = Parts { engine: &self.engine, registry: &self.registry, plugins: &self.plugins };
            let announced = self.membership.announcement(&parts).await;
            let duties = self.cluster.clone();
            let seen = tokio::task::spawn_blocking(move || {
                duties.announce(&announced)?;
                let hosts = duties.hosts()?;
                let taken = duties.take_over(&hosts)?;
                let serves: Vec<String> = announced.serves.iter().map(|spec| spec.protocol.clone()).collect();
                let gone: Vec<String> =
                    hosts.iter().filter(|h| h.status == HostStatus::Gone).map(|h| h.host_id.clone()).collect();
                for protocol in &serves {
                    duties.work.reclaim(protocol, &gone)?;
                }
                duties.work.trim(&serves)?;
                Ok::<_, crate::store::StoreError>((taken, duties.cancel_requests()?, hosts, duties.tokens()?))
            })
            .await;
            match seen {
                Ok(Ok((taken, cancels, hosts, tokens))) => {
                    if let Some(accepted) = &self.policy.tokens {
                        accepted.set_shared(&tokens);
                    }
                    let count = (taken.saved.len() + taken.unreadable.len()) as u64;
                    self.membership.counts.taken_over.fetch_add(count, Ordering::Relaxed);
                    super::resume_these(&self.engine, &self.store, taken).await;
                    // Requests whose message this host missed: those it drives.
                    for id in cancels {
                        let _ = self.engine.cancel(&id).await;
                    }
                    self.serve_elsewhere(&hosts);
                    share_limits(&self.registry, &hosts, &self.cluster.lease.host);
                    if let Err(e) = self.schedules.refresh().await {
                        tracing::warn!("cluster: cannot read the schedules: {e}");
                    }
                }
                Ok(Err(e)) => tracing::warn!("cluster: {e}"),
                Err(e) => tracing::error!("cluster: the beat stopped: {e}"),
            }
        }
    }

    /// One provider for each protocol another living host serves; none for
    /// those no other host serves any more. Its calls go in stream entries
    /// of no more than the host that takes fewest of them at once can run,
    /// and no more are offered at a time than the other hosts run at once.
    fn serve_elsewhere(&self, hosts: &[HostSeen]) {
        let me = &self.cluster.lease.host;
        let mut offered: BTreeMap<&str, &crate::model::ProviderSpec> = BTreeMap::new();
        let mut reach: BTreeMap<&str, Reach> = BTreeMap::new();
        for host in hosts.iter().filter(|h| h.status == HostStatus::Up && &h.host_id != me) {
            for spec in &host.announced.serves {
                offered.entry(spec.protocol.as_str()).or_insert(spec);
                // A host that did not say (an older one) takes one at a time.
                let slots = host.announced.calls.get(&spec.protocol).map_or(1, |calls| calls.slots.max(1));
                let slots = usize::try_from(slots).unwrap_or(MOST_PER_ENTRY);
                let protocol =
                    reach.entry(spec.protocol.as_str()).or_insert(Reach { per_entry: MOST_PER_ENTRY, capacity: 0 });
                protocol.per_entry = protocol.per_entry.min(slots);
                protocol.capacity = protocol.capacity.saturating_add(slots);
            }
        }
        self.membership.offering.set_reach(&reach);
        let mut changed = false;
        let standing: Vec<_> =
            self.registry.providers().into_iter().filter(|p| p.kind() == ProviderKind::Cluster).collect();
        for provider in &standing {
            if !offered.contains_key(provider.spec().protocol.as_str()) {
                changed |= self.registry.unregister(provider.id());
            }
        }
        for (protocol, spec) in offered {
            let fresh = standing.iter().all(|p| p.spec().protocol != protocol || p.spec() != spec);
            if fresh {
                let provider = elsewhere::Elsewhere::new(spec.clone(), self.cluster.clone(), self.membership.clone());
                self.registry.register(Arc::new(provider));
                changed = true;
            }
        }
        if changed {
            self.engine.providers_changed();
        }
    }
}
