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
//! | `tasks:PROTOCOL` | stream, group `hosts` | offers of calls of that protocol (`offers`: a JSON list, several to an entry) |
//! | `withdrawn:PROTOCOL` | set | `HOST/CALL` of offers withdrawn before a host took them |
//! | `answers:HOST` | stream | outcomes for the calls HOST offered (`answers`: a JSON list of `[call, outcome]`, several to an entry) |
//!
//! **Several offers to an entry.** A stream entry, its delivery and its
//! acknowledgement each cost Redis about as much as what they carry, so a
//! host offers what gathered in one pipeline as entries of up to
//! [`MOST_PER_ENTRY`] offers (fewer when a host serving the protocol takes
//! fewer calls at once: the offerer says how many), and a host takes as
//! many entries as its free slots hold. The entry is the unit Redis knows:
//! it is acknowledged once each of its offers is answered, and given back
//! whole when the host that took it dies (its answered offers then run
//! again, and their second answers are dropped). A single offer is
//! withdrawn by naming it in `withdrawn:PROTOCOL`; a host that takes it
//! skips it.
//!
//! Taken entries are trimmed from their stream every beat
//! ([`Work::trim`]: one `XTRIM` there costs Redis less than an `XDEL` per
//! entry). The entries a host took and never acknowledged because it died
//! stay pending under its name; [`Work::reclaim`] gives them to a living
//! host, by the lease of the host that took them, not by how long they
//! were idle (a long call is not a dead one). An answer for a call its
//! offerer no longer waits for (it died, the task was cancelled) is
//! dropped; the host that took over the workflow offered the call again.

use super::{RedisStore, key};
use crate::store::StoreError;
use redis::Value as Reply;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const GROUP: &str = "hosts";
/// Most answers a host's stream keeps unread (it reads them at once; a
/// host that stopped reading is dead, and its stream is deleted).
const MAX_ANSWERS: usize = 100_000;
/// Most offers in one stream entry: 16 cut the Redis commands per task
/// crossing hosts from 5.3 to 4.4 (bench/README.md); more would spread a
/// burst over the hosts in coarser pieces.
pub const MOST_PER_ENTRY: usize = 16;
/// How long a withdrawal is remembered after the last one: an offer is
/// taken long before (a withdrawal that came after its offer was taken
/// stays until then).
const WITHDRAWALS_KEPT: Duration = Duration::from_secs(600);

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

/// An offer a host took: from which stream, in which entry.
#[derive(Debug, Clone)]
pub struct Taken {
    pub protocol: String,
    entry: Arc<Entry>,
    pub offer: Offer,
}

/// A stream entry a host took, acknowledged when its last offer is
/// answered.
#[derive(Debug)]
struct Entry {
    id: String,
    unanswered: AtomicUsize,
}

impl Entry {
    /// One of its offers is answered (or skipped): whether it was the last.
    fn answered(&self) -> bool {
        self.unanswered.fetch_sub(1, Ordering::AcqRel) == 1
    }
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
        let sent = sent.map(|_| ()).inspect_err(|e| {
            tracing::warn!("{e}; the tasks offered or answered meanwhile are given up");
        });
        for op in batch {
            if let Op::Offer { placed, .. } = op {
                let _ = placed.send(sent.clone());
            }
        }
    }
}

/// The commands of `batch`, none of whose replies is kept.
fn pipeline_of(batch: &[Op]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    // Offers go in entries of several, answers one entry per offerer,
    // acknowledgements one command per stream, after the answers: a
    // command or an entry each cost Redis more than what it carried.
    let mut offered: BTreeMap<&str, (usize, Vec<&Offer>)> = BTreeMap::new();
    let mut answered: BTreeMap<String, String> = BTreeMap::new();
    let mut acks: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for op in batch {
        match op {
            Op::Offer { protocol, offer, per_entry, .. } => {
                let (size, list) = offered.entry(protocol).or_insert((MOST_PER_ENTRY, Vec::new()));
                *size = (*size).min(*per_entry);
                list.push(offer);
            }
            Op::Withdraw { protocol, member } => {
                pipe.cmd("SADD").arg(withdrawn(protocol)).arg(member).ignore();
                pipe.cmd("PEXPIRE").arg(withdrawn(protocol)).arg(WITHDRAWALS_KEPT.as_millis() as u64).ignore();
            }
            Op::Answer { taken, outcome } => {
                if let Some(outcome) = outcome {
                    let list = answered.entry(answers(&taken.offer.from)).or_default();
                    list.push(if list.is_empty() { '[' } else { ',' });
                    list.push('[');
                    list.push_str(&Value::from(taken.offer.call.as_str()).to_string());
                    list.push(',');
                    list.push_str(outcome);
                    list.push(']');
                }
                if taken.entry.answered() {
                    acks.entry(offers(&taken.protocol)).or_default().push(&taken.entry.id);
                }
            }
            Op::Drop { protocol, id } => acks.entry(offers(protocol)).or_default().push(id),
        }
    }
    for (protocol, (size, list)) in offered {
        for entry in list.chunks(size.max(1)) {
            let text = serde_json::to_string(entry).unwrap_or_default();
            pipe.cmd("XADD").arg(offers(protocol)).arg("*").arg("offers").arg(text).ignore();
        }
    }
    for (stream, mut list) in answered {
        list.push(']');
        pipe.cmd("XADD").arg(stream).arg("MAXLEN").arg("~").arg(MAX_ANSWERS).arg("*").arg("answers").arg(list).ignore();
    }
    for (stream, entries) in acks {
        pipe.cmd("XACK").arg(stream).arg(GROUP).arg(entries).ignore();
    }
    pipe
}

