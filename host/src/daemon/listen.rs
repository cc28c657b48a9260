//! The connections the daemon takes, and how long it waits for them.
//!
//! A connection costs a file and a task whether or not it ever sends a
//! request, so none may be held for free: a request's header must arrive
//! within [`HEADER_WITHIN`] (an idle keep-alive connection is closed the
//! same way), its body within [`BODY_WITHIN`], and one peer address holds
//! at most [`PER_PEER`] connections, all of them at most the host's cap.
//! A connection past a cap is closed at once, so `/health` and token
//! holders keep being served while one client opens thousands. This module
//! accepts and serves connections; what a request does is the router's.

use super::quota::{PerKey, Place};
use super::rpc::errors;
use super::socket::{Connection, Metered, MeteredListener};
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::ServiceExt as _;

/// A request's header (start line and fields) arrives within this, or its
/// connection is closed; after a response, the next request's too.
pub const HEADER_WITHIN: Duration = Duration::from_secs(30);
/// A request's body arrives whole within this (64 MiB at 1 MB/s), or the
/// request fails.
pub const BODY_WITHIN: Duration = Duration::from_secs(120);
/// Connections one peer address may hold at once (loopback clients all
/// share one address, so it is generous).
pub const PER_PEER: usize = 4096;

/// Open connections, by peer address and in all.
struct Open {
    by_peer: PerKey<IpAddr>,
    total: Arc<tokio::sync::Semaphore>,
}

/// Held by a connection while it is open: its places in both counts.
type Admitted = (Place<IpAddr>, tokio::sync::OwnedSemaphorePermit);

impl Open {
    fn new(max_open: usize) -> Self {
        Self { by_peer: PerKey::default(), total: Arc::new(tokio::sync::Semaphore::new(max_open)) }
    }

    /// A place for one more connection from `peer`, if the caps allow.
    fn admit(&self, peer: IpAddr) -> Option<Admitted> {
        let of_peer = self.by_peer.take(&peer, PER_PEER)?;
        Some((of_peer, self.total.clone().try_acquire_owned().ok()?))
    }
}

/// Serve `app` on `listener` until the process stops: at most `max_open`
/// connections at once, [`PER_PEER`] of one address.
pub async fn serve(listener: MeteredListener, app: axum::Router, max_open: usize) {
    let app = app.layer(axum::middleware::map_request(body_within));
    let open = Open::new(max_open);
    let mut listener = listener;
    loop {
        let (io, peer) = axum::serve::Listener::accept(&mut listener).await;
        let Some(admitted) = open.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: at the cap");
            continue; // dropped: closed at once
        };
        let connection = Connection { meter: io.meter(), peer };
        let service = app.clone().map_request(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(connection.clone()));
            request.map(axum::body::Body::new)
        });
        tokio::spawn(serve_one(io, service, admitted));
    }
}

async fn serve_one<S>(io: Metered, service: S, _admitted: Admitted)
where
    S: tower::Service<
            axum::extract::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // HTTP/1 only: telling HTTP/2 from HTTP/1 (hyper-util's `auto`) waits
    // for the first bytes with no deadline, so a connection that sends
    // none would be held for ever; no client of the host speaks HTTP/2
    // without TLS.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_WITHIN);
    let service = hyper_util::service::TowerToHyperService::new(service);
    let io = TokioIo::new(ShapedParseErrors { inner: io, pending: None });
    if let Err(e) = builder.serve_connection(io, service).with_upgrades().await {
        tracing::trace!("connection ended: {e}");
    }
}

/// A connection whose writes give hyper's own answers to requests it
/// cannot parse (400 for a malformed start line or field, 414 for a target
/// over 64 KiB, 431 for fields past its read buffer: an empty body, then the
/// connection closes) the documented JSON body. hyper has no hook for
/// those answers; they pass here as one write of a head saying
/// `content-length: 0`, which no answer of the router's does.
struct ShapedParseErrors<IO> {
    inner: IO,
    /// The shaped answer and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<IO: tokio::io::AsyncWrite + Unpin> ShapedParseErrors<IO> {
    /// Write what is pending of a shaped answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((answer, written)) = &mut self.pending {
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            if *written == answer.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// hyper's answer to an unparsable request with a JSON body, if `head` is one.
fn shaped(head: &[u8]) -> Option<Vec<u8>> {
    const EMPTY: &str = "\r\ncontent-length: 0\r\n";
    if head.len() >= 512 || !head.starts_with(b"HTTP/1.1 4") {
        return None; // every other write, checked in constant time
    }
    let head = std::str::from_utf8(head).ok().filter(|h| h.ends_with("\r\n\r\n"))?;
    let message = match head.strip_prefix("HTTP/1.1 ")?.get(..3)? {
        "400" => "the request is not valid HTTP/1.1 (its start line or a header field is malformed)",
        "414" => "the request's target (path and query) is longer than 64 KiB",
        "431" => "the request's header fields are too large (hyper reads at most about 400 KiB of them)",
        _ => return None,
    };
    if !head.contains(EMPTY) {
        return None;
    }
    let body = serde_json::json!({ "code": errors::INVALID_REQUEST, "message": message, "problems": [] }).to_string();
    let fields = format!("\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    Some((head.replacen(EMPTY, &fields, 1) + &body).into_bytes())
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ShapedParseErrors<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ShapedParseErrors<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        match shaped(buf) {
            Some(answer) => {
                self.pending = Some((answer, 0));
                // Written as far as hyper can tell; the rest on flush.
                let _ = self.drain(cx)?;
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && shaped(only).is_some()
        {
            return self.poll_write(cx, only);
        }
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Give the request's body [`BODY_WITHIN`] to arrive whole.
async fn body_within(request: axum::extract::Request) -> axum::extract::Request {
    if axum::body::HttpBody::is_end_stream(request.body()) {
        return request; // no body (most GETs, upgrades): nothing to wait for
    }
    request.map(|body| axum::body::Body::new(Deadline { body, due: Box::pin(tokio::time::sleep(BODY_WITHIN)) }))
}

/// A body that fails once its time is up.
struct Deadline {
    body: axum::body::Body,
    due: Pin<Box<tokio::time::Sleep>>,
}

impl axum::body::HttpBody for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.due.as_mut().poll(cx).is_ready() {
            let late = format!("the body did not arrive within {} s", BODY_WITHIN.as_secs());
            return Poll::Ready(Some(Err(axum::Error::new(late))));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_peer_takes_at_most_its_share_of_the_connections() {
        let open = Open::new(PER_PEER + 1);
        let (one, two) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let held: Vec<Admitted> = (0..PER_PEER).map(|_| open.admit(one).unwrap()).collect();
        assert!(open.admit(one).is_none(), "past its share");
        let other = open.admit(two).expect("another peer is admitted");
        assert!(open.admit(two).is_none(), "past the host's cap");
        drop(held);
        drop(other);
        assert!(open.admit(one).is_some(), "closed connections free their places");
    }

    /// A body whose bytes never come.
    struct Never;

    impl axum::body::HttpBody for Never {
        type Data = axum::body::Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    /// A body that stops arriving fails once its time is up.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_fails() {
        let request = body_within(axum::extract::Request::new(axum::body::Body::new(Never))).await;
        let read = axum::body::to_bytes(request.into_body(), usize::MAX).await;
        assert!(read.unwrap_err().to_string().contains("within 120 s"));
    }
}
