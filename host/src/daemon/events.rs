//! What happened, for those who watch: each engine event as the JSON both
//! transports send ([`payload`]), and the [`EventLog`] of recent events,
//! numbered, from which server-sent event streams read and resume
//! (`Last-Event-ID`).
//!
//! The log is bounded by count and bytes ([`MAX_EVENTS`], [`MAX_BYTES`]);
//! one event's data is at most [`MAX_EVENT_BYTES`] (a larger result or
//! chunk is left out, marked `truncated`, for the client to fetch). It
//! keeps events only while someone reads it, and for [`KEEP_AFTER_READERS`]
//! after the last reader left (a page that reconnects within it misses
//! nothing): a host nobody watches over HTTP only counts its events. A
//! reader that asks for events the log did not keep is told so (a gap),
//! never handed events with a hole in them. It knows no transport.

use crate::engine::EngineEvent;
use crate::locks::lock;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Most events the log keeps.
pub const MAX_EVENTS: usize = 100_000;
/// Most bytes of event data the log keeps.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long events are still kept after the last reader left.
pub const KEEP_AFTER_READERS: std::time::Duration = std::time::Duration::from_secs(300);

/// Largest data of one logged event; a larger one loses its result, error
/// or chunk and says `"truncated": true` with the size it had.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One event as the transports send it: its name, workflow, owner (who
/// may see it) and payload.
pub struct Described<'e> {
    pub name: &'static str,
    pub workflow_id: &'e str,
    pub owner: Option<&'e str>,
    pub payload: Value,
    /// Whether it may be large (a result, an error, a chunk): such events
    /// go through each client's outbox, which counts what it holds; the
    /// rest are a few ids.
    pub counted: bool,
}

/// Every event name, as [`payload`] gives them.
const NAMES: [&str; 5] = ["workflow_started", "task_status", "task_result", "task_progress", "workflow_completed"];

/// An event as one host of a cluster passes it to the others: owned, its
/// data bounded as the log bounds it ([`MAX_EVENT_BYTES`]) and carried as
/// JSON within the message (not a string of JSON, which would be escaped
/// by the sender and unescaped by every host that hears it).
#[derive(Debug, Serialize, Deserialize)]
pub struct Passed {
    name: String,
    workflow_id: String,
    owner: Option<String>,
    counted: bool,
    data: Option<Box<RawValue>>,
}

impl Passed {
    pub fn of(event: &Described<'_>) -> Self {
        Self {
            name: event.name.to_owned(),
            workflow_id: event.workflow_id.to_owned(),
            owner: event.owner.map(str::to_owned),
            counted: event.counted,
            data: bounded(&event.payload),
        }
    }

    /// The workflow it is about.
    pub fn workflow_id(&self) -> &str {
        &self.workflow_id
    }

    /// The event again; none if another host sent what this one does not
    /// know (a newer version's event).
    pub fn described(&self) -> Option<Described<'_>> {
        let name = NAMES.into_iter().find(|name| *name == self.name)?;
        Some(Described {
            name,
            workflow_id: &self.workflow_id,
            owner: self.owner.as_deref(),
            payload: serde_json::from_str(self.data.as_ref()?.get()).ok()?,
            counted: self.counted,
        })
    }
}

/// The name and payload of an engine event: the same on Socket.IO and in
/// event streams (see docs/protocol.md).
pub fn payload(event: &EngineEvent) -> Described<'_> {
    match event {
        EngineEvent::WorkflowStarted(started) => Described {
            name: "workflow_started",
            workflow_id: &started.workflow_id,
            owner: started.owner.as_deref(),
            payload: json!({ "workflow_id": started.workflow_id, "name": started.name, "task_count": started.task_count }),
            counted: false,
        },
        // Two events per task: `task_status` when it starts (or waits for
        // a retry), `task_result` when it ends.
        EngineEvent::Task(task) => Described {
            name: if task.status.is_final() { "task_result" } else { "task_status" },
            workflow_id: &task.workflow_id,
            owner: task.owner.as_deref(),
            payload: json!({
                "task_id": task.task_id,
                "workflow_id": task.workflow_id,
                "status": task.status,
                "result": task.result,
                "error": task.error,
                "attempt": task.attempt,
            }),
            // A start is a few ids; an end, or a wait for a retry, carries
            // a result or an error.
            counted: task.status.is_final() || task.error.is_some(),
        },
        EngineEvent::Progress(progress) => Described {
            name: "task_progress",
            workflow_id: &progress.workflow_id,
            owner: progress.owner.as_deref(),
            payload: json!({ "workflow_id": progress.workflow_id, "task_id": progress.task_id, "chunk": progress.chunk }),
            counted: true,
        },
        EngineEvent::WorkflowFinished(report) => Described {
            name: "workflow_completed",
            workflow_id: &report.workflow_id,
            owner: report.owner.as_deref(),
            payload: json!({
                "workflow_id": report.workflow_id,
                "name": report.name,
                "status": report.status,
                "summary": report.summary,
                "duration_ms": report.duration_ms,
            }),
            counted: false,
        },
    }
}

