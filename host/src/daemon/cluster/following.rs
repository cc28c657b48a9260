//! Which of the other hosts' events this host needs. Each host publishes
//! its workflows' events on the cluster's event channel; a host hears that
//! channel only while its clients follow what others drive: while an event
//! stream is open here (or was lately: the log keeps events a while for it
//! to come back), or a socket here is still in the room of a workflow it
//! subscribed to (sockets leave a room when its workflow completes). A cluster nobody watches from another host reads no one's
//! events.
//!
//! Whoever starts following asks first ([`Following::hear`]), and reads
//! the workflow's state only after: every event after that state is then
//! heard. The relay (`daemon::relay`) subscribes, and unsubscribes when
//! nothing here follows any more. It knows no transport.

use crate::locks::lock;
use std::collections::HashSet;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

/// What this host's clients follow of the others.
pub struct Following {
    /// Workflows sockets here subscribed to, until they end.
    workflows: Mutex<HashSet<String>>,
    /// To the relay: hear the others' events, and say when they are heard.
    asks: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

/// The asks [`Following::hear`] sends, for the relay.
pub type Asks = mpsc::UnboundedReceiver<oneshot::Sender<()>>;

impl Following {
    pub fn new() -> (Self, Asks) {
        let (asks, asked) = mpsc::unbounded_channel();
        (Self { workflows: Mutex::default(), asks }, asked)
    }

    /// Hear the others' events from now on; returns once they are heard
    /// (or the relay said it could not wait: then it tells readers of the
    /// gap when they are).
    pub async fn hear(&self) {
        let (heard, answer) = oneshot::channel();
        if self.asks.send(heard).is_ok() {
            let _ = answer.await;
        }
    }

    /// A socket here subscribed to `workflow_id` (wherever it runs).
    pub async fn workflow(&self, workflow_id: &str) {
        lock(&self.workflows).insert(workflow_id.to_owned());
        self.hear().await;
    }

    /// Whether sockets still follow a workflow subscribed to; forgets those
    /// found on the way that no socket follows any more (`followed` says
    /// whether one does). It stops at the first one followed: a client
    /// subscribed to very many workflows costs one look, not one each.
    pub fn any_followed(&self, followed: impl Fn(&str) -> bool) -> bool {
        let mut workflows = lock(&self.workflows);
        let mut unfollowed = Vec::new();
        let mut any = false;
        for id in workflows.iter() {
            if followed(id) {
                any = true;
                break;
            }
            unfollowed.push(id.clone());
        }
        for id in &unfollowed {
            workflows.remove(id);
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_workflow_is_followed_until_it_ends_or_nobody_follows_it() {
        let (following, mut asks) = Following::new();
        let answering = tokio::spawn(async move {
            while let Some(heard) = asks.recv().await {
                let _ = heard.send(());
            }
        });
        following.workflow("a").await;
        following.workflow("b").await;
        let looks = std::cell::Cell::new(0);
        assert!(following.any_followed(|_| {
            looks.set(looks.get() + 1);
            true
        }));
        assert_eq!(looks.get(), 1, "it stops at the first followed");
        assert!(following.any_followed(|id| id == "b"), "a has no socket any more, b has");
        assert!(!following.any_followed(|_| false), "b has no socket any more");
        assert!(!following.any_followed(|_| true), "and is forgotten");
        drop(following);
        answering.await.unwrap();
    }
}
