//! The Redis store, for users who already run Redis. Keys (prefix
//! `gleitzeit:`, close to the original's layout):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `workflow:ID` | hash | `name`, `document` (as accepted), `owner`, `status`, `submitted_at`, `finished_at`, `report` |
//! | `workflow:ID:tasks` | hash | task id → its last state (JSON) |
//! | `workflow:ID:events` | list | every task state change, in order |
//! | `workflows:unfinished` | set | ids of workflows still running |
//! | `workflows:finished` | sorted set | ids by finish time (listing, retention) |
//! | `workflows:finished:by:OWNER` | sorted set | the same, of one token's workflows |
//! | `schema` | string | the layout version |
//!
//! A batch of records is one `MULTI`/`EXEC`. Durability is Redis's own: run
//! it with `appendonly yes` (and `appendfsync everysec` or `always`) for a
//! daemon's state to survive a crash of Redis itself.
//!
//! One host per store: `host` holds the [`HostId`] of the host using it,
//! with a time to live that the host renews while it runs. Another host is
//! refused until that lock lapses; the same host (same data directory)
//! takes it back at once after a crash.

use super::{HostId, Record, Store, StoreError, StoredSummary, Unfinished, Unreadable, corrupt, from_secs, to_secs};
use crate::report::RunReport;
use redis::{Commands, Connection, Pipeline};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const PREFIX: &str = "gleitzeit:";
const SCHEMA_VERSION: &str = "1";
/// How long to wait for Redis before calling it unreachable.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long the host lock lasts without renewal, and how often it is renewed.
const LOCK_TTL: Duration = Duration::from_secs(30);
const LOCK_RENEW: Duration = Duration::from_secs(10);

/// Take or renew the host lock if it is free or already ours.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

pub struct RedisStore {
    url: String,
    client: redis::Client,
    /// Reconnected on the next call after a failure.
    connection: Mutex<Option<Connection>>,
    /// Dropping it stops the lock's renewal.
    _renewal: std::sync::mpsc::Sender<()>,
    /// This host's identity, locked in its data directory while the store
    /// is open.
    _host: Option<HostId>,
}

fn key(parts: &[&str]) -> String {
    let mut key = String::from(PREFIX);
    key.push_str(&parts.join(":"));
    key
}

/// The finished workflows of one owner (token names hold no ':').
fn finished_by(owner: &str) -> String {
    key(&["workflows", "finished", "by", owner])
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("\"unencodable: {e}\""))
}

impl RedisStore {
    /// Connect, take the host lock for `host` and check the layout version;
    /// an unreachable Redis, or one another host holds, is an error.
    pub fn open(url: &str, host: HostId) -> Result<Self, StoreError> {
        let open = |reason: String| StoreError::Open { target: url.to_owned(), reason };
        let client = redis::Client::open(url).map_err(|e| open(e.to_string()))?;
        let (renewal, stop) = std::sync::mpsc::channel();
        let mut store =
            Self { url: url.to_owned(), client, connection: Mutex::new(None), _renewal: renewal, _host: None };
        if !store.claim(&host.id)? {
            let holder: Option<String> = store.with("read the host lock", |c| c.get(key(&["host"])))?;
            return Err(open(format!(
                "another gleitzeit host ({}) holds it; stop that host, or wait {}s after it stopped",
                holder.unwrap_or_default(),
                LOCK_TTL.as_secs()
            )));
        }
        store.renew_lock(host.id.clone(), stop);
        store._host = Some(host);
        let version: Option<String> = store.with("read the schema version", |c| c.get(key(&["schema"])))?;
        match version.as_deref() {
            None => store.with("write the schema version", |c| c.set::<_, _, ()>(key(&["schema"]), SCHEMA_VERSION))?,
            Some(SCHEMA_VERSION) => {}
            Some(other) => return Err(open(format!("schema version {other} is not {SCHEMA_VERSION}"))),
        }
        Ok(store)
    }

    /// Run `work` on the connection, connecting first if needed; a failure
    /// drops the connection so the next call reconnects.
    fn with<T>(
        &self,
        action: &'static str,
        work: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = crate::locks::lock(&self.connection);
        let io = |reason: String| StoreError::Io { target: self.url.clone(), action, reason };
        if slot.is_none() {
            let connection = self.client.get_connection_with_timeout(TIMEOUT).map_err(|e| io(e.to_string()))?;
            connection.set_read_timeout(Some(TIMEOUT)).map_err(|e| io(e.to_string()))?;
            connection.set_write_timeout(Some(TIMEOUT)).map_err(|e| io(e.to_string()))?;
            *slot = Some(connection);
        }
        let Some(connection) = slot.as_mut() else { return Err(io("no connection".into())) };
        work(connection).map_err(|e| {
            *slot = None;
            io(e.to_string())
        })
    }

    /// Take or renew the host lock; false if another host holds it.
    fn claim(&self, id: &str) -> Result<bool, StoreError> {
        let ttl = LOCK_TTL.as_millis().to_string();
        self.with("take the host lock", |c| {
            redis::cmd("EVAL").arg(CLAIM).arg(1).arg(key(&["host"])).arg(id).arg(&ttl).query::<i32>(c)
        })
        .map(|taken| taken == 1)
    }

