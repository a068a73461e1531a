//! One API call of a tool: builds the request, sends it through the [`Backend`], reads the
//! answer within a bound, and turns an error answer into a [`CallError`] naming its stable
//! code.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RANGE};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use hutch_api::ErrorBody;
use hutch_api::limits::JSON_BODY_MAX_BYTES;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, BackendError, read_bounded};

/// Why a tool's API call failed; shown to the model as the tool's error text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The API answered with its error envelope.
    #[error("{} {code}: {message}", status.as_u16())]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The stable error code, such as `session_not_found`.
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The API answered an error without the envelope.
    #[error("unexpected answer {status}: {body}")]
    Unexpected {
        /// The HTTP status.
        status: StatusCode,
        /// The body as text (lossy).
        body: String,
    },
    /// The request could not be made or its answer read.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A request body could not be encoded or an answer decoded.
    #[error("{0}")]
    Json(String),
    /// The tool's arguments are wrong in a way the API cannot say (such as bad base64).
    #[error("{0}")]
    Argument(String),
}

/// An answer whose status was a success.
pub(crate) struct Answer {
    /// Its headers.
    pub(crate) headers: HeaderMap,
    /// Its whole body.
    pub(crate) body: Bytes,
}

/// The API as one MCP caller sees it.
#[derive(Clone)]
pub(crate) struct Api {
    backend: Arc<dyn Backend>,
    origin: Option<Parts>,
}

impl Api {
    /// Calls through `backend` as the caller of the MCP request whose head is `origin`.
    pub(crate) fn new(backend: Arc<dyn Backend>, origin: Option<Parts>) -> Self {
        Api { backend, origin }
    }

    /// Sends a JSON request (or none) and decodes the JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let body = match body {
            Some(body) => Some(
                serde_json::to_vec(body)
                    .map(Bytes::from)
                    .map_err(|e| CallError::Json(e.to_string()))?,
            ),
            None => None,
        };
        let answer = self
            .send(method, path, body, None, JSON_BODY_MAX_BYTES)
            .await?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| CallError::Json(format!("decoding the answer to {path}: {e}")))
    }

    /// Sends a request with an optional body (sent as JSON unless `range` asks for bytes of a
    /// file) and reads a success answer of at most `limit` bytes.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        range: Option<&str>,
        limit: usize,
    ) -> Result<Answer, CallError> {
        let mut builder = http::Request::builder().method(method).uri(path);
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(range) = range {
            builder = builder.header(RANGE, range);
        }
        let request = builder
            .body(body.unwrap_or_default())
            .map_err(|e| CallError::Argument(format!("cannot build a request to {path}: {e}")))?;
        self.send_request(request, limit).await
    }

    /// Sends a prepared request and reads a success answer of at most `limit` bytes.
    pub(crate) async fn send_request(
        &self,
        request: http::Request<Bytes>,
        limit: usize,
    ) -> Result<Answer, CallError> {
        let response = self.backend.send(request, self.origin.as_ref()).await?;
        let (parts, body) = response.into_parts();
        if !parts.status.is_success() {
            // An error envelope is small; a longer error body is cut, not held whole.
            let body = read_bounded(body, JSON_BODY_MAX_BYTES)
                .await
                .unwrap_or_default();
            return Err(error_from(parts.status, &body));
        }
        let body = read_bounded(body, limit).await?;
        Ok(Answer {
            headers: parts.headers,
            body,
        })
    }
}

/// The error of a non-success answer: the envelope's code and message when it is one.
fn error_from(status: StatusCode, body: &[u8]) -> CallError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(envelope) => CallError::Api {
            status,
            code: envelope.error.code.as_str().to_owned(),
            message: envelope.error.message,
        },
        Err(_) => CallError::Unexpected {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}
