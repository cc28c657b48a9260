//! The daemon's schedules, and the loop that starts their runs.
//!
//! [`Schedules`] is the one owner of the host's schedules: it keeps them in
//! memory with their compiled cadences and writes every change to the
//! store first (when there is one), so that a restart finds what was added
//! and the due times already handled. Adding, listing and removing go
//! through it, each limited to what the caller owns (admins: all).
//!
//! [`fire_when_due`] sleeps until the next due time of any schedule (at
//! most a minute, and a change wakes it) and starts each due run as its
//! owner would submit it: the owner's token must still exist and may
//! submit, and the run goes through the [`Intake`] like any other
//! workflow. A due time is handled once: the run started, or skipped (its
//! previous run still running, its owner's token revoked), and the due
//! time is written down either way. The due-time rules and run ids are
//! `crate::schedule`'s; this module parses no workflows.

use super::intake::Intake;
use super::rpc::{RpcError, errors};
use crate::auth::{Action, Caller};
use crate::model::{Workflow, WorkflowStatus};
use crate::schedule::{Cadence, Due, MAX_SCHEDULE_BYTES, MAX_SCHEDULES, Schedule};
use crate::store::{AsyncStore, Quota, StoreError};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Mutex, Notify};

/// The longest the loop sleeps: it reads the wall clock again at least
/// this often, so a clock set forward (or a suspended machine) is noticed.
const MAX_NAP: Duration = Duration::from_secs(60);
/// Due times looked at for a schedule's shortest interval.
const GAPS_LOOKED_AT: usize = 50;
/// The default of `min_schedule_interval`: one second, which is every
/// pattern (a host shared by many users may want a minute).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Of the host's [`MAX_SCHEDULES`], the last this many are for admins only.
pub const ADMINS_SCHEDULES: usize = 50;

/// What the operator allows of schedules.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// The shortest time a schedule may leave between two runs
    /// (`min_schedule_interval`).
    pub min_interval: Duration,
    /// Schedules one client token may keep (`max_schedules_per_token`):
    /// one token cannot take the host's [`MAX_SCHEDULES`] from the others.
    pub per_token: usize,
}

/// The id the host keeps `caller`'s schedule `id` under, if it may see it.
fn visible(entries: &BTreeMap<String, Entry>, caller: &Caller, id: &str) -> Option<String> {
    caller
        .named_ids(id)
        .into_iter()
        .find(|id| entries.get(&**id).is_some_and(|e| caller.sees(e.schedule.workflow.owner.as_deref())))
        .map(Cow::into_owned)
}

/// How many of `entries` `owner` has.
fn owned_by(entries: &BTreeMap<String, Entry>, owner: &str) -> usize {
    entries.values().filter(|e| e.schedule.workflow.owner.as_deref() == Some(owner)).count()
}

pub(super) struct Schedules {
    /// By id. Held across the store's write of a change, so changes to one
    /// schedule happen one at a time and in the store's order.
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Wakes the loop when a schedule is added or removed.
    changed: Notify,
    store: Option<AsyncStore>,
    bounds: Bounds,
    /// The store's version of the schedules when [`Schedules::refresh`]
    /// last read them.
    version_read: Mutex<Option<u64>>,
}

struct Entry {
    schedule: Schedule,
    cadence: Cadence,
    /// Why its last due time was skipped, if it was: the log says a reason
    /// once, not at every due time while it lasts (a revoked token).
    skipping: Option<String>,
}

/// One schedule, as `list_schedules` and `GET /api/v1/schedules` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleInfo {
    pub schedule_id: String,
    /// The workflow's name.
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[schema(value_type = Object)]
    pub inputs: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_input: Option<String>,
    /// The token whose runs these are; none with authentication off.
    pub owner: Option<String>,
    /// The next due time, in the schedule's zone (RFC 3339); none if the
    /// pattern has no more.
    pub next_due: Option<String>,
    /// The last due time handled (a run started or skipped).
    pub last_due: Option<String>,
    /// The id of the last run started.
    pub last_run: Option<String>,
}

