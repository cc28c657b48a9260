//! The Redis store, for users who already run Redis. Keys (prefix
//! `gleitzeit:`, close to the original's layout):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `workflow:ID` | hash | `name`, `document` (as accepted), `owner`, `status`, `submitted_at`, `finished_at`, `summary`, `duration_ms`, `report` |
//! | `workflow:ID:tasks` | hash | task id → its last state (JSON) |
//! | `workflow:ID:events` | list | every task state change, in order |
//! | `workflows:unfinished` | set | ids of workflows still running |
//! | `workflows:finished` | sorted set | ids by finish time (retention) |
//! | `workflows:submitted` | sorted set | ids by submission time (listing) |
//! | `workflows:submitted:by:OWNER` | sorted set | the same, of one token's workflows |
//! | `schedules` | hash | schedule id → the schedule (JSON) |
//! | `schedules:version` | string | a number each schedule added, replaced or removed increments |
//! | `claim:workflow:ID` | string | a claim of an id not yet accepted (`Store::claim`), with a time to live |
//! | `running:by:OWNER` | set | with `--cluster`: ids of the owner's running and claimed workflows (its quota, across hosts) |
//! | `host` | string | the id of the host using the store (below) |
//! | `schema` | string | the layout version (4; older stores are upgraded when opened) |
//!
//! With `--cluster`, several hosts share the store and `cluster` names the
//! keys they add (see [`cluster`]); there is no `host` lock then.
//!
//! A finished workflow's hash also holds `summary` (its task counts) and
//! `duration_ms`, so that a listing need not read whole reports.
//!
//! A batch of records is one `MULTI`/`EXEC`. Durability is Redis's own: run
//! it with `appendonly yes` (and `appendfsync everysec` or `always`) for a
//! daemon's state to survive a crash of Redis itself.
//!
//! One host per store: `host` holds the [`HostId`] of the host using it,
//! with a time to live that the host renews while it runs. Another host is
//! refused until that lock lapses; the same host (same data directory)
//! takes it back at once after a crash. The lock fences writes: a batch
//! runs only in a transaction that watches the lock and finds it still the
//! host's, so a host that lost it (paused past its lease while another
//! took over) writes nothing more; once it has seen another host holding
//! the lock it refuses every write for good, even should the lock come
//! free again (what it still holds is stale by then).

pub mod bus;
pub mod cluster;
pub mod holds;
pub mod lease;
pub mod tokens;
pub mod work;

use super::{
    CLAIM_TTL, Claim, HostId, LIST_SCAN_LIMIT, Quota, Record, SavedSchedules, Store, StoreError, Unfinished,
    Unreadable, corrupt,
};
use crate::clock::{from_secs, to_secs};
use crate::listing::{ListQuery, Listed, WorkflowSummary};
use crate::model::Workflow;
use crate::report::RunReport;
use crate::schedule::Schedule;
use redis::{Commands, Connection, Pipeline};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

const PREFIX: &str = "gleitzeit:";
const SCHEMA_VERSION: &str = "4";
/// How long to wait for Redis before calling it unreachable.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long the host lock lasts without renewal, and how often it is renewed.
const LOCK_TTL: Duration = Duration::from_secs(30);
const LOCK_RENEW: Duration = Duration::from_secs(10);

/// Take or renew the host lock if it is free or already ours.
const TAKE_HOST_LOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// The first step of every claim: an id a workflow is stored under (the
/// hash `KEYS[1]`) is `finished` or `running`.
macro_rules! unless_stored {
    () => {
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 'finished' end
  return 'running'
end
"
    };
}

/// Claim a workflow id (`Store::claim`): `finished` or `running` if a
/// workflow is stored under it, `running` if another claim holds it, else
/// the claim is set (with a time to live) and `granted`.
const CLAIM_WORKFLOW: &str = concat!(
    unless_stored!(),
    r"
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'granted' end
return 'running'"
);

/// Replace a stored schedule, only if it is still stored.
const UPDATE_SCHEDULE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1";

/// Claim a workflow id within its owner's quota (a cluster's hosts count
/// running workflows here): like `CLAIM_WORKFLOW`, but refused (`busy N`)
/// while the owner's set of running and claimed ids is full, after dropping
/// ids that neither run nor are claimed (a host died between claim and
/// acceptance). The claim names its owner, for its release.
const CLAIM_WITHIN: &str = concat!(
    unless_stored!(),
    r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'running' end
local max = tonumber(ARGV[3])
if redis.call('SCARD', KEYS[3]) >= max then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local unfinished = redis.call('SISMEMBER', ARGV[4] .. 'workflows:unfinished', id) == 1
    if not unfinished and redis.call('EXISTS', ARGV[4] .. 'claim:workflow:' .. id) == 0 then
      redis.call('SREM', KEYS[3], id)
    end
  end
  local running = redis.call('SCARD', KEYS[3])
  if running >= max then return 'busy ' .. running end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[5])
