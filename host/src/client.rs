//! A Socket.IO v5 client (Engine.IO v4 over WebSocket), for the CLI and
//! Rust providers.
//!
//! Written here because `rust_socketio` 0.6 cannot answer acks the server
//! asks for and draws ack ids at random from 0..999 (colliding under load).
//! This one numbers acks sequentially, answers server acks, handles Engine.IO
//! pings, and delivers events in order. Only the default namespace and JSON
//! payloads (no binary attachments) are supported: all our protocol needs.
//!
//! It owns the connection; it knows nothing of workflows.

use crate::daemon::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES};
use crate::locks::lock;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What can go wrong talking to a host.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("'{0}' is not an http:// or ws:// URL")]
    BadUrl(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the connection to the host closed")]
    Closed,
    #[error("no answer to '{event}' within {seconds} s")]
    Timeout { event: String, seconds: u64 },
    #[error("malformed packet from the host: {0}")]
    Protocol(String),
    #[error("the host refused the connection: {0}")]
    Refused(String),
    #[error("the request is {bytes} bytes; the host reads requests of at most {max} bytes (64 MiB)", max = MAX_REQUEST_BYTES)]
    TooLarge { bytes: usize },
}

/// An event the server sent; `ack` is set when the server waits for an
/// answer (send it with [`Client::ack`]).
#[derive(Debug, Clone)]
pub struct ServerEvent {
    pub name: String,
    pub data: Value,
    pub ack: Option<u64>,
}

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A connected client. Events arrive through [`Client::next_event`].
pub struct Client {
    outgoing: mpsc::UnboundedSender<String>,
    acks: Acks,
    next_ack: AtomicU64,
    events: mpsc::UnboundedReceiver<ServerEvent>,
}

/// The message of a CONNECT_ERROR payload (`{"message": …}`), or its text.
fn refusal(payload: &str) -> String {
    let message = serde_json::from_str::<Value>(payload).ok().and_then(|v| v["message"].as_str().map(str::to_owned));
    message.unwrap_or_else(|| payload.chars().take(500).collect())
}

/// `http://host:port` (or `ws://`) to the Engine.IO WebSocket URL.
fn websocket_url(server: &str) -> Result<String, ClientError> {
    let rest = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("ws://"))
        .ok_or_else(|| ClientError::BadUrl(server.to_owned()))?;
    let host = rest.trim_end_matches('/');
    Ok(format!("ws://{host}/socket.io/?EIO=4&transport=websocket"))
}

/// Whether `server` (`http://host:port`) names this machine's loopback
/// interface: only there may the local token be shown unasked.
pub fn is_loopback_url(server: &str) -> bool {
    let rest = server.strip_prefix("http://").or_else(|| server.strip_prefix("ws://")).unwrap_or_default();
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Client {
    /// Connect and join the default namespace, showing `token` (see
    /// `auth`) when there is one.
    pub async fn connect(server: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let url = websocket_url(server)?;
        let failed = |reason: String| ClientError::Connect { url: server.to_owned(), reason };
        // The host's answers may be as large as it sends (plus framing).
        let limit = MAX_REPLY_BYTES + 1024;
        let config = WebSocketConfig::default().max_message_size(Some(limit)).max_frame_size(Some(limit));
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        // Engine.IO "open", then our Socket.IO CONNECT and the server's answer.
        let open = next_text(&mut stream).await.ok_or(ClientError::Closed)?;
        if !open.starts_with('0') {
            return Err(ClientError::Protocol(format!("expected the open packet, got {open:.60}")));
        }
        let connect = match token {
            Some(token) => format!("40{}", serde_json::json!({ "token": token })),
            None => "40".to_owned(),
        };
        sink.send(Message::text(connect)).await.map_err(|e| failed(e.to_string()))?;
        loop {
            let packet = next_text(&mut stream).await.ok_or(ClientError::Closed)?;
            match packet.as_bytes().get(..2) {
                Some(b"40") => break,
                Some(b"44") => return Err(ClientError::Refused(refusal(&packet[2..]))),
                _ if packet == "2" => sink.send(Message::text("3")).await.map_err(|e| failed(e.to_string()))?,
                _ => {}
            }
        }
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<String>();
        let (deliver, events) = mpsc::unbounded_channel();
        let acks: Acks = Arc::default();
        let pong = outgoing.clone();
        tokio::spawn(async move {
            while let Some(text) = to_send.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let pending = acks.clone();
        tokio::spawn(async move {
            while let Some(packet) = next_text(&mut stream).await {
                if !route(&packet, &pong, &pending, &deliver) {
                    break;
                }
            }
            // Closed: waiting calls fail with `Closed`.
            lock(&pending).clear();
        });
        Ok(Self { outgoing, acks, next_ack: AtomicU64::new(1), events })
    }

    fn send(&self, packet: String) -> Result<(), ClientError> {
        if packet.len() > MAX_REQUEST_BYTES {
            return Err(ClientError::TooLarge { bytes: packet.len() });
        }
        self.outgoing.send(packet).map_err(|_| ClientError::Closed)
    }

    /// Emit an event without waiting for an answer.
    pub fn emit(&self, event: &str, data: &Value) -> Result<(), ClientError> {
        self.send(format!("42{}", Value::Array(vec![Value::from(event), data.clone()])))
    }

    /// Emit an event and wait for its ack; returns the ack's first argument.
    pub async fn call(&self, event: &str, data: &Value, timeout: Duration) -> Result<Value, ClientError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        lock(&self.acks).insert(id, answer);
        self.send(format!("42{id}{}", Value::Array(vec![Value::from(event), data.clone()])))?;
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.acks).remove(&id);
                Err(ClientError::Timeout { event: event.to_owned(), seconds: timeout.as_secs() })
            }
        }
    }

    /// Answer an event the server sent with an ack id.
    pub fn ack(&self, id: u64, data: &Value) -> Result<(), ClientError> {
        self.send(format!("43{id}{}", Value::Array(vec![data.clone()])))
    }

    /// The next event from the server; `None` once the connection closed.
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        self.events.recv().await
    }

    /// Close the connection.
    pub fn disconnect(&self) {
        let _ = self.send("41".into());
    }
}

