//! The JSON-RPC 2.0 error codes of Gleitzeit: the one table, shared by the
//! host, this SDK and the bundled plugins.
//!
//! The host compiles this very file (`host/src/codes.rs` names it by path),
//! so a code means the same on both sides of the WIT and on the wire. It
//! depends on nothing, so the SDK stays self-contained when it is packaged
//! or copied into a new plugin project.
//!
//! Ranges: -32700 to -32600 are JSON-RPC's own; -32000 to -32009 and -32040
//! to -32049 are how tasks end; -32010 to -32019 are the host's answers to
//! requests; -32020 to -32029 the bundled LLM bridges' (Ollama, OpenAI-compatible) and -32030 to
//! -32039 the bundled MCP bridge's. A plugin of your own may use the rest of
//! -32000 to -32099 (JSON-RPC's server-defined range).

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident / $variant:ident = $value:literal; )*) => {
        /// Every code in the table. Code that decides what a code means
        /// (the host's HTTP status of each) matches on this exhaustively,
        /// so a new code cannot pass unnoticed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant = $value, )*
        }

        $( $(#[$doc])* pub const $name: i32 = $value; )*

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The number on the wire.
            pub const fn value(self) -> i32 {
                self as i32
            }

            /// The code of a number, if the table has it.
            pub const fn of(value: i32) -> Option<Code> {
                match value {
                    $( $value => Some(Code::$variant), )*
                    _ => None,
                }
            }

            /// Its name in this table (`INVALID_PARAMS`).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Code::$variant => stringify!($name), )*
                }
            }
        }
    };
}

codes! {
    // JSON-RPC 2.0's own.
    /// The request is not JSON (or YAML) at all.
    PARSE_ERROR / ParseError = -32700;
    /// The request is not one the host can read (a malformed request).
    INVALID_REQUEST / InvalidRequest = -32600;
    /// No such method (or event, or route).
    METHOD_NOT_FOUND / MethodNotFound = -32601;
    /// The params do not fit the method.
    INVALID_PARAMS / InvalidParams = -32602;
    /// Something failed inside the host or the provider.
    INTERNAL_ERROR / InternalError = -32603;

    // How a task ends (in reports, results and events).
    /// A provider-defined or transient failure; the start of the range for
    /// provider-defined errors (-32000 to -32099).
    SERVER_ERROR / ServerError = -32000;
    /// The attempt ran past its timeout.
    TIMEOUT / Timeout = -32001;
    /// No provider serves the task's protocol.
    NO_PROVIDER / NoProvider = -32002;
    /// A `${…}` reference could not be resolved at run time.
    SUBSTITUTION / Substitution = -32003;
    /// The plugin trapped (panic, out of memory, ...).
    PLUGIN_TRAP / PluginTrap = -32004;
    /// The task was cancelled (workflow timeout or cancellation).
    CANCELLED / Cancelled = -32005;
    /// The task did not run because a dependency failed.
    SKIPPED / Skipped = -32006;
    /// The provider's result is larger than the host accepts.
    RESULT_TOO_LARGE / ResultTooLarge = -32007;
    /// A `for_each` did not give a list of items (or gave too many).
    NOT_A_LIST / NotAList = -32008;
    /// Items of a `for_each` task failed (and it does not allow failures).
    ITEMS_FAILED / ItemsFailed = -32009;

    // The host's answers to requests (both transports; HTTP adds a status).
    /// The host is shutting down and takes no new work.
    SHUTTING_DOWN / ShuttingDown = -32010;
    /// No such workflow, schedule or other thing (or not the caller's).
    NOT_FOUND / NotFound = -32011;
    /// The id is taken.
    CONFLICT / Conflict = -32012;
    /// The request, or what it would make, is larger than the host allows.
    TOO_LARGE / TooLarge = -32013;
    /// No token, or one the host does not know.
    UNAUTHENTICATED / Unauthenticated = -32014;
    /// The token's role does not allow this (or the origin is not allowed).
    FORBIDDEN / Forbidden = -32015;
    /// The body's media type is not one the host reads.
    UNSUPPORTED_MEDIA_TYPE / UnsupportedMediaType = -32016;
    /// A quota or capacity is used up; try again later.
    BUSY / Busy = -32017;

    // The bundled LLM bridges (`llm/v1`: Ollama, OpenAI-compatible APIs).
    /// Ollama cannot be reached, or answered 5xx: a retry may help.
    LLM_UNAVAILABLE / LlmUnavailable = -32020;
    /// Ollama does not have the model.
    LLM_MODEL_NOT_FOUND / LlmModelNotFound = -32021;
    /// Ollama refused the request (4xx).
    LLM_REJECTED / LlmRejected = -32022;
    /// Ollama's answer is not what its API describes.
    LLM_MALFORMED / LlmMalformed = -32023;
    /// The host refused the request (a host that is not granted).
    LLM_DENIED / LlmDenied = -32024;
    /// The backend refused the credentials the host added (401, 403): the
    /// secret is wrong or missing.
    LLM_UNAUTHORIZED / LlmUnauthorized = -32025;
    /// The backend's rate limit (429): retried after its `Retry-After`.
    LLM_RATE_LIMITED / LlmRateLimited = -32026;

    // The bundled MCP bridge (`mcp/v1`).
    /// The tool ran and reported an error (`isError`).
    MCP_TOOL_ERROR / McpToolError = -32030;
    /// The server cannot be reached or answered 5xx: a retry may help.
    MCP_UNAVAILABLE / McpUnavailable = -32031;
    /// The server answered the request with a JSON-RPC error.
    MCP_SERVER_ERROR / McpServerError = -32032;
    /// The server's answer is not what MCP describes.
    MCP_MALFORMED / McpMalformed = -32033;
    /// The host refused the request (a host that is not granted).
    MCP_DENIED / McpDenied = -32034;

    // How a task ends, continued.
    /// Skipped because its `when` was false (or a dependency's was): not a
    /// failure.
    CONDITION_FALSE / ConditionFalse = -32040;
    /// Its `when` could not be evaluated (not true or false, a type error,
    /// past its budget).
    CONDITION_FAILED / ConditionFailed = -32041;
    /// The workflow went past one of its limits (tasks, bytes held, or a
    /// record the store refused): the task fails and the workflow ends.
    WORKFLOW_LIMIT / WorkflowLimit = -32042;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_no_number_is_used_twice() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(Code::of(code.value()), Some(*code), "{}", code.name());
            assert!(Code::ALL[..i].iter().all(|c| c.value() != code.value()), "{} twice", code.name());
            assert!((-32768..=-32000).contains(&code.value()), "{} is outside JSON-RPC's range", code.name());
        }
        assert_eq!(Code::of(-32099), None);
    }
}
