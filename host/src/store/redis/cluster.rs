//! Several hosts on one Redis (`gleitzeit serve --cluster`): each host's
//! lease, the register of hosts, which host drives which workflow, and the
//! takeover of a dead host's workflows. docs/cluster.md says why it is
//! built this way; this module holds the keys and scripts.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `cluster` | string | the cluster layout version ([`LAYOUT`]) |
//! | `epochs` | string | the counter every lease's epoch is taken from |
//! | `lease:HOST` | string | the epoch of HOST's lease, with a time to live on Redis's clock |
//! | `hosts` | hash | host id → what it announced ([`Announcement`], JSON) |
//! | `hosts:seen` | hash | host id → Redis's time (ms) of its last renewal |
//! | `host:HOST:workflows` | set | the unfinished workflows HOST drives |
//! | `tokens` | hash | token name → its entry (role, protocols, hash of the secret; see [`super::tokens`]) |
//! | `cancels` | set | unfinished workflows a client asked to cancel, for whichever host drives them |
//! | `holds:KIND`, `host:HOST:holds:KIND` | hash | what the hosts hold for each token ([`super::holds`]) |
//! | `bus` | pub/sub channel | what every host hears: requests, progress ([`super::bus`]) |
//! | `bus:events` | pub/sub channel | the hosts' workflows' events, heard by hosts that follow others' ([`super::bus`]) |
//!
//! A workflow's hash (see the store's table) also holds `host` and `epoch`:
//! who drives it, under which lease.
//!
//! **The fence.** A host's lease is a key whose value is its epoch, a number
//! taken from `epochs` when the host joins and never reused. The host renews
//! the key's time to live (on Redis's clock, so a host's own clock does not
//! matter) while its epoch is still the key's value, and every write it
//! makes runs in one transaction that watches the lease key and finds it
//! still its epoch (EXEC fails when the key changed or, since Redis 7.0,
//! expired): once the lease has lapsed, no write of that host lands again,
//! however long it was paused, and its renewal cannot bring the lease back.
//! A host that finds its lease lost stops (the daemon exits; its supervisor
//! starts it again under a new epoch).
//!
//! **Takeover.** Each host looks at the others' leases every third of a
//! lease. The workflows of a host whose lease is gone move, in one script
//! that checks that its lease is still gone and the taker's is held, from
//! its set into the taker's, and the taker resumes them from what is stored,
//! as a restarted host resumes its own.
//!
//! The scripts name keys they are not given in `KEYS` (a workflow's hash,
//! the lease key beside a workflow's keys): they run on one Redis primary
//! (with replicas, Sentinel), not on Redis Cluster, whose slots would split
//! a host's lease from its workflows.

use super::bus::Bus;
use super::holds::Holds;
pub use super::lease::Lease;
use super::lease::lease_key;
use super::work::Work;
use super::{RedisStore, key};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The version of the cluster's keys; a host that speaks another is refused.
pub const LAYOUT: &str = "1";
/// How long a lease lasts without renewal, unless the operator says.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);
/// The shortest and longest lease the operator may choose: shorter than a
/// second, a busy machine's pause loses it; longer than a minute, a dead
/// host's work waits that long.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
pub const MAX_LEASE: Duration = Duration::from_secs(60);
/// How long a gone host stays in the register, for `host list`.
const GONE_KEPT: Duration = Duration::from_secs(600);
/// Workflows taken from a dead host in one script.
const TAKE_AT_ONCE: usize = 500;

/// Join: take a new epoch and this host's lease, unless another process
/// holds the lease of this host id. Returns the epoch, or 0.
const JOIN: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch, 'PX', ARGV[1])
local now = redis.call('TIME')
redis.call('HSET', KEYS[3], ARGV[2], now[1] * 1000 + math.floor(now[2] / 1000))
return epoch";

/// Renew the lease while it is still this epoch's.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], ARGV[3], now[1] * 1000 + math.floor(now[2] / 1000))
return 1";

/// Give the lease back, if it is still this epoch's.
const LEAVE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

/// Mark this host's own workflows as driven under its new epoch (after a
/// restart); returns their ids.
const ADOPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local ids = redis.call('SMEMBERS', KEYS[2])
for _, id in ipairs(ids) do
  redis.call('HSET', ARGV[2] .. id, 'epoch', ARGV[1])
end
return ids";

/// Ask for the cancellation of an unfinished workflow (1), or find it
/// finished or unknown (0).
const REQUEST_CANCEL: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return 1";

/// Forget a host from the register once its lease is gone, it has no
/// workflow left and Redis has not seen it for ARGV[2] ms, with the
/// answers left on its stream (nobody reads them).
const FORGET: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SCARD', KEYS[2]) > 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
local now = redis.call('TIME')
if now[1] * 1000 + math.floor(now[2] / 1000) - seen < tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
return 1";