fn offers(protocol: &str) -> String {
    key(&["tasks", protocol])
}

fn withdrawn(protocol: &str) -> String {
    key(&["withdrawn", protocol])
}

/// How the offer of `call` by host `from` is named in `withdrawn:PROTOCOL`.
fn withdrawal(from: &str, call: &str) -> String {
    format!("{from}/{call}")
}

/// The value of the field `name` of a stream entry.
fn field(fields: Fields, name: &str) -> Option<String> {
    fields.into_iter().find(|(field, _)| field == name).map(|(_, value)| value)
}

pub(super) fn answers(host: &str) -> String {
    key(&["answers", host])
}

/// Offering, answering and withdrawing: handed to a thread of its own that
/// sends what has gathered in one pipeline (as the journal does records),
/// so that a busy host makes few round trips; the blocking reads each have
/// their own connection ([`Taker`], [`Answers`]).
pub struct Work {
    outbox: Outbox,
    /// For the gone hosts' offers, which are rare.
    store: RedisStore,
    url: String,
    host: String,
}

/// Where offers, answers and withdrawals go out.
#[derive(Clone)]
struct Outbox {
    ops: std::sync::mpsc::Sender<Op>,
    /// Whether this host answered an offer since it last trimmed.
    answered: Arc<AtomicBool>,
}

impl Outbox {
    fn send(&self, op: Op) {
        let _ = self.ops.send(op);
    }

    /// Answer a taken offer with `outcome` (JSON; none for a withdrawn
    /// offer, skipped).
    fn answer(&self, taken: Taken, outcome: Option<String>) {
        self.answered.store(true, Ordering::Relaxed);
        self.send(Op::Answer { taken, outcome });
    }
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
        /// Most offers of the protocol to put in one entry.
        per_entry: usize,
        placed: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    /// The outcome as JSON; none for a withdrawn offer, skipped.
    Answer {
        taken: Taken,
        outcome: Option<String>,
    },
    Withdraw {
        protocol: String,
        member: String,
    },
    /// An entry that holds no offer that can be read: acknowledged, or it
    /// would stay pending for ever and stop the stream's trimming there.
    Drop {
        protocol: String,
        id: String,
    },
}

impl Work {
    /// This host's work; the answers left from its previous process are
    /// dropped (that process's calls are gone).
    pub(super) fn open(url: &str, host: &str) -> Result<Self, StoreError> {
        let store = RedisStore::open_unlocked(url)?;
        store.with("clear this host's answers", |c| redis::Commands::del::<_, ()>(c, answers(host)))?;
        let sender = RedisStore::open_unlocked(url)?;
        let (ops, outgoing) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cluster-work-out".into())
            .spawn(move || send_in_batches(&sender, &outgoing))
            .map_err(|e| StoreError::Open { target: url.to_owned(), reason: format!("cannot offer tasks: {e}") })?;
        let outbox = Outbox { ops, answered: Arc::default() };
        Ok(Self { outbox, store, url: url.to_owned(), host: host.to_owned() })
    }

    /// Offer `offer` of `protocol` to the hosts, in an entry of at most
    /// `per_entry` offers; the answer says once it is in the stream.
    pub fn offer(
        &self,
        protocol: &str,
        offer: Offer,
        per_entry: usize,
    ) -> tokio::sync::oneshot::Receiver<Result<(), StoreError>> {
        let (placed, offered) = tokio::sync::oneshot::channel();
        self.outbox.send(Op::Offer { protocol: protocol.to_owned(), offer, per_entry, placed });
        offered
    }

    /// Withdraw the offer of `call` nobody needs any more (the task was
    /// cancelled or timed out); one already taken runs on, and its answer
    /// is dropped.
    pub fn withdraw(&self, protocol: &str, call: &str) {
        let member = withdrawal(&self.host, call);
        self.outbox.send(Op::Withdraw { protocol: protocol.to_owned(), member });
    }