/// An event as the log keeps it.
#[derive(Debug)]
pub struct Logged {
    pub id: u64,
    pub name: &'static str,
    pub workflow_id: String,
    pub owner: Option<Box<str>>,
    /// The payload as JSON text, at most [`MAX_EVENT_BYTES`].
    pub data: String,
}

/// The reader asked for events the log no longer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The newest event's id now: a reader that starts over continues after it.
    pub latest: u64,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<Logged>>,
    bytes: usize,
}

/// Recent events, numbered from 1 in the order they happened.
pub struct EventLog {
    /// Tells ids of this daemon's run from those of another (a client that
    /// reconnects after a restart).
    epoch: String,
    ring: Mutex<Ring>,
    /// The newest event's id (0: none yet); readers wait on it.
    latest: watch::Sender<u64>,
    /// Until when events are kept with no reader (set as the last leaves).
    kept_until: Mutex<Option<std::time::Instant>>,
}

impl Default for EventLog {
    fn default() -> Self {
        let epoch = format!("{:08x}", fastrand::u32(..));
        Self { epoch, ring: Mutex::default(), latest: watch::Sender::new(0), kept_until: Mutex::default() }
    }
}

impl EventLog {
    /// Log an event (if anyone reads the log, or did a moment ago); returns
    /// its id. An event not kept still takes its id, so a reader asking
    /// for it learns of the gap.
    pub fn append(&self, event: &Described<'_>) -> u64 {
        if !self.kept() {
            let mut ring = lock(&self.ring);
            ring.events.clear();
            ring.bytes = 0;
            let id = *self.latest.borrow() + 1;
            self.latest.send_replace(id);
            return id;
        }
        let data = bounded_text(&event.payload);
        let mut ring = lock(&self.ring);
        let id = *self.latest.borrow() + 1;
        ring.bytes += data.len();
        ring.events.push_back(Arc::new(Logged {
            id,
            name: event.name,
            workflow_id: event.workflow_id.to_owned(),
            owner: event.owner.map(Box::from),
            data,
        }));
        while ring.events.len() > MAX_EVENTS || ring.bytes > MAX_BYTES {
            let Some(old) = ring.events.pop_front() else { break };
            ring.bytes -= old.data.len();
        }
        // Published under the lock, so ids reach readers in order.
        self.latest.send_replace(id);
        id
    }

    /// Events were missed (another host's, while the cluster's bus was
    /// out of reach): readers behind learn of a gap, as if the log had
    /// dropped them, rather than read on past a hole.
    pub fn missed(&self) {
        let mut ring = lock(&self.ring);
        ring.events.clear();
        ring.bytes = 0;
        // An id for what was missed: every reader is behind it now.
        let id = *self.latest.borrow() + 1;
        self.latest.send_replace(id);
    }

    /// Whether events are kept now: a reader is there, or left lately.
    pub fn kept(&self) -> bool {
        self.latest.receiver_count() > 0
            || lock(&self.kept_until).is_some_and(|until| std::time::Instant::now() < until)
    }

    /// A reader left: keep events a while for it to come back to.
    pub fn reader_left(&self) {
        *lock(&self.kept_until) = Some(std::time::Instant::now() + KEEP_AFTER_READERS);
    }

    /// The newest event's id (0 before the first).
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Up to `max` events after `after`, oldest first; a [`Gap`] if some
    /// of those are no longer kept.
    pub fn after(&self, after: u64, max: usize) -> Result<Vec<Arc<Logged>>, Gap> {
        let ring = lock(&self.ring);
        let oldest = self.reaches(&ring, after)?;
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
        Ok(ring.events.iter().skip(skip).take(max).cloned().collect())
    }

    /// The oldest kept id, if `ring` holds every event after `after`.
    fn reaches(&self, ring: &Ring, after: u64) -> Result<u64, Gap> {
        let latest = self.latest();
        let oldest = ring.events.front().map_or(latest + 1, |e| e.id);
        if after > latest || after + 1 < oldest { Err(Gap { latest }) } else { Ok(oldest) }
    }

    /// Whether the log holds an event of `workflow_id` after `after`; a
    /// [`Gap`] if it may have had one it no longer keeps.
    pub fn has_after(&self, after: u64, workflow_id: &str) -> Result<bool, Gap> {
        let ring = lock(&self.ring);
        self.reaches(&ring, after)?;
        Ok(ring.events.iter().rev().take_while(|e| e.id > after).any(|e| e.workflow_id == workflow_id))
    }