/// Move up to ARGV[3] workflows of a host whose lease is gone into this
/// host's set, while this host's lease holds; returns their ids.
const TAKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return {} end
local ids = redis.call('SPOP', KEYS[2], ARGV[3])
for _, id in ipairs(ids) do
  redis.call('HSET', ARGV[4] .. id, 'host', ARGV[2], 'epoch', ARGV[1])
  redis.call('SADD', KEYS[3], id)
end
return ids";

/// What a host tells the others about itself (the register's value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Announcement {
    /// Where its clients reach it (`http://ADDR`).
    pub address: String,
    pub version: String,
    /// When it started, by its own clock.
    #[serde(default, with = "crate::report::rfc3339_option")]
    #[schema(value_type = Option<String>)]
    pub started_at: Option<std::time::SystemTime>,
    /// Its providers' ids, by protocol.
    pub providers: Vec<String>,
    /// Its plugins' names.
    pub plugins: Vec<String>,
    /// Workflows it drives now.
    pub running: usize,
    /// What its own providers serve (one spec per protocol): the other
    /// hosts offer it tasks of these protocols.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub serves: Vec<crate::model::ProviderSpec>,
    /// Its calls between hosts, by protocol: the cluster's queue is the
    /// sum of the hosts' parts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, CallsBetween>,
    /// The rate limits its calls used lately (`provider ID`, `protocol
    /// NAME`): the hosts that use one share it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limiting: Vec<String>,
}

/// One host's calls of one protocol between hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallsBetween {
    /// Calls it offered to the others and waits for.
    #[serde(default)]
    pub offered: u64,
    /// The others' calls it took and runs.
    #[serde(default)]
    pub taken: u64,
    /// How many calls its own providers take at once (0: it serves none).
    #[serde(default)]
    pub slots: u64,
}

/// A host as the register has it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HostSeen {
    pub host_id: String,
    /// `up` while its lease holds, else `gone`.
    pub status: HostStatus,
    /// When it last renewed its lease, by Redis's clock.
    #[serde(serialize_with = "crate::report::rfc3339_option::serialize")]
    #[schema(value_type = Option<String>)]
    pub last_seen: Option<std::time::SystemTime>,
    /// The epoch of its lease, while it holds one.
    pub epoch: Option<u64>,
    #[serde(flatten)]
    pub announced: Announcement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Up,
    Gone,
}

pub(super) fn cancels() -> String {
    key(&["cancels"])
}

pub(super) fn workflows_of(host: &str) -> String {
    key(&["host", host, "workflows"])
}

/// Check the store's layout for a cluster host, and take it for a cluster
/// if it has none yet: a store one single host holds is refused, and so is
/// a cluster of another layout. The first host to join a store a single
/// host used takes that host's unfinished workflows.
pub(super) fn check_layout(store: &RedisStore, host: &str) -> Result<(), StoreError> {
    let open = |reason: String| StoreError::Open { target: store.url.clone(), reason };
    let info: String = store.with("read Redis's version", |c| redis::cmd("INFO").arg("server").query(c))?;
    let version = info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap_or("unknown").trim();
    if version.split('.').next().and_then(|major| major.parse::<u32>().ok()).is_none_or(|major| major < 7) {
        return Err(open(format!(
            "it is Redis {version}; a cluster needs Redis 7.0 or newer (its fence relies on a transaction \
             failing when a watched lease expired)"
        )));
    }
    let single: Option<String> = store.with("read the host lock", |c| redis::Commands::get(c, key(&["host"])))?;
    if let Some(single) = single {
        return Err(open(format!(
            "a single gleitzeit host ({single}) holds it; stop that host (its lock lapses {}s after) or start \
             this one without --cluster",
            super::LOCK_TTL.as_secs()
        )));
    }
    let taken: bool = store.with("mark the store as a cluster's", |c| {
        redis::cmd("SET").arg(key(&["cluster"])).arg(LAYOUT).arg("NX").query::<Option<String>>(c).map(|r| r.is_some())
    })?;
    if taken {
        // The unfinished workflows of the single host that used it.
        let ids: Vec<String> =
            store.with("read workflows", |c| redis::Commands::smembers(c, key(&["workflows", "unfinished"])))?;
        if !ids.is_empty() {
            store.with("take the single host's workflows", |c| {
                redis::Commands::sadd::<_, _, ()>(c, workflows_of(host), &ids)
            })?;
        }
        return Ok(());
    }
    let layout: Option<String> =
        store.with("read the cluster layout", |c| redis::Commands::get(c, key(&["cluster"])))?;
    match layout.as_deref() {
        Some(LAYOUT) => Ok(()),
        other => Err(open(format!(
            "a cluster of layout version {} uses it; this host speaks version {LAYOUT} (run one version of \
             gleitzeit across the cluster)",
            other.unwrap_or("unknown")
        ))),
    }
}

