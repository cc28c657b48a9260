//! Write a Gleitzeit provider in a few lines.
//!
//! A provider is a WebAssembly component that serves one protocol. This crate
//! hides the WIT bindings (`wit/provider.wit`, inside this crate) behind a small typed API: build
//! a [`Provider`] that names the protocol and registers each method with a
//! params type (`serde` to read it, `schemars` to describe it), then hand its
//! constructor to [`export_provider!`].
//!
//! ```ignore
//! use gleitzeit_plugin_sdk::{export_provider, json, Context, Provider, RpcError, Value};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Hello { name: String }
//!
//! fn provider() -> Provider {
//!     Provider::new("hello/v1", "hello", env!("CARGO_PKG_VERSION"))
//!         .method("greet", "Say hello", |_ctx: &Context, p: Hello| {
//!             Ok(json!({ "greeting": format!("Hello, {}!", p.name) }))
//!         })
//! }
//! export_provider!(provider);
//! ```
//!
//! Each method's params type becomes its JSON Schema (`describe` returns it),
//! so the host checks a task's params when the workflow is validated and
//! again before each call. Params that do not deserialize into the method's
//! type become a JSON-RPC `-32602 invalid params` error (not retried); an unknown method becomes
//! `-32601 method not found`. Build with
//! `cargo build --release --target wasm32-wasip2`.

pub use schemars::JsonSchema;
use serde::de::DeserializeOwned;
pub use serde_json::{Value, json};

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "provider",
        pub_export_macro: true,
        default_bindings_module: "gleitzeit_plugin_sdk::bindings",
    });
}

use bindings::gleitzeit::provider::types as wit;

pub mod codes;
pub mod llm;

/// A JSON-RPC 2.0 error object returned by a method, plus whether the host may
/// retry the call.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    pub data: Option<Value>,
    pub retryable: bool,
}

impl RpcError {
    /// A non-retryable error with the given code.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None, retryable: false }
    }

    /// `-32602`: the params are wrong; retrying cannot help.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }

    /// `-32601`: no such method.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(codes::METHOD_NOT_FOUND, format!("method not found: '{method}'"))
    }

    /// `-32603`: an internal failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL_ERROR, message)
    }

    /// `-32000`: a transient failure the host should retry (per the task's policy).
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(codes::SERVER_ERROR, message).retryable(true)
    }

    /// Set whether a retry may help.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Attach structured detail.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// The start of `text` (at most `max` bytes, trimmed, on a character
/// boundary), quoted, with "…" if cut: for error messages that show what a
/// service answered.
pub fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { "…" } else { "" };
    format!("\"{}{more}\"", &text[..end])
}

/// Which task a call runs for.
#[derive(Debug, Clone)]
pub struct Context {
    /// The method called: tells a family handler (`tool.*`) which one.
    pub method: String,
    pub task_id: String,
    pub workflow_id: Option<String>,
    /// Starts at 1; grows with each retry.
    pub attempt: u32,
}

type Handler = Box<dyn Fn(&Context, Value) -> Result<Value, RpcError>>;

struct Method {
    name: String,
    description: String,
    /// Made only when the host asks (`describe`), not on every call.
    schema: fn() -> String,
    handler: Handler,
}

/// A provider: its protocol, identity and methods.
pub struct Provider {
    protocol: String,
    name: String,
    version: String,
    description: String,
    methods: Vec<Method>,
}

impl Provider {
    /// `protocol` is `name/version`, e.g. `echo/v1`.
    pub fn new(protocol: &str, name: &str, version: &str) -> Self {
        Self {
            protocol: protocol.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            description: String::new(),
            methods: Vec::new(),
        }
    }

    /// One line for humans.
    pub fn description(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }

    /// Register a method whose params deserialize into `P`, which also gives
    /// the method its params schema. A name ending in `.*` (say `tool.*`)
    /// serves every method with that prefix that has no handler of its own;
    /// the handler finds the name in [`Context::method`].
    pub fn method<P, F>(mut self, name: &str, description: &str, handler: F) -> Self
    where
        P: DeserializeOwned + JsonSchema,
        F: Fn(&Context, P) -> Result<Value, RpcError> + 'static,
    {
        let method = name.to_owned();
        let handler: Handler = Box::new(move |ctx, params| {
            let params = serde_json::from_value(params)
                .map_err(|e| RpcError::invalid_params(format!("method '{method}': invalid params: {e}")))?;
            handler(ctx, params)
        });
        let schema = || schemars::schema_for!(P).as_value().to_string();
        self.methods.push(Method { name: name.to_owned(), description: description.to_owned(), schema, handler });
        self
    }

    fn call(&self, ctx: &Context, method: &str, params: &str) -> Result<Value, RpcError> {
        let method = (self.methods.iter().find(|m| m.name == method))
            .or_else(|| self.methods.iter().find(|m| in_family(&m.name, method)))
            .ok_or_else(|| RpcError::method_not_found(method))?;
        let params: Value = serde_json::from_str(params)
            .map_err(|e| RpcError::invalid_params(format!("params are not valid JSON: {e}")))?;
        (method.handler)(ctx, params)
    }
}

/// Whether `method` belongs to the family `pattern` (`tool.*` holds
/// `tool.echo`, not `tool.` itself).
fn in_family(pattern: &str, method: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|prefix| prefix.ends_with('.') && method.len() > prefix.len() && method.starts_with(prefix))
}

