//! What each connection has been sent and has taken: a peer that does not
//! read cannot make the host hold more than a bounded amount for it.
//!
//! Socket.IO queues every packet for a connection until its transport writes
//! it, and the queue counts packets, not bytes: a client that sends small
//! requests for large answers and never reads grew the daemon by the size of
//! every answer. So:
//!
//! - every TCP connection counts the bytes the kernel took from it
//!   ([`Metered`]), and a write that makes no progress for [`WRITE_STALL`]
//!   fails, which closes the connection and frees what was queued for it;
//! - each socket's [`Outbox`] knows what the host queued for it and what its
//!   transports took (its WebSocket connection, the connections its
//!   long-polling requests came on);
//! - before queuing an answer or event, the host asks [`Outboxes::admit`]:
//!   a socket with more than [`UNREAD_LIMIT`] unread is disconnected instead.
//!
//! It only counts and answers; what to do with a refused socket is the
//! caller's.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A write that makes no progress for this long fails: the peer stopped
/// reading (or vanished without a word).
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// Most bytes a socket may leave unread before it is disconnected. One
/// answer larger than this (up to the largest answer the host sends) still
/// goes to a socket that has read everything else.
pub const UNREAD_LIMIT: u64 = 64 * 1024 * 1024;

/// Bytes a packet takes on the wire besides its payload, at the least
/// (Socket.IO prefix, WebSocket header).
pub const PACKET_OVERHEAD: usize = 8;

/// Below this, a socket counts as having read everything.
const SETTLED: u64 = 64 * 1024;

/// Bytes the kernel took from one connection.
#[derive(Debug, Default)]
pub struct Meter {
    written: AtomicU64,
}

