//! The providers of the other hosts, as one provider per protocol on this
//! host ([`ProviderKind::Cluster`]): the registry picks it when none of
//! this host's own providers of the protocol is free, and it offers the
//! call to the other hosts (`store::redis::work`). The answer comes back
//! on this host's answers stream, which [`pump_answers`] reads.

use super::Membership;
use crate::locks::lock;
use crate::model::{ProviderSpec, TaskError, codes};
use crate::registry::{Call, CallFuture, Load, Provider, ProviderKind};
use crate::store::redis::cluster::Cluster;
use crate::store::redis::work::{Answers, Offer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The calls this host offered and waits for, and how it offers each
/// protocol's.
#[derive(Default)]
pub(super) struct Offering(Mutex<Offered>);

#[derive(Default)]
struct Offered {
    /// Who waits for each call's answer, by call id.
    calls: HashMap<String, oneshot::Sender<Result<Value, TaskError>>>,
    /// By protocol.
    protocols: HashMap<String, Protocol>,
}

#[derive(Default)]
struct Protocol {
    /// Calls offered and not yet answered.
    waiting: u64,
    /// How the other hosts take them.
    reach: Reach,
}

/// How the other hosts of a cluster take the calls of one protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Reach {
    /// Most offers to put in one stream entry: no more than the host that
    /// takes fewest calls at once can run at once.
    pub per_entry: usize,
    /// How many calls their providers run at once: this host offers no
    /// more at a time, so that a call does not spend its time waiting in
    /// the stream (its deadline runs from when it is offered).
    pub capacity: usize,
}

impl Offering {
    /// How the other hosts take each protocol's calls now.
    pub(super) fn set_reach(&self, reach: &std::collections::BTreeMap<&str, Reach>) {
        let mut offered = lock(&self.0);
        for (protocol, reach) in reach {
            offered.protocols.entry((*protocol).to_owned()).or_default().reach = *reach;
        }
    }

    /// How many calls of `protocol` the other hosts run at once, and how
    /// many this host offered and waits for.
    fn load(&self, protocol: &str) -> Load {
        let offered = lock(&self.0);
        let counted = offered.protocols.get(protocol);
        let capacity = counted.map_or(1, |p| p.reach.capacity.max(1));
        Load { capacity: Some(capacity), in_flight: counted.map_or(0, |p| p.waiting as usize) }
    }

    /// The calls offered and not yet answered, by protocol.
    pub(super) fn waiting(&self) -> Vec<(String, u64)> {
        let offered = lock(&self.0);
        offered.protocols.iter().filter(|(_, p)| p.waiting > 0).map(|(name, p)| (name.clone(), p.waiting)).collect()
    }

    /// Wait for `call`'s answer; how many offers of `protocol` go in an
    /// entry.
    fn wait(&self, protocol: &str, call: String, answered: oneshot::Sender<Result<Value, TaskError>>) -> usize {
        let mut offered = lock(&self.0);
        offered.calls.insert(call, answered);
        let counted = offered.protocols.entry(protocol.to_owned()).or_default();
        counted.waiting += 1;
        counted.reach.per_entry.max(1)
    }

    /// Stop waiting for `call`.
    fn forget(&self, protocol: &str, call: &str) {
        let mut offered = lock(&self.0);
        offered.calls.remove(call);
        if let Some(counted) = offered.protocols.get_mut(protocol) {
            counted.waiting = counted.waiting.saturating_sub(1);
        }
    }

    /// Hand `outcome` to whoever waits for `call`.
    fn answer(&self, call: &str, outcome: Result<Value, TaskError>) {
        if let Some(waiter) = lock(&self.0).calls.remove(call) {
            let _ = waiter.send(outcome);
        }
    }
}