#[doc(hidden)]
pub fn __describe(provider: &Provider) -> wit::ProviderSpec {
    wit::ProviderSpec {
        protocol: provider.protocol.clone(),
        name: provider.name.clone(),
        version: provider.version.clone(),
        description: provider.description.clone(),
        methods: provider
            .methods
            .iter()
            .map(|m| wit::MethodSpec {
                name: m.name.clone(),
                description: m.description.clone(),
                params_schema: Some((m.schema)()),
            })
            .collect(),
    }
}

#[doc(hidden)]
pub fn __execute(
    provider: &Provider,
    ctx: wit::TaskContext,
    method: String,
    params: String,
) -> Result<String, wit::RpcError> {
    let ctx =
        Context { method: method.clone(), task_id: ctx.task_id, workflow_id: ctx.workflow_id, attempt: ctx.attempt };
    provider.call(&ctx, &method, &params).map(|value| value.to_string()).map_err(|e| wit::RpcError {
        code: e.code,
        message: e.message,
        data: e.data.map(|d| d.to_string()),
        retryable: e.retryable,
    })
}

/// Export a provider from this component. Pass a function that builds the
/// [`Provider`]; it runs once per call (each task gets a fresh instance).
#[macro_export]
macro_rules! export_provider {
    ($build:path) => {
        struct __GleitzeitProvider;

        impl $crate::bindings::Guest for __GleitzeitProvider {
            fn describe() -> $crate::bindings::ProviderSpec {
                $crate::__describe(&$build())
            }

            fn execute(
                ctx: $crate::bindings::TaskContext,
                method: ::std::string::String,
                params: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, $crate::bindings::RpcError> {
                $crate::__execute(&$build(), ctx, method, params)
            }
        }

        $crate::bindings::export!(__GleitzeitProvider with_types_in $crate::bindings);
    };
}

/// The host's imports as plain functions.
pub mod host {
    use super::bindings::gleitzeit::provider::host as wit_host;
    pub use wit_host::{BodyStream, FetchError, HttpRequest, HttpResponse, HttpStreamResponse, LogLevel};

    /// Log through the host's `tracing`, tagged with this plugin's name.
    pub fn log(level: LogLevel, message: &str) {
        wit_host::log(level, message);
    }

    /// A value from this plugin's `[config]`, if set.
    pub fn config(key: &str) -> Option<String> {
        wit_host::config(key)
    }

    /// Outbound HTTP; only hosts granted to the plugin (`allowed_hosts` in
    /// its manifest) are reachable, redirects included. The error's case
    /// says what kind of failure it is ([`FetchError::Denied`]: the host
    /// is not granted; [`FetchError::Failed`]: it may pass if tried again)
    /// and its text what happened: pass that on in the task's error.
    pub fn fetch(request: &HttpRequest) -> Result<HttpResponse, FetchError> {
        wit_host::fetch(request)
    }

    /// Like [`fetch`], but returns once the headers arrive; read the body as
    /// it streams with [`lines`] or `body.read()`.
    pub fn fetch_stream(request: &HttpRequest) -> Result<HttpStreamResponse, FetchError> {
        wit_host::fetch_stream(request)
    }

    /// [`fetch`] with the error as its text only (the SDK 0.1 API).
    pub fn http_fetch(request: &HttpRequest) -> Result<HttpResponse, String> {
        fetch(request).map_err(|e| e.text().to_owned())
    }

    /// [`fetch_stream`] with the error as its text only (the SDK 0.1 API).
    pub fn http_fetch_stream(request: &HttpRequest) -> Result<HttpStreamResponse, String> {
        fetch_stream(request).map_err(|e| e.text().to_owned())
    }

    impl FetchError {
        /// What happened, in words to pass on in the task's error.
        pub fn text(&self) -> &str {
            match self {
                FetchError::Denied(text)
                | FetchError::InvalidRequest(text)
                | FetchError::TooLarge(text)
                | FetchError::Failed(text)
                | FetchError::Limited(text) => text,
            }
        }
    }

    /// A GET request for `url`.
    pub fn get(url: &str) -> HttpRequest {
        HttpRequest { method: "GET".into(), url: url.into(), headers: Vec::new(), body: None, timeout_ms: None }
    }

    /// A POST of `body` as JSON to `url`.
    pub fn post_json(url: &str, body: &super::Value) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_string().into_bytes()),
            timeout_ms: None,
        }
    }

    /// The lines of a streamed body (NDJSON, server-sent events), without
    /// their line ends, as they arrive.
    pub fn lines(body: BodyStream) -> Lines {
        Lines { body, buffer: Vec::new(), done: false }
    }

    /// See [`lines`].
    pub struct Lines {
        body: BodyStream,
        buffer: Vec<u8>,
        done: bool,
    }

    impl Iterator for Lines {
        type Item = Result<String, String>;

        fn next(&mut self) -> Option<Self::Item> {
            loop {
                if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                    let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Some(Ok(String::from_utf8_lossy(&line).into_owned()));
                }
                if self.done {
                    let rest = std::mem::take(&mut self.buffer);
                    return (!rest.is_empty()).then(|| Ok(String::from_utf8_lossy(&rest).into_owned()));
                }
                match self.body.read().map_err(|e| e.text().to_owned()) {
                    Ok(Some(piece)) => self.buffer.extend_from_slice(&piece),
                    Ok(None) => self.done = true,
                    Err(e) => {
                        self.done = true;
                        self.buffer.clear();
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Forward partial output (e.g. LLM tokens) to the task's subscribers.
    pub fn progress(chunk: &super::Value) {
        wit_host::progress(&chunk.to_string());
    }
}
