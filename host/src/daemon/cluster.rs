//! This host's part in a cluster (`--cluster`): every beat of its lease it
//! tells the others what it is and runs, and takes over (resumes) the
//! workflows of hosts whose lease is gone. It also answers "which hosts
//! are there" for `host list`, `GET /api/v1/hosts` and the dashboard, with
//! this host alone when there is no cluster.
//!
//! The lease, the register and the takeover itself are the store's
//! (`store::redis::cluster`); this module runs them and hands what it takes
//! to the engine. It knows no transport.

use super::events::Passed;
use crate::engine::Engine;
use crate::plugins::PluginSet;
use crate::registry::Registry;
use crate::store::AsyncStore;
use crate::store::redis::cluster::{Announcement, Cluster, HostSeen, HostStatus};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What one host tells the others on the cluster's bus.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Said {
    /// The host that says it (it does not listen to itself).
    pub from: String,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum What {
    /// Events of the workflows the sender drives, in order.
    Events(Vec<Passed>),
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
}

/// What a host is made of, for its announcement.
pub(super) struct Parts<'a> {
    pub engine: &'a Engine,
    pub registry: &'a Registry,
    pub plugins: &'a PluginSet,
}

impl Membership {
    pub(super) fn new(cluster: Option<Arc<Cluster>>, address: String) -> Self {
        Self { cluster, address, started_at: std::time::SystemTime::now() }
    }

    /// The cluster, if this host is part of one.
    pub(super) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Tell the other hosts `what`.
    pub(super) fn say(&self, what: What) {
        let Some(cluster) = &self.cluster else { return };
        let said = Said { from: cluster.lease.host.clone(), what };
        match serde_json::to_string(&said) {
            Ok(text) => cluster.bus.publish(text),
            Err(e) => tracing::error!("cannot tell the other hosts: {e}"),
        }
    }

    /// This host's announcement: where it listens, its providers, plugins
    /// and running workflows.
    async fn announcement(&self, parts: &Parts<'_>) -> Announcement {
        let running = parts.engine.stats().await.map_or(0, |stats| stats.running_workflows);
        Announcement {
            address: self.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Some(self.started_at),
            providers: parts.registry.providers().iter().map(|p| p.id().to_string()).collect(),
            plugins: parts.plugins.statuses().into_iter().map(|p| p.name).collect(),
            running,
        }
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
        tokio::task::spawn_blocking(move || cluster.hosts()).await.unwrap_or_else(|e| {
            Err(crate::store::StoreError::Io {
                target: "redis".into(),
                action: "read the hosts",
                reason: e.to_string(),
            })
        })
    }
}

/// Announce, and take over gone hosts' workflows, every beat until the
/// lease is lost (the daemon then stops).
pub(super) async fn take_part(
    membership: Arc<Membership>,
    cluster: Arc<Cluster>,
    engine: Engine,
    registry: Arc<Registry>,
    plugins: Arc<PluginSet>,
    store: AsyncStore,
) {
    let mut beat = tokio::time::interval(cluster.lease.beat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        if cluster.lease.lost().is_some() {
            return;
        }
        let parts = Parts { engine: &engine, registry: &registry, plugins: &plugins };
        let announced = membership.announcement(&parts).await;
        let duties = cluster.clone();
        let taken = tokio::task::spawn_blocking(move || {
            duties.announce(&announced)?;
            Ok::<_, crate::store::StoreError>((duties.take_over()?, duties.cancel_requests()?))
        })
        .await;
        match taken {
            Ok(Ok((taken, cancels))) => {
                super::resume_these(&engine, &store, taken).await;
                // Requests whose message this host missed: those it drives.
                for id in cancels {
                    let _ = engine.cancel(&id).await;
                }
            }
            Ok(Err(e)) => tracing::warn!("cluster: {e}"),
            Err(e) => tracing::error!("cluster: the takeover stopped: {e}"),
        }
    }
}
