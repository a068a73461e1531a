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
//! | `GET /health/live`, `GET /health/ready` (no auth) | [`health_live`], [`health_ready`] |
//! | `POST /v1/sessions` | [`create_session`] |
//! | `GET /v1/sessions?limit&offset&status` | [`list_sessions`] |
//! | `GET /v1/sessions/{id}` | [`get_session`] |
//! | `PATCH /v1/sessions/{id}` | [`update_session`] |
//! | `DELETE /v1/sessions/{id}?upload` | [`delete_session`] |
//! | `POST /v1/sessions/{id}/pause`, `POST /v1/sessions/{id}/resume` | [`pause_session`], [`resume_session`] |
//! | `GET /v1/sessions/{id}/stats` | [`session_stats`] |
//! | `/v1/contexts…`, `/v1/sessions/{id}/context/…` | [`crate::storage_api`] |
//! | `/v1/sessions/{id}/ports/{port}/…`, `POST …/link`, `/preview/{token}/…`, preview hosts | [`crate::ports`]: relayed to a port inside the session |
//! | `/v1/images…`, `/v1/sessions/{id}/snapshot` | [`crate::images_api`] |
//! | any `/v1/sessions/{id}/{*rest}` | [`proxy`]: forwarded to the session's agent |
//! | `GET /v1/openapi.json`, `GET /docs` (no auth) | [`crate::openapi`]: the API contract |
//! | `GET /console/…` (no auth), `GET /console/login`, `POST`/`DELETE /console/session` | [`crate::console`]: the web console and its login |
//! | `GET /metrics` (no auth) | [`crate::metrics::scrape`]: Prometheus text format |
//! | `POST /v1/mcp` | [`crate::mcp`]: the MCP server, its tools calling this router |
//!
//! Each handler's `#[utoipa::path]` annotation is its entry in the OpenAPI document.
//! Every response carries an `X-Request-Id` header: the client's, or a new UUID.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hutch_api::limits::JSON_BODY_MAX_BYTES;
use hutch_api::{
    CreateSessionRequest, Session, SessionList, SessionStats, SessionStatus, UpdateSessionRequest,
};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Query, SessionId};
use crate::openapi::{
    BadRequest, Capacity, Conflict, DiskFull, ImagePullFailed, Internal, NetworkForbidden,
    PayloadTooLarge, RateLimited, SandboxUnavailable, SessionNotFound, StorageContextNotFound,
    SyncFailed, Unauthorized,
};
use crate::validate;

/// The request id header, taken from the client or generated.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Builds the router over `state`: the API, and beside it the MCP endpoint whose tools call
/// the API's router in-process.
pub(crate) fn app(state: AppState) -> Router {
    let api = api(state.clone());
    crate::mcp::routes(state.clone(), api.clone())
        // Like every API route: not on a preview host, the head bounded, a request id.
        .layer(middleware::from_fn_with_state(
            state,
            crate::ports::host::serve_preview_hosts,
        ))
        .layer(middleware::from_fn(crate::bounds::bound_request_head))
        .layer(middleware::from_fn(request_id))
        .merge(api)
}

/// The API's routes and their middleware.
fn api(state: AppState) -> Router {
    let sessions = Router::new()
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route(
            "/v1/sessions/{id}",
            get(get_session)
                .patch(update_session)
                .delete(delete_session),
        )
        .route("/v1/sessions/{id}/pause", post(pause_session))
        .route("/v1/sessions/{id}/resume", post(resume_session))
        .route("/v1/sessions/{id}/stats", get(session_stats))
        .merge(crate::storage_api::routes())
        .merge(crate::images_api::routes())
        // Authenticates and charges the tenant's lifecycle rate limit.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ratelimit::limit_lifecycle,
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_MAX_BYTES));
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(health_live))
        .route("/health/ready", get(health_ready))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/v1/openapi.json", get(crate::openapi::serve_json))
        .route("/docs", get(crate::openapi::serve_docs))
        .merge(crate::console::routes())
        .merge(sessions)
        .merge(crate::ports::routes::routes(state.clone()))
        .route(
            crate::metrics::PROXY_ROUTE,
            // Authenticates and charges the tenant's session rate limit.
            any(proxy).layer(middleware::from_fn_with_state(
                state.clone(),
                crate::ratelimit::limit_session,
            )),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        // Requests to a preview host go to the session's port, never to the API.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ports::host::serve_preview_hosts,
        ))
        // Innermost first: a handler's panic becomes a 500, then the head bounds, then metrics
        // (which see those 500s and the 414/431), then the request id.
        .layer(CatchPanicLayer::custom(answer_panic))
        .layer(middleware::from_fn(crate::bounds::bound_request_head))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        // The console's cookie becomes the bearer token (CSRF checked) and never goes further.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::console::cookie_auth,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Whether the server is up.