impl Meter {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn add(&self, bytes: usize) {
        self.written.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// A TCP connection that counts what it writes and gives up on a write that
/// stalls for [`WRITE_STALL`].
pub struct Metered {
    inner: TcpStream,
    meter: Arc<Meter>,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Metered {
    /// What counts its writes.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    /// Count what `wrote` wrote; fail once a pending write has waited too long.
    fn account(&mut self, cx: &mut Context<'_>, wrote: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match wrote {
            Poll::Ready(Ok(n)) => {
                self.stalled = None;
                self.meter.add(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                let stall = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
                ready!(stall.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer read nothing for {} s", WRITE_STALL.as_secs()),
                )))
            }
            failed => failed,
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Metered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let wrote = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.account(cx, wrote)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let wrote = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.account(cx, wrote)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections are [`Metered`].
pub struct MeteredListener(pub TcpListener);

impl axum::serve::Listener for MeteredListener {
    type Io = Metered;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (inner, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (Metered { inner, meter: Arc::default(), stalled: None }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The connection a request came on, in its extensions (`ConnectInfo`).
#[derive(Clone, Debug)]
pub struct Connection {
    pub meter: Arc<Meter>,
    /// The peer's address, for the log lines of refusals.
    pub peer: std::net::SocketAddr,
}

pub use crate::daemon::quota::REQUESTS_AT_ONCE;

/// Connections a socket's long-polling responses are credited from, at most;
/// an older one's count is folded into `retired` when a new one comes.
const POLL_CONNECTIONS: usize = 8;

/// A WebSocket upgrade seen before its socket joined the namespace
/// (python-socketio upgrades first, then sends CONNECT over the WebSocket)
/// waits this long for it.
const EARLY_UPGRADE_WAIT: Duration = Duration::from_secs(60);

/// A connection's meter and what it had written when the socket began to use it.
type Since = (Arc<Meter>, u64);

fn since(meter: Arc<Meter>) -> Since {
    let base = meter.written();
    (meter, base)
}

fn written_since((meter, base): &Since) -> u64 {
    meter.written().saturating_sub(*base)
}

/// The connections that carry what a socket is sent.
#[derive(Default)]
struct Transports {
    websocket: Option<Since>,
    polls: Vec<Since>,
    /// What polling connections no longer followed had written.
    retired: u64,
}

impl Transports {
    fn taken(&self) -> u64 {
        self.retired + self.websocket.iter().chain(&self.polls).map(written_since).sum::<u64>()
    }

    fn polled_on(&mut self, meter: Arc<Meter>) {
        if self.polls.iter().any(|(m, _)| Arc::ptr_eq(m, &meter)) {
            return;
        }
        if self.polls.len() == POLL_CONNECTIONS {
            let oldest = self.polls.remove(0);
            self.retired += written_since(&oldest);
        }
        self.polls.push(since(meter));
    }
}

/// One socket's unread bytes, its transports and its request slots.
struct Outbox {
    /// What was counted in and is not yet taken, and how much its transports
    /// had taken when last asked. Taking more than was counted (headers,
    /// small events nobody counted) does not bank credit for later: unread
    /// stops at zero.
    balance: Mutex<Balance>,
    transports: Mutex<Transports>,
    slots: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct Balance {
    unread: u64,
    taken: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            balance: Mutex::default(),
            transports: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(REQUESTS_AT_ONCE)),
        }
    }
}

/// Every connected socket's outbox, by socket id (which is its Engine.IO sid).
#[derive(Default)]
pub struct Outboxes {
    open: Mutex<HashMap<String, Arc<Outbox>>>,
    /// WebSocket upgrades of sids not yet connected, with when they came.
    early: Mutex<HashMap<String, (Since, std::time::Instant)>>,
}

impl Outboxes {
    /// A socket connected on `connection`: its WebSocket when `websocket`
    /// (or a WebSocket it upgraded to already), else its first long-polling
    /// connection.
    pub fn open(&self, sid: &str, connection: Option<Arc<Meter>>, websocket: bool) {
        let outbox = self.entry(sid);
        let upgraded = crate::locks::lock(&self.early).remove(sid).map(|(since, _)| since);
        let mut transports = crate::locks::lock(&outbox.transports);
        match (upgraded, connection) {
            (Some(upgraded), _) => transports.websocket = Some(upgraded),
            (None, Some(meter)) if websocket => transports.websocket = Some(since(meter)),
            (None, Some(meter)) => transports.polled_on(meter),
            (None, None) => {}
        }
    }

    /// The outbox of `sid`, made if it has none yet (a request can come
    /// before the connect handler has run).
    fn entry(&self, sid: &str) -> Arc<Outbox> {
        crate::locks::lock(&self.open).entry(sid.to_owned()).or_default().clone()
    }

    pub fn close(&self, sid: &str) {
        crate::locks::lock(&self.open).remove(sid);
    }

    /// Sockets connected now.
    pub fn count(&self) -> usize {
        crate::locks::lock(&self.open).len()
    }

    fn get(&self, sid: &str) -> Option<Arc<Outbox>> {
        crate::locks::lock(&self.open).get(sid).cloned()
    }

    /// The socket moved from long-polling to the WebSocket on `meter`
    /// (possibly before it joined the namespace).
    pub fn upgraded(&self, sid: &str, meter: Arc<Meter>) {
        match self.get(sid) {
            Some(outbox) => crate::locks::lock(&outbox.transports).websocket = Some(since(meter)),
            None => {
                let mut early = crate::locks::lock(&self.early);
                early.retain(|_, (_, at)| at.elapsed() < EARLY_UPGRADE_WAIT);
                early.insert(sid.to_owned(), (since(meter), std::time::Instant::now()));
            }
        }
    }

    /// A long-polling request of `sid` came on the connection of `meter`:
    /// what that connection writes from now on counts as read by `sid`.
    pub fn polled_on(&self, sid: &str, meter: Arc<Meter>) {
        if let Some(outbox) = self.get(sid) {
            crate::locks::lock(&outbox.transports).polled_on(meter);
        }
    }

    /// Wait for one of `sid`'s request slots (the caller knows it is connected).
    pub async fn slot(&self, sid: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = self.entry(sid).slots.clone();
        slots.acquire_owned().await.ok()
    }

    /// Whether `bytes` more may be queued for `sid`; if so they are counted.
    /// Err carries what the socket left unread.
    pub fn admit(&self, sid: &str, bytes: usize) -> Result<(), u64> {
        let Some(outbox) = self.get(sid) else { return Ok(()) };
        let taken = crate::locks::lock(&outbox.transports).taken();
        let mut balance = crate::locks::lock(&outbox.balance);
        balance.unread = balance.unread.saturating_sub(taken.saturating_sub(balance.taken));
        balance.taken = taken;
        if balance.unread > SETTLED && balance.unread + bytes as u64 > UNREAD_LIMIT {
            return Err(balance.unread);
        }
        balance.unread += bytes as u64;
        Ok(())
    }

    /// `bytes` admitted for `sid` were not sent after all.
    pub fn refund(&self, sid: &str, bytes: usize) {
        if let Some(outbox) = self.get(sid) {
            let mut balance = crate::locks::lock(&outbox.balance);
            balance.unread = balance.unread.saturating_sub(bytes as u64);
        }
    }
}
