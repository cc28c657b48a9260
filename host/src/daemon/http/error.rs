//! The one shape of every HTTP error: `{code, message, problems}`, the
//! JSON-RPC code and message the Socket.IO transport would answer with,
//! and the workflow's located problems (empty when there are none); the
//! HTTP status follows from the code, in [`status_of`].

use crate::daemon::rpc::{RpcError, errors};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer of the HTTP API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// The JSON-RPC 2.0 error code (docs/protocol.md lists them).
    pub code: i32,
    pub message: String,
    /// What is wrong with a submitted workflow, located by task and field.
    pub problems: Vec<Problem>,
}

/// One problem of a workflow: where (task, field) and what.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    pub task: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl From<RpcError> for ApiError {
    fn from(error: RpcError) -> Self {
        let problems = error
            .data
            .as_ref()
            .and_then(|d| d.get("problems"))
            .cloned()
            .and_then(|p| serde_json::from_value(p).ok())
            .unwrap_or_default();
        Self { code: error.code, message: error.message, problems }
    }
}

impl ApiError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), problems: Vec::new() }
    }
}

/// The HTTP status of a JSON-RPC error code. Every code of the table is
/// named (a new one does not compile until it has its status); a number
/// outside the table is a failure of the host (500).
pub fn status_of(code: i32) -> StatusCode {
    use crate::codes::Code;
    let Some(code) = Code::of(code) else { return StatusCode::INTERNAL_SERVER_ERROR };
    match code {
        Code::ParseError | Code::InvalidRequest => StatusCode::BAD_REQUEST,
        Code::InvalidParams => StatusCode::UNPROCESSABLE_ENTITY,
        Code::MethodNotFound | Code::NotFound => StatusCode::NOT_FOUND,
        Code::Conflict => StatusCode::CONFLICT,
        Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Forbidden => StatusCode::FORBIDDEN,
        Code::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Code::Busy => StatusCode::TOO_MANY_REQUESTS,
        Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        // How tasks and provider calls end: they are in reports, results
        // and events, never a request's answer; should one become one, it
        // is the host's failure.
        Code::ServerError
        | Code::Timeout
        | Code::NoProvider
        | Code::Substitution
        | Code::PluginTrap
        | Code::Cancelled
        | Code::Skipped
        | Code::ResultTooLarge
        | Code::NotAList
        | Code::ItemsFailed
        | Code::ConditionFalse
        | Code::ConditionFailed
        | Code::WorkflowLimit
        | Code::LlmUnavailable
        | Code::LlmModelNotFound
        | Code::LlmRejected
        | Code::LlmMalformed
        | Code::LlmDenied
        | Code::LlmUnauthorized
        | Code::LlmRateLimited
        | Code::McpToolError
        | Code::McpUnavailable
        | Code::McpServerError
        | Code::McpMalformed
        | Code::McpDenied => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.code);
        let mut response = (status, axum::Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Give an error answer that is not an [`ApiError`] (an extractor's
/// refusal of a path or query it cannot decode, in plain text) the one
/// shape, with its status and text kept.
pub async fn in_one_shape(response: Response) -> Response {
    let json = response.headers().get(axum::http::header::CONTENT_TYPE).is_some_and(|v| v == "application/json");
    let status = response.status();
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), MAX_TEXT_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let code = match status {
        StatusCode::BAD_REQUEST => errors::INVALID_REQUEST,
        StatusCode::NOT_FOUND => errors::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED => errors::METHOD_NOT_FOUND,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::URI_TOO_LONG => errors::TOO_LARGE,
        StatusCode::UNPROCESSABLE_ENTITY => errors::INVALID_PARAMS,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => errors::UNSUPPORTED_MEDIA_TYPE,
        _ => errors::INTERNAL_ERROR,
    };
    let message: String = message.chars().take(MAX_TEXT_CHARS).collect();
    (status, axum::Json(ApiError::new(code, message))).into_response()
}

/// The most of a plain-text error answer read to reshape it, and passed on.
const MAX_TEXT_BYTES: usize = 4096;
const MAX_TEXT_CHARS: usize = 300;

/// What an answer is: JSON on success, [`ApiError`] otherwise.
pub type ApiResult<T> = Result<axum::Json<T>, ApiError>;
