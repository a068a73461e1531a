//! The error envelope every failed request answers with, and its stable codes.
//!
//! The body is always `{"error": {"code": "...", "message": "...", "details": {...}}}`. Codes
//! are stable identifiers clients may match on; messages are for people and may change.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The response header that repeats the error code of every error response, from the control
/// plane or from a session's agent, so that it can be read without parsing the body.
pub const ERROR_CODE_HEADER: &str = "x-hutch-error-code";

/// A stable, machine-readable error code. Each maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a field is out of range (400).
    InvalidRequest,
    /// The bearer token is missing, malformed, expired or wrongly signed (401).
    Unauthorized,
    /// The token is valid but may not do this (403).
    Forbidden,
    /// No such route (404).
    NotFound,
    /// No session with this id belongs to the caller (404).
    SessionNotFound,
    /// The session has no process with this pid (404).
    ProcessNotFound,
    /// No interpreter context with this id exists in the session (404).
    ContextNotFound,
    /// The operation conflicts with the resource's current state (409).
    Conflict,
    /// The session is paused: its processes are frozen until `POST
    /// /v1/sessions/{id}/resume` (409).
    SessionPaused,
    /// The session's runtime cannot do this (pause, snapshot or usage counters of a session
    /// running as a Kubernetes pod, say); the message names what (409).
    NotSupported,
    /// The request body is larger than the server accepts (413).
    PayloadTooLarge,
    /// The request target (path and query) is longer than the server accepts (414).
    UriTooLong,
    /// The request's header fields are larger in total than the server accepts (431).
    HeadersTooLarge,
    /// Too many requests from this tenant; `Retry-After` says when to retry (429).
    RateLimited,
    /// The tenant holds as many sessions, or as much session memory, as its quota allows
    /// (429).
    QuotaExceeded,
    /// The server is at capacity and cannot start another sandbox (503).
    Capacity,
    /// The sessions store (PostgreSQL) cannot be reached or did not answer in time; nothing
    /// was changed, retry later (503).
    StoreUnavailable,
    /// The session's sandbox could not be reached or has failed (502).
    SandboxUnavailable,
    /// The session's sandbox did not answer in time: it is stopped or stuck (504).
    SandboxTimeout,
    /// The session's disk quota is exhausted (507).
    DiskFull,
    /// The session's image lacks the program a language needs (`python3`, `node`, `bash`);
    /// the message names the image and the program (422).
    LanguageUnavailable,
    /// No storage context with this id belongs to the caller (404).
    StorageContextNotFound,
    /// Moving content between a session and a storage context failed (502); the message
    /// says which context and why.
    SyncFailed,
    /// No file or directory at the given path in the session (404).
    FileNotFound,
    /// The requested byte range lies outside the file (416).
    RangeNotSatisfiable,
    /// No image of this name is stored or in its registry, and no snapshot of the caller
    /// has this name (404).
    ImageNotFound,
    /// The image could not be pulled: the registry refused, failed or could not be reached,
    /// a blob did not match its digest, or the image is not usable; `details.registryAnswer`
    /// gives the registry's answer (422).
    ImagePullFailed,
    /// The uploaded archive is not an importable image (422).
    ImageImportFailed,
    /// An unexpected fault inside hutch (500). The log has the cause.
    Internal,
    /// Nothing in the session accepts connections on the port (502).
    PortUnreachable,
    /// The preview link has expired; ask for a new one (401).
    LinkExpired,
    /// The preview link is malformed, wrongly signed, or made for another session or port
    /// (403).
    LinkInvalid,
}