/// Take this host's lease under a new epoch. A lease of this host id that
/// is still held (its previous process, killed a moment ago, or a copy of
/// this data directory elsewhere) is waited for, at most one lease.
pub(super) fn join(store: &RedisStore, host: &str, ttl: Duration) -> Result<Arc<Lease>, StoreError> {
    let until = std::time::Instant::now() + ttl + Duration::from_millis(500);
    let ms = ttl.as_millis().to_string();
    loop {
        // What this host's previous process held, if its lease is gone.
        super::holds::drop_held(store, host)?;
        let epoch: u64 = store.with("take the host's lease", |c| {
            redis::cmd("EVAL")
                .arg(JOIN)
                .arg(3)
                .arg(lease_key(host))
                .arg(key(&["epochs"]))
                .arg(key(&["hosts", "seen"]))
                .arg(&ms)
                .arg(host)
                .query(c)
        })?;
        if epoch > 0 {
            let lease = Arc::new(Lease::new(host, epoch, ttl));
            return Ok(lease);
        }
        if std::time::Instant::now() >= until {
            return Err(StoreError::Open {
                target: store.url.clone(),
                reason: format!(
                    "another process holds the lease of host {host} (a copy of this data directory on another \
                     machine?); give each host its own data directory"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Renew `lease` on `renewer`'s connection every beat until `stop` is
/// dropped or the lease is lost.
pub(super) fn renew(renewer: RedisStore, lease: Arc<Lease>, stop: std::sync::mpsc::Receiver<()>) {
    let ms = lease.ttl.as_millis().to_string();
    let epoch = lease.epoch.to_string();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(lease.beat()) {
        let renewed = renewer.with("renew the host's lease", |c| {
            redis::cmd("EVAL")
                .arg(RENEW)
                .arg(2)
                .arg(lease_key(&lease.host))
                .arg(key(&["hosts", "seen"]))
                .arg(&epoch)
                .arg(&ms)
                .arg(&lease.host)
                .query::<i32>(c)
        });
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                return lease.lose(format!(
                    "this host's lease on {} lapsed (it was paused, or cut off from Redis, for longer than the \
                     lease of {}s); other hosts may have taken its workflows, so it writes nothing more and stops",
                    renewer.url,
                    lease.ttl.as_secs_f64()
                ));
            }
            Err(e) => tracing::warn!("cannot renew the host's lease: {e}"),
        }
    }
}

/// Mark this host's own stored workflows as driven under its epoch (after
/// a restart); their ids, for the store to read and the engine to resume.
pub(super) fn adopt(store: &RedisStore, lease: &Lease) -> Result<Vec<String>, StoreError> {
    let ids: Option<Vec<String>> = store.with("adopt this host's workflows", |c| {
        redis::cmd("EVAL")
            .arg(ADOPT)
            .arg(2)
            .arg(lease_key(&lease.host))
            .arg(workflows_of(&lease.host))
            .arg(lease.epoch)
            .arg(key(&["workflow", ""]))
            .query(c)
    })?;
    ids.ok_or_else(|| StoreError::Io {
        target: store.url.clone(),
        action: "adopt this host's workflows",
        reason: "this host's lease is no longer held".into(),
    })
}

/// What the daemon does with the cluster: its lease, the register, and
/// taking over the workflows of hosts that died.
pub struct Cluster {
    store: Arc<RedisStore>,
    pub lease: Arc<Lease>,
    /// Where the hosts tell each other what happens.
    pub bus: Bus,
    /// Where they pass each other tasks.
    pub work: Work,
    /// What they hold for each token, counted together.
    pub holds: Holds,
}

impl Cluster {
    pub(super) fn new(store: Arc<RedisStore>, lease: Arc<Lease>, bus: Bus, work: Work) -> Self {
        let holds = Holds::new(store.clone(), lease.clone());
        Self { store, lease, bus, work, holds }
    }

    /// The store this host writes through.
    pub fn store(&self) -> Arc<dyn crate::store::Store> {
        self.store.clone()
    }

    /// Give the lease back as the host stops (after its drain): the others
    /// take over what it leaves unfinished at their next look, and nothing
    /// of this host lands any more.
    pub fn leave(&self) -> Result<(), StoreError> {
        self.lease.end("this host gave its lease back as it stopped".into());
        self.store.with("give the lease back", |c| {
            redis::cmd("EVAL").arg(LEAVE).arg(1).arg(lease_key(&self.lease.host)).arg(self.lease.epoch).exec(c)
        })
    }

    /// Tell the others what this host is and runs.
    pub fn announce(&self, announcement: &Announcement) -> Result<(), StoreError> {
        let text = serde_json::to_string(announcement).unwrap_or_default();
        self.store.with("announce the host", |c| {
            redis::Commands::hset::<_, _, _, ()>(c, key(&["hosts"]), &self.lease.host, text)
        })
    }

    /// Every host in the register, this one first, then by id.
    pub fn hosts(&self) -> Result<Vec<HostSeen>, StoreError> {
        let (announced, seen): (std::collections::HashMap<String, String>, std::collections::HashMap<String, f64>) =
            self.store.read("read the hosts", |c| {
                redis::pipe().hgetall(key(&["hosts"])).hgetall(key(&["hosts", "seen"])).query(c)
            })?;
        let mut ids: Vec<&String> = announced.keys().chain(seen.keys()).collect();
        ids.sort_by_key(|id| (**id != self.lease.host, (*id).clone()));
        ids.dedup();
        let mut epochs = redis::pipe();
        for id in &ids {
            epochs.get(lease_key(id));
        }
        let epochs: Vec<Option<u64>> = self.store.read("read the leases", |c| epochs.query(c))?;
        Ok(ids
            .into_iter()
            .zip(epochs)
            .map(|(id, epoch)| HostSeen {
                host_id: id.clone(),
                status: if epoch.is_some() { HostStatus::Up } else { HostStatus::Gone },
                last_seen: seen.get(id).map(|ms| crate::clock::from_secs(ms / 1000.0)),
                epoch,
                announced: announced.get(id).and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default(),
            })
            .collect())
    }

    /// Ask whichever host drives the unfinished workflow `id` (now, or
    /// after a takeover) to cancel it; false if it is not unfinished.
    pub fn request_cancel(&self, id: &str) -> Result<bool, StoreError> {
        self.store.with("ask for a cancellation", |c| {
            redis::cmd("EVAL")
                .arg(REQUEST_CANCEL)
                .arg(2)
                .arg(key(&["workflows", "unfinished"]))
                .arg(cancels())
                .arg(id)
                .query(c)
        })
    }

    /// The tokens the hosts share.
    pub fn tokens(&self) -> Result<Vec<crate::auth::TokenEntry>, StoreError> {
        super::tokens::read(&self.store)
    }

    /// The workflows clients asked to cancel.
    pub fn cancel_requests(&self) -> Result<Vec<String>, StoreError> {
        self.store.with("read the cancellations asked for", |c| redis::Commands::smembers(c, cancels()))
    }

    /// Take the workflows of every host of `hosts` (as [`Cluster::hosts`]
    /// gave them) whose lease is gone, and read them for the engine to
    /// resume; forget hosts gone long ago with nothing left to take.
    pub fn take_over(&self, hosts: &[HostSeen]) -> Result<crate::store::Unfinished, StoreError> {
        let mut taken = Vec::new();
        for host in hosts {
            if host.status == HostStatus::Up || host.host_id == self.lease.host {
                continue;
            }
            loop {
                let ids: Vec<String> = self.store.with("take over a gone host's workflows", |c| {
                    redis::cmd("EVAL")
                        .arg(TAKE)
                        .arg(4)
                        .arg(lease_key(&host.host_id))
                        .arg(workflows_of(&host.host_id))
                        .arg(workflows_of(&self.lease.host))
                        .arg(lease_key(&self.lease.host))
                        .arg(self.lease.epoch)
                        .arg(&self.lease.host)
                        .arg(TAKE_AT_ONCE)
                        .arg(key(&["workflow", ""]))
                        .query(c)
                })?;
                if !ids.is_empty() {
                    tracing::warn!(host = %host.host_id, "took over {} workflows of a gone host", ids.len());
                }
                let done = ids.len() < TAKE_AT_ONCE;
                taken.extend(ids);
                if done {
                    break;
                }
            }
            self.holds.drop_gone(&host.host_id)?;
            self.forget_if_long_gone(&host.host_id)?;
        }
        self.store.load(&taken)
    }

    /// Drop a host gone for [`GONE_KEPT`] (by Redis's clock) with nothing
    /// left to take from the register.
    fn forget_if_long_gone(&self, host: &str) -> Result<(), StoreError> {
        self.store.with("forget a gone host", |c| {
            redis::cmd("EVAL")
                .arg(FORGET)
                .arg(5)
                .arg(lease_key(host))
                .arg(workflows_of(host))
                .arg(key(&["hosts"]))
                .arg(key(&["hosts", "seen"]))
                .arg(super::work::answers(host))
                .arg(host)
                .arg(GONE_KEPT.as_millis().to_string())
                .query::<()>(c)
        })
    }
}
