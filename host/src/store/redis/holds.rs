//! What the hosts of a cluster hold for each token while a connection
//! lasts (its event streams), counted across all hosts, so that a token's
//! quota is one quota however many hosts it spreads over.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `holds:KIND` | hash | token name → how many of KIND all hosts hold for it |
//! | `host:HOST:holds:KIND` | hash | token name → how many of them HOST holds |
//!
//! A host takes and gives back under its lease, in one script each, so the
//! two counts move together. What a host held when it died (its lease gone)
//! is subtracted by whichever host looks first ([`Holds::drop_gone`]), and
//! by the host itself when it starts again under the same id.

use super::lease::{Lease, lease_key};
use super::{RedisStore, key};
use crate::store::StoreError;
use std::sync::Arc;

/// Take one for ARGV[2] unless all hosts hold ARGV[3]: 1 taken, 0 at the
/// quota, -1 the lease is not this epoch's (ARGV[1]).
const TAKE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') >= tonumber(ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
return 1";

/// Give one of ARGV[2] back, while the lease is still this epoch's
/// (after it lapsed, another host subtracts what this one held).
const GIVE_BACK: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1";

/// Subtract what a host whose lease is gone held, once.
const DROP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local held = redis.call('HGETALL', KEYS[3])
for i = 1, #held, 2 do
  if redis.call('HINCRBY', KEYS[2], held[i], -tonumber(held[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[2], held[i])
  end
end
redis.call('DEL', KEYS[3])
return 1";

/// What is held: the kinds of holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Server-sent event streams open (`max_streams_per_token`).
    Streams,
}

impl Kind {
    const ALL: [Kind; 1] = [Kind::Streams];

    fn name(self) -> &'static str {
        match self {
            Kind::Streams => "streams",
        }
    }
}

fn all_hosts(kind: Kind) -> String {
    key(&["holds", kind.name()])
}

fn of_host(host: &str, kind: Kind) -> String {
    key(&["host", host, "holds", kind.name()])
}

/// This host's holds, under its lease.
pub struct Holds {
    store: Arc<RedisStore>,
    lease: Arc<Lease>,
}

impl Holds {
    pub(super) fn new(store: Arc<RedisStore>, lease: Arc<Lease>) -> Self {
        Self { store, lease }
    }

    /// One more of `kind` for `token`, unless the hosts hold `quota` of
    /// them for it already (false).
    pub fn take(&self, kind: Kind, token: &str, quota: usize) -> Result<bool, StoreError> {
        let mut take = self.script(TAKE, kind, token);
        let taken: i64 = self.store.with("count a token's holds", |c| take.arg(quota).query(c))?;
        if taken < 0 {
            return Err(StoreError::Io {
                target: self.store.url.clone(),
                action: "count a token's holds",
                reason: "this host's lease is no longer held".into(),
            });
        }
        Ok(taken == 1)
    }

    /// Give one of `kind` of `token` back.
    pub fn give_back(&self, kind: Kind, token: &str) -> Result<(), StoreError> {
        let give_back = self.script(GIVE_BACK, kind, token);
        self.store.with("give a token's hold back", |c| give_back.exec(c))
    }

    /// A call of `script` on this host's holds of `kind` for `token`.
    fn script(&self, script: &str, kind: Kind, token: &str) -> redis::Cmd {
        let mut call = redis::cmd("EVAL");
        call.arg(script).arg(3).arg(lease_key(&self.lease.host)).arg(all_hosts(kind));
        call.arg(of_host(&self.lease.host, kind)).arg(self.lease.epoch).arg(token);
        call
    }

    /// Subtract what `host`, whose lease is gone, held.
    pub(super) fn drop_gone(&self, host: &str) -> Result<(), StoreError> {
        drop_held(&self.store, host)
    }
}

/// Subtract what `host` held, unless its lease is held (a living process).
pub(super) fn drop_held(store: &RedisStore, host: &str) -> Result<(), StoreError> {
    for kind in Kind::ALL {
        store.with("drop a gone host's holds", |c| {
            redis::cmd("EVAL")
                .arg(DROP)
                .arg(3)
                .arg(lease_key(host))
                .arg(all_hosts(kind))
                .arg(of_host(host, kind))
                .exec(c)
        })?;
    }
    Ok(())
}