/// An outcome as it travels between hosts: `{"ok": RESULT}`, or the error
/// with whether it may be retried or run again without counting.
pub(super) fn encode(outcome: &Result<Value, TaskError>) -> String {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Encoded<'o> {
        Ok { ok: &'o Value },
        Err { error: &'o TaskError, retryable: bool, requeue: bool },
    }
    let encoded = match outcome {
        Ok(result) => Encoded::Ok { ok: result },
        Err(error) => Encoded::Err { error, retryable: error.retryable, requeue: error.requeue },
    };
    serde_json::to_string(&encoded).unwrap_or_else(|e| {
        let error = TaskError::new(codes::SERVER_ERROR, format!("the outcome cannot be encoded: {e}"));
        json!({ "error": error, "retryable": false, "requeue": false }).to_string()
    })
}

fn decode(mut outcome: Value) -> Result<Value, TaskError> {
    if let Some(result) = outcome.as_object_mut().and_then(|fields| fields.remove("ok")) {
        return Ok(result);
    }
    let mut error: TaskError = serde_json::from_value(outcome["error"].clone()).unwrap_or_else(|e| {
        TaskError::new(codes::SERVER_ERROR, format!("another host answered what this one cannot read: {e}"))
    });
    error.retryable = outcome["retryable"] == true;
    error.requeue = outcome["requeue"] == true;
    Err(error)
}

/// Calls of one protocol, offered to the other hosts.
pub(super) struct Elsewhere {
    id: Arc<str>,
    spec: ProviderSpec,
    cluster: Arc<Cluster>,
    /// Counts the calls offered, and so names them; knows who waits for
    /// them.
    membership: Arc<Membership>,
}

impl Elsewhere {
    pub(super) fn new(spec: ProviderSpec, cluster: Arc<Cluster>, membership: Arc<Membership>) -> Self {
        Self { id: id_of(&spec.protocol).into(), spec, cluster, membership }
    }
}

/// The id of the provider that stands for the other hosts' of `protocol`.
pub(super) fn id_of(protocol: &str) -> String {
    format!("cluster:{protocol}")
}

impl Provider for Elsewhere {
    fn id(&self) -> &Arc<str> {
        &self.id
    }

    fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Cluster
    }

    fn load(&self) -> Load {
        self.membership.offering.load(&self.spec.protocol)
    }

    fn call(&self, call: Call) -> CallFuture {
        let lease = &self.cluster.lease;
        let call_id = format!("{}-{}", lease.epoch, self.membership.counts.offered.fetch_add(1, Ordering::Relaxed));
        let (answered, answer) = oneshot::channel();
        let per_entry = self.membership.offering.wait(&self.spec.protocol, call_id.clone(), answered);
        let offer = Offer {
            call: call_id.clone(),
            from: lease.host.clone(),
            workflow_id: call.workflow_id.clone().unwrap_or_default(),
            owner: call.owner.as_deref().map(str::to_owned),
            task_id: call.task_id.clone(),
            attempt: call.attempt,
            method: call.method.clone(),
            params: call.params.clone(),
            timeout_ms: call.deadline.saturating_duration_since(Instant::now()).as_millis() as u64,
        };
        let mut pending = Pending {
            cluster: self.cluster.clone(),
            membership: self.membership.clone(),
            protocol: self.spec.protocol.clone(),
            call: call_id,
            settled: false,
        };
        let offered = self.cluster.work.offer(&self.spec.protocol, offer, per_entry);
        Box::pin(async move {
            match offered.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    pending.settled();
                    return Err(TaskError::new(codes::SERVER_ERROR, e.to_string()).retryable());
                }
                Err(_) => {
                    pending.settled();
                    let gone = "this host stopped offering tasks to the others";
                    return Err(TaskError::new(codes::SERVER_ERROR, gone).retryable());
                }
            }
            let outcome = answer.await.unwrap_or_else(|_| {
                Err(TaskError::new(codes::SERVER_ERROR, "this host stopped waiting for the other hosts").requeue())
            });
            pending.settled();
            outcome
        })
    }
}

/// A call offered and not yet answered: dropped unanswered (cancelled,
/// timed out), its offer is withdrawn and its wait forgotten.
struct Pending {
    cluster: Arc<Cluster>,
    membership: Arc<Membership>,
    protocol: String,
    call: String,
    /// Answered, or never offered: nothing to withdraw. (A host reads the
    /// withdrawals when it takes an entry, so a call dropped before its
    /// offer reached the stream is withdrawn too.)
    settled: bool,
}

impl Pending {
    fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.membership.offering.forget(&self.protocol, &self.call);
        if !self.settled {
            self.cluster.work.withdraw(&self.protocol, &self.call);
        }
    }
}

/// How long one read for answers waits (an answer ends the wait at once).
const ANSWERS_WAIT: Duration = Duration::from_secs(2);

/// Read this host's answers on a thread of its own and hand each to the
/// call that waits for it, until the lease is lost.
pub(super) fn pump_answers(mut answers: Answers, membership: Arc<Membership>, cluster: Arc<Cluster>) {
    let pumped = std::thread::Builder::new().name("cluster-answers".into()).spawn(move || {
        while cluster.lease.lost().is_none() {
            match answers.next(ANSWERS_WAIT) {
                Ok(read) => {
                    for (call, outcome) in read {
                        membership.offering.answer(&call, decode(outcome));
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot read the other hosts' answers: {e}");
                    std::thread::sleep(ANSWERS_WAIT);
                }
            }
        }
    });
    if let Err(e) = pumped {
        tracing::error!("cannot read the other hosts' answers: {e}");
    }
}
