//! Work passed between the hosts of a cluster. A task that no free provider
//! of the host driving its workflow can take is *offered* on its protocol's
//! Redis stream; a host with a free provider of that protocol *takes* it
//! (a consumer group, so each offer goes to one host), runs it, and
//! *answers* on the stream of the host that offered it, which hands the
//! outcome to its engine. What an offer and an outcome hold is the
//! daemon's; here they are JSON.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tasks:PROTOCOL` | stream, group `hosts` | offers of calls of that protocol |
//! | `answers:HOST` | stream | outcomes for the calls HOST offered (`call`, `outcome`; several to an entry) |
//!
//! Taken offers are acknowledged once answered, and trimmed from their
//! stream every beat ([`Work::trim`]: one `XTRIM` there costs Redis less
//! than an `XDEL` per answer). The offers a host took and never answered
//! because it died stay pending under its name; [`Work::reclaim`] gives them to a living host, by the lease of the
//! host that took them, not by how long they were idle (a long call is not
//! a dead one). An answer for a call its offerer no longer waits for (it
//! died, the task was cancelled) is dropped; the host that took over the
//! workflow offered the call again.

use super::{RedisStore, key};
use crate::store::StoreError;
use redis::Value as Reply;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const GROUP: &str = "hosts";
/// Most answers a host's stream keeps unread (it reads them at once; a
/// host that stopped reading is dead, and its stream is deleted).
const MAX_ANSWERS: usize = 100_000;

/// One call offered to the other hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    /// The offering host's name for the call.
    pub call: String,
    /// The host that offered it, which waits for the answer.
    pub from: String,
    pub workflow_id: String,
    /// The workflow's owner (token), who may see its progress.
    pub owner: Option<String>,
    pub task_id: String,
    pub attempt: u32,
    pub method: String,
    pub params: std::sync::Arc<Value>,
    /// How long the call may take, from when it is taken.
    pub timeout_ms: u64,
}

/// The hosts' group on a stream: its fields, and its pending summary.
type Group = (Vec<(String, Reply)>, Reply);

/// One protocol's offers in the cluster's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    pub protocol: String,
    /// Offered and not yet taken by any host.
    pub waiting: u64,
    /// Taken by a host, which runs them now.
    pub taken: u64,
}

/// An offer a host took: from which stream, under which entry.
#[derive(Debug, Clone)]
pub struct Taken {
    pub protocol: String,
    entry: String,
    pub offer: Offer,
}

/// Send what gathers in `ops`, a pipeline at a time, until every sender
/// is gone.
fn send_in_batches(sender: &RedisStore, ops: &std::sync::mpsc::Receiver<Op>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_PIPELINE
            && let Ok(op) = ops.try_recv()
        {
            batch.push(op);
        }
        let pipe = pipeline_of(&batch);
        let mut sent = sender.with("offer and answer tasks", |c| pipe.query::<Vec<String>>(c));
        for _ in 1..SEND_TRIES {
            if sent.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            sent = sender.with("offer and answer tasks", |c| pipe.query::<Vec<String>>(c));
        }
        let mut entries = match sent {
            Ok(entries) => entries.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
            Err(e) => {
                tracing::warn!("{e}; the tasks offered or answered meanwhile are given up");
                vec![Err(e); batch.len()].into_iter()
            }
        };
        for op in batch {
            if let Op::Offer { entry, .. } = op {
                let _ = entry.send(entries.next().unwrap_or_else(|| Err(lost(sender))));
            }
        }
    }
}

