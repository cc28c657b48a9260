//! The providers of the other hosts, as one provider per protocol on this
//! host ([`ProviderKind::Cluster`]): the registry picks it when none of
//! this host's own providers of the protocol is free, and it offers the
//! call to the other hosts (`store::redis::work`). The answer comes back
//! on this host's answers stream, which [`pump_answers`] reads.

use super::Membership;
use crate::locks::lock;
use crate::model::{ProviderSpec, TaskError, codes};
use crate::registry::{Call, CallFuture, Provider, ProviderKind};
use crate::store::redis::cluster::Cluster;
use crate::store::redis::work::{Answers, Offer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The calls this host offered and waits for, by call id.
#[derive(Default)]
pub(super) struct Waiting(Mutex<HashMap<String, oneshot::Sender<Result<Value, TaskError>>>>);

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
    waiting: Arc<Waiting>,
    /// Counts the calls offered, and so names them.
    membership: Arc<Membership>,
}

impl Elsewhere {
    pub(super) fn new(
        spec: ProviderSpec,
        cluster: Arc<Cluster>,
        waiting: Arc<Waiting>,
        membership: Arc<Membership>,
    ) -> Self {
        Self { id: id_of(&spec.protocol).into(), spec, cluster, waiting, membership }
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

    fn call(&self, call: Call) -> CallFuture {
        let lease = &self.cluster.lease;
        let call_id = format!("{}-{}", lease.epoch, self.membership.counts.offered.fetch_add(1, Ordering::Relaxed));
        let (answered, answer) = oneshot::channel();
        lock(&self.waiting.0).insert(call_id.clone(), answered);
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
            waiting: self.waiting.clone(),
            protocol: self.spec.protocol.clone(),
            call: call_id,
            entry: None,
        };
        let offered = self.cluster.work.offer(&self.spec.protocol, offer);
        Box::pin(async move {
            match offered.await {
                Ok(Ok(entry)) => pending.offered(entry),
                Ok(Err(e)) => return Err(TaskError::new(codes::SERVER_ERROR, e.to_string()).retryable()),
                Err(_) => {
                    let gone = "this host stopped offering tasks to the others";
                    return Err(TaskError::new(codes::SERVER_ERROR, gone).retryable());
                }
            }
            let outcome = answer.await.unwrap_or_else(|_| {
                Err(TaskError::new(codes::SERVER_ERROR, "this host stopped waiting for the other hosts").requeue())
            });
            pending.answered();
            outcome
        })
    }
}

/// A call offered and not yet answered: dropped unanswered (cancelled,
/// timed out), its offer is withdrawn and its wait forgotten.
struct Pending {
    cluster: Arc<Cluster>,
    waiting: Arc<Waiting>,
    protocol: String,
    call: String,
    entry: Option<String>,
}

impl Pending {
    fn offered(&mut self, entry: String) {
        self.entry = Some(entry);
    }

    /// Answered: there is nothing left to withdraw.
    fn answered(&mut self) {
        self.entry = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock(&self.waiting.0).remove(&self.call);
        if let Some(entry) = self.entry.take() {
            self.cluster.work.withdraw(&self.protocol, entry);
        }
    }
}

/// How long one read for answers waits (an answer ends the wait at once).
const ANSWERS_WAIT: Duration = Duration::from_secs(2);

/// Read this host's answers on a thread of its own and hand each to the
/// call that waits for it, until the lease is lost.
pub(super) fn pump_answers(mut answers: Answers, waiting: Arc<Waiting>, cluster: Arc<Cluster>) {
    let pumped = std::thread::Builder::new().name("cluster-answers".into()).spawn(move || {
        while cluster.lease.lost().is_none() {
            match answers.next(ANSWERS_WAIT) {
                Ok(read) => {
                    for (call, outcome) in read {
                        if let Some(waiter) = lock(&waiting.0).remove(&call) {
                            let _ = waiter.send(decode(outcome));
                        }
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