///
/// 200 once the server has started, 503 while it starts or stops. No token is needed.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "meta",
    responses(
        (status = 200, description = "The server serves requests",
            body = crate::openapi::Health, example = json!({"status": "ok"})),
        (status = 503, description = "The server is starting or stopping",
            body = crate::openapi::Health, example = json!({"status": "starting"})),
    )
)]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
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

/// Whether the process serves HTTP at all (a liveness probe: restart it when this fails).
///
/// Always 200 with `{"status": "ok"}` while the process answers. No token is needed.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "healthLive",
    tag = "meta",
    responses(
        (status = 200, description = "The process answers",
            body = crate::openapi::Health, example = json!({"status": "ok"})),
    )
)]
pub(crate) async fn health_live() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Whether this replica should get traffic (a readiness probe).
///
/// 200 once the server has started and its sessions store answers; 503 with
/// `{"status": "starting"}` while it starts or stops, and with
/// `{"status": "store_unavailable"}` while the store (PostgreSQL) cannot be reached (the
/// check waits at most the store's timeout). No token is needed.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "healthReady",
    tag = "meta",
    responses(
        (status = 200, description = "The server serves requests and its store answers",
            body = crate::openapi::Health, example = json!({"status": "ok"})),
        (status = 503, description = "The server is starting or stopping, or its store cannot \
            be reached", body = crate::openapi::Health,
            example = json!({"status": "store_unavailable"})),
    )
)]
pub(crate) async fn health_ready(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return health(State(state)).await;
    }
    let ping = tokio::time::timeout(crate::store::POSTGRES_TIMEOUT, state.sessions.store.ping());
    match ping.await {
        Ok(Ok(())) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %crate::error::chain(&err), "readiness: the store does not answer");
            store_unavailable()
        }
        Err(_) => {
            tracing::warn!("readiness: the store did not answer in time");
            store_unavailable()
        }
    }
}

/// The 503 of `/health/ready` while the store cannot be reached.
fn store_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "store_unavailable"})),
    )
        .into_response()
}

/// Creates a session.
///
/// Builds an isolated sandbox (taken from the warm pool when one is ready) and answers once it
/// runs. Every field is optional; an empty body takes the defaults.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    operation_id = "createSession",
    tag = "sessions",
    request_body(content = CreateSessionRequest, description = "The session to create; may be empty."),
    responses(
        (status = 200, description = "The session, `RUNNING`", body = Session,
            links(
                ("GetSession" = (operation_id = "getSession",
                    parameters(("id" = "$response.body#/sessionId")))),
                ("UpdateSession" = (operation_id = "updateSession",
                    parameters(("id" = "$response.body#/sessionId")))),
                ("RunCommand" = (operation_id = "runCommand",
                    parameters(("id" = "$response.body#/sessionId")))),
                ("DeleteSession" = (operation_id = "deleteSession",
                    parameters(("id" = "$response.body#/sessionId")))),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = NetworkForbidden),
        (status = 404, response = StorageContextNotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = ImagePullFailed),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 502, response = SyncFailed),
        (status = 503, response = Capacity),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateSessionRequest>,
) -> Result<Json<Session>, ApiError> {
    let new = validate::create(req)?;
    state.disk_reserve.check("creating a session")?;
    // The create runs apart from this request: a client that hangs up (or times out) would
    // otherwise drop it between the session's row and its sandbox, and leave a session in
    // CREATING that nothing ends. Finished without its client, the session runs until its TTL
    // like any other, in the tenant's list.
    let sessions = std::sync::Arc::clone(&state.sessions);
    let create = tokio::spawn(async move { sessions.create(&caller, new).await });
    let session = create
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))??;
    Ok(Json(session))
}

/// Lists the caller's sessions.
///
/// One page, oldest first; an admin token sees every tenant's sessions.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "listSessions",
    tag = "sessions",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "Sessions on the page, 1 to 100; default 20."),
        ("offset" = Option<u64>, Query, maximum = 9223372036854775807_u64,
            description = "How many sessions to skip; default 0."),
        ("status" = Option<SessionStatus>, Query,
            description = "Only sessions in this state; default: every state."),
    ),
    responses(
        (status = 200, description = "One page of sessions", body = SessionList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<validate::SessionListQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let (page, status) = validate::session_list(query)?;
    Ok(Json(state.sessions.list(&caller, page, status).await?))
}

/// Shows a session.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "getSession",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.sessions.get(&caller, id).await?))
}