return 'granted'"
);

/// Give back a claim, and its place in its owner's count.
const RELEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
if holder then
  local owner = string.match(holder, '\n(.*)$')
  if owner then redis.call('SREM', ARGV[2] .. 'running:by:' .. owner, ARGV[1]) end
end
return 1";

pub struct RedisStore {
    url: String,
    client: redis::Client,
    /// Reconnected on the next call after a failure.
    /// Fair, for the reason the SQLite store's connection is.
    connection: parking_lot::FairMutex<Option<Connection>>,
    /// Dropping it stops the lock's renewal.
    _renewal: std::sync::mpsc::Sender<()>,
    /// Set for good once another host was seen holding the lock: from then
    /// on this host writes nothing, even should the lock come free again
    /// (its waiting writes are stale by then).
    lost: Arc<AtomicBool>,
    /// This host's identity, locked in its data directory while the store
    /// is open.
    host: Option<HostId>,
    /// With `--cluster`: this host's lease, which fences every write.
    lease: Option<Arc<cluster::Lease>>,
}

/// Run the atomic `pipe` only while the key `lock` holds `holder` (the
/// host lock holds this host's id; a cluster host's lease, its epoch): the
/// key is watched and read, and the transaction runs only if it is
/// unchanged when it does (EXEC fails when a watched key changed, or, since
/// Redis 7.0, expired), so a host whose lock or lease lapsed never writes
/// again, however long it was paused. (The renewal also changes the key;
/// that write is looked at again.) One transaction costs Redis a third of
/// a script that replays the same commands.
fn fenced(c: &mut Connection, lock: &str, holder: &str, pipe: &Pipeline) -> redis::RedisResult<Lock> {
    loop {
        redis::cmd("WATCH").arg(lock).exec(c)?;
        let found: Option<String> = c.get(lock)?;
        if found.as_deref() != Some(holder) {
            redis::cmd("UNWATCH").exec(c)?;
            return Ok(if found.is_some() { Lock::Other } else { Lock::Lapsed });
        }
        if pipe.query::<Option<()>>(c)?.is_some() {
            return Ok(Lock::Ours);
        }
    }
}

/// Who holds the host lock, as a write finds it.
enum Lock {
    /// This host: the write ran.
    Ours,
    /// Nobody: it lapsed (Redis was out of reach for longer than its time
    /// to live, or lost its data); the renewal takes it again.
    Lapsed,
    /// Another host.
    Other,
}

/// The ids of one owner's running (and claimed) workflows, counted against
/// its quota across a cluster's hosts.
fn running_by(owner: &str) -> String {
    key(&["running", "by", owner])
}

/// The number that changes with every schedule added, replaced or removed.
fn schedules_version() -> String {
    key(&["schedules", "version"])
}

/// The key of the claim of a workflow id not yet accepted.
fn claim_key(workflow_id: &str) -> String {
    key(&["claim", "workflow", workflow_id])
}

fn key(parts: &[&str]) -> String {
    let mut key = String::from(PREFIX);
    key.push_str(&parts.join(":"));
    key
}

/// The finished workflows of one owner (token names hold no ':').
fn submitted() -> String {
    key(&["workflows", "submitted"])
}

fn submitted_by(owner: &str) -> String {
    key(&["workflows", "submitted", "by", owner])
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("\"unencodable: {e}\""))
}

impl RedisStore {
    /// Connect, take the host lock for `host` and check the layout version;
    /// an unreachable Redis, or one another host holds, is an error.
    pub fn open(url: &str, host: HostId) -> Result<Self, StoreError> {
        let open = |reason: String| StoreError::Open { target: url.to_owned(), reason };
        let (renewal, stop) = std::sync::mpsc::channel();
        let mut store = Self::open_unlocked(url)?;
        store._renewal = renewal;
        let cluster: Option<String> = store.with("read the cluster layout", |c| c.get(key(&["cluster"])))?;
        if cluster.is_some() {
            return Err(open(
                "hosts started with --cluster use it; start this host with --cluster too (or give it a store of \
                 its own)"
                    .into(),
            ));
        }
        if !store.take_host_lock(&host.id)? {
            let holder: Option<String> = store.with("read the host lock", |c| c.get(key(&["host"])))?;
            return Err(open(format!(
                "another gleitzeit host ({}) holds it; stop that host, or wait {}s after it stopped",
                holder.unwrap_or_default(),
                LOCK_TTL.as_secs()
            )));
        }
        store.renew_lock(host.id.clone(), stop);
        store.host = Some(host);
        store.check_schema()?;
        Ok(store)
    }

