//! The HTTP surface: every route, its handler, and the middleware around them.
//!
//! Handlers only parse and delegate: extractors authenticate the caller ([`Caller`]), read
//! the session id ([`SessionId`]) and the JSON body ([`Json`]); [`crate::validate`] checks
//! the values; [`Sessions`](crate::sessions::Sessions) does the work; [`ApiError`] turns any
//! failure into the error envelope.
//!
//! | route | handler |
//! |---|---|
//! | `GET /health` (no auth) | [`health`] |
//! | `POST /v1/sessions` | [`create_session`] |
//! | `GET /v1/sessions?limit&offset` | [`list_sessions`] |
//! | `GET /v1/sessions/{id}` | [`get_session`] |
//! | `PATCH /v1/sessions/{id}` | [`update_session`] |
//! | `DELETE /v1/sessions/{id}` | [`delete_session`] |
//! | any `/v1/sessions/{id}/{*rest}` | [`proxy`]: forwarded to the session's agent |
//!
//! Every response carries an `X-Request-Id` header: the client's, or a new UUID.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hutch_api::limits::JSON_BODY_MAX_BYTES;
use hutch_api::{CreateSessionRequest, Session, SessionList, UpdateSessionRequest};
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, SessionId};
use crate::validate;

/// The request id header, taken from the client or generated.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Builds the router over `state`.
pub(crate) fn app(state: AppState) -> Router {
    let sessions = Router::new()
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route(
            "/v1/sessions/{id}",
            get(get_session)
                .patch(update_session)
                .delete(delete_session),
        )
        .layer(DefaultBodyLimit::max(JSON_BODY_MAX_BYTES));
    Router::new()
        .route("/health", get(health))
        .merge(sessions)
        .route("/v1/sessions/{id}/{*rest}", any(proxy))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// `GET /health`: 200 once the server has started.
async fn health(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting"})),
        )
            .into_response()
    }
}

/// `POST /v1/sessions`.
async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateSessionRequest>,
) -> Result<Json<Session>, ApiError> {
    let new = validate::create(req)?;
    Ok(Json(state.sessions.create(&caller, new).await?))
}

/// `GET /v1/sessions?limit&offset`.
async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<SessionList>, ApiError> {
    let page = validate::page(query.as_deref())?;
    Ok(Json(state.sessions.list(&caller, page).await?))
}

/// `GET /v1/sessions/{id}`.
async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.sessions.get(&caller, id).await?))
}

/// `PATCH /v1/sessions/{id}`.
async fn update_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Json(req): Json<UpdateSessionRequest>,
) -> Result<Json<Session>, ApiError> {
    let changes = validate::update(req)?;
    Ok(Json(state.sessions.update(&caller, id, changes).await?))
}

/// `DELETE /v1/sessions/{id}`.
async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.sessions.delete(&caller, id).await?))
}

/// Any method on `/v1/sessions/{id}/{*rest}`: relayed to the session's agent.
async fn proxy(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    req: Request,
) -> Result<Response, ApiError> {
    let stream = state.sessions.connect(&caller, id).await?;
    crate::proxy::forward(id, stream, req).await
}

/// Unknown routes and methods.
async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Takes or makes the request id, runs the request in a span carrying it, and echoes it.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        });
    req.headers_mut().insert(REQUEST_ID, id.clone());
    let span = tracing::info_span!(
        "request",
        id = id.to_str().unwrap_or("?"),
        method = %req.method(),
        path = req.uri().path(),
    );
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    response.headers_mut().insert(REQUEST_ID, id);
    response
}