/// Changes a session's time to live, metadata or network policy.
///
/// Each field given replaces the current value; a new `ttl` counts from now; a new `network`
/// applies to connections opened from then on.
#[utoipa::path(
    patch,
    path = "/v1/sessions/{id}",
    operation_id = "updateSession",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session id.")),
    request_body(content = UpdateSessionRequest, description = "The changes; may be empty."),
    responses(
        (status = 200, description = "The session as changed", body = Session),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = NetworkForbidden),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Json(req): Json<UpdateSessionRequest>,
) -> Result<Json<Session>, ApiError> {
    let changes = validate::update(req)?;
    Ok(Json(state.sessions.update(&caller, id, changes).await?))
}

/// Deletes a session.
///
/// First uploads each bound storage context (`contextSyncs`) whose policy says so, and
/// answers only once those uploads are durable; if one fails, the session is kept and the
/// `sync_failed` error says why (retry, or pass `upload=false` to skip the uploads). Then
/// destroys its sandbox and every process in it, and answers once they are gone.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    operation_id = "deleteSession",
    tag = "sessions",
    params(
        ("id" = Uuid, Path, description = "The session id."),
        ("upload" = Option<bool>, Query,
            description = "Upload the bound storage contexts first; default true."),
    ),
    responses(
        (status = 200, description = "The session as it was last seen", body = Session),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 502, response = SyncFailed),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Query(query): Query<validate::DeleteQuery>,
) -> Result<Json<Session>, ApiError> {
    let upload = validate::delete(query)?;
    Ok(Json(state.sessions.delete(&caller, id, upload).await?))
}

/// Pauses a session.
///
/// Freezes every process of the session with all its state (memory, open files, terminals,
/// interpreter variables): a paused session uses no CPU. Until it is resumed, its in-session
/// routes (commands, files, processes, interpreters, ports) answer 409 `session_paused` at
/// once; open WebSockets stay open and carry on after the resume. A running command's or
/// execution's timeout does not count the time paused. The time to live keeps running: a
/// paused session expires like a running one (its storage contexts are uploaded first).
/// Pausing a paused session answers it as it is.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/pause",
    operation_id = "pauseSession",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The session, `PAUSED`", body = Session),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 502, response = SandboxUnavailable),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.sessions.pause(&caller, id).await?))
}

/// Resumes a paused session.
///
/// Thaws every process of the session where it stopped. Resuming a running session answers
/// it as it is.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/resume",
    operation_id = "resumeSession",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The session, `RUNNING`", body = Session),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 502, response = SandboxUnavailable),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.sessions.resume(&caller, id).await?))
}

/// What a session's processes use now.
///
/// Memory, CPU time and tasks of every process of the session (its agent included), read
/// from the session's cgroup; a paused session answers too.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/stats",
    operation_id = "getSessionStats",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The session's usage", body = SessionStats),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn session_stats(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
) -> Result<Json<SessionStats>, ApiError> {
    Ok(Json(state.sessions.stats(&caller, id).await?))
}

/// Any method on `/v1/sessions/{id}/{*rest}`: relayed to the session's agent.
pub(crate) async fn proxy(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    req: Request,
) -> Result<Response, ApiError> {
    state.sessions.reachable(&caller, id).await?;
    if crate::metrics::is_command(req.method(), req.uri().path()) {
        state.metrics.count_execution();
    }
    let agent = crate::proxy::AgentLink {
        id,
        busy: state.sessions.busy(id),
        sessions: std::sync::Arc::clone(&state.sessions),
        runtime: state.sessions.runtime(),
        timeout: state.agent_timeout,
        idle_timeout: state.upgraded_idle_timeout,
        pool: state.sessions.agent_pool(),
        metrics: state.metrics.clone(),
    };
    match crate::proxy::forward(agent, req).await {
        // The session went away under the request (a delete, an expiry): say that, not that
        // its sandbox failed.
        Err(err @ ApiError::SandboxUnavailable { .. }) => {
            state.sessions.reachable(&caller, id).await?;
            Err(err)
        }
        answer => answer,
    }
}

/// Unknown routes and methods.
async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// A handler that panicked answers 500 `internal` in the envelope (the panic is logged as its
/// cause) instead of dropping the connection.
fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = hutch_api::error::panic_message(panic.as_ref());
    ApiError::Internal(format!("a handler panicked: {what}").into()).into_response()
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