    /// Connect as one host of a cluster (`--cluster`): check the layouts,
    /// take this host's lease under a new epoch and keep it renewed.
    pub fn open_cluster(url: &str, host: HostId, lease: std::time::Duration) -> Result<cluster::Cluster, StoreError> {
        let (renewal, stop) = std::sync::mpsc::channel();
        let mut store = Self::open_unlocked(url)?;
        store._renewal = renewal;
        store.check_schema()?;
        cluster::check_layout(&store, &host.id)?;
        let lease = cluster::join(&store, &host.id, lease)?;
        let renewer = Self::open_unlocked(url)?;
        let renewed = lease.clone();
        std::thread::Builder::new()
            .name("redis-host-lease".into())
            .spawn(move || cluster::renew(renewer, renewed, stop))
            .map_err(|e| StoreError::Open { target: url.to_owned(), reason: format!("cannot renew the lease: {e}") })?;
        store.host = Some(host);
        store.lease = Some(lease.clone());
        let work = work::Work::open(url, &lease.host)?;
        Ok(cluster::Cluster::new(Arc::new(store), lease, bus::Bus::open(url)?, work))
    }

    /// Check the layout version, upgrading an older one.
    fn check_schema(&self) -> Result<(), StoreError> {
        let version: Option<String> = self.with("read the schema version", |c| c.get(key(&["schema"])))?;
        match version.as_deref() {
            None => self.with("write the schema version", |c| c.set::<_, _, ()>(key(&["schema"]), SCHEMA_VERSION)),
            Some("1") => self.upgrade_from_1(),
            // Version 3 added the `schedules` hash, which starts empty;
            // version 4 stores reports without their tasks' outcomes (those
            // stored whole are read as they are).
            Some("2" | "3") => {
                self.with("write the schema version", |c| c.set::<_, _, ()>(key(&["schema"]), SCHEMA_VERSION))
            }
            Some(SCHEMA_VERSION) => Ok(()),
            Some(other) => Err(StoreError::Open {
                target: self.url.clone(),
                reason: format!("schema version {other} is not {SCHEMA_VERSION}"),
            }),
        }
    }

    /// Version 1 listed finished workflows by finish time only: index every
    /// workflow by submission time, and give finished ones the summary
    /// fields a listing reads.
    fn upgrade_from_1(&self) -> Result<(), StoreError> {
        let unfinished: Vec<String> = self.with("upgrade", |c| c.smembers(key(&["workflows", "unfinished"])))?;
        let finished: Vec<String> = self.with("upgrade", |c| c.zrange(key(&["workflows", "finished"]), 0, -1))?;
        for id in unfinished.iter().chain(&finished) {
            type Fields = (Option<f64>, Option<String>, Option<String>);
            let (submitted_at, owner, report): Fields =
                self.with("upgrade", |c| c.hmget(key(&["workflow", id]), &["submitted_at", "owner", "report"]))?;
            let mut pipe = redis::pipe();
            pipe.atomic().zadd(submitted(), id, submitted_at.unwrap_or_default()).ignore();
            if let Some(owner) = &owner {
                pipe.zadd(submitted_by(owner), id, submitted_at.unwrap_or_default()).ignore();
                pipe.del(key(&["workflows", "finished", "by", owner])).ignore();
            }
            if let Some(report) = report.and_then(|r| serde_json::from_str::<RunReport>(&r).ok()) {
                pipe.hset_multiple(key(&["workflow", id]), &summary_fields(&report)).ignore();
            }
            self.with("upgrade", |c| pipe.query::<()>(c))?;
        }
        self.with("write the schema version", |c| c.set::<_, _, ()>(key(&["schema"]), SCHEMA_VERSION))
    }

    /// Run `work` on the connection, connecting first if needed; a failure
    /// drops the connection so the next call reconnects.
    fn with<T>(
        &self,
        action: &'static str,
        work: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.attempt(work).map_err(|e| self.failed(action, e))
    }