impl Entry {
    fn info(&self, now: SystemTime) -> ScheduleInfo {
        let (schedule, cadence) = (&self.schedule, &self.cadence);
        let next_due = match schedule.due(cadence, now) {
            Due::Now { due, .. } => Some(due),
            Due::Later { next } => Some(next),
            Due::Never => None,
        };
        ScheduleInfo {
            schedule_id: schedule.id().to_owned(),
            name: schedule.workflow.name.clone(),
            cron: schedule.spec.cron.clone(),
            timezone: schedule.spec.timezone.clone(),
            inputs: schedule.spec.inputs.clone(),
            due_input: schedule.spec.due_input.clone(),
            owner: schedule.workflow.owner.clone(),
            next_due: next_due.map(|t| cadence.local_text(t)),
            last_due: schedule.last_due.map(|t| cadence.local_text(t)),
            last_run: schedule.last_run.clone(),
        }
    }
}

/// A due time to handle, found with the entries locked; [`Schedules::fire`]
/// locks them again to start its run from the entry as it is then.
struct Fire {
    id: String,
    /// Which version of the schedule it is (a replaced one is not
    /// recorded into).
    created_at: SystemTime,
    due: SystemTime,
    /// The first due time missed before `due`, in the schedule's zone.
    missed_from: Option<String>,
    due_text: String,
}

impl Schedules {
    /// The schedules the store holds (none without one). One that cannot
    /// be read is left in the store and named in the log.
    pub(super) async fn load(store: Option<AsyncStore>, bounds: Bounds) -> Result<Self, StoreError> {
        let mut entries = BTreeMap::new();
        if let Some(store) = &store {
            let saved = store.call("read schedules", |store| store.schedules()).await?;
            for (id, error) in saved.unreadable {
                tracing::error!(schedule = %id, "set aside: {error}");
            }
            for schedule in saved.readable {
                match schedule.spec.cadence() {
                    Ok(cadence) => {
                        entries.insert(schedule.id().to_owned(), Entry { schedule, cadence, skipping: None });
                    }
                    Err(e) => tracing::error!(schedule = %schedule.id(), "set aside: {e}"),
                }
            }
        }
        Ok(Self { entries: Mutex::new(entries), changed: Notify::new(), store, bounds, version_read: Mutex::new(None) })
    }

    pub(super) async fn count(&self) -> usize {
        self.entries.lock().await.len()
    }

    /// Keep `workflow`'s schedule as `caller`'s. An id in use is refused
    /// unless `replace` is set and the caller may see that schedule (its
    /// own; any, for admins); a replaced schedule keeps its owner and its
    /// last due time, so no run is started twice.
    pub(super) async fn add(
        &self,
        caller: &Caller,
        mut workflow: Workflow,
        replace: bool,
    ) -> Result<ScheduleInfo, RpcError> {
        workflow.owner = caller.owner();
        let now = SystemTime::now();
        let Some(mut schedule) = Schedule::new(workflow, now) else {
            return Err(RpcError::new(
                errors::INVALID_PARAMS,
                "the workflow has no schedule: give it a 'schedule:' block or a cron pattern",
            ));
        };
        let own = caller.own_id(&schedule.spec.id).into_owned();
        if own != schedule.spec.id && schedule.spec.id.contains(':') {
            let message = format!("schedule.id '{}' names another token's schedule", schedule.spec.id);
            return Err(RpcError::new(errors::INVALID_PARAMS, message));
        }
        schedule.spec.id = own;
        let cadence = schedule.spec.cadence().map_err(|e| RpcError::new(errors::INVALID_PARAMS, e.to_string()))?;
        if let Some(gap) = cadence.shortest_gap(now, GAPS_LOOKED_AT).filter(|gap| *gap < self.bounds.min_interval) {
            return Err(RpcError::new(
                errors::INVALID_PARAMS,
                format!(
                    "schedule.cron: it runs as often as every {}; this host runs a schedule at most every {} \
                     (min_schedule_interval)",
                    humantime::format_duration(gap),
                    humantime::format_duration(self.bounds.min_interval)
                ),
            ));
        }
        let size = super::rpc::encoded_len(&schedule.document());
        if size > MAX_SCHEDULE_BYTES {
            return Err(RpcError::new(
                errors::TOO_LARGE,
                format!("the workflow is {size} bytes as JSON; a schedule keeps at most {MAX_SCHEDULE_BYTES} (1 MiB)"),
            ));
        }
        let mut entries = self.entries.lock().await;
        let id = schedule.id().to_owned();
        let mut skipping = None;
        match entries.get(&id) {
            // Ids are one namespace: the owner is told what to do, another
            // token only that the id is taken.
            Some(old) if !caller.sees(old.schedule.workflow.owner.as_deref()) => {
                return Err(RpcError::new(errors::CONFLICT, format!("schedule id '{id}' is taken; choose another")));
            }
            Some(_) if !replace => {
                let message = format!("schedule '{id}' exists; remove it first, or add it with replace");
                return Err(RpcError::new(errors::CONFLICT, message));
            }
            Some(old) => {
                // An admin's replacement of another token's schedule stays
                // that token's: its runs, and who sees it, do not change.
                schedule.workflow.owner.clone_from(&old.schedule.workflow.owner);
                schedule.last_due = old.schedule.last_due;
                schedule.last_run = old.schedule.last_run.clone();
                schedule.run_key.clone_from(&old.schedule.run_key);
                skipping.clone_from(&old.skipping);
            }
            None if entries.len() >= MAX_SCHEDULES - if caller.sees_all() { 0 } else { ADMINS_SCHEDULES } => {
                return Err(RpcError::new(
                    errors::BUSY,
                    format!("the host keeps at most {MAX_SCHEDULES} schedules; remove one first"),
                ));
            }
            None if !caller.sees_all() && owned_by(&entries, caller.name()) >= self.bounds.per_token => {
                return Err(self.at_quota(caller));
            }
            None => {}
        }
        // A new schedule of a client token is counted again by a store
        // other hosts share, in the step that writes it.
        let counted = !caller.sees_all() && !entries.contains_key(&id);
        if !self.persist(&schedule, counted.then_some(self.bounds.per_token)).await.map_err(RpcError::internal)? {
            return Err(self.at_quota(caller));
        }
        let entry = Entry { schedule, cadence, skipping };
        let info = entry.info(now);
        let verb = if entries.insert(id.clone(), entry).is_some() { "replaced" } else { "added" };
        drop(entries);
        tracing::info!(schedule = %id, "{verb} by {}: {} ({})", caller.name(), info.cron, info.timezone);
        self.changed.notify_one();
        Ok(info)
    }

