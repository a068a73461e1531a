//! Errors of the agent's API, each mapped to a stable code of the public error envelope.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hutch_api::{ErrorBody, ErrorCode};

/// Why an agent request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed or out of range; the message names the field.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// The offending field.
        field: Option<&'static str>,
    },
    /// The request body is too large.
    #[error("{message}")]
    TooLarge {
        /// What was too large, and its bound.
        message: String,
        /// The bound, in bytes (`details.limitBytes`).
        limit: usize,
    },
    /// The session already runs its maximum of commands at once.
    #[error(
        "this session already runs {limit} commands at once, its maximum; retry when one finishes"
    )]
    Busy {
        /// The most commands a session runs at once.
        limit: usize,
    },
    /// The program could not be started (not found, not executable, bad cwd).
    #[error("{0}")]
    Spawn(#[from] hutch_sandbox::process::SpawnError),
    /// The image has no program for the language asked for.
    #[error("image {image} has no {program}")]
    LanguageUnavailable {
        /// The image's name.
        image: String,
        /// The missing program.
        program: String,
    },
    /// No interpreter context with this id.
    #[error("context not found: {0}")]
    ContextNotFound(String),
    /// The request conflicts with the state of the session (such as a limit reached).
    #[error("{0}")]
    Conflict(String),
    /// The agent's own runtime failed (socket, signals, threads).
    #[error("agent runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A file operation failed; the message names the path (or archive entry, or uploaded
    /// file) it failed on.
    #[error("{message}")]
    File {
        /// The code it answers with.
        code: ErrorCode,
        /// What failed, naming the path.
        message: String,
        /// The path, archive entry or uploaded file it failed on.
        path: String,
    },
    /// The session has no process with this pid.
    #[error("no process with pid {0} in this session")]
    ProcessNotFound(i32),
    /// The process has already exited.
    #[error("process {0} has already exited")]
    Exited(i32),
    /// The process's standard input is closed.
    #[error("the standard input of process {0} is closed")]
    StdinClosed(i32),
    /// The process did not read its standard input in time.
    #[error("process {0} is not reading its standard input; nothing was written or part was")]
    StdinBlocked(i32),
    /// Nothing in the session accepts connections on the port.
    #[error("nothing in this session accepts connections on port {port} ({reason})")]
    PortUnreachable {
        /// The port.
        port: u16,
        /// What connecting answered.
        reason: String,
    },
    /// An operation on the command's cgroup failed.
    #[error("command cgroup {op}: {source}")]
    Cgroup {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// A validation error naming `field`.
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AgentError::Invalid {
            message: message.into(),
            field: Some(field),
        }
    }

    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            AgentError::Spawn(hutch_sandbox::process::SpawnError::Clone(e))
                if e.raw_os_error() == Some(libc::EAGAIN) =>
            {
                ErrorCode::Conflict
            }
            AgentError::Spawn(hutch_sandbox::process::SpawnError::Clone(_)) => ErrorCode::Internal,
            AgentError::Invalid { .. } | AgentError::Spawn(_) => ErrorCode::InvalidRequest,
            AgentError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            AgentError::Busy { .. } => ErrorCode::RateLimited,
            AgentError::File { code, .. } => *code,
            AgentError::ProcessNotFound(_) => ErrorCode::ProcessNotFound,
            AgentError::Exited(_) | AgentError::StdinClosed(_) | AgentError::StdinBlocked(_) => {
                ErrorCode::Conflict
            }
            AgentError::ContextNotFound(_) => ErrorCode::ContextNotFound,
            AgentError::LanguageUnavailable { .. } => ErrorCode::LanguageUnavailable,
            AgentError::Conflict(_) => ErrorCode::Conflict,
            AgentError::PortUnreachable { .. } => ErrorCode::PortUnreachable,
            AgentError::Runtime(_) | AgentError::Cgroup { .. } => ErrorCode::Internal,
        }
    }
}

impl From<hutch_api::env::InvalidEnv> for AgentError {
    fn from(err: hutch_api::env::InvalidEnv) -> Self {
        AgentError::invalid(err.field, err.message)
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let body = self.body();
        error_response(body.error.code, body)
    }
}

impl AgentError {
    /// The error envelope this error answers with (logged when it is an internal fault).
    pub(crate) fn body(&self) -> ErrorBody {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "agent request failed");
        }
        let mut body = ErrorBody::new(code, self.to_string());
        match &self {
            AgentError::Invalid {
                field: Some(field), ..
            } => body = body.with_detail("field", *field),
            AgentError::Busy { limit } => body = body.with_detail("limit", *limit),
            AgentError::TooLarge { limit, .. } => body = body.with_detail("limitBytes", *limit),
            AgentError::LanguageUnavailable { image, program } => {
                body = body
                    .with_detail("image", image.as_str())
                    .with_detail("program", program.as_str());
            }
            AgentError::File { path, .. } => body = body.with_detail("path", path.as_str()),
            AgentError::PortUnreachable { port, .. } => body = body.with_detail("port", *port),
            AgentError::ProcessNotFound(pid)
            | AgentError::Exited(pid)
            | AgentError::StdinClosed(pid)
            | AgentError::StdinBlocked(pid) => body = body.with_detail("pid", *pid),
            _ => {}
        }
        body
    }
}

/// An error response: the envelope, the status of its code, and the code repeated in the
/// [`hutch_api::error::ERROR_CODE_HEADER`] header (the control plane counts errors by it).
pub(crate) fn error_response(code: ErrorCode, body: ErrorBody) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(hutch_api::error::ERROR_CODE_HEADER, code.as_str())],
        Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_rate_limited_with_the_limit() {
        let response = AgentError::Busy { limit: 64 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()[hutch_api::error::ERROR_CODE_HEADER],
            "rate_limited"
        );
    }

    #[test]
    fn every_error_names_its_code_in_a_header() {
        let response = AgentError::invalid("cwd", "cwd must be an absolute path").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[hutch_api::error::ERROR_CODE_HEADER],
            "invalid_request"
        );
    }
}
