//! The agent's HTTP routes. Each parses its request and delegates.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
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
        .layer(axum::extract::DefaultBodyLimit::max(REQUEST_BODY_MAX_BYTES))
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

/// A JSON body whose rejections answer in the error envelope.
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AgentError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AgentError::TooLarge(format!(
                    "request body is larger than {REQUEST_BODY_MAX_BYTES} bytes"
                )))
            }
            Err(rejection) => Err(AgentError::Invalid {
                message: rejection_message(&rejection),
                field: None,
            }),
        }
    }
}

fn rejection_message(rejection: &JsonRejection) -> String {
    format!("invalid JSON body: {}", rejection.body_text())
}