    /// The schedules `caller` may see, by id.
    pub(super) async fn list(&self, caller: &Caller) -> Vec<ScheduleInfo> {
        let now = SystemTime::now();
        let entries = self.entries.lock().await;
        entries.values().filter(|e| caller.sees(e.schedule.workflow.owner.as_deref())).map(|e| e.info(now)).collect()
    }

    /// `caller`'s schedule `id`, if it may see it.
    pub(super) async fn get(&self, caller: &Caller, id: &str) -> Option<ScheduleInfo> {
        let entries = self.entries.lock().await;
        let id = visible(&entries, caller, id)?;
        entries.get(&id).map(|e| e.info(SystemTime::now()))
    }

    /// Forget `caller`'s schedule `id` (runs it started go on): the id the
    /// host kept it under; none if there is no such schedule the caller
    /// may see.
    pub(super) async fn remove(&self, caller: &Caller, id: &str) -> Result<Option<String>, RpcError> {
        let mut entries = self.entries.lock().await;
        let Some(kept) = visible(&entries, caller, id) else { return Ok(None) };
        let id = kept.as_str();
        if let Some(store) = &self.store {
            let wanted = id.to_owned();
            store
                .call("remove a schedule", move |store| store.remove_schedule(&wanted))
                .await
                .map_err(RpcError::internal)?;
        }
        entries.remove(id);
        drop(entries);
        tracing::info!(schedule = %id, "removed by {}", caller.name());
        self.changed.notify_one();
        Ok(Some(kept))
    }

    /// Store `schedule`; false if it would be one more than `quota` of its
    /// owner's schedules (counted by a store the hosts of a cluster share).
    async fn persist(&self, schedule: &Schedule, quota: Option<usize>) -> Result<bool, StoreError> {
        let Some(store) = &self.store else { return Ok(true) };
        let schedule = schedule.clone();
        store
            .call("store a schedule", move |store| {
                let owner = schedule.workflow.owner.clone();
                let quota = quota.zip(owner.as_deref()).map(|(max, owner)| Quota { owner, max });
                store.put_schedule_within(&schedule, quota)
            })
            .await
    }

