//! The one error type every handler returns, and how it becomes the JSON error envelope.
//!
//! [`ApiError`] is the only place that chooses a status code: each variant maps to one
//! [`hutch_api::ErrorCode`], whose status the response carries, and the body is always the
//! [`hutch_api::ErrorBody`] envelope. Client errors (4xx) are not logged; server faults (5xx)
//! are logged here, once, with their cause, while the client sees only a generic message.

use std::error::Error as StdError;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hutch_api::{ErrorBody, ErrorCode};
use hutch_sandbox::SandboxError;
use uuid::Uuid;

use crate::sessions::SessionError;

/// A boxed cause of a server fault, kept for the log.
pub(crate) type Cause = Box<dyn StdError + Send + Sync>;

/// Why a request failed, as the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is out of range (400).
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, naming the field.
        message: String,
        /// The offending field (`ttl`, `resources.cpus`, `sessionId`), when there is one.
        field: Option<String>,
    },
    /// The bearer token is missing, malformed, expired or wrongly signed (401).
    #[error("{0}")]
    Unauthorized(String),
    /// No such route (404).
    #[error("no route for {method} {path}")]
    NotFound {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// No session with this id belongs to the caller (404).
    #[error("no session {0}")]
    SessionNotFound(Uuid),
    /// The server's operator or the token does not allow what the request asks for (403).
    #[error("{0}")]
    Forbidden(String),
    /// The operation conflicts with the session's current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The session is paused (409).
    #[error("{0}")]
    SessionPaused(String),
    /// The session's runtime cannot do this (409).
    #[error("{0}")]
    NotSupported(String),
    /// The request body is larger than the control plane accepts (413).
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request target is longer than the control plane accepts (414).
    #[error("the request target is longer than {limit} bytes")]
    UriTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request's header fields are larger in total than the control plane accepts (431).
    #[error("the request's header fields add up to more than {limit} bytes")]
    HeadersTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The tenant sent more requests of one class than its rate limit allows (429). The rate
    /// limiter adds `Retry-After` and the rate-limit headers to the response.
    #[error("too many {class} requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// The class of routes: `lifecycle` or `session`.
        class: &'static str,
        /// Seconds until a request of this class is allowed again.
        retry_after_secs: u64,
    },
    /// A per-tenant quota keeps the session, storage context or snapshot from being made (429).
    #[error("{message}")]
    QuotaExceeded {
        /// Which quota: `sessions`, `memoryMb`, `storageContexts` or `snapshots`.
        quota: &'static str,
        /// The quota.
        limit: u64,
        /// What the tenant uses now.
        used: u64,
        /// What the refused session asked for, for quotas of an amount.
        requested: Option<u64>,
        /// What happened, for people.
        message: String,
    },
    /// No storage context with this id belongs to the caller (404).
    #[error("no storage context {0}")]
    StorageContextNotFound(Uuid),
    /// Moving content between a session and a storage context failed (502); the message says
    /// which context, which path and why.
    #[error("{message}")]
    SyncFailed {
        /// The context.
        context: Uuid,
        /// The path in the session.
        path: String,
        /// What happened, for people.
        message: String,
    },
    /// The session's disk is full (507).
    #[error("{0}")]
    DiskFull(String),
    /// No room for another sandbox (503).
    #[error("{0}")]
    Capacity(String),
    /// The session's sandbox could not be reached (502).
    #[error("the sandbox of session {id} cannot be reached")]
    SandboxUnavailable {
        /// The session id.
        id: Uuid,
        /// Why it could not be reached (logged, not sent).
        #[source]
        source: Cause,
    },
    /// The session's sandbox took the request but did not start answering in time (504).
    #[error(
        "the sandbox of session {id} did not answer within {} s (it is stopped or stuck)",
        waited.as_secs_f64()
    )]
    SandboxTimeout {
        /// The session id.
        id: Uuid,
        /// How long it was given.
        waited: std::time::Duration,
    },
    /// No image of this name, here, in its registry or among the caller's snapshots (404).
    #[error("{message}")]
    ImageNotFound {
        /// The image's name.
        image: String,
        /// What happened, for people.
        message: String,
    },
    /// The image could not be pulled (422).
    #[error("{message}")]
    ImagePullFailed {
        /// The image's name.
        image: String,
        /// The registry's answer.
        answer: String,
        /// What happened, for people.
        message: String,
    },
    /// The uploaded archive is not an importable image (422).
    #[error("{0}")]
    ImageImportFailed(String),
    /// The sessions store cannot be reached or did not answer in time (503).
    #[error("the sessions store is unavailable; retry later")]
    StoreUnavailable(#[source] crate::store::StoreError),
    /// An unexpected fault inside hutch (500); the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Cause),
    /// The app on a session's port did not answer (502).
    #[error("port {port} of session {id} did not answer: {reason}")]
    PortUnreachable {
        /// The session id.
        id: Uuid,
        /// The port.
        port: u16,
        /// What happened.
        reason: String,
    },
    /// The session has its maximum of relayed port connections open (429).
    #[error("session {id} has {limit} port connections open, its maximum; retry when one ends")]
    PortConnections {
        /// The session id.
        id: Uuid,
        /// The most connections a session has open at once.
        limit: usize,
    },
    /// The preview link has expired (401).
    #[error("{0}")]
    LinkExpired(String),
    /// The preview link is malformed, wrongly signed, or made for another session or port
    /// (403).
    #[error("{0}")]
    LinkInvalid(String),
}