/// The commands of `batch`; only the offers' replies (their entries) are
/// kept.
fn pipeline_of(batch: &[Op]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    // Answers go one entry per offerer, and acknowledgements one command
    // per stream, after the answers: a command each cost Redis more
    // than what it carried.
    let mut answered: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut acks: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for op in batch {
        match op {
            Op::Offer { protocol, offer, .. } => {
                let text = serde_json::to_string(offer).unwrap_or_default();
                pipe.cmd("XADD").arg(offers(protocol)).arg("*").arg("offer").arg(text);
            }
            Op::Withdraw { protocol, entry } => {
                pipe.cmd("XDEL").arg(offers(protocol)).arg(entry).ignore();
            }
            Op::Answer { taken, outcome } => {
                let fields = answered.entry(answers(&taken.offer.from)).or_default();
                fields.extend(["call", taken.offer.call.as_str(), "outcome", outcome.as_str()]);
                acks.entry(offers(&taken.protocol)).or_default().push(&taken.entry);
            }
        }
    }
    for (stream, fields) in answered {
        pipe.cmd("XADD").arg(stream).arg("MAXLEN").arg("~").arg(MAX_ANSWERS).arg("*").arg(fields).ignore();
    }
    for (stream, entries) in acks {
        pipe.cmd("XACK").arg(stream).arg(GROUP).arg(entries).ignore();
    }
    pipe
}

fn lost(sender: &RedisStore) -> StoreError {
    StoreError::Io { target: sender.url.clone(), action: "offer a task", reason: "no entry came back".into() }
}

fn offers(protocol: &str) -> String {
    key(&["tasks", protocol])
}

pub(super) fn answers(host: &str) -> String {
    key(&["answers", host])
}

/// Offering, answering and withdrawing: handed to a thread of its own that
/// sends what has gathered in one pipeline (as the journal does records),
/// so that a busy host makes few round trips; the blocking reads each have
/// their own connection ([`Taker`], [`Answers`]).
pub struct Work {
    outbox: std::sync::mpsc::Sender<Op>,
    /// For the gone hosts' offers, which are rare.
    store: RedisStore,
    url: String,
    host: String,
    /// Whether this host answered an offer since it last trimmed.
    answered: std::sync::atomic::AtomicBool,
}

/// Most operations sent in one pipeline.
const MAX_PIPELINE: usize = 1024;
/// Times a pipeline is sent again after a failure before its operations
/// are given up (an offer then fails its call, which is retried; an
/// answer is lost, and its call ends at its deadline).
const SEND_TRIES: usize = 3;

enum Op {
    Offer {
        protocol: String,
        offer: Offer,
        entry: tokio::sync::oneshot::Sender<Result<String, StoreError>>,
    },
    /// The outcome as JSON.
    Answer {
        taken: Taken,
        outcome: String,
    },
    Withdraw {
        protocol: String,
        entry: String,
    },
}

impl Work {
    /// This host's work; the answers left from its previous process are
    /// dropped (that process's calls are gone).
    pub(super) fn open(url: &str, host: &str) -> Result<Self, StoreError> {
        let store = RedisStore::open_unlocked(url)?;
        store.with("clear this host's answers", |c| redis::Commands::del::<_, ()>(c, answers(host)))?;
        let sender = RedisStore::open_unlocked(url)?;
        let (outbox, ops) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cluster-work-out".into())
            .spawn(move || send_in_batches(&sender, &ops))
            .map_err(|e| StoreError::Open { target: url.to_owned(), reason: format!("cannot offer tasks: {e}") })?;
        Ok(Self { outbox, store, url: url.to_owned(), host: host.to_owned(), answered: Default::default() })
    }

    /// Offer `offer` of `protocol` to the hosts; its entry (to withdraw it)
    /// arrives once it is in the stream.
    pub fn offer(&self, protocol: &str, offer: Offer) -> tokio::sync::oneshot::Receiver<Result<String, StoreError>> {
        let (entry, offered) = tokio::sync::oneshot::channel();
        let _ = self.outbox.send(Op::Offer { protocol: protocol.to_owned(), offer, entry });
        offered
    }

    /// Withdraw an offer nobody needs any more (the task was cancelled or
    /// timed out); one already taken runs on, and its answer is dropped.
    pub fn withdraw(&self, protocol: &str, entry: String) {
        let _ = self.outbox.send(Op::Withdraw { protocol: protocol.to_owned(), entry });
    }

