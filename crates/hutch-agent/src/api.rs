//! The agent's HTTP routes. Each parses its request and delegates.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use hutch_api::{CommandRequest, CommandResult};
use serde::de::DeserializeOwned;

use crate::error::AgentError;
use crate::{Agent, commands};

/// Largest request body: a command with its largest `stdin`, JSON-escaped, fits.
const REQUEST_BODY_MAX_BYTES: usize =
    6 * hutch_api::limits::COMMAND_STDIN_MAX_BYTES + 2 * hutch_api::limits::COMMAND_MAX_BYTES;

/// The agent's routes.
pub(crate) fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/commands", post(run_command))
        // Body reads its own bounded way (see Body).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .fallback(not_found)
        .with_state(agent)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = hutch_api::ErrorBody::new(
        hutch_api::ErrorCode::NotFound,
        "no such route in the session API",
    );
    (axum::http::StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn run_command(
    State(agent): State<Arc<Agent>>,
    Body(req): Body<CommandRequest>,
) -> Result<Json<CommandResult>, AgentError> {
    commands::run(&agent, req).await.map(Json)
}

/// Past the size limit, how much of a body is still read (and thrown away) so that the
/// client, which may still be sending, reliably receives the 413 instead of a broken pipe.
const DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A JSON body (any content type) whose rejections answer in the error envelope.
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AgentError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        use http_body_util::BodyExt;
        let mut body = req.into_body();
        let mut bytes = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| AgentError::Invalid {
                message: format!("reading the request body: {e}"),
                field: None,
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len();
            if seen <= REQUEST_BODY_MAX_BYTES {
                bytes.extend_from_slice(&data);
            } else {
                bytes = Vec::new();
                if seen > REQUEST_BODY_MAX_BYTES + DRAIN_MAX_BYTES {
                    break;
                }
            }
        }
        if seen > REQUEST_BODY_MAX_BYTES {
            return Err(AgentError::TooLarge(format!(
                "request body is larger than {REQUEST_BODY_MAX_BYTES} bytes"
            )));
        }
        let bytes = if bytes.is_empty() {
            b"{}".to_vec()
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| AgentError::Invalid {
                message: format!("invalid JSON body: {e}"),
                field: None,
            })
    }
}