impl ErrorCode {
    /// The HTTP status code this error answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized | ErrorCode::LinkExpired => 401,
            ErrorCode::Forbidden | ErrorCode::LinkInvalid => 403,
            ErrorCode::NotFound
            | ErrorCode::SessionNotFound
            | ErrorCode::StorageContextNotFound
            | ErrorCode::FileNotFound
            | ErrorCode::ProcessNotFound
            | ErrorCode::ContextNotFound => 404,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::ImageNotFound => 404,
            ErrorCode::ImagePullFailed | ErrorCode::ImageImportFailed => 422,
            ErrorCode::Conflict | ErrorCode::SessionPaused | ErrorCode::NotSupported => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UriTooLong => 414,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::RateLimited | ErrorCode::QuotaExceeded => 429,
            ErrorCode::Internal => 500,
            ErrorCode::SandboxUnavailable | ErrorCode::SyncFailed | ErrorCode::PortUnreachable => {
                502
            }
            ErrorCode::Capacity => 503,
            ErrorCode::StoreUnavailable => 503,
            ErrorCode::SandboxTimeout => 504,
            ErrorCode::DiskFull => 507,
            ErrorCode::LanguageUnavailable => 422,
        }
    }

    /// The snake_case name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::ProcessNotFound => "process_not_found",
            ErrorCode::ContextNotFound => "context_not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::SessionPaused => "session_paused",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::Capacity => "capacity",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::SandboxUnavailable => "sandbox_unavailable",
            ErrorCode::SandboxTimeout => "sandbox_timeout",
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::LanguageUnavailable => "language_unavailable",
            ErrorCode::StorageContextNotFound => "storage_context_not_found",
            ErrorCode::SyncFailed => "sync_failed",
            ErrorCode::FileNotFound => "file_not_found",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::ImageNotFound => "image_not_found",
            ErrorCode::ImagePullFailed => "image_pull_failed",
            ErrorCode::ImageImportFailed => "image_import_failed",
            ErrorCode::Internal => "internal",
            ErrorCode::PortUnreachable => "port_unreachable",
            ErrorCode::LinkExpired => "link_expired",
            ErrorCode::LinkInvalid => "link_invalid",
        }
    }
}

/// The message of a caught panic (a handler's, answered as 500 `internal`), for the log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic with no message")
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_request", "message": "ttl must be between 60 and 28800 seconds, got 5", "details": {"field": "ttl"}}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a stable code, a message for people, and optional structured details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code to match on.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Structured context, such as the offending `field`; omitted when empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ErrorBody {
    /// An error body with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                details: serde_json::Map::new(),
            },
        }
    }

    /// Adds one detail entry.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.error.details.insert(key.to_owned(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape_is_stable() {
        let body = ErrorBody::new(ErrorCode::SessionNotFound, "no session 42")
            .with_detail("sessionId", "42");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "session_not_found", "message": "no session 42", "details": {"sessionId": "42"}}})
        );
    }

    #[test]
    fn limits_and_quotas_answer_429() {
        assert_eq!(ErrorCode::RateLimited.status(), 429);
        assert_eq!(ErrorCode::QuotaExceeded.status(), 429);
        assert_eq!(
            serde_json::to_value(ErrorCode::QuotaExceeded).unwrap(),
            "quota_exceeded"
        );
    }

    #[test]
    fn as_str_matches_serde_name() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::SessionNotFound,
            ErrorCode::ProcessNotFound,
            ErrorCode::ContextNotFound,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UriTooLong,
            ErrorCode::HeadersTooLarge,
            ErrorCode::RateLimited,
            ErrorCode::QuotaExceeded,
            ErrorCode::Capacity,
            ErrorCode::StoreUnavailable,
            ErrorCode::SandboxUnavailable,
            ErrorCode::SandboxTimeout,
            ErrorCode::DiskFull,
            ErrorCode::LanguageUnavailable,
            ErrorCode::StorageContextNotFound,
            ErrorCode::SyncFailed,
            ErrorCode::FileNotFound,
            ErrorCode::RangeNotSatisfiable,
            ErrorCode::ImageNotFound,
            ErrorCode::ImagePullFailed,
            ErrorCode::ImageImportFailed,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
