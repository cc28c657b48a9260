//! A plugin's stdout and stderr, turned into `tracing` lines tagged with the
//! plugin's name. The last part of stderr is kept so that a trap (a Rust
//! panic prints its message there) can be reported with its cause.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Output beyond this per stream and call is dropped (and counted).
const MAX_BYTES: usize = 1024 * 1024;
/// How much of the stream's end is kept for error messages.
const TAIL_BYTES: usize = 2048;

#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug)]
struct State {
    plugin: Arc<str>,
    stream: Stream,
    line: Vec<u8>,
    tail: Vec<u8>,
    written: usize,
}

/// One stream of one call. Clones share the same buffer.
#[derive(Debug, Clone)]
pub struct LogPipe(Arc<Mutex<State>>);

impl LogPipe {
    pub fn new(plugin: Arc<str>, stream: Stream) -> Self {
        Self(Arc::new(Mutex::new(State { plugin, stream, line: Vec::new(), tail: Vec::new(), written: 0 })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::locks::lock(&self.0)
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut s = self.state();
        s.written += bytes.len();
        if s.written - bytes.len() >= MAX_BYTES {
            return;
        }
        s.tail.extend_from_slice(bytes);
        let excess = s.tail.len().saturating_sub(TAIL_BYTES);
        s.tail.drain(..excess);
        for &b in bytes {
            if b == b'\n' {
                s.emit_line();
            } else {
                s.line.push(b);
            }
        }
    }

    /// Flush a partial last line and return the stream's last bytes as text.
    pub fn finish(&self) -> String {
        let mut s = self.state();
        if !s.line.is_empty() {
            s.emit_line();
        }
        if s.written > MAX_BYTES {
            tracing::warn!(plugin = %s.plugin, "plugin wrote {} bytes to {:?}; only the first {MAX_BYTES} were logged", s.written, s.stream);
        }
        String::from_utf8_lossy(&s.tail).trim().to_owned()
    }
}

impl State {
    fn emit_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line);
        match self.stream {
            Stream::Stdout => tracing::info!(target: "plugin", plugin = %self.plugin, "{line}"),
            Stream::Stderr => tracing::warn!(target: "plugin", plugin = %self.plugin, "{line}"),
        }
        self.line.clear();
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_caps_what_it_logs() {
        let pipe = LogPipe::new("p".into(), Stream::Stderr);
        pipe.write_bytes(b"first line\nthread 'main' panicked: boom\n");
        assert!(pipe.finish().ends_with("panicked: boom"));
        let big = vec![b'x'; MAX_BYTES + 10];
        pipe.write_bytes(&big);
        pipe.write_bytes(b"lost");
        assert!(!pipe.finish().contains("lost"));
    }
}