impl ApiError {
    /// A 400 naming the offending field.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// The stable code this error answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::SessionNotFound(_) => ErrorCode::SessionNotFound,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::SessionPaused(_) => ErrorCode::SessionPaused,
            ApiError::NotSupported(_) => ErrorCode::NotSupported,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::UriTooLong { .. } => ErrorCode::UriTooLong,
            ApiError::HeadersTooLarge { .. } => ErrorCode::HeadersTooLarge,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            ApiError::StorageContextNotFound(_) => ErrorCode::StorageContextNotFound,
            ApiError::SyncFailed { .. } => ErrorCode::SyncFailed,
            ApiError::DiskFull(_) => ErrorCode::DiskFull,
            ApiError::Capacity(_) => ErrorCode::Capacity,
            ApiError::SandboxUnavailable { .. } => ErrorCode::SandboxUnavailable,
            ApiError::SandboxTimeout { .. } => ErrorCode::SandboxTimeout,
            ApiError::ImageNotFound { .. } => ErrorCode::ImageNotFound,
            ApiError::ImagePullFailed { .. } => ErrorCode::ImagePullFailed,
            ApiError::ImageImportFailed(_) => ErrorCode::ImageImportFailed,
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            ApiError::PortUnreachable { .. } => ErrorCode::PortUnreachable,
            ApiError::PortConnections { .. } => ErrorCode::RateLimited,
            ApiError::LinkExpired(_) => ErrorCode::LinkExpired,
            ApiError::LinkInvalid(_) => ErrorCode::LinkInvalid,
        }
    }

    /// The envelope sent to the client.
    pub fn body(&self) -> ErrorBody {
        let code = self.code();
        match self {
            ApiError::InvalidRequest {
                message,
                field: Some(field),
            } => ErrorBody::new(code, message.clone()).with_detail("field", field.as_str()),
            ApiError::SessionNotFound(id) => {
                ErrorBody::new(code, self.to_string()).with_detail("sessionId", id.to_string())
            }
            ApiError::PayloadTooLarge { limit }
            | ApiError::UriTooLong { limit }
            | ApiError::HeadersTooLarge { limit } => {
                ErrorBody::new(code, self.to_string()).with_detail("limitBytes", *limit)
            }
            ApiError::StorageContextNotFound(id) => {
                ErrorBody::new(code, self.to_string()).with_detail("contextId", id.to_string())
            }
            ApiError::SyncFailed { context, path, .. } => ErrorBody::new(code, self.to_string())
                .with_detail("contextId", context.to_string())
                .with_detail("path", path.as_str()),
            ApiError::SandboxUnavailable { id, .. } => {
                ErrorBody::new(code, self.to_string()).with_detail("sessionId", id.to_string())
            }
            ApiError::SandboxTimeout { id, waited } => ErrorBody::new(code, self.to_string())
                .with_detail("sessionId", id.to_string())
                .with_detail(
                    "waitedMs",
                    u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                ),
            ApiError::RateLimited {
                class,
                retry_after_secs,
            } => ErrorBody::new(code, self.to_string())
                .with_detail("class", *class)
                .with_detail("retryAfterSecs", *retry_after_secs),
            ApiError::QuotaExceeded {
                quota,
                limit,
                used,
                requested,
                message,
            } => {
                let body = ErrorBody::new(code, message.clone())
                    .with_detail("quota", *quota)
                    .with_detail("limit", *limit)
                    .with_detail("used", *used);
                match requested {
                    Some(requested) => body.with_detail("requested", *requested),
                    None => body,
                }
            }
            ApiError::ImageNotFound { image, message } => {
                ErrorBody::new(code, message.clone()).with_detail("image", image.as_str())
            }
            ApiError::ImagePullFailed {
                image,
                answer,
                message,
            } => ErrorBody::new(code, message.clone())
                .with_detail("image", image.as_str())
                .with_detail("registryAnswer", answer.as_str()),
            ApiError::Internal(_) => {
                ErrorBody::new(code, "internal error; the server log has the cause")
            }
            ApiError::PortUnreachable { id, port, .. } => ErrorBody::new(code, self.to_string())
                .with_detail("sessionId", id.to_string())
                .with_detail("port", *port),
            ApiError::PortConnections { id, limit } => ErrorBody::new(code, self.to_string())
                .with_detail("sessionId", id.to_string())
                .with_detail("limit", *limit),
            _ => ErrorBody::new(code, self.to_string()),
        }
    }

    /// Logs a server fault with its whole cause chain; client errors are not logged.
    fn log(&self) {
        match self {
            ApiError::Internal(source) => {
                tracing::error!(error = %chain(source.as_ref()), "request failed: internal error");
            }
            ApiError::SandboxUnavailable { id, source } => {
                tracing::error!(session = %id, error = %chain(source.as_ref()), "sandbox unavailable");
            }
            ApiError::SandboxTimeout { id, waited } => {
                tracing::warn!(session = %id, waited_ms = waited.as_millis(), "sandbox did not answer in time");
            }
            ApiError::Capacity(message) => {
                tracing::warn!(%message, "refused a session: at capacity");
            }
            ApiError::StoreUnavailable(source) => {
                tracing::warn!(error = %chain(source), "request failed: store unavailable");
            }
            _ => {}
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        if err.is_unavailable() {
            ApiError::StoreUnavailable(err)
        } else {
            ApiError::Internal(Box::new(err))
        }
    }
}