    /// Answer a taken offer with `outcome` (JSON), and forget the offer.
    pub fn answer(&self, taken: Taken, outcome: String) {
        self.answered.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.outbox.send(Op::Answer { taken, outcome });
    }

    /// Give the offers taken by hosts that are gone (`gone`: their ids) of
    /// `protocol` back to the stream, for a living host to take.
    pub fn reclaim(&self, protocol: &str, gone: &[String]) -> Result<usize, StoreError> {
        let stream = offers(protocol);
        let mut reclaimed = 0;
        for host in gone {
            let pending: Reply = self.store.with("read the offers a gone host took", |c| {
                redis::cmd("XPENDING").arg(&stream).arg(GROUP).arg("-").arg("+").arg(1000).arg(host).query(c)
            })?;
            let ids: Vec<String> = as_array(pending)
                .into_iter()
                .filter_map(|entry| as_array(entry).into_iter().next().and_then(as_text))
                .collect();
            if ids.is_empty() {
                continue;
            }
            let claimed: Reply = self.store.with("reclaim the offers a gone host took", |c| {
                redis::cmd("XCLAIM").arg(&stream).arg(GROUP).arg(&self.host).arg(0).arg(&ids).query(c)
            })?;
            let mut pipe = redis::pipe();
            for (id, fields) in entries_of(claimed) {
                if let Some(text) = fields.into_iter().find(|(name, _)| name == "offer").map(|(_, text)| text) {
                    pipe.cmd("XADD").arg(&stream).arg("*").arg("offer").arg(text).ignore();
                }
                pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(&id).ignore();
                pipe.cmd("XDEL").arg(&stream).arg(&id).ignore();
                reclaimed += 1;
            }
            self.store.with("offer a gone host's tasks again", |c| pipe.query::<()>(c))?;
        }
        Ok(reclaimed)
    }

    /// The cluster's queue of `protocols`: how many offers of each wait to
    /// be taken, and how many a host took and runs now.
    pub fn depth(&self, protocols: &[String]) -> Result<Vec<Depth>, StoreError> {
        protocols.iter().map(|protocol| self.depth_of(protocol)).collect()
    }

    fn depth_of(&self, protocol: &str) -> Result<Depth, StoreError> {
        let stream = offers(protocol);
        let Some((group, pending)) = self.group(&stream)? else {
            // No host took any yet: every offer there waits.
            let waiting = self.store.read("read the cluster's queue", |c| redis::cmd("XLEN").arg(&stream).query(c))?;
            return Ok(Depth { protocol: protocol.to_owned(), waiting, taken: 0 });
        };
        let taken = match as_array(pending).into_iter().next() {
            Some(Reply::Int(n)) => u64::try_from(n).unwrap_or(0),
            _ => 0,
        };
        let field = |wanted: &str| group.iter().find(|(name, _)| name == wanted).map(|(_, value)| value.clone());
        let waiting = match field("lag") {
            Some(Reply::Int(lag)) => u64::try_from(lag).unwrap_or(0),
            // Redis cannot tell after a withdrawal: count what is after
            // the last offer taken.
            _ => {
                let after = field("last-delivered-id").and_then(as_text).unwrap_or_else(|| "0-0".into());
                let entries: Reply = self.store.read("read the cluster's queue", |c| {
                    redis::cmd("XRANGE").arg(&stream).arg(format!("({after}")).arg("+").query(c)
                })?;
                as_array(entries).len() as u64
            }
        };
        Ok(Depth { protocol: protocol.to_owned(), waiting, taken })
    }