    /// [`with`](Self::with) for a read, which may be sent twice: once
    /// more on a new connection when the one it had was dropped (Redis
    /// restarted, a proxy closed it), so that readers ride out a restart.
    fn read<T>(
        &self,
        action: &'static str,
        work: impl Fn(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.attempt(&work)
            .or_else(|e| if e.is_connection_dropped() || e.is_io_error() { self.attempt(&work) } else { Err(e) })
            .map_err(|e| self.failed(action, e))
    }

    fn attempt<T>(&self, work: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> redis::RedisResult<T> {
        let mut slot = self.connection.lock();
        if slot.is_none() {
            let connection = self.client.get_connection_with_timeout(TIMEOUT)?;
            connection.set_read_timeout(Some(TIMEOUT))?;
            connection.set_write_timeout(Some(TIMEOUT))?;
            *slot = Some(connection);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(redis::RedisError::from((redis::ErrorKind::Client, "no connection")));
        };
        work(connection).inspect_err(|_| *slot = None)
    }

    fn failed(&self, action: &'static str, e: redis::RedisError) -> StoreError {
        if refused_for_good(&e) {
            return StoreError::Refused { target: self.url.clone(), action, reason: e.to_string() };
        }
        StoreError::Io { target: self.url.clone(), action, reason: e.to_string() }
    }

    /// Refuse `action` once another host took the lock, or this host's
    /// lease in a cluster was lost.
    fn still_owner(&self, action: &'static str) -> Result<(), StoreError> {
        if let Some(why) = self.lease.as_ref().and_then(|lease| lease.lost()) {
            return Err(StoreError::Io { target: self.url.clone(), action, reason: why });
        }
        match self.lost.load(Ordering::Acquire) {
            true => Err(StoreError::Io {
                target: self.url.clone(),
                action,
                reason: "another gleitzeit host took the store's lock; this host writes to it no more (restart \
                         it once the other has stopped)"
                    .into(),
            }),
            false => Ok(()),
        }
    }

    /// Take or renew the host lock; false if another host holds it.
    fn take_host_lock(&self, id: &str) -> Result<bool, StoreError> {
        let ttl = LOCK_TTL.as_millis().to_string();
        self.with("take the host lock", |c| {
            redis::cmd("EVAL").arg(TAKE_HOST_LOCK).arg(1).arg(key(&["host"])).arg(id).arg(&ttl).query::<i32>(c)
        })
        .map(|taken| taken == 1)
    }

    /// Renew the lock on its own connection until the store is dropped.
    fn renew_lock(&self, id: String, stop: std::sync::mpsc::Receiver<()>) {
        let Ok(renewer) = Self::open_unlocked(&self.url) else { return };
        let lost = self.lost.clone();
        let spawned = std::thread::Builder::new().name("redis-host-lock".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(LOCK_RENEW) {
                match renewer.take_host_lock(&id) {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.store(true, Ordering::Release);
                        tracing::error!(
                            "the store {} is held by another host now; this host writes to it no more",
                            renewer.url
                        );
                        return;
                    }
                    Err(e) => tracing::warn!("cannot renew the host lock: {e}"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot renew the host lock of {} ({e}); it lapses in {}s", self.url, LOCK_TTL.as_secs());
        }
    }

    /// A second handle on the same Redis, without a lock of its own.
    fn open_unlocked(url: &str) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Open { target: url.to_owned(), reason: e.to_string() })?;
        let renewal = std::sync::mpsc::channel().0;
        Ok(Self {
            url: url.to_owned(),
            client,
            connection: parking_lot::FairMutex::new(None),
            _renewal: renewal,
            lost: Arc::default(),
            host: None,
            lease: None,
        })
    }

    fn add(&self, pipe: &mut Pipeline, record: &Record) -> Result<(), StoreError> {
        match record {
            Record::Accepted { workflow, submitted_at } => {
                let document = super::workflow_json(PREFIX, workflow)?;
                // A workflow id used again starts from nothing.
                pipe.del(&[
                    key(&["workflow", &workflow.id]),
                    key(&["workflow", &workflow.id, "tasks"]),
                    key(&["workflow", &workflow.id, "events"]),
                ])
                .ignore()
                .zrem(key(&["workflows", "finished"]), &workflow.id)
                .ignore()
                .del(claim_key(&workflow.id))
                .ignore();
                pipe.hset_multiple(
                    key(&["workflow", &workflow.id]),
                    &[
                        ("name", workflow.name.clone()),
                        ("document", document),
                        ("status", "running".to_owned()),
                        ("submitted_at", to_secs(*submitted_at).to_string()),
                    ],
                )
                .ignore()
                .sadd(key(&["workflows", "unfinished"]), &workflow.id)
                .ignore()
                .zadd(submitted(), &workflow.id, to_secs(*submitted_at))
                .ignore();
                if let Some(owner) = &workflow.owner {
                    pipe.hset(key(&["workflow", &workflow.id]), "owner", owner).ignore();
                    pipe.zadd(submitted_by(owner), &workflow.id, to_secs(*submitted_at)).ignore();
                }
                if let Some(lease) = &self.lease {
                    let driver = [("host", lease.host.clone()), ("epoch", lease.epoch.to_string())];
                    pipe.hset_multiple(key(&["workflow", &workflow.id]), &driver).ignore();
                    pipe.sadd(cluster::workflows_of(&lease.host), &workflow.id).ignore();
                }
            }
            Record::Task(t) => {
                pipe.hset(key(&["workflow", &t.workflow_id, "tasks"]), &t.task_id, json(t)).ignore();
                let mut event = serde_json::json!({"task_id": t.task_id, "status": t.status, "attempt": t.attempts, "at": to_secs(SystemTime::now())});
                if let Some(lease) = &self.lease {
                    // Who wrote it: the stored events show which host drove
                    // the workflow when, and that a lapsed lease wrote no more.
                    event["host"] = lease.host.clone().into();
                    event["epoch"] = lease.epoch.into();
                }
                pipe.rpush(key(&["workflow", &t.workflow_id, "events"]), event.to_string()).ignore();
            }
            Record::Finished(report) => {
                let finished = report.finished_at.map_or_else(|| to_secs(SystemTime::now()), to_secs);
                let mut fields = summary_fields(report);
                fields.push(("finished_at", finished.to_string()));
                fields.push(("report", super::report_json(PREFIX, report)?));
                pipe.hset_multiple(key(&["workflow", &report.workflow_id]), &fields)
                    .ignore()
                    .srem(key(&["workflows", "unfinished"]), &report.workflow_id)
                    .ignore()
                    .zadd(key(&["workflows", "finished"]), &report.workflow_id, finished)
                    .ignore();
                if let Some(lease) = &self.lease {
                    pipe.srem(cluster::workflows_of(&lease.host), &report.workflow_id).ignore();
                    pipe.srem(cluster::cancels(), &report.workflow_id).ignore();
                    if let Some(owner) = &report.owner {
                        pipe.srem(running_by(owner), &report.workflow_id).ignore();
                    }
                }
            }
        }
        Ok(())
    }
}

/// The fields of a finished workflow's hash that listings read.
fn summary_fields(report: &RunReport) -> Vec<(&'static str, String)> {
    vec![
        ("status", json(&report.status)),
        ("summary", json(&report.summary)),
        ("duration_ms", report.duration_ms.to_string()),
    ]
}

impl RedisStore {
    /// The unfinished workflows `ids`, as stored, to resume.
    fn load(&self, ids: &[String]) -> Result<Unfinished, StoreError> {
        let target = self.target();
        let mut unfinished = Unfinished::default();
        for id in ids {
            type Fields = (Option<String>, Option<String>, Option<f64>, Option<String>);
            let (name, document, submitted_at, owner): Fields = self.read("read a workflow", |c| {
                redis::pipe()
                    .hget(key(&["workflow", id]), "name")
                    .hget(key(&["workflow", id]), "document")
                    .hget(key(&["workflow", id]), "submitted_at")
                    .hget(key(&["workflow", id]), "owner")
                    .query(c)
            })?;
            let (states, cancel_requested): (HashMap<String, String>, bool) = self.read("read tasks", |c| {
                redis::pipe().hgetall(key(&["workflow", id, "tasks"])).sismember(cluster::cancels(), id).query(c)
            })?;
            let states: Vec<String> = states.into_values().collect();
            let submitted_at = from_secs(submitted_at.unwrap_or_default());
            let saved = document
                .ok_or_else(|| corrupt(&target, format!("workflow {id}"), "its document is missing"))
                .and_then(|document| super::saved(&target, id, &document, owner, submitted_at, &states))
                .map(|saved| super::Saved { cancel_requested, ..saved });
            match saved {
                Ok(saved) => unfinished.saved.push(saved),
                Err(error) => unfinished.unreadable.push(Unreadable {
                    workflow_id: id.clone(),
                    name: name.unwrap_or_default(),
                    error,
                }),
            }
        }
        unfinished.saved.sort_by_key(|s| s.submitted_at);
        Ok(unfinished)
    }

    /// Run the atomic `pipe` under this host's cluster lease, or refuse it
    /// (for good) once the lease is lost.
    fn write_fenced(&self, lease: &cluster::Lease, pipe: &Pipeline) -> Result<(), StoreError> {
        self.still_owner("write records")?;
        let (lease_key, epoch) = (lease::lease_key(&lease.host), lease.epoch.to_string());
        if let Lock::Ours = self.with("write records", |c| fenced(c, &lease_key, &epoch, pipe))? {
            return Ok(());
        }
        lease.lose(format!(
            "a write found this host's lease on {} lapsed (the host was paused, or cut off from Redis, for \
             longer than the lease of {}s); other hosts may have taken its workflows, so it writes nothing more \
             and stops",
            self.url,
            lease.ttl.as_secs_f64()
        ));
        self.still_owner("write records")
    }

    /// One workflow's line in a listing; none if it is gone (pruned
    /// between the index scan and this read).
    fn summary(&self, id: &str) -> Result<Option<WorkflowSummary>, StoreError> {
        type Fields =
            (Option<String>, Option<String>, Option<f64>, Option<f64>, Option<String>, Option<String>, Option<f64>);
        let fields = ["name", "status", "submitted_at", "finished_at", "owner", "summary", "duration_ms"];
        let (name, status, submitted_at, finished_at, owner, summary, duration_ms): Fields =
            self.read("list workflows", |c| c.hmget(key(&["workflow", id]), &fields))?;
        let (Some(name), Some(status)) = (name, status) else { return Ok(None) };
        let corrupt_field = |what: &str, e: serde_json::Error| corrupt(&self.url, format!("{what} of {id}"), e);
        let status = serde_json::from_value(serde_json::Value::String(status.trim_matches('"').to_owned()))
            .map_err(|e| corrupt_field("the status", e))?;
        let summary =
            summary.map(|s| serde_json::from_str(&s)).transpose().map_err(|e| corrupt_field("the summary", e))?;
        Ok(Some(WorkflowSummary {
            workflow_id: id.to_owned(),
            name,
            status,
            submitted_at: submitted_at.map(from_secs),
            finished_at: finished_at.map(from_secs),
            duration_ms,
            summary,
            owner,
        }))
    }
}

impl Store for RedisStore {
    fn target(&self) -> String {
        self.url.clone()
    }

    fn write(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for record in records {
            self.add(&mut pipe, record)?;
        }
        if let Some(lease) = &self.lease {
            return self.write_fenced(lease, &pipe);
        }
        let Some(host) = &self.host else { return self.with("write records", |c| pipe.query::<()>(c)) };
        self.still_owner("write records")?;
        match self.with("write records", |c| fenced(c, &key(&["host"]), &host.id, &pipe))? {
            Lock::Ours => Ok(()),
            Lock::Lapsed => Err(StoreError::Io {
                target: self.url.clone(),
                action: "write records",
                reason: format!(
                    "the store's host lock lapsed; this host takes it again within {}s",
                    LOCK_RENEW.as_secs()
                ),
            }),
            Lock::Other => {
                self.lost.store(true, Ordering::Release);
                self.still_owner("write records")
            }
        }
    }

    fn unfinished(&self) -> Result<Unfinished, StoreError> {
        let ids: Vec<String> = match &self.lease {
            // A cluster host resumes the workflows it drove before it
            // restarted, under its new epoch; the others' are theirs.
            Some(lease) => cluster::adopt(self, lease)?,
            None => self.with("read workflows", |c| c.smembers(key(&["workflows", "unfinished"])))?,
        };
        self.load(&ids)
    }

    fn report(&self, workflow_id: &str) -> Result<Option<RunReport>, StoreError> {
        let text: Option<String> = self.read("read a report", |c| c.hget(key(&["workflow", workflow_id]), "report"))?;
        let Some(text) = text else { return Ok(None) };
        let records = || {
            let document: Option<String> =
                self.read("read a report", |c| c.hget(key(&["workflow", workflow_id]), "document"))?;
            let states: HashMap<String, String> =
                self.read("read a report", |c| c.hgetall(key(&["workflow", workflow_id, "tasks"])))?;
            Ok((document, states.into_values().collect()))
        };
        super::read_report(&self.url, workflow_id, &text, records).map(Some)
    }

    fn document(&self, workflow_id: &str) -> Result<Option<Workflow>, StoreError> {
        let (document, owner): (Option<String>, Option<String>) = self.read("read a workflow", |c| {
            redis::pipe()
                .hget(key(&["workflow", workflow_id]), "document")
                .hget(key(&["workflow", workflow_id]), "owner")
                .query(c)
        })?;
        let Some(document) = document else { return Ok(None) };
        let workflow = super::workflow_from_json(PREFIX, workflow_id, &document)?;
        Ok(Some(Workflow { owner, ..workflow }))
    }

    fn claim(&self, workflow_id: &str) -> Result<Claim, StoreError> {
        self.still_owner("claim a workflow id")?;
        let holder = self.host.as_ref().map_or("a host", |host| host.id.as_str());
        let ttl = CLAIM_TTL.as_millis().to_string();
        let answer: String = self.with("claim a workflow id", |c| {
            redis::cmd("EVAL")
                .arg(CLAIM_WORKFLOW)
                .arg(2)
                .arg(key(&["workflow", workflow_id]))
                .arg(claim_key(workflow_id))
                .arg(holder)
                .arg(&ttl)
                .query(c)
        })?;
        Ok(claim_of(&answer))
    }

    fn claim_within(&self, workflow_id: &str, quota: Option<Quota<'_>>) -> Result<Claim, StoreError> {
        let (Some(lease), Some(quota)) = (&self.lease, quota) else { return self.claim(workflow_id) };
        self.still_owner("claim a workflow id")?;
        let answer: String = self.with("claim a workflow id", |c| {
            redis::cmd("EVAL")
                .arg(CLAIM_WITHIN)
                .arg(3)
                .arg(key(&["workflow", workflow_id]))
                .arg(claim_key(workflow_id))
                .arg(running_by(quota.owner))
                .arg(format!("{}\n{}", lease.host, quota.owner))
                .arg(CLAIM_TTL.as_millis().to_string())
                .arg(quota.max)
                .arg(PREFIX)
                .arg(workflow_id)
                .query(c)
        })?;
        Ok(claim_of(&answer))
    }

    fn release(&self, workflow_id: &str) -> Result<(), StoreError> {
        self.still_owner("give back a claim")?;
        self.with("give back a claim", |c| {
            redis::cmd("EVAL").arg(RELEASE).arg(1).arg(claim_key(workflow_id)).arg(workflow_id).arg(PREFIX).exec(c)
        })
    }

    fn unfinished_one(&self, workflow_id: &str) -> Result<Option<super::Saved>, StoreError> {
        let unfinished: bool =
            self.read("look up a workflow", |c| c.sismember(key(&["workflows", "unfinished"]), workflow_id))?;
        if !unfinished {
            return Ok(None);
        }
        let mut loaded = self.load(&[workflow_id.to_owned()])?;
        if let Some(unreadable) = loaded.unreadable.pop() {
            return Err(unreadable.error);
        }
        Ok(loaded.saved.pop())
    }

    fn has(&self, workflow_id: &str) -> Result<bool, StoreError> {
        self.read("look up a workflow", |c| c.exists(key(&["workflow", workflow_id])))
    }

    fn list(&self, query: &ListQuery) -> Result<Listed, StoreError> {
        let index = query.owner.as_deref().map_or_else(submitted, submitted_by);
        // The index gives the order and the time window; name and status
        // are checked on each row, at most LIST_SCAN_LIMIT rows a page.
        let newest = match (&query.after, query.until) {
            (Some(cursor), _) => format!("{}", cursor.submitted_at),
            (None, Some(until)) => format!("({}", to_secs(until)),
            (None, None) => "+inf".to_owned(),
        };
        let oldest = query.since.map_or_else(|| "-inf".to_owned(), |since| format!("{}", to_secs(since)));
        let mut listed = Listed::default();
        let mut scanned = 0;
        const CHUNK: usize = 500;
        while scanned < LIST_SCAN_LIMIT {
            let ids: Vec<(String, f64)> = self.read("list workflows", |c| {
                c.zrevrangebyscore_limit_withscores(&index, &newest, &oldest, scanned as isize, CHUNK as isize)
            })?;
            scanned += ids.len();
            for (id, _) in &ids {
                let Some(summary) = self.summary(id)? else { continue };
                if !query.matches(&summary) {
                    continue;
                }
                if listed.workflows.len() == query.limit {
                    listed.next = listed.workflows.last().map(WorkflowSummary::cursor);
                    return Ok(listed);
                }
                listed.workflows.push(summary);
            }
            if ids.len() < CHUNK {
                return Ok(listed);
            }
        }
        // Looked at enough for one page: continue after the last row seen.
        let last: Vec<String> = self
            .with("list workflows", |c| c.zrevrangebyscore_limit(&index, &newest, &oldest, scanned as isize - 1, 1))?;
        if let Some(summary) = last.first().map(|id| self.summary(id)).transpose()?.flatten() {
            listed.next = Some(summary.cursor());
        }
        Ok(listed)
    }

    fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
        self.still_owner("prune finished workflows")?;
        let finished = key(&["workflows", "finished"]);
        let ids: Vec<String> =
            self.with("prune", |c| c.zrangebyscore(&finished, f64::NEG_INFINITY, to_secs(before)))?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut owners = redis::pipe();
        for id in &ids {
            owners.hget(key(&["workflow", id]), "owner");
        }
        let owners: Vec<Option<String>> = self.with("prune", |c| owners.query(c))?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (id, owner) in ids.iter().zip(owners) {
            pipe.del(&[key(&["workflow", id]), key(&["workflow", id, "tasks"]), key(&["workflow", id, "events"])])
                .ignore()
                .zrem(&finished, id)
                .ignore()
                .zrem(submitted(), id)
                .ignore();
            if let Some(owner) = owner {
                pipe.zrem(submitted_by(&owner), id).ignore();
            }
        }
        self.with("prune", |c| pipe.query::<()>(c))?;
        Ok(ids.len())
    }

    fn schedules(&self) -> Result<SavedSchedules, StoreError> {
        let rows: HashMap<String, String> = self.read("read schedules", |c| c.hgetall(key(&["schedules"])))?;
        Ok(SavedSchedules::of(&self.url, rows))
    }

    fn schedules_version(&self) -> Result<Option<u64>, StoreError> {
        self.read("read the schedules' version", |c| c.get(schedules_version()))
            .map(|version: Option<u64>| Some(version.unwrap_or(0)))
    }

    fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        self.still_owner("store a schedule")?;
        let definition = super::schedule_json(&self.url, schedule)?;
        self.with("store a schedule", |c| {
            redis::pipe()
                .atomic()
                .hset(key(&["schedules"]), schedule.id(), definition)
                .incr(schedules_version(), 1)
                .query::<()>(c)
        })
    }

