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
//!   transports took (its WebSocket connection, its long-polling responses);
//! - before queuing an answer or event, the host asks [`Outboxes::admit`]:
//!   a socket with more than [`UNREAD_LIMIT`] unread is disconnected instead.
//!
//! It only counts and answers; what to do with a refused socket is the
//! caller's.

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
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
}

impl Connected<IncomingStream<'_, MeteredListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, MeteredListener>) -> Self {
        Self { meter: stream.io().meter.clone() }
    }
}

/// Requests of one socket that build an answer at once (reports from the
/// store, say); the rest wait their turn. Without it, 400 queued requests for
/// a 10 MB report built 400 reports side by side.
pub const REQUESTS_AT_ONCE: usize = 4;

/// One socket's unread bytes, and its request slots.
struct Outbox {
    /// What was counted in and is not yet taken, and how much its transports
    /// had taken when last asked. Taking more than was counted (headers,
    /// small events nobody counted) does not bank credit for later: unread
    /// stops at zero.
    balance: Mutex<Balance>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Long-polling responses' bodies.
    polled: Arc<Meter>,
    /// Its WebSocket connection, and what that had written before.
    websocket: Mutex<Option<(Arc<Meter>, u64)>>,
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
            slots: Arc::new(tokio::sync::Semaphore::new(REQUESTS_AT_ONCE)),
            polled: Arc::default(),
            websocket: Mutex::default(),
        }
    }
}

impl Outbox {
    fn taken(&self) -> u64 {
        let websocket =
            crate::locks::lock(&self.websocket).as_ref().map_or(0, |(m, base)| m.written().saturating_sub(*base));
        self.polled.written() + websocket
    }
}

/// Every connected socket's outbox, by socket id (which is its Engine.IO sid).
#[derive(Default)]
pub struct Outboxes(Mutex<HashMap<String, Arc<Outbox>>>);

impl Outboxes {
    /// A socket connected; `websocket` is its connection when it came over
    /// WebSocket directly.
    pub fn open(&self, sid: &str, websocket: Option<Arc<Meter>>) {
        let outbox = Outbox::default();
        *crate::locks::lock(&outbox.websocket) = websocket.map(|m| (m.clone(), m.written()));
        crate::locks::lock(&self.0).insert(sid.to_owned(), Arc::new(outbox));
    }

    pub fn close(&self, sid: &str) {
        crate::locks::lock(&self.0).remove(sid);
    }

    fn get(&self, sid: &str) -> Option<Arc<Outbox>> {
        crate::locks::lock(&self.0).get(sid).cloned()
    }

    /// The socket moved from long-polling to the WebSocket on `meter`.
    pub fn upgraded(&self, sid: &str, meter: Arc<Meter>) {
        if let Some(outbox) = self.get(sid) {
            let base = meter.written();
            *crate::locks::lock(&outbox.websocket) = Some((meter, base));
        }
    }

    /// Where a long-polling response to `sid` counts what it sends.
    pub fn polled(&self, sid: &str) -> Option<Arc<Meter>> {
        self.get(sid).map(|outbox| outbox.polled.clone())
    }

    /// Wait for one of `sid`'s request slots; `None` once it is gone.
    pub async fn slot(&self, sid: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = self.get(sid)?.slots.clone();
        slots.acquire_owned().await.ok()
    }

    /// Whether `bytes` more may be queued for `sid`; if so they are counted.
    /// Err carries what the socket left unread.
    pub fn admit(&self, sid: &str, bytes: usize) -> Result<(), u64> {
        let Some(outbox) = self.get(sid) else { return Ok(()) };
        let taken = outbox.taken();
        let mut balance = crate::locks::lock(&outbox.balance);
        balance.unread = balance.unread.saturating_sub(taken.saturating_sub(balance.taken));
        balance.taken = taken;
        if balance.unread > SETTLED && balance.unread + bytes as u64 > UNREAD_LIMIT {
            return Err(balance.unread);
        }
        balance.unread += bytes as u64;
        Ok(())
    }
}