/// Formats an error and each of its sources, separated by `: `.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(source) = next {
        out.push_str(": ");
        out.push_str(&source.to_string());
        next = source.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let code = self.code();
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(hutch_api::error::ERROR_CODE_HEADER, code.as_str())],
            axum::Json(self.body()),
        )
            .into_response()
    }
}

impl From<crate::ports::link::LinkError> for ApiError {
    fn from(err: crate::ports::link::LinkError) -> Self {
        match err {
            crate::ports::link::LinkError::Expired { .. } => ApiError::LinkExpired(err.to_string()),
            crate::ports::link::LinkError::Invalid(_) => ApiError::LinkInvalid(err.to_string()),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        let message = err.to_string();
        match err {
            SessionError::NotFound(id) => ApiError::SessionNotFound(id),
            SessionError::Conflict(message) => ApiError::Conflict(message),
            SessionError::Paused(_) => ApiError::SessionPaused(message),
            SessionError::NetworkNotAllowed(message) => ApiError::Forbidden(message),
            SessionError::Capacity(limit) => ApiError::Capacity(format!(
                "the server runs its maximum of {limit} sessions; delete one or retry later"
            )),
            SessionError::TenantSessions { limit, used } => ApiError::QuotaExceeded {
                quota: "sessions",
                limit,
                used,
                requested: None,
                message,
            },
            SessionError::TenantMemory {
                limit,
                used,
                requested,
            } => ApiError::QuotaExceeded {
                quota: "memoryMb",
                limit,
                used,
                requested: Some(requested),
                message,
            },
            SessionError::Unavailable { id, source } => ApiError::SandboxUnavailable {
                id,
                source: Box::new(source),
            },
            SessionError::StorageContextNotFound(id) => ApiError::StorageContextNotFound(id),
            SessionError::SyncFailed {
                context,
                path,
                source,
                ..
            } => {
                if source.is_disk_full() {
                    ApiError::DiskFull(message)
                } else {
                    ApiError::SyncFailed {
                        context,
                        path,
                        message,
                    }
                }
            }
            SessionError::Image(err) => err.into(),
            SessionError::Sandbox(err) => err.into(),
            SessionError::Store(err) => ApiError::from(err),
        }
    }
}

impl From<hutch_api::env::InvalidEnv> for ApiError {
    fn from(err: hutch_api::env::InvalidEnv) -> Self {
        ApiError::invalid(err.field, err.message)
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(err: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match err {
            StorageError::NotFound(id) => ApiError::StorageContextNotFound(id),
            StorageError::NameTaken(_) => ApiError::Conflict(err.to_string()),
            StorageError::TooMany { limit } => ApiError::QuotaExceeded {
                quota: "storageContexts",
                limit: u64::try_from(limit).unwrap_or(u64::MAX),
                used: u64::try_from(limit).unwrap_or(u64::MAX),
                requested: None,
                message: err.to_string(),
            },
            StorageError::Store(err) => ApiError::from(err),
        }
    }
}

impl From<crate::images::ImageError> for ApiError {
    fn from(err: crate::images::ImageError) -> Self {
        use crate::images::ImageError;
        let message = err.to_string();
        match err {
            ImageError::InvalidName { .. } => ApiError::invalid("image", message),
            ImageError::NotFound { image, .. } => ApiError::ImageNotFound { image, message },
            ImageError::PullFailed { image, answer } => ApiError::ImagePullFailed {
                image,
                answer,
                message,
            },
            ImageError::RegistryNotAllowed(_) | ImageError::AdminOnly(_) => {
                ApiError::Forbidden(message)
            }
            ImageError::ImportFailed(_) => ApiError::ImageImportFailed(message),
            ImageError::TooLarge(limit) => ApiError::PayloadTooLarge {
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
            ImageError::InUse(_) | ImageError::NameTaken(_) => ApiError::Conflict(message),
            ImageError::TooManySnapshots { limit, used } => ApiError::QuotaExceeded {
                quota: "snapshots",
                limit: u64::try_from(limit).unwrap_or(u64::MAX),
                used: u64::try_from(used).unwrap_or(u64::MAX),
                requested: None,
                message,
            },
            ImageError::Store(store) => ApiError::Internal(Box::new(store)),
        }
    }
}

impl From<SandboxError> for ApiError {
    fn from(err: SandboxError) -> Self {
        match err {
            SandboxError::InvalidSpec(message) => ApiError::InvalidRequest {
                message,
                field: None,
            },
            SandboxError::Capacity(message) => ApiError::Capacity(message),
            SandboxError::NotSupported(message) => ApiError::NotSupported(message),
            SandboxError::Gone(id) => ApiError::SessionNotFound(id),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_code() {
        let err = ApiError::invalid("ttl", "ttl must be at least 60");
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[hutch_api::error::ERROR_CODE_HEADER],
            "invalid_request"
        );
    }

    #[test]
    fn oversized_heads_name_their_limit() {
        let err = ApiError::HeadersTooLarge { limit: 16384 };
        assert_eq!(err.code().status(), 431);
        assert_eq!(err.body().error.details["limitBytes"], 16384);
        assert_eq!(ApiError::UriTooLong { limit: 8192 }.code().status(), 414);
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal("disk on fire".into());
        let body = err.body();
        assert_eq!(body.error.code, ErrorCode::Internal);
        assert!(!body.error.message.contains("disk"));
    }

    #[test]
    fn image_errors_map_to_codes_with_the_registry_answer() {
        use crate::images::ImageError;
        let failed = ApiError::from(ImageError::PullFailed {
            image: "localhost:5000/tool:1.2".into(),
            answer: "connection refused".into(),
        });
        assert_eq!(failed.code(), ErrorCode::ImagePullFailed);
        assert_eq!(
            failed.body().error.details["registryAnswer"],
            "connection refused"
        );
        let missing = ApiError::from(ImageError::NotFound {
            image: "docker.io/library/nope:latest".into(),
            answer: Some("manifest unknown".into()),
        });
        assert_eq!(missing.code().status(), 404);
        assert_eq!(
            missing.body().error.details["image"],
            "docker.io/library/nope:latest"
        );
        assert_eq!(
            ApiError::from(ImageError::RegistryNotAllowed("quay.io".into())).code(),
            ErrorCode::Forbidden
        );
        assert_eq!(
            ApiError::from(ImageError::InUse("x".into())).code(),
            ErrorCode::Conflict
        );
    }

    #[test]
    fn sandbox_errors_map_to_codes() {
        let id = Uuid::nil();
        assert_eq!(
            ApiError::from(SandboxError::InvalidSpec("no image x".into())).code(),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            ApiError::from(SandboxError::Capacity("full".into())).code(),
            ErrorCode::Capacity
        );
        let refused = ApiError::from(SandboxError::NotSupported("cannot snapshot".into()));
        assert_eq!(
            (refused.code(), refused.code().status()),
            (ErrorCode::NotSupported, 409)
        );
        assert_eq!(
            ApiError::from(SandboxError::Gone(id)).code(),
            ErrorCode::SessionNotFound
        );
        assert_eq!(
            ApiError::from(SandboxError::Start {
                id,
                reason: "boom".into()
            })
            .code(),
            ErrorCode::Internal
        );
    }
}
