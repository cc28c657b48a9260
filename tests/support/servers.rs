//! Servers the tests talk to: the Ollama and OpenAI test servers (in this
//! process) and
//! real servers in child processes (FastMCP, server-everything), each on a
//! free loopback port and stopped when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The Ollama test server (tests/fake-ollama) on its own runtime.
pub struct FakeOllama {
    pub port: u16,
    pub stats: Arc<fake_ollama::Stats>,
    _runtime: tokio::runtime::Runtime,
}

pub fn fake_ollama(options: fake_ollama::Options) -> FakeOllama {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (router, stats) = fake_ollama::router(options);
    runtime.spawn(async move { axum::serve(listener, router).await });
    FakeOllama { port, stats, _runtime: runtime }
}

/// The OpenAI test server (tests/fake-openai) on its own runtime.
pub struct FakeOpenai {
    pub port: u16,
    pub stats: Arc<fake_openai::Stats>,
    _runtime: tokio::runtime::Runtime,
}

/// The OpenAI test server, taking API key `key`.
pub fn fake_openai(key: &str) -> FakeOpenai {
    fake_openai_with(key, fake_openai::Options::default())
}

/// The OpenAI test server with `options` (a rate limit of its own).
pub fn fake_openai_with(key: &str, options: fake_openai::Options) -> FakeOpenai {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (router, stats) = fake_openai::router_with(key, options);
    runtime.spawn(async move { axum::serve(listener, router).await });
    FakeOpenai { port, stats, _runtime: runtime }
}

/// A server process listening on `port`, killed when the test ends.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start `command` with PORT set; wait until its output says it
    /// listens.
    pub fn start(mut command: Command, ready: &str) -> Self {
        let port = free_port();
        let mut child =
            command.env("PORT", port.to_string()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines.next().unwrap_or_else(|| panic!("the server exited before saying {ready:?}")).unwrap();
            if line.contains(ready) {
                break;
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, port }
    }

    /// tests/python/fastmcp_server.py (FastMCP from PyPI), over Streamable
    /// HTTP at `/mcp`.
    pub fn fastmcp() -> Self {
        let mut command = Command::new("python3");
        command.arg(super::root().join("tests/python/fastmcp_server.py"));
        Self::start(command, "Uvicorn running")
    }

    /// [`Server::fastmcp`] that answers 401 to a request without
    /// `Authorization: Bearer TOKEN`.
    pub fn fastmcp_requiring(token: &str) -> Self {
        let mut command = Command::new("python3");
        command.arg(super::root().join("tests/python/fastmcp_server.py")).env("REQUIRE_TOKEN", token);
        Self::start(command, "Uvicorn running")
    }
}