    fn put_schedule_within(&self, schedule: &Schedule, quota: Option<Quota<'_>>) -> Result<bool, StoreError> {
        let Some(quota) = quota else { return self.put_schedule(schedule).map(|()| true) };
        self.still_owner("store a schedule")?;
        let definition = super::schedule_json(&self.url, schedule)?;
        let schedules = key(&["schedules"]);
        // Counted and written in one transaction on the schedules' hash: a
        // change by another host between the two sends it again.
        self.with("store a schedule within its owner's quota", |c| {
            redis::transaction(c, &[&schedules], |c, pipe| {
                let stored: HashMap<String, String> = c.hgetall(&schedules)?;
                if !stored.contains_key(schedule.id()) && owned_by(&stored, quota.owner) >= quota.max {
                    return Ok(Some(false));
                }
                pipe.hset(&schedules, schedule.id(), &definition).ignore().incr(schedules_version(), 1).ignore();
                pipe.hlen(&schedules);
                Ok(pipe.query::<Option<(u64,)>>(c)?.map(|_| true))
            })
        })
    }

    fn update_schedule(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        self.still_owner("store a schedule")?;
        let definition = super::schedule_json(&self.url, schedule)?;
        self.with("store a schedule", |c| {
            redis::cmd("EVAL")
                .arg(UPDATE_SCHEDULE)
                .arg(1)
                .arg(key(&["schedules"]))
                .arg(schedule.id())
                .arg(definition)
                .query::<i32>(c)
        })
        .map(|updated| updated == 1)
    }

    fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        self.still_owner("remove a schedule")?;
        let (removed, _): (i32, u64) = self.with("remove a schedule", |c| {
            redis::pipe().atomic().hdel(key(&["schedules"]), id).incr(schedules_version(), 1).query(c)
        })?;
        Ok(removed > 0)
    }

    // Cached results are shared by every host on the store: no lease is
    // needed to read or write one (a result is the same whoever keeps it).
    fn cached(&self, cache_key: &str) -> Result<Option<String>, StoreError> {
        self.read("read a cached result", |c| c.get(key(&["result", cache_key])))
    }

    fn cache(&self, cache_key: &str, result: &str, expires: SystemTime) -> Result<(), StoreError> {
        // Milliseconds since the epoch: PXAT's unit, and the index's scores.
        let at = (to_secs(expires) * 1000.0) as u64;
        let now = to_secs(SystemTime::now()) * 1000.0;
        let (entry, index) = (key(&["result", cache_key]), key(&["results"]));
        // Each entry expires by itself; the index, by expiry, bounds how
        // many there are: past the bound, those that expire first go.
        let (_, _, _, count): ((), i64, i64, usize) = self.with("cache a result", |c| {
            redis::pipe()
                .cmd("SET")
                .arg(&entry)
                .arg(result)
                .arg("PXAT")
                .arg(at)
                .zadd(&index, cache_key, at as f64)
                .zrembyscore(&index, f64::NEG_INFINITY, now)
                .zcard(&index)
                .query(c)
        })?;
        if count > super::MAX_CACHED_RESULTS {
            let excess = count - super::MAX_CACHED_RESULTS;
            let first: Vec<String> = self
                .with("prune cached results", |c| c.zpopmin::<_, Vec<String>>(&index, excess as isize))?
                .into_iter()
                .step_by(2)
                .collect();
            let entries: Vec<String> = first.iter().map(|k| key(&["result", k])).collect();
            self.with("prune cached results", |c| c.del::<_, ()>(entries))?;
        }
        Ok(())
    }
}

/// How many of the `stored` schedules (JSON by id) are `owner`'s.
fn owned_by(stored: &HashMap<String, String>, owner: &str) -> usize {
    let owner_of = |json: &String| serde_json::from_str::<super::ScheduleOwner>(json).ok().and_then(|s| s.owner);
    stored.values().filter(|json| owner_of(json).as_deref() == Some(owner)).count()
}

/// What a claim script's answer says: `granted`, `finished`, `busy N` (the
/// owner's running workflows) or `running`.
fn claim_of(answer: &str) -> Claim {
    match answer {
        "granted" => Claim::Granted,
        "finished" => Claim::Finished,
        busy if busy.starts_with("busy ") => Claim::Busy(busy[5..].parse().unwrap_or(usize::MAX)),
        _ => Claim::Running,
    }
}

/// Whether Redis refused a command for what it holds, so that sending it
/// again cannot help: a value past `proto-max-bulk-len` (512 MB unless
/// configured), which it answers as a protocol error.
fn refused_for_good(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    ["invalid bulk length", "exceeds maximum allowed size"].iter().any(|known| text.contains(known))
}