    /// Wakes when events are appended.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The `id:` of event `id` on the wire: `EPOCH-N`.
    pub fn wire_id(&self, id: u64) -> String {
        format!("{}-{id}", self.epoch)
    }

    /// The event id a client sent back (`Last-Event-ID`); `Err` if it is
    /// not one of this run's (another run's, or garbage).
    pub fn parse_wire_id(&self, text: &str) -> Result<u64, ()> {
        let (epoch, id) = text.trim().split_once('-').ok_or(())?;
        if epoch != self.epoch {
            return Err(());
        }
        id.parse().map_err(|_| ())
    }
}

/// `payload` as JSON text of at most [`MAX_EVENT_BYTES`]: a larger one
/// without its result, error and chunk, saying how large it was.
fn bounded_text(payload: &Value) -> String {
    bounded(payload).map_or_else(|| "null".to_owned(), |raw| Box::<str>::from(raw).into_string())
}

/// `payload` as JSON, at most [`MAX_EVENT_BYTES`] of it: a larger one
/// without its result, error or chunk, saying it was truncated. (A JSON
/// value always encodes; none is for the encoder's error all the same.)
fn bounded(payload: &Value) -> Option<Box<RawValue>> {
    let raw = serde_json::value::to_raw_value(payload).ok()?;
    if raw.get().len() <= MAX_EVENT_BYTES {
        return Some(raw);
    }
    let mut smaller = payload.clone();
    if let Value::Object(map) = &mut smaller {
        for field in ["result", "error", "chunk"] {
            if map.contains_key(field) {
                map.insert(field.to_owned(), Value::Null);
            }
        }
        map.insert("truncated".to_owned(), json!(true));
        map.insert("bytes".to_owned(), json!(raw.get().len()));
    }
    serde_json::value::to_raw_value(&smaller).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Described<'static> {
        Described { name: "task_status", workflow_id: "wf", owner: None, payload: json!({ "n": n }), counted: false }
    }

    #[test]
    fn readers_resume_in_order_and_learn_of_gaps() {
        let log = EventLog::default();
        let _reader = log.watch();
        assert!(log.after(0, 10).unwrap().is_empty());
        for n in 1..=3 {
            assert_eq!(log.append(&event(n)), n as u64);
        }
        let ids: Vec<u64> = log.after(1, 10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(log.after(3, 10).unwrap().len(), 0);
        assert_eq!(log.after(7, 10).unwrap_err(), Gap { latest: 3 }, "an id from the future is a gap");
        for n in 4..=MAX_EVENTS + 5 {
            log.append(&event(n));
        }
        assert!(log.after(2, 10).is_err(), "the oldest events are gone");
        assert_eq!(log.after(6, 1).unwrap()[0].id, 7);
        let wire = log.wire_id(42);
        assert_eq!(log.parse_wire_id(&wire), Ok(42));
        assert!(log.parse_wire_id("00000000-42").is_err() || log.epoch == "00000000");
        assert!(log.parse_wire_id("garbage").is_err());
    }

    #[test]
    fn nothing_is_kept_unread_and_a_reader_after_that_learns_of_the_gap() {
        let log = EventLog::default();
        assert_eq!((log.append(&event(1)), log.append(&event(2))), (1, 2));
        let reader = log.watch();
        assert!(log.after(0, 10).is_err(), "events 1 and 2 were not kept: a gap, not silence");
        assert!(log.after(2, 10).unwrap().is_empty());
        log.append(&event(3));
        assert_eq!(log.after(2, 10).unwrap()[0].id, 3, "kept while read");
        drop(reader);
        log.reader_left();
        log.append(&event(4));
        assert_eq!(log.after(3, 10).unwrap()[0].id, 4, "kept a while after the reader left");
    }

    #[test]
    fn large_payloads_are_logged_without_their_result() {
        let log = EventLog::default();
        let _reader = log.watch();
        let big = json!({ "task_id": "t", "result": "x".repeat(MAX_EVENT_BYTES) });
        log.append(&Described { name: "task_result", workflow_id: "wf", owner: None, payload: big, counted: true });
        let logged = &log.after(0, 1).unwrap()[0];
        let data: Value = serde_json::from_str(&logged.data).unwrap();
        assert_eq!(
            (data["result"].clone(), data["truncated"].clone(), data["task_id"].clone()),
            (Value::Null, json!(true), json!("t"))
        );
        assert!(data["bytes"].as_u64().unwrap() > MAX_EVENT_BYTES as u64);
    }
}