    /// Renew the lock on its own connection until the store is dropped.
    fn renew_lock(&self, id: String, stop: std::sync::mpsc::Receiver<()>) {
        let Ok(renewer) = Self::open_unlocked(&self.url) else { return };
        let spawned = std::thread::Builder::new().name("redis-host-lock".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(LOCK_RENEW) {
                match renewer.claim(&id) {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(
                        "the store {} is held by another host now: two hosts may resume the same work",
                        renewer.url
                    ),
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
        Ok(Self { url: url.to_owned(), client, connection: Mutex::new(None), _renewal: renewal, _host: None })
    }

    fn add(pipe: &mut Pipeline, record: &Record) -> Result<(), StoreError> {
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
                .ignore();
                if let Some(owner) = &workflow.owner {
                    pipe.hset(key(&["workflow", &workflow.id]), "owner", owner).ignore();
                }
            }
            Record::Task(t) => {
                pipe.hset(key(&["workflow", &t.workflow_id, "tasks"]), &t.task_id, json(t)).ignore();
                let event = serde_json::json!({"task_id": t.task_id, "status": t.status, "attempt": t.attempts, "at": to_secs(SystemTime::now())});
                pipe.rpush(key(&["workflow", &t.workflow_id, "events"]), event.to_string()).ignore();
            }
            Record::Finished(report) => {
                let finished = report.finished_at.map_or_else(|| to_secs(SystemTime::now()), to_secs);
                pipe.hset_multiple(
                    key(&["workflow", &report.workflow_id]),
                    &[
                        ("status", json(&report.status)),
                        ("finished_at", finished.to_string()),
                        ("report", json(report.as_ref())),
                    ],
                )
                .ignore()
                .srem(key(&["workflows", "unfinished"]), &report.workflow_id)
                .ignore()
                .zadd(key(&["workflows", "finished"]), &report.workflow_id, finished)
                .ignore();
                if let Some(owner) = &report.owner {
                    pipe.zadd(finished_by(owner), &report.workflow_id, finished).ignore();
                }
            }
        }
        Ok(())
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
            Self::add(&mut pipe, record)?;
        }
        self.with("write records", |c| pipe.query::<()>(c))
    }

    fn unfinished(&self) -> Result<Unfinished, StoreError> {
        let target = self.target();
        let ids: Vec<String> = self.with("read workflows", |c| c.smembers(key(&["workflows", "unfinished"])))?;
        let mut unfinished = Unfinished::default();
        for id in ids {
            type Fields = (Option<String>, Option<String>, Option<f64>, Option<String>);
            let (name, document, submitted_at, owner): Fields = self.with("read a workflow", |c| {
                redis::pipe()
                    .hget(key(&["workflow", &id]), "name")
                    .hget(key(&["workflow", &id]), "document")
                    .hget(key(&["workflow", &id]), "submitted_at")
                    .hget(key(&["workflow", &id]), "owner")
                    .query(c)
            })?;
            let states: HashMap<String, String> =
                self.with("read tasks", |c| c.hgetall(key(&["workflow", &id, "tasks"])))?;
            let states: Vec<String> = states.into_values().collect();
            let submitted_at = from_secs(submitted_at.unwrap_or_default());
            let saved = document
                .ok_or_else(|| corrupt(&target, format!("workflow {id}"), "its document is missing"))
                .and_then(|document| super::saved(&target, &id, &document, owner, submitted_at, &states));
            match saved {
                Ok(saved) => unfinished.saved.push(saved),
                Err(error) => {
                    unfinished.unreadable.push(Unreadable { workflow_id: id, name: name.unwrap_or_default(), error })
                }
            }
        }
        unfinished.saved.sort_by_key(|s| s.submitted_at);
        Ok(unfinished)
    }

    fn report(&self, workflow_id: &str) -> Result<Option<RunReport>, StoreError> {
        let text: Option<String> = self.with("read a report", |c| c.hget(key(&["workflow", workflow_id]), "report"))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| corrupt(&self.url, format!("the report of {workflow_id}"), e))
        })
        .transpose()
    }

    fn has(&self, workflow_id: &str) -> Result<bool, StoreError> {
        self.with("look up a workflow", |c| c.exists(key(&["workflow", workflow_id])))
    }

    fn finished(&self, limit: usize, owner: Option<&str>) -> Result<Vec<StoredSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let index = owner.map_or_else(|| key(&["workflows", "finished"]), finished_by);
        let ids: Vec<String> =
            self.with("list workflows", |c| c.zrevrange(&index, 0, isize::try_from(limit).unwrap_or(isize::MAX) - 1))?;
        if ids.is_empty() {
            return Ok(Vec::new()); // Redis refuses an empty pipeline
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(key(&["workflow", id]), "report");
        }
        let reports: Vec<Option<String>> = self.with("list workflows", |c| pipe.query(c))?;
        reports
            .into_iter()
            .flatten()
            .map(|text| {
                let report: RunReport =
                    serde_json::from_str(&text).map_err(|e| corrupt(&self.url, "a report".into(), e))?;
                Ok(StoredSummary::of(report))
            })
            .collect()
    }

    fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
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
                .ignore();
            if let Some(owner) = owner {
                pipe.zrem(finished_by(&owner), id).ignore();
            }
        }
        self.with("prune", |c| pipe.query::<()>(c))?;
        Ok(ids.len())
    }
}