    /// Answer a taken offer with `outcome` (JSON), and forget the offer.
    pub fn answer(&self, taken: Taken, outcome: String) {
        self.outbox.answer(taken, Some(outcome));
    }

    /// Give the entries taken by hosts that are gone (`gone`: their ids) of
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
                if let Some(text) = field(fields, "offers") {
                    pipe.cmd("XADD").arg(&stream).arg("*").arg("offers").arg(text).ignore();
                }
                pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(&id).ignore();
                pipe.cmd("XDEL").arg(&stream).arg(&id).ignore();
                reclaimed += 1;
            }
            self.store.with("offer a gone host's tasks again", |c| pipe.query::<()>(c))?;
        }
        Ok(reclaimed)
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
        if !self.outbox.answered.swap(false, Ordering::Relaxed) {
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
        let reader = RedisStore::open_unlocked(&self.url)?;
        Ok(Taker { reader, host: self.host.clone(), groups: Vec::new(), outbox: self.outbox.clone() })
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
    /// Where the withdrawn offers it skips go.
    outbox: Outbox,
}

impl Taker {
    /// Take offers of `protocol` for `free` slots (whole entries: one
    /// at least, so up to [`MOST_PER_ENTRY`] - 1 more than `free`), waiting
    /// at most `block` for the first. Withdrawn offers are skipped.
    pub fn take(&mut self, protocol: &str, free: usize, block: Duration) -> Result<Vec<Taken>, StoreError> {
        self.ensure_group(protocol)?;
        let mut pipe = redis::pipe();
        pipe.cmd("XREADGROUP").arg("GROUP").arg(GROUP).arg(&self.host);
        pipe.arg("COUNT").arg((free / MOST_PER_ENTRY).max(1));
        pipe.arg("BLOCK").arg(block.as_millis().max(1) as u64).arg("STREAMS").arg(offers(protocol)).arg(">");
        // Whether anything was withdrawn, in the same round trip.
        pipe.cmd("EXISTS").arg(withdrawn(protocol));
        let (reply, any_withdrawn): (Reply, bool) = self.reader.with("take offered tasks", |c| pipe.query(c))?;
        let mut taken = Vec::new();
        for (_, entries) in streams_of(reply) {
            for (id, fields) in entries {
                match field(fields, "offers").and_then(|text| serde_json::from_str::<Vec<Offer>>(&text).ok()) {
                    Some(offers) if !offers.is_empty() => {
                        let entry = Arc::new(Entry { id, unanswered: offers.len().into() });
                        taken.extend(offers.into_iter().map(|offer| Taken {
                            protocol: protocol.to_owned(),
                            entry: entry.clone(),
                            offer,
                        }));
                    }
                    _ => {
                        tracing::warn!(%protocol, entry = %id, "offered tasks that cannot be read are dropped");
                        self.outbox.send(Op::Drop { protocol: protocol.to_owned(), id });
                    }
                }
            }
        }
        if any_withdrawn && !taken.is_empty() {
            taken = self.skip_withdrawn(protocol, taken)?;
        }
        Ok(taken)
    }

    /// `taken` without the offers withdrawn, which are forgotten.
    fn skip_withdrawn(&mut self, protocol: &str, taken: Vec<Taken>) -> Result<Vec<Taken>, StoreError> {
        let members: Vec<String> = taken.iter().map(|t| withdrawal(&t.offer.from, &t.offer.call)).collect();
        let found: Vec<bool> = self.reader.with("read withdrawn offers", |c| {
            redis::cmd("SMISMEMBER").arg(withdrawn(protocol)).arg(&members).query(c)
        })?;
        let gone: Vec<&String> = members.iter().zip(&found).filter(|(_, w)| **w).map(|(m, _)| m).collect();
        if gone.is_empty() {
            return Ok(taken);
        }
        self.reader
            .with("forget withdrawn offers", |c| redis::cmd("SREM").arg(withdrawn(protocol)).arg(&gone).exec(c))?;
        let mut kept = Vec::with_capacity(taken.len());
        for (taken, withdrawn) in taken.into_iter().zip(found) {
            if withdrawn {
                self.outbox.answer(taken, None);
            } else {
                kept.push(taken);
            }
        }
        Ok(kept)
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
                match field(fields, "answers").map(|text| serde_json::from_str::<Vec<(String, Value)>>(&text)) {
                    Some(Ok(answers)) => read.extend(answers),
                    _ => tracing::warn!("answers that cannot be read are dropped (their calls end at their deadline)"),
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
            let fields = fields_of(parts.next()?).into_iter().filter_map(|(name, value)| Some((name, as_text(value)?)));
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
