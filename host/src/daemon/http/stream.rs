//! Server-sent event streams: `/api/v1/workflows/{id}/events` (one
//! workflow: a `snapshot` of its report, then its events, ending with
//! `workflow_completed`) and `/api/v1/events` (every workflow the token
//! may see). Each event's `id` lets a client that reconnects with
//! `Last-Event-ID` continue where it was; one the log no longer reaches
//! gets a fresh `snapshot` (one workflow) or a `reset` (all), never a
//! silent hole. A finished workflow's stream whose last event the client
//! has seen answers 204, which tells `EventSource` to stop reconnecting.
//!
//! A client that does not read holds nothing but its place in the shared
//! log (see `events`), and is disconnected once the host could write
//! nothing to it for 30 s. At most [`MAX_STREAMS`] are open
//! at once, fewer where the process may open fewer files.

use super::HttpTransport;
use super::error::ApiError;
use super::{Authenticated, visible};
use crate::auth::{Action, Caller};
use crate::daemon::events::Logged;
use crate::daemon::rpc::errors;
use crate::model::WorkflowStatus;
use crate::report::RunReport;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, watch};

/// Most server-sent event streams open at once; one more is answered 429.
/// Every append to the event log wakes every stream, and each holds a file.
pub const MAX_STREAMS: usize = 1000;

/// One permit per server-sent event stream that may be open at once: a
/// stream holds its permit while it is open.
pub(super) struct StreamSlots {
    permits: Arc<tokio::sync::Semaphore>,
    capacity: usize,
}

impl StreamSlots {
    pub(super) fn new(capacity: usize) -> Self {
        Self { permits: Arc::new(tokio::sync::Semaphore::new(capacity)), capacity }
    }

    /// A place for one more stream, if there is one. The last twentieth
    /// of the places are kept for admins (`exempt`): clients filling the
    /// rest do not lock the operator and the dashboard out.
    pub(super) fn take(&self, exempt: bool) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kept = if exempt { 0 } else { self.capacity / 20 };
        if self.permits.available_permits() <= kept {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Streams open now.
    pub(super) fn open(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }
}

/// Events read from the log at once, per stream.
const BATCH: usize = 256;

/// Which events a stream carries.
enum Scope {
    /// One workflow's, for a caller who may see it.
    Workflow { id: String, caller: Caller },
    /// Every workflow's the caller may see.
    Visible(Caller),
}

impl Scope {
    fn caller(&self) -> &Caller {
        match self {
            Scope::Workflow { caller, .. } | Scope::Visible(caller) => caller,
        }
    }

    fn carries(&self, event: &Logged) -> bool {
        match self {
            Scope::Workflow { id, .. } => event.workflow_id == *id,
            Scope::Visible(caller) => caller.sees(event.owner.as_deref()),
        }
    }
}

/// Where a stream stands.
struct Reader {
    api: Arc<HttpTransport>,
    scope: Scope,
    /// The id of the last event read from the log.
    cursor: u64,
    pending: VecDeque<Arc<Logged>>,
    wake: watch::Receiver<u64>,
    done: bool,
    /// Its place among the streams the host allows, and in its token's
    /// share of them.
    _permit: OwnedSemaphorePermit,
    _share: Option<super::super::quota::Share>,
}

impl Reader {
    /// A reader after event `cursor`, if the host has room for one more
    /// stream.
    async fn new(api: Arc<HttpTransport>, scope: Scope, cursor: u64) -> Result<Self, ApiError> {
        let caller = scope.caller();
        let share = api.stream_shares.take(caller).await.map_err(|message| ApiError::new(errors::BUSY, message))?;
        let Some(permit) = api.streams.take(caller.sees_all()) else {
            let open = api.streams.open();
            let served = if caller.sees_all() { "at once" } else { "to clients" };
            let message = format!("{open} event streams are open, the most the host serves {served}; try again later");
            return Err(ApiError::new(errors::BUSY, message));
        };
        let wake = api.events.watch();
        // The log keeps events from now on; the other hosts' too, from
        // when this returns (before the caller reads its place).
        api.core.membership.hear_the_others().await;
        Ok(Self { api, scope, cursor, pending: VecDeque::new(), wake, done: false, _permit: permit, _share: share })
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                if !self.scope.carries(&event) {
                    continue;
                }
                if matches!(self.scope, Scope::Workflow { .. }) && event.name == "workflow_completed" {
                    self.done = true;
                }
                return Some(
                    Event::default().event(event.name).id(self.api.events.wire_id(event.id)).data(&event.data),
                );
            }
            // Marked seen before reading, so an append after the read wakes us.
            self.wake.borrow_and_update();
            match self.api.events.after(self.cursor, BATCH) {
                Ok(events) if events.is_empty() => self.wake.changed().await.ok()?,
                Ok(events) => {
                    self.cursor = events.last().map_or(self.cursor, |e| e.id);
                    self.pending.extend(events);
                }
                Err(gap) => {
                    self.cursor = gap.latest;
                    return Some(self.start_over().await);
                }
            }
        }
    }

    /// After a gap: a fresh snapshot of the workflow, or a `reset` that
    /// tells the client to fetch its list again.
    async fn start_over(&mut self) -> Event {
        match &self.scope {
            Scope::Workflow { id, caller } => match self.api.core.report(caller, id).await {
                Ok(Some(report)) => {
                    self.done = report.status != WorkflowStatus::Running;
                    snapshot(&self.api, self.cursor, report)
                }
                _ => {
                    self.done = true;
                    reset(&self.api, self.cursor)
                }
            },
            Scope::Visible(_) => reset(&self.api, self.cursor),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.api.events.reader_left();
    }
}