async fn next_text<S>(stream: &mut S) -> Option<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(message) = stream.next().await {
        match message.ok()? {
            Message::Text(text) => return Some(text.to_string()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

/// Decode one text frame from a host as a connected client does, and drop
/// the outcome (for the fuzzer: any text must be read or refused, never
/// panic).
pub fn decode(frame: &str) {
    let (out, _) = mpsc::unbounded_channel();
    let (events, _) = mpsc::unbounded_channel();
    route(frame, &out, &Acks::default(), &events);
}

/// Handle one Engine.IO packet; false when the connection should end.
fn route(
    packet: &str,
    out: &mpsc::UnboundedSender<String>,
    acks: &Acks,
    events: &mpsc::UnboundedSender<ServerEvent>,
) -> bool {
    let mut chars = packet.chars();
    match chars.next() {
        Some('2') => out.send("3".into()).is_ok(), // ping -> pong
        Some('1') => false,                        // close
        Some('4') => match parse_message(chars.as_str()) {
            Ok(Incoming::Event(event)) => {
                let _ = events.send(event);
                true
            }
            Ok(Incoming::Ack(id, args)) => {
                if let Some(waiter) = lock(acks).remove(&id) {
                    let _ = waiter.send(args.into_iter().next().unwrap_or(Value::Null));
                }
                true
            }
            Ok(Incoming::Disconnect) => false,
            Ok(Incoming::Other) => true,
            Err(e) => {
                tracing::warn!("{e}");
                true
            }
        },
        _ => true,
    }
}

enum Incoming {
    Event(ServerEvent),
    Ack(u64, Vec<Value>),
    Disconnect,
    Other,
}

/// Parse a Socket.IO packet: type digit, optional namespace, optional ack id,
/// JSON payload.
fn parse_message(packet: &str) -> Result<Incoming, ClientError> {
    let bad = || ClientError::Protocol(format!("{packet:.80}"));
    // By character, not byte: the host's text may start with anything.
    let mut chars = packet.chars();
    let kind = chars.next().ok_or_else(bad)?;
    let mut rest = chars.as_str();
    if rest.starts_with('/') {
        rest = rest.split_once(',').map_or("", |(_, r)| r);
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse::<u64>().ok();
    let payload = &rest[digits..];
    match kind {
        '1' => Ok(Incoming::Disconnect),
        '2' => {
            let Ok(Value::Array(mut args)) = serde_json::from_str(payload) else { return Err(bad()) };
            if args.is_empty() {
                return Err(bad());
            }
            let Value::String(name) = args.remove(0) else { return Err(bad()) };
            let data = args.into_iter().next().unwrap_or(Value::Null);
            Ok(Incoming::Event(ServerEvent { name, data, ack: id }))
        }
        '3' => {
            let Ok(Value::Array(args)) = serde_json::from_str(payload) else { return Err(bad()) };
            Ok(Incoming::Ack(id.ok_or_else(bad)?, args))
        }
        _ => Ok(Incoming::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_events_acks_and_namespaces() {
        let Incoming::Event(e) = parse_message(r#"212["execute_method",{"a":1}]"#).unwrap() else { panic!() };
        assert_eq!((e.name.as_str(), e.data, e.ack), ("execute_method", json!({"a": 1}), Some(12)));
        let Incoming::Event(e) = parse_message(r#"2/admin,["x"]"#).unwrap() else { panic!() };
        assert_eq!((e.name.as_str(), e.data, e.ack), ("x", Value::Null, None));
        let Incoming::Ack(id, args) = parse_message(r#"3907[{"ok":true}]"#).unwrap() else { panic!() };
        assert_eq!((id, args), (907, vec![json!({"ok": true})]));
        assert!(parse_message("2not json").is_err());
        assert!(matches!(parse_message("1"), Ok(Incoming::Disconnect)));
        // Any text at all, multi-byte characters first included, is read or refused.
        for packet in ["é", "2é", "3é[1]", "2/é,[\"x\"]", "", "2/", "3", "29999999999999999999999[]"] {
            let _ = parse_message(packet);
        }
    }

    #[test]
    fn urls_become_engine_io_websocket_urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8000/").unwrap(),
            "ws://127.0.0.1:8000/socket.io/?EIO=4&transport=websocket"
        );
        assert!(websocket_url("ftp://x").is_err());
    }
}
