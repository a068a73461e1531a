//! The HTTP surface of storage contexts (see "Storage contexts" in docs/architecture.md).
//!
//! | route | handler |
//! |---|---|
//! | `POST /v1/contexts` | [`create_context`] |
//! | `GET /v1/contexts?limit&offset` | [`list_contexts`] |
//! | `GET /v1/contexts/{id}` | [`get_context`] |
//! | `DELETE /v1/contexts/{id}` | [`delete_context`] |
//! | `POST /v1/sessions/{id}/context/sync` | [`sync_context`] |
//! | `GET /v1/sessions/{id}/context/info?contextId&path&taskType` | [`context_info`] |
//!
//! Binding contexts to a session is part of `POST /v1/sessions` (`contextSyncs`); uploading
//! them back is part of `DELETE /v1/sessions/{id}` and of expiry.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use hutch_api::{
    ContextInfo, CreateStorageContextRequest, StorageContext, StorageContextList, SyncRequest,
    SyncStarted,
};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ContextId, Json, Query, SessionId};
use crate::openapi::{
    BadRequest, Conflict, DiskFull, Internal, PayloadTooLarge, RateLimited, StorageContextNotFound,
    Unauthorized,
};
use crate::validate;

/// The storage context routes (authenticated by the caller's layers).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/contexts", get(list_contexts).post(create_context))
        .route("/v1/contexts/{id}", get(get_context).delete(delete_context))
        .route("/v1/sessions/{id}/context/sync", post(sync_context))
        .route("/v1/sessions/{id}/context/info", get(context_info))
}

/// Creates a storage context.
///
/// The context starts empty, at version 0. Bind it to sessions with `contextSyncs` on
/// `POST /v1/sessions`.
#[utoipa::path(
    post,
    path = "/v1/contexts",
    operation_id = "createStorageContext",
    tag = "storage contexts",
    request_body = CreateStorageContextRequest,
    responses(
        (status = 200, description = "The context, empty", body = StorageContext),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_context(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateStorageContextRequest>,
) -> Result<Json<StorageContext>, ApiError> {
    let name = validate::storage_context(req)?;
    Ok(Json(state.sessions.storage.create(&caller, name).await?))
}

/// Lists the caller's storage contexts.
///
/// One page, oldest first; an admin token sees every tenant's.
#[utoipa::path(
    get,
    path = "/v1/contexts",
    operation_id = "listStorageContexts",
    tag = "storage contexts",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "Contexts on the page, 1 to 100; default 20."),
        ("offset" = Option<u64>, Query, maximum = 9223372036854775807_u64,
            description = "How many contexts to skip; default 0."),
    ),
    responses(
        (status = 200, description = "One page of contexts", body = StorageContextList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_contexts(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<validate::PageQuery>,
) -> Result<Json<StorageContextList>, ApiError> {
    let page = validate::page(query)?;
    Ok(Json(state.sessions.storage.list(&caller, page).await?))
}

/// Shows a storage context: its version and size.
#[utoipa::path(
    get,
    path = "/v1/contexts/{id}",
    operation_id = "getStorageContext",
    tag = "storage contexts",
    params(("id" = uuid::Uuid, Path, description = "The context id.")),
    responses(
        (status = 200, description = "The context", body = StorageContext),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = StorageContextNotFound),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_context(
    State(state): State<AppState>,
    caller: Caller,
    ContextId(id): ContextId,
) -> Result<Json<StorageContext>, ApiError> {
    Ok(Json(
        state.sessions.storage.visible(&caller, id).await?.to_api(),
    ))
}

/// Deletes a storage context and its content.
///
/// Sessions that bind it keep their files; their later uploads of it are skipped.
#[utoipa::path(
    delete,
    path = "/v1/contexts/{id}",
    operation_id = "deleteStorageContext",
    tag = "storage contexts",
    params(("id" = uuid::Uuid, Path, description = "The context id.")),
    responses(
        (status = 200, description = "The context as it was last seen", body = StorageContext),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = StorageContextNotFound),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_context(
    State(state): State<AppState>,
    caller: Caller,
    ContextId(id): ContextId,
) -> Result<Json<StorageContext>, ApiError> {
    Ok(Json(state.sessions.storage.delete(&caller, id).await?))
}

/// Starts transfers between a session and its storage contexts.
///
/// Records one task per transfer and answers at once; the tasks run in the background, one
/// after the other. Poll `GET …/context/info` until each is `Success` or `Failed`. An upload
/// makes a new version of the context atomically; one that fails leaves the previous
/// version.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/context/sync",
    operation_id = "syncContext",
    tag = "storage contexts",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body(content = SyncRequest, description = "What to transfer; may be empty (upload every bound context)."),
    responses(
        (status = 200, description = "The tasks started", body = SyncStarted),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn sync_context(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Json(req): Json<SyncRequest>,
) -> Result<Json<SyncStarted>, ApiError> {
    let target = validate::sync(req)?;
    state.disk_reserve.check("a storage transfer")?;
    Ok(Json(state.sessions.sync(&caller, id, target).await?))
}

/// Lists a session's transfers to and from storage contexts.
///
/// The most recent tasks, oldest first, optionally only those of one context, path or type.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/context/info",
    operation_id = "getContextInfo",
    tag = "storage contexts",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("contextId" = Option<uuid::Uuid>, Query, description = "Only this context's tasks."),
        ("path" = Option<String>, Query, description = "Only tasks of this path."),
        ("taskType" = Option<hutch_api::TaskType>, Query, description = "Only uploads or only downloads."),
    ),
    responses(
        (status = 200, description = "The tasks", body = ContextInfo),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn context_info(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Query(query): Query<validate::InfoQuery>,
) -> Result<Json<ContextInfo>, ApiError> {
    let filter = validate::info_filter(query)?;
    Ok(Json(
        state.sessions.context_info(&caller, id, &filter).await?,
    ))
}