    /// The hosts' group on `stream` as Redis has it: its fields (`XINFO
    /// GROUPS`) and its pending summary (`XPENDING`); none before any host
    /// took an offer there.
    fn group(&self, stream: &str) -> Result<Option<Group>, StoreError> {
        self.store.read("look at the offers", |c| {
            if !redis::Commands::exists::<_, bool>(c, stream)? {
                return Ok(None);
            }
            let groups: Reply = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(c)?;
            let group = as_array(groups).into_iter().map(fields_of).find(|fields| {
                fields.iter().any(|(name, value)| name == "name" && as_text(value.clone()).as_deref() == Some(GROUP))
            });
            let Some(group) = group else { return Ok(None) };
            let pending: Reply = redis::cmd("XPENDING").arg(stream).arg(GROUP).query(c)?;
            Ok(Some((group, pending)))
        })
    }

    /// Drop the offers of `protocols` no host needs any more, if this host
    /// answered any since it last looked (an idle host sends nothing):
    /// those before the oldest one still pending (taken, not answered) and
    /// before the first not yet taken. Offers only move forward (taken,
    /// then answered; one given back is offered anew), so what was not
    /// needed when this looked is not needed when it trims.
    pub fn trim(&self, protocols: &[String]) -> Result<(), StoreError> {
        if !self.answered.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        protocols.iter().try_for_each(|protocol| self.trim_one(protocol))
    }

    fn trim_one(&self, protocol: &str) -> Result<(), StoreError> {
        let stream = offers(protocol);
        let Some((group, pending)) = self.group(&stream)? else { return Ok(()) };
        let last_delivered = group
            .into_iter()
            .find(|(name, _)| name == "last-delivered-id")
            .and_then(|(_, id)| as_text(id))
            .and_then(|id| EntryId::parse(&id));
        let Some(last_delivered) = last_delivered else { return Ok(()) };
        let oldest_pending = as_array(pending).into_iter().nth(1).and_then(as_text).and_then(|id| EntryId::parse(&id));
        let keep_from = oldest_pending.map_or(last_delivered.next(), |pending| pending.min(last_delivered.next()));
        self.store.with("trim the offers", |c| {
            redis::cmd("XTRIM").arg(&stream).arg("MINID").arg(keep_from.to_string()).exec(c)
        })
    }

    /// A reader of offers, on a connection of its own.
    pub fn taker(&self) -> Result<Taker, StoreError> {
        Ok(Taker { reader: RedisStore::open_unlocked(&self.url)?, host: self.host.clone(), groups: Vec::new() })
    }

    /// A reader of this host's answers, on a connection of its own.
    pub fn answers(&self) -> Result<Answers, StoreError> {
        Ok(Answers { reader: RedisStore::open_unlocked(&self.url)?, stream: answers(&self.host), last: "0".into() })
    }
}

/// Takes offers for this host.
pub struct Taker {
    reader: RedisStore,
    host: String,
    /// Streams whose group is known to exist.
    groups: Vec<String>,
}

impl Taker {
    /// Take at most `count` offers of `protocol`, waiting at most `block`
    /// for the first.
    pub fn take(&mut self, protocol: &str, count: usize, block: Duration) -> Result<Vec<Taken>, StoreError> {
        self.ensure_group(protocol)?;
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(GROUP).arg(&self.host).arg("COUNT").arg(count);
        read.arg("BLOCK").arg(block.as_millis().max(1) as u64).arg("STREAMS").arg(offers(protocol)).arg(">");
        let reply: Reply = self.reader.with("take offered tasks", |c| read.query(c))?;
        let mut taken = Vec::new();
        for (_, entries) in streams_of(reply) {
            for (entry, fields) in entries {
                let offer = fields.into_iter().find(|(name, _)| name == "offer");
                match offer.and_then(|(_, text)| serde_json::from_str(&text).ok()) {
                    Some(offer) => taken.push(Taken { protocol: protocol.to_owned(), entry, offer }),
                    None => tracing::warn!(%protocol, "an offered task that cannot be read is dropped"),
                }
            }
        }
        Ok(taken)
    }