fn snapshot(api: &HttpTransport, id: u64, mut report: RunReport) -> Event {
    super::outline(&mut report);
    let data = serde_json::to_string(&report).unwrap_or_default();
    Event::default().event("snapshot").id(api.events.wire_id(id)).data(data)
}

fn reset(api: &HttpTransport, id: u64) -> Event {
    let data = serde_json::json!({ "reason": "events were missed; fetch the workflows again" }).to_string();
    Event::default().event("reset").id(api.events.wire_id(id)).data(data)
}

fn sse(reader: Reader, first: Option<Event>) -> Response {
    let events = futures_util::stream::unfold((first, reader), |(first, mut reader)| async move {
        let event = match first {
            Some(event) => event,
            None => reader.next().await?,
        };
        Some((Ok::<_, Infallible>(event), (None, reader)))
    });
    sse_response(events)
}

fn sse_response(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// The `Last-Event-ID` a client sent: `Some(Ok(id))` for one of this run's
/// events, `Some(Err)` for one that is not (another run's, or garbage).
fn last_event_id(api: &HttpTransport, headers: &HeaderMap) -> Option<Result<u64, ()>> {
    let text = headers.get("last-event-id")?.to_str().map_err(|_| ());
    Some(text.and_then(|t| api.events.parse_wire_id(t)))
}

/// One workflow's events: `snapshot` (its report without results), then
/// `task_status`, `task_progress`, `task_result`, and `workflow_completed`,
/// which ends the stream.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/events", tag = "events",
    params(("id" = String, Path, description = "The workflow id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event seen: continue after it")),
    responses(
        (status = 200, description = "A text/event-stream", content_type = "text/event-stream", body = String),
        (status = 204, description = "The workflow finished and its last event was seen"),
        (status = 404, body = ApiError), (status = 401, body = ApiError)))]
pub async fn workflow_events(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = auth.may(Action::Read)?.clone();
    // The reader first: from now on the log keeps what happens. Its place
    // is read before the report, so nothing between the two is missed.
    let own = caller.own_id(&id).into_owned();
    let mut reader = Reader::new(api.clone(), Scope::Workflow { id: own, caller: caller.clone() }, 0).await?;
    let start = api.events.latest();
    let report = visible(&api, &caller, &id).await?;
    // (A workflow kept before ids were scoped has the id as given.)
    reader.scope = Scope::Workflow { id: report.workflow_id.clone(), caller };
    let finished = report.status != WorkflowStatus::Running;
    match last_event_id(&api, &headers) {
        Some(Ok(after)) => match api.events.has_after(after, &report.workflow_id) {
            Ok(false) if finished => Ok(StatusCode::NO_CONTENT.into_response()),
            Ok(_) => {
                reader.cursor = after;
                Ok(sse(reader, None))
            }
            Err(_) => Ok(fresh(reader, start, report, finished)),
        },
        _ => Ok(fresh(reader, start, report, finished)),
    }
}

/// A stream that starts with a snapshot taken after event `start`.
fn fresh(mut reader: Reader, start: u64, report: RunReport, finished: bool) -> Response {
    let first = snapshot(&reader.api, start, report);
    reader.cursor = start;
    reader.done = finished;
    sse(reader, Some(first))
}

/// Every event of the workflows this token may see, from now on (or after
/// `Last-Event-ID`); `reset` when some were missed.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, description = "The last event seen: continue after it")),
    responses(
        (status = 200, description = "A text/event-stream", content_type = "text/event-stream", body = String),
        (status = 401, body = ApiError)))]
pub async fn all_events(
    State(api): State<Arc<HttpTransport>>,
    auth: Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = auth.may(Action::Read)?.clone();
    let mut reader = Reader::new(api.clone(), Scope::Visible(caller), 0).await?;
    let latest = api.events.latest();
    let (cursor, first) = match last_event_id(&api, &headers) {
        None => (latest, None),
        Some(Ok(after)) => (after, None),
        Some(Err(())) => (latest, Some(reset(&api, latest))),
    };
    reader.cursor = cursor;
    Ok(sse(reader, first))
}
