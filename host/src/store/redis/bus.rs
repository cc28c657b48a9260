//! The hosts of a cluster tell each other what happens on two Redis
//! pub/sub channels:
//!
//! - `gleitzeit:bus`, which every host hears: requests (a cancellation
//!   for the host that drives a workflow) and the progress of calls run
//!   for another host's workflow;
//! - `gleitzeit:bus:events`, each host's workflows' events, which a host
//!   hears only while its clients follow the others' workflows
//!   ([`Bus::hear_events`]). Publishing to a channel nobody hears costs
//!   Redis a lookup; every host hearing every host's events cost each of
//!   them a read of all of them.
//!
//! What a message says is the daemon's business; here it is text.
//!
//! Pub/sub delivers at most once: a host cut off from Redis for a moment
//! misses what was published meanwhile. A listener says so
//! ([`Heard::Missed`]) each time it subscribes again, so that whoever
//! relays the events can tell their readers of the gap rather than leave
//! a hole. What must not be lost (a result, a cancellation) is also
//! stored.

use super::{RedisStore, key};
use crate::locks::lock;
use crate::store::StoreError;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a listener waits for a message before looking whether it
/// should stop.
const LISTEN_TICK: Duration = Duration::from_secs(2);
/// How long a failed publish or subscription waits before it is tried
/// again, and a connection is waited for.
const RETRY_WAIT: Duration = Duration::from_millis(500);
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long [`Bus::hear_events`] waits for its subscription before it
/// answers without (the subscription goes on trying, and says
/// [`Heard::Missed`] when it is there).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// What a listener hands on.
#[derive(Debug)]
pub enum Heard {
    Message(String),
    /// The subscription was lost, or late, and is there now: messages may
    /// have been missed.
    Missed,
}

/// The two channels.
#[derive(Debug, Clone, Copy)]
enum Channel {
    /// Requests and progress: every host hears them.
    Everyone,
    /// Workflows' events: heard by hosts that follow others' workflows.
    Events,
}

impl Channel {
    fn name(self) -> String {
        match self {
            Channel::Everyone => key(&["bus"]),
            Channel::Events => key(&["bus", "events"]),
        }
    }
}

/// The cluster's channels, to publish on and to listen to.
pub struct Bus {
    /// To the publishing thread, which sends in order.
    outbox: std::sync::mpsc::Sender<(Channel, String)>,
    url: String,
}

/// Times a message is published again after a failure before it is dropped.
const PUBLISH_TRIES: usize = 3;

impl Bus {
    pub(super) fn open(url: &str) -> Result<Self, StoreError> {
        let publisher = RedisStore::open_unlocked(url)?;
        let (outbox, messages) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("redis-bus-out".into())
            .spawn(move || publish_in_order(&publisher, &messages))
            .map_err(|e| StoreError::Open { target: url.to_owned(), reason: format!("cannot publish: {e}") })?;
        Ok(Self { outbox, url: url.to_owned() })
    }

    /// Tell every host `message`, after what this host said before it;
    /// without waiting.
    pub fn publish(&self, message: String) {
        let _ = self.outbox.send((Channel::Everyone, message));
    }

    /// Publish events of this host's workflows for the hosts that hear
    /// them, in order with what it said before; without waiting.
    pub fn publish_events(&self, message: String) {
        let _ = self.outbox.send((Channel::Events, message));
    }

    /// Hear what is said to every host, on a thread of its own, until
    /// the receiver is dropped.
    pub fn listen(&self) -> Result<mpsc::UnboundedReceiver<Heard>, StoreError> {
        self.subscribe(Channel::Everyone, None)
    }

    /// Hear the hosts' events, on a thread of its own, until the receiver
    /// is dropped. Blocks until the subscription is there, so that every
    /// event published after this returns is heard, or for at most
    /// [`SUBSCRIBE_WAIT`]: then the receiver's first word is
    /// [`Heard::Missed`], when the subscription is there at last.
    pub fn hear_events(&self) -> Result<mpsc::UnboundedReceiver<Heard>, StoreError> {
        let waiter = Arc::new(Waiter::default());
        let heard = self.subscribe(Channel::Events, Some(waiter.clone()))?;
        waiter.wait(SUBSCRIBE_WAIT);
        Ok(heard)
    }