    fn ensure_group(&mut self, protocol: &str) -> Result<(), StoreError> {
        if self.groups.iter().any(|known| known == protocol) {
            return Ok(());
        }
        let created = self.reader.with("create the hosts' group", |c| {
            redis::cmd("XGROUP").arg("CREATE").arg(offers(protocol)).arg(GROUP).arg("0").arg("MKSTREAM").exec(c)
        });
        match created {
            Err(e) if !e.to_string().contains("BUSYGROUP") => return Err(e),
            _ => self.groups.push(protocol.to_owned()),
        }
        Ok(())
    }
}

/// Reads this host's answers, in order.
pub struct Answers {
    reader: RedisStore,
    stream: String,
    last: String,
}

impl Answers {
    /// The answers after the last read (call, outcome), waiting at most
    /// `block` for one; read answers are deleted.
    pub fn next(&mut self, block: Duration) -> Result<Vec<(String, Value)>, StoreError> {
        let reply: Reply = self.reader.with("read answers", |c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(block.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&self.last)
                .query(c)
        })?;
        let mut read = Vec::new();
        let mut ids = Vec::new();
        for (_, entries) in streams_of(reply) {
            for (id, fields) in entries {
                // `call`, `outcome`, for each answer the entry holds.
                let mut fields = fields.into_iter();
                while let Some((name, call)) = fields.next() {
                    if let (true, Some((_, outcome))) = (name == "call", fields.next()) {
                        read.push((call, serde_json::from_str(&outcome).unwrap_or(Value::Null)));
                    }
                }
                self.last.clone_from(&id);
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            self.reader.with("delete read answers", |c| redis::cmd("XDEL").arg(&self.stream).arg(&ids).exec(c))?;
        }
        Ok(read)
    }
}

/// A stream entry's id: milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId(u64, u64);

impl EntryId {
    fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }

    /// The least id after this one.
    fn next(self) -> Self {
        match self.1.checked_add(1) {
            Some(seq) => Self(self.0, seq),
            None => Self(self.0.saturating_add(1), 0),
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

type Fields = Vec<(String, String)>;

/// The streams of an XREAD/XREADGROUP reply: (stream, entries).
fn streams_of(reply: Reply) -> Vec<(String, Vec<(String, Fields)>)> {
    let streams = match reply {
        Reply::Map(pairs) => pairs.into_iter().map(|(name, entries)| Reply::Array(vec![name, entries])).collect(),
        other => as_array(other),
    };
    streams
        .into_iter()
        .filter_map(|stream| {
            let mut parts = as_array(stream).into_iter();
            let name = parts.next().and_then(as_text)?;
            Some((name, entries_of(parts.next()?)))
        })
        .collect()
}

/// The entries of a stream reply: (id, fields).
fn entries_of(reply: Reply) -> Vec<(String, Fields)> {
    as_array(reply)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = as_array(entry).into_iter();
            let id = parts.next().and_then(as_text)?;
            let flat: Vec<String> = as_array(parts.next()?).into_iter().filter_map(as_text).collect();
            let fields = flat.chunks(2).filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.clone())));
            Some((id, fields.collect()))
        })
        .collect()
}

/// The fields of a reply that is a map: a RESP3 map, or a RESP2 array
/// of names and values.
fn fields_of(reply: Reply) -> Vec<(String, Reply)> {
    match reply {
        Reply::Map(pairs) => pairs.into_iter().filter_map(|(name, value)| Some((as_text(name)?, value))).collect(),
        other => {
            let mut flat = as_array(other).into_iter();
            let mut fields = Vec::new();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                if let Some(name) = as_text(name) {
                    fields.push((name, value));
                }
            }
            fields
        }
    }
}

fn as_array(reply: Reply) -> Vec<Reply> {
    match reply {
        Reply::Array(items) | Reply::Set(items) => items,
        _ => Vec::new(),
    }
}

fn as_text(reply: Reply) -> Option<String> {
    match reply {
        Reply::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Reply::SimpleString(text) => Some(text),
        _ => None,
    }
}