    /// The refusal of one schedule more than `caller`'s quota.
    fn at_quota(&self, caller: &Caller) -> RpcError {
        let message = format!(
            "token '{}' has {} schedules, its quota (max_schedules_per_token); remove one first",
            caller.name(),
            self.bounds.per_token
        );
        RpcError::new(errors::BUSY, message)
    }

    /// Write down a handled due time; false if the store no longer has the
    /// schedule.
    async fn record_due(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        let Some(store) = &self.store else { return Ok(true) };
        let schedule = schedule.clone();
        store.call("store a schedule", move |store| store.update_schedule(&schedule)).await
    }

    /// Take up the schedules as the store has them now (in a cluster, other
    /// hosts add, remove and fire them too): new ones are added, removed
    /// ones forgotten, and each keeps the latest due time handled.
    pub(super) async fn refresh(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else { return Ok(()) };
        // Read first: a change after it is read again at the next refresh.
        let version = store.call("read schedules", |store| store.schedules_version()).await?;
        if version.is_some() && *self.version_read.lock().await == version {
            return Ok(());
        }
        let saved = store.call("read schedules", |store| store.schedules()).await?;
        *self.version_read.lock().await = version;
        let mut entries = self.entries.lock().await;
        let mut stored: BTreeMap<String, Schedule> =
            saved.readable.into_iter().map(|schedule| (schedule.id().to_owned(), schedule)).collect();
        let before = entries.len();
        entries.retain(|id, _| stored.contains_key(id));
        let mut changed = entries.len() != before;
        for (id, schedule) in std::mem::take(&mut stored) {
            match entries.get_mut(&id) {
                Some(entry) if entry.schedule.created_at == schedule.created_at => {
                    if schedule.last_due > entry.schedule.last_due {
                        (entry.schedule.last_due, entry.schedule.last_run) = (schedule.last_due, schedule.last_run);
                    }
                }
                _ => match schedule.spec.cadence() {
                    Ok(cadence) => {
                        entries.insert(id, Entry { schedule, cadence, skipping: None });
                        changed = true;
                    }
                    Err(e) => tracing::error!(schedule = %id, "set aside: {e}"),
                },
            }
        }
        drop(entries);
        if changed {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// What is due at `now`, and the earliest due time after it.
    async fn due(&self, now: SystemTime) -> (Vec<Fire>, Option<SystemTime>) {
        let entries = self.entries.lock().await;
        let mut fires = Vec::new();
        let mut next: Option<SystemTime> = None;
        for Entry { schedule, cadence, .. } in entries.values() {
            match schedule.due(cadence, now) {
                Due::Now { due, missed_from } => fires.push(Fire {
                    id: schedule.id().to_owned(),
                    created_at: schedule.created_at,
                    due,
                    missed_from: missed_from.map(|t| cadence.local_text(t)),
                    due_text: cadence.local_text(due),
                }),
                Due::Later { next: at } => next = Some(next.map_or(at, |n| n.min(at))),
                Due::Never => {}
            }
        }
        (fires, next)
    }

    /// Handle `fire`'s due time, if its schedule is still the one it was
    /// taken from: start the run and write down the due time (and the run).
    /// The entries stay locked throughout, so a schedule removed or
    /// replaced before this starts nothing, and one removed or replaced
    /// after it knows its last run. Breaks when the host is shutting down
    /// (the due time is left for the next start, as missed).
    async fn fire(&self, intake: &Intake, fire: &Fire) -> std::ops::ControlFlow<()> {
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get_mut(&fire.id).filter(|e| e.schedule.created_at == fire.created_at) else {
            return std::ops::ControlFlow::Continue(());
        };
        let outcome = start(intake, self.store.as_ref(), fire, entry).await;
        entry.schedule.last_due = Some(fire.due);
        match outcome {
            Outcome::Stopping => return std::ops::ControlFlow::Break(()),
            Outcome::Started(run) => {
                entry.schedule.last_run = Some(run);
                entry.skipping = None;
            }
            Outcome::Busy(reason) | Outcome::Skipped(reason) if entry.skipping.as_ref() == Some(&reason) => {}
            Outcome::Busy(reason) => {
                tracing::info!(schedule = %fire.id, "skipped the run due {}: {reason}", fire.due_text);
                entry.skipping = Some(reason);
            }
            Outcome::Skipped(reason) => {
                tracing::warn!(schedule = %fire.id, "skipped the run due {}: {reason}", fire.due_text);
                entry.skipping = Some(reason);
            }
        }
        match self.record_due(&entry.schedule).await {
            // The run's id is derived from its due time: after a restart,
            // starting it again is refused as a duplicate.
            Err(e) => tracing::warn!(schedule = %fire.id, "cannot write down the due time handled: {e}"),
            // Another host of the cluster removed it meanwhile.
            Ok(false) => {
                entries.remove(&fire.id);
            }
            Ok(true) => {}
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Start each schedule's runs as they fall due, until the host shuts down.
pub(super) async fn fire_when_due(schedules: Arc<Schedules>, intake: Intake) {
    loop {
        let (fires, next) = schedules.due(SystemTime::now()).await;
        for fire in &fires {
            if schedules.fire(&intake, fire).await.is_break() {
                return;
            }
        }
        if !fires.is_empty() {
            continue; // time went on while they started
        }
        let nap = next.and_then(|n| n.duration_since(SystemTime::now()).ok()).map_or(MAX_NAP, |d| d.min(MAX_NAP));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = schedules.changed.notified() => {}
        }
    }
}

/// What came of a due time.
enum Outcome {
    /// Its run started (or had started before a restart): this id.
    Started(String),
    /// Skipped while its last run still runs, as the schedule wants: said
    /// in the log (as information) when the reason is new.
    Busy(String),
    /// Skipped for this reason (said in the log as a warning when new).
    Skipped(String),
    /// The host is shutting down: left for the next start.
    Stopping,
}

/// Whether the workflow `id` runs: on this host's engine, or (in a
/// cluster) on another host's, which the store says by holding its
/// document and no final report. A store that cannot be read says no.
async fn still_running(intake: &Intake, store: Option<&AsyncStore>, id: &str) -> bool {
    if let Some(report) = intake.engine.workflow(id).await.ok().flatten() {
        return report.status == WorkflowStatus::Running;
    }
    let Some(store) = store else { return false };
    let id = id.to_owned();
    let unfinished = move |store: &dyn crate::store::Store| {
        Ok::<_, StoreError>(store.report(&id)?.is_none() && store.document(&id)?.is_some())
    };
    store.call("read a schedule's last run", unfinished).await.unwrap_or(false)
}

/// Start `fire`'s run of `entry`'s schedule, as its owner.
async fn start(intake: &Intake, store: Option<&AsyncStore>, fire: &Fire, entry: &Entry) -> Outcome {
    let schedule = &entry.schedule;
    let (id, due) = (&fire.id, &fire.due_text);
    if intake.shutting_down() {
        return Outcome::Stopping;
    }
    if let Some(from) = &fire.missed_from {
        tracing::info!(schedule = %id, "missed the due times from {from} (the host was down or busy); starting only the one due {due}");
    }
    let owner = schedule.workflow.owner.as_deref();
    let Some(holder) = intake.policy.holder(owner).filter(|h| h.may(Action::Submit).is_ok()) else {
        let owner = owner.unwrap_or_default();
        return Outcome::Skipped(format!("its token '{owner}' is revoked or may not submit"));
    };
    if let Some(last) = &schedule.last_run
        && still_running(intake, store, last).await
    {
        return Outcome::Busy(format!("its last run {last} is still running"));
    }
    let run = match schedule.run_at(&entry.cadence, fire.due) {
        Ok(run) => run,
        Err(e) => return Outcome::Skipped(e.to_string()),
    };
    // The host's id of the run (a schedule kept before ids were scoped
    // makes runs of an unscoped id, which its token's submission scopes).
    let run_id = holder.own_id(&run.id).into_owned();
    match intake.submit(&holder, run).await {
        Ok(_) => {
            tracing::info!(schedule = %id, workflow = %run_id, "started the run due {due}");
            Outcome::Started(run_id)
        }
        Err(e) if e.code == errors::CONFLICT => {
            tracing::info!(schedule = %id, workflow = %run_id, "the run due {due} had started before the restart");
            Outcome::Started(run_id)
        }
        Err(e) if e.code == errors::SHUTTING_DOWN => Outcome::Stopping,
        Err(e) => Outcome::Skipped(e.message),
    }
}
