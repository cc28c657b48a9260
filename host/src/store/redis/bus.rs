//! The hosts of a cluster tell each other what happens on one Redis
//! pub/sub channel, `gleitzeit:bus`: each host publishes its workflows'
//! events (and requests, such as a cancellation for the host that drives a
//! workflow), and every host listens. What a message says is the daemon's
//! business; here it is text.
//!
//! Pub/sub delivers at most once: a host cut off from Redis for a moment
//! misses what was published meanwhile. The listener says so
//! ([`Heard::Missed`]) each time it connects again, so that whoever relays
//! the events can tell their readers of the gap rather than leave a hole.
//! What must not be lost (a result, a cancellation) is also stored.

use super::{RedisStore, key};
use crate::store::StoreError;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the listener waits for a message before looking whether it
/// should stop.
const LISTEN_TICK: Duration = Duration::from_secs(2);
/// How long a failed publish or subscription waits before it is tried
/// again, and a connection is waited for.
const RETRY_WAIT: Duration = Duration::from_millis(500);
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// What the listener hands on.
#[derive(Debug)]
pub enum Heard {
    Message(String),
    /// The subscription was lost and is back: messages may have been missed.
    Missed,
}

/// The channel every host of the cluster publishes on and listens to.
pub struct Bus {
    /// To the publishing thread, which sends in order.
    outbox: std::sync::mpsc::Sender<String>,
    url: String,
}

/// Times a message is published again after a failure before it is dropped.
const PUBLISH_TRIES: usize = 3;

fn channel() -> String {
    key(&["bus"])
}

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

    /// Publish `message` to every host listening, after those published
    /// before it; without waiting.
    pub fn publish(&self, message: String) {
        let _ = self.outbox.send(message);
    }

    /// Listen on a thread of its own until the receiver is dropped.
    pub fn listen(&self) -> Result<mpsc::UnboundedReceiver<Heard>, StoreError> {
        let (heard, receiver) = mpsc::unbounded_channel();
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| StoreError::Open { target: self.url.clone(), reason: e.to_string() })?;
        let url = self.url.clone();
        std::thread::Builder::new()
            .name("redis-bus".into())
            .spawn(move || listen(&client, &url, &heard))
            .map_err(|e| StoreError::Open { target: self.url.clone(), reason: format!("cannot listen: {e}") })?;
        Ok(receiver)
    }
}

fn publish_in_order(publisher: &RedisStore, messages: &std::sync::mpsc::Receiver<String>) {
    for message in messages {
        let publish = |c: &mut redis::Connection| redis::Commands::publish::<_, _, ()>(c, channel(), &message);
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

fn listen(client: &redis::Client, url: &str, heard: &mpsc::UnboundedSender<Heard>) {
    let mut first = true;
    while !heard.is_closed() {
        match subscribed(client, heard, &mut first) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("the cluster's bus on {url}: {e}; listening again");
                std::thread::sleep(RETRY_WAIT);
            }
        }
    }
}

/// Subscribe and hand on messages until the receiver is gone (`Ok`) or
/// the connection fails.
fn subscribed(
    client: &redis::Client,
    heard: &mpsc::UnboundedSender<Heard>,
    first: &mut bool,
) -> redis::RedisResult<()> {
    let mut connection = client.get_connection_with_timeout(CONNECT_WAIT)?;
    let mut pubsub = connection.as_pubsub();
    pubsub.subscribe(channel())?;
    pubsub.set_read_timeout(Some(LISTEN_TICK))?;
    if !std::mem::replace(first, false) && heard.send(Heard::Missed).is_err() {
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
