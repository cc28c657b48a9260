//! A provider connected over Socket.IO, as a [`Provider`].
//!
//! Each call is an `execute_method` event with an ack; the answer may also
//! come as a `method_result` event carrying the call's `id`, for client
//! libraries that cannot answer acks. When the socket goes away, calls in
//! flight end with a re-queue error so the engine gives them to another
//! provider without using up their attempts.

use super::wire::{AckArgs, method_reply};
use crate::locks::lock;
use crate::model::{MAX_RESULT_BYTES, ProviderSpec, TaskError, codes};
use crate::registry::{Call, CallFuture, Load, Progress, Provider, ProviderKind};
use serde_json::{Value, json};
use socketioxide::extract::SocketRef;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{oneshot, watch};

pub struct RemoteProvider {
    id: Arc<str>,
    spec: ProviderSpec,
    socket: SocketRef,
    max_concurrent: usize,
    in_flight: Arc<AtomicUsize>,
    /// Answers that arrive as `method_result` events, by call id.
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    /// Where each running call's `task_progress` goes, by call id.
    progress: Arc<Mutex<HashMap<String, Progress>>>,
    next_call: AtomicU64,
    /// Flips to true when the socket disconnects.
    closed: watch::Sender<bool>,
    /// Calls in a row that ran into their deadline unanswered.
    unanswered: Arc<AtomicU32>,
}

/// After this many calls in a row go unanswered, the provider is taken for
/// dead and disconnected (its other calls go back to the queue). A dead
/// connection is noticed sooner by Engine.IO's ping timeout.
const MAX_UNANSWERED: u32 = 3;

impl RemoteProvider {
    pub fn new(id: String, spec: ProviderSpec, socket: SocketRef, max_concurrent: usize) -> Self {
        Self {
            id: id.into(),
            spec,
            socket,
            max_concurrent,
            in_flight: Arc::default(),
            pending: Arc::default(),
            progress: Arc::default(),
            next_call: AtomicU64::new(1),
            closed: watch::Sender::new(false),
            unanswered: Arc::default(),
        }
    }

    /// Deliver a `method_result` event; false if no call waits for `id`.
    pub fn deliver(&self, id: &str, reply: Value) -> bool {
        let waiter = lock(&self.pending).remove(id);
        waiter.is_some_and(|w| w.send(reply).is_ok())
    }

    /// Forward a `task_progress` chunk; false if no call runs under `id`.
    pub fn progress(&self, id: &str, chunk: Value) -> bool {
        let sink = lock(&self.progress).get(id).cloned();
        sink.map(|progress| progress(chunk)).is_some()
    }

    /// The socket is gone: wake every call in flight.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// No answer in the ack: `ack()`, `ack(null)`, or a handler that returned nothing.
fn is_empty(AckArgs(args): &AckArgs) -> bool {
    args.iter().all(Value::is_null)
}

/// Releases the call's slot and pending entry however the call ends, and
/// counts calls that reached their deadline unanswered (the engine may drop
/// the call at its deadline before this provider's own timer fires).
struct Slot {
    in_flight: Arc<AtomicUsize>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    progress: Arc<Mutex<HashMap<String, Progress>>>,
    call_id: String,
    deadline: Instant,
    answered: bool,
    unanswered: Arc<AtomicU32>,
    socket: SocketRef,
    provider: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.call_id);
        lock(&self.progress).remove(&self.call_id);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.answered {
            self.unanswered.store(0, Ordering::Relaxed);
        } else if Instant::now() >= self.deadline
            && self.unanswered.fetch_add(1, Ordering::Relaxed) + 1 == MAX_UNANSWERED
        {
            tracing::warn!(provider = self.provider, "{MAX_UNANSWERED} calls in a row unanswered; disconnecting it");
            let _ = self.socket.clone().disconnect();
        }
    }
}

impl Provider for RemoteProvider {
    fn id(&self) -> &Arc<str> {
        &self.id
    }

    fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Remote
    }

    fn load(&self) -> Load {
        Load { capacity: Some(self.max_concurrent), in_flight: self.in_flight.load(Ordering::Relaxed) }
    }

    fn call(&self, call: Call) -> CallFuture {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let call_id = format!("{}-{}", self.id, self.next_call.fetch_add(1, Ordering::Relaxed));
        let (answer, by_event) = oneshot::channel();
        lock(&self.pending).insert(call_id.clone(), answer);
        if let Some(progress) = call.progress.clone() {
            lock(&self.progress).insert(call_id.clone(), progress);
        }
        let slot = Slot {
            in_flight: self.in_flight.clone(),
            pending: self.pending.clone(),
            progress: self.progress.clone(),
            call_id: call_id.clone(),
            deadline: call.deadline,
            answered: false,
            unanswered: self.unanswered.clone(),
            socket: self.socket.clone(),
            provider: self.id.to_string(),
        };
        let payload = json!({
            "jsonrpc": "2.0",
            "id": call_id,
            "method": call.method,
            "params": call.params,
            "task_id": call.task_id,
            "workflow_id": call.workflow_id,
            "attempt": call.attempt,
        });
        let provider = self.id.clone();
        let socket = self.socket.clone();
        let mut closed = self.closed.subscribe();
        Box::pin(async move {
            // Moved whole (not just the field written below), so it lives
            // exactly as long as the call.
            let mut slot = slot;
            let lost = || {
                TaskError::new(codes::SERVER_ERROR, format!("provider '{provider}' disconnected during the call"))
                    .requeue()
            };
            let wait = call.deadline.saturating_duration_since(Instant::now());
            let acked = match socket.timeout(wait).emit_with_ack::<_, AckArgs>("execute_method", &payload) {
                Ok(ack) => ack,
                Err(_) => return Err(lost()),
            };
            let late = || {
                TaskError::new(
                    codes::TIMEOUT,
                    format!("provider '{provider}' did not answer before the task's deadline"),
                )
                .retryable()
            };
            // An empty ack means "the answer follows as a `method_result`
            // event" (python-socketio acks every call, even without a value).
            let by_ack = async {
                match acked.await {
                    Ok(reply) if !is_empty(&reply) => Some(method_reply(&provider, Value::Array(reply.0))),
                    Ok(_) => None,
                    Err(socketioxide::AckError::Timeout) => Some(Err(late())),
                    Err(socketioxide::AckError::Socket(_)) => Some(Err(lost())),
                    Err(e) => {
                        Some(Err(TaskError::new(codes::INTERNAL_ERROR, format!("provider '{provider}': bad ack: {e}"))))
                    }
                }
            };
            let outcome = tokio::select! {
                Some(outcome) = by_ack => outcome,
                Ok(reply) = by_event => method_reply(&provider, reply),
                _ = closed.wait_for(|closed| *closed) => Err(lost()),
                () = tokio::time::sleep_until(call.deadline.into()) => Err(late()),
            };
            slot.answered = outcome.as_ref().err().is_none_or(|e| e.code != codes::TIMEOUT && !e.requeue);
            outcome.and_then(|result| match super::wire::encoded_len(&result) {
                len if len > MAX_RESULT_BYTES => {
                    Err(TaskError::result_too_large(&format!("provider '{provider}'"), len, &call.method))
                }
                _ => Ok(result),
            })
        })
    }
}
