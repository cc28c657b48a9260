//! Where events go: each of this host's engine events to its Socket.IO
//! rooms, its event log and (in a cluster) the other hosts; what the other
//! hosts say to this host's clients (their workflows' events and calls'
//! progress) and engine (cancellations). The other hosts' events are
//! heard only while someone here follows them (`cluster::Following`).

use super::cluster::{Asks, Membership, Said, What};
use super::events::{self, Passed};
use super::http::HttpTransport;
use super::socket::{self, SocketTransport};
use crate::engine::{Engine, EngineEvent};
use crate::store::redis::bus::Heard;
use crate::store::redis::cluster::Cluster;
use socketioxide::SocketIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the relay looks whether anyone here still follows the
/// others' events.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Where this host's clients read events.
#[derive(Clone)]
pub(super) struct Outlets {
    pub io: SocketIo,
    pub sockets: Arc<SocketTransport>,
    pub api: Arc<HttpTransport>,
}

impl Outlets {
    async fn hand_on(&self, described: &events::Described<'_>) {
        socket::forward(&self.io, &self.sockets, described).await;
        self.api.events.append(described);
    }

    /// Whether a client here follows events of the others: an event
    /// stream reads the log (or did lately), or a socket follows a
    /// workflow that has not ended.
    fn follow_others(&self, membership: &Membership) -> bool {
        self.api.events.kept() || membership.following().any_followed(|id| socket::followed(&self.io, id))
    }
}

/// Hand each engine event to this host's clients, and to the other hosts
/// of the cluster.
pub(super) async fn forward_events(
    outlets: Outlets,
    membership: Arc<Membership>,
    mut events: mpsc::UnboundedReceiver<EngineEvent>,
) {
    let mut batch = Vec::with_capacity(256);
    let clustered = membership.cluster().is_some();
    while events.recv_many(&mut batch, 256).await > 0 {
        let mut passed = Vec::new();
        for event in batch.drain(..) {
            let described = events::payload(&event);
            outlets.hand_on(&described).await;
            if clustered {
                passed.push(Passed::of(&described));
            }
        }
        if !passed.is_empty() {
            membership.say(What::Events(passed));
        }
    }
}

/// Hand what the other hosts of the cluster say to this host's clients and
/// engine: what is said to all, always; their events while someone here
/// follows them (asked through `asks`).
pub(super) async fn relay_the_others(
    outlets: Outlets,
    engine: Engine,
    cluster: Arc<Cluster>,
    membership: Arc<Membership>,
    mut asks: Asks,
) {
    let mut everyone = match cluster.bus.listen() {
        Ok(heard) => heard,
        Err(e) => return tracing::error!("cannot hear the other hosts: {e}"),
    };
    let relay = Relay { outlets, engine, own: Said::opening(&cluster.lease.host) };
    let mut events = None;
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            heard = everyone.recv() => match heard {
                Some(Heard::Message(text)) => relay.said(&text).await,
                // Requests missed are stored; progress missed is gone.
                Some(Heard::Missed) => {}
                None => return,
            },
            heard = next(&mut events) => match heard {
                // Its own events this host handed on itself.
                Some(Heard::Message(text)) if text.starts_with(&relay.own) => {}
                Some(Heard::Message(text)) => relay.said(&text).await,
                Some(Heard::Missed) => relay.outlets.api.events.missed(),
                None => events = None,
            },
            Some(asked) = asks.recv() => {
                if events.is_none() {
                    events = hear_events(&cluster).await;
                    // What the others said before now is not in the log.
                    relay.outlets.api.events.missed();
                }
                let _ = asked.send(());
            }
            _ = look.tick() => {
                if events.is_some() && !relay.outlets.follow_others(&membership) {
                    events = None;
                }
            }
        }
    }
}

/// The next event heard, if the events are heard at all.
async fn next(events: &mut Option<mpsc::UnboundedReceiver<Heard>>) -> Option<Heard> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Subscribe to the other hosts' events.
async fn hear_events(cluster: &Arc<Cluster>) -> Option<mpsc::UnboundedReceiver<Heard>> {
    let cluster = cluster.clone();
    let heard = tokio::task::spawn_blocking(move || cluster.bus.hear_events()).await;
    match heard.map_err(|e| e.to_string()).and_then(|heard| heard.map_err(|e| e.to_string())) {
        Ok(heard) => Some(heard),
        Err(e) => {
            tracing::error!("cannot hear the other hosts' events: {e}");
            None
        }
    }
}

struct Relay {
    outlets: Outlets,
    engine: Engine,
    /// How this host's own words begin.
    own: String,
}

impl Relay {
    /// Act on what another host said.
    async fn said(&self, text: &str) {
        let said: Said = match serde_json::from_str(text) {
            Ok(said) => said,
            Err(e) => return tracing::warn!("another host said what this one cannot read: {e}"),
        };
        match said.what {
            What::Events(passed) | What::Progress(passed) => self.hand_on(&passed).await,
            // A cancellation this host asked for it tried itself.
            What::Cancel(_) if text.starts_with(&self.own) => {}
            What::Cancel(workflow_id) => {
                let _ = self.engine.cancel(&workflow_id).await;
            }
        }
    }

    /// Hand on what someone here follows.
    async fn hand_on(&self, passed: &[Passed]) {
        let logged = self.outlets.api.events.kept();
        let wanted = passed.iter().filter(|p| logged || socket::followed(&self.outlets.io, p.workflow_id()));
        for described in wanted.filter_map(Passed::described) {
            self.outlets.hand_on(&described).await;
        }
    }
}
