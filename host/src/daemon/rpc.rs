//! What both transports (Socket.IO and HTTP) answer with: JSON-RPC 2.0
//! error objects and their one table of codes, and the size limits of
//! requests and answers. It knows no transport.

use serde::Serialize;
use serde_json::{Value, json};

/// JSON-RPC 2.0 codes the host answers with, on every transport (see
/// docs/protocol.md and docs/http.md): the one table's.
pub use crate::codes as errors;

impl From<&crate::auth::AuthError> for RpcError {
    fn from(error: &crate::auth::AuthError) -> Self {
        let code = if error.is_unauthenticated() { errors::UNAUTHENTICATED } else { errors::FORBIDDEN };
        RpcError::new(code, error.to_string())
    }
}

/// The largest request (one Socket.IO message, client → host) the host
/// reads, on every transport; larger ones up to [`TRANSPORT_MAX_BYTES`] are
/// answered with an error naming this limit.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// What the transports take in at most (a WebSocket message or frame, an
/// HTTP long-polling body). Above it there is no request to answer: the
/// WebSocket is closed, a polling POST gets `413`.
pub const TRANSPORT_MAX_BYTES: usize = 2 * MAX_REQUEST_BYTES;
/// The largest answer or event (host → client) the host sends; a larger
/// answer (a report with very large results, say) is replaced by an error
/// naming this limit.
pub const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

/// The length of `value` as JSON, without building the text.
pub fn encoded_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// A JSON-RPC 2.0 error object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// `-32603`: something inside the host failed.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::new(errors::INTERNAL_ERROR, error.to_string())
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The ack answer and `error` event payload: `{error: {...}, message}`;
    /// `message` repeats the text for the original's clients.
    pub fn to_reply(&self) -> Value {
        json!({ "error": self, "message": self.message })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::codes::Code;

    /// The Python and JS SDKs name some codes of the table in their own
    /// language: each such name must be the table's, with its number.
    #[test]
    fn the_other_sdks_name_the_tables_codes() {
        let sources = [
            ("python", include_str!("../../../plugin-sdk/python/gleitzeit_plugin/__init__.py"), ""),
            ("js", include_str!("../../../plugin-sdk/js/index.js"), "export const "),
        ];
        for (sdk, source, prefix) in sources {
            let mut named = 0;
            for line in source.lines() {
                let Some((name, value)) = line.strip_prefix(prefix).and_then(|l| l.split_once(" = ")) else { continue };
                let Ok(value) = value.trim_end_matches(';').parse::<i32>() else { continue };
                let code = Code::of(value).unwrap_or_else(|| panic!("{sdk}: {name} = {value} is not in the table"));
                assert_eq!(code.name(), name, "{sdk}: {value} is the table's {}", code.name());
                named += 1;
            }
            assert!(named >= 4, "{sdk}: found {named} codes");
        }
    }
}