    /// Listen to `channel`; `waiter` is told when the subscription is
    /// first there.
    fn subscribe(
        &self,
        channel: Channel,
        waiter: Option<Arc<Waiter>>,
    ) -> Result<mpsc::UnboundedReceiver<Heard>, StoreError> {
        let (heard, receiver) = mpsc::unbounded_channel();
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| StoreError::Open { target: self.url.clone(), reason: e.to_string() })?;
        let url = self.url.clone();
        std::thread::Builder::new()
            .name("redis-bus".into())
            .spawn(move || listen(&client, &url, channel, &heard, waiter.as_deref()))
            .map_err(|e| StoreError::Open { target: self.url.clone(), reason: format!("cannot listen: {e}") })?;
        Ok(receiver)
    }
}

fn publish_in_order(publisher: &RedisStore, messages: &std::sync::mpsc::Receiver<(Channel, String)>) {
    for (channel, message) in messages {
        let name = channel.name();
        let publish = |c: &mut redis::Connection| redis::Commands::publish::<_, _, ()>(c, &name, &message);
        let mut tries = 0;
        while let Err(e) = publisher.with("publish to the other hosts", publish) {
            tries += 1;
            if tries == PUBLISH_TRIES {
                tracing::warn!("{e}; a message to the other hosts is dropped");
                break;
            }
            std::thread::sleep(RETRY_WAIT);
        }
    }
}

/// Whether the caller of [`Bus::hear_events`] still waits for its
/// subscription: one that gave up must learn of what it missed.
#[derive(Default)]
struct Waiter {
    state: Mutex<Wait>,
    changed: Condvar,
}

#[derive(Default, PartialEq)]
enum Wait {
    #[default]
    Waiting,
    Told,
    GaveUp,
}

impl Waiter {
    /// The subscription is there: whether the caller learnt it in time.
    fn tell(&self) -> bool {
        let mut state = lock(&self.state);
        if *state != Wait::Waiting {
            return false;
        }
        *state = Wait::Told;
        self.changed.notify_all();
        true
    }

    /// Wait at most `wait` to be told.
    fn wait(&self, wait: Duration) {
        let state = lock(&self.state);
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, wait, |state| *state == Wait::Waiting)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *state == Wait::Waiting {
            *state = Wait::GaveUp;
        }
    }
}

/// Hand on what `channel` carries until the receiver is gone. Every
/// subscription but the first, and a first one `waiter` gave up on,
/// starts with [`Heard::Missed`]: what was published before it is lost.
fn listen(
    client: &redis::Client,
    url: &str,
    channel: Channel,
    heard: &mpsc::UnboundedSender<Heard>,
    waiter: Option<&Waiter>,
) {
    let mut first = true;
    while !heard.is_closed() {
        let mut there = || {
            let in_time = waiter.is_none_or(Waiter::tell);
            let missed = !std::mem::replace(&mut first, false) || !in_time;
            !missed || heard.send(Heard::Missed).is_ok()
        };
        match subscribed_to(client, channel, heard, &mut there) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("the cluster's bus on {url}: {e}; listening again");
                std::thread::sleep(RETRY_WAIT);
            }
        }
    }
}

/// Subscribe, call `there` (which says whether to go on), and hand on
/// messages until the receiver is gone (`Ok`) or the connection fails.
fn subscribed_to(
    client: &redis::Client,
    channel: Channel,
    heard: &mpsc::UnboundedSender<Heard>,
    there: &mut dyn FnMut() -> bool,
) -> redis::RedisResult<()> {
    let mut connection = client.get_connection_with_timeout(CONNECT_WAIT)?;
    let mut pubsub = connection.as_pubsub();
    pubsub.subscribe(channel.name())?;
    pubsub.set_read_timeout(Some(LISTEN_TICK))?;
    if !there() {
        return Ok(());
    }
    loop {
        match pubsub.get_message() {
            Ok(message) => {
                let text = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                if heard.send(Heard::Message(text)).is_err() {
                    return Ok(());
                }
            }
            Err(e) if e.is_timeout() => {
                if heard.is_closed() {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}
