//! Documented stubs of the interpreter routes, which the session's agent answers through the
//! proxy. Nothing calls these functions.

#![allow(dead_code)] // documents routes the proxy serves; never called

use hutch_api::interpreter::{Deleted, HistoryList, InterruptResult};
use hutch_api::{Context, ContextList, CreateContextRequest, ExecuteRequest, Frame};

use super::{ContextNotFound, PayloadTooLarge};

/// Creates an interpreter context: a python, javascript or bash worker with its own state.
///
/// The context's worker is started before the answer, in its own cgroup and process group, in
/// `cwd` (created if missing), with the session's environment plus `env`. A session holds at
/// most 32 contexts besides `default`. `POST /v1/sessions/{id}/process/interpreter/context`
/// is an alias.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/interpreter/contexts",
    operation_id = "createContext",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = CreateContextRequest,
    responses(
        (status = 200, description = "The context, started", body = Context),
    ),
    security(("bearer" = []))
)]
pub(crate) fn create_context() {}

/// Alias of `POST …/interpreter/contexts`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/process/interpreter/context",
    operation_id = "createContextAlias",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = CreateContextRequest,
    responses(
        (status = 200, description = "The context, started", body = Context),
    ),
    security(("bearer" = []))
)]
pub(crate) fn create_context_alias() {}

/// Lists the session's created contexts (not `default`), oldest first.
///
/// `GET /v1/sessions/{id}/process/interpreter/contexts` is an alias.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/interpreter/contexts",
    operation_id = "listContexts",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The contexts", body = ContextList),
    ),
    security(("bearer" = []))
)]
pub(crate) fn list_contexts() {}

/// Alias of `GET …/interpreter/contexts`.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/process/interpreter/contexts",
    operation_id = "listContextsAlias",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The contexts", body = ContextList),
    ),
    security(("bearer" = []))
)]
pub(crate) fn list_contexts_alias() {}

/// Gets one context (`default` included).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/interpreter/contexts/{cid}",
    operation_id = "getContext",
    tag = "interpreter",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("cid" = String, Path, description = "The context id, or `default`."),
    ),
    responses(
        (status = 200, description = "The context", body = Context),
        (status = 404, response = ContextNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn get_context() {}

/// Deletes a context and kills its worker (and an execution it runs).
///
/// `default` cannot be deleted (400). `DELETE /v1/sessions/{id}/process/interpreter/context/{cid}`
/// is an alias.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}/interpreter/contexts/{cid}",
    operation_id = "deleteContext",
    tag = "interpreter",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("cid" = String, Path, description = "The context id."),
    ),
    responses(
        (status = 200, description = "`{\"message\": \"Context deleted\"}`", body = Deleted),
        (status = 404, response = ContextNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn delete_context() {}

/// Alias of `DELETE …/interpreter/contexts/{cid}`.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}/process/interpreter/context/{cid}",
    operation_id = "deleteContextAlias",
    tag = "interpreter",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("cid" = String, Path, description = "The context id."),
    ),
    responses(
        (status = 200, description = "`{\"message\": \"Context deleted\"}`", body = Deleted),
        (status = 404, response = ContextNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn delete_context_alias() {}

/// Interrupts the context's running execution (SIGINT to its worker's process group).
///
/// The cell ends with a `KeyboardInterrupt` error frame and control `interrupted`; the
/// context's state is kept. `interrupted` is false when nothing was running.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/interpreter/contexts/{cid}/interrupt",
    operation_id = "interruptContext",
    tag = "interpreter",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("cid" = String, Path, description = "The context id, or `default`."),
    ),
    responses(
        (status = 200, description = "Whether an execution was interrupted",
            body = InterruptResult),
        (status = 404, response = ContextNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn interrupt_context() {}

/// Restarts a context: kills its worker (ending a running execution) and starts a fresh one.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/interpreter/contexts/{cid}/restart",
    operation_id = "restartContext",
    tag = "interpreter",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("cid" = String, Path, description = "The context id, or `default`."),
    ),
    responses(
        (status = 200, description = "The context, with a fresh worker", body = Context),
        (status = 404, response = ContextNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn restart_context() {}

/// The context's last executions (at most its `historySize`), newest last.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/interpreter/contexts/{cid}/history",
    operation_id = "getContextHistory",
    tag = "interpreter",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("cid" = String, Path, description = "The context id, or `default`."),
        ("limit" = Option<u32>, Query, description = "Only the last `limit` executions."),
    ),
    responses(
        (status = 200, description = "The executions", body = HistoryList),
        (status = 404, response = ContextNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn context_history() {}

/// Runs a cell over a WebSocket.
///
/// Upgrade, then send one text message, an `ExecuteRequest`. The server answers with
/// `Frame`s as text messages — `stdout`/`stderr` (with `seq`), `result`, `artifact`, `error`
/// — and always last a `control` frame stating the outcome (`completed`, `interrupted`,
/// `timeout`, `exited`, `crashed`), then closes: 1000 (completed, interrupted, exited), 4008
/// (timeout: the cell was interrupted, and its worker killed if it ignored that for 2 s),
/// 1011 (the worker crashed). An unknown context answers one `ContextError` error frame and
/// closes 1000; an invalid request one `InvalidRequest` error frame and closes 1008.
/// Executions of one context run one at a time in arrival order; a client that disconnects
/// does not stop its execution. `…/process/interpreter/execute` is an alias.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/interpreter/execute",
    operation_id = "executeWebSocket",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; first client \
            message: an `ExecuteRequest`; server messages: `Frame`s", body = Frame),
    ),
    security(("bearer" = []))
)]
pub(crate) fn execute_websocket() {}

/// Runs a cell and streams its frames as NDJSON.
///
/// The same frames as the WebSocket, one JSON object per line; the last line is the
/// `control` frame (or, for an unknown context, the single `ContextError` frame). An invalid
/// request answers 400 before anything runs. `…/process/interpreter/execute` is an alias.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/interpreter/execute",
    operation_id = "executeNdjson",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The execution's frames, one per line",
            content_type = "application/x-ndjson", body = Frame),
        (status = 413, response = PayloadTooLarge),
    ),
    security(("bearer" = []))
)]
pub(crate) fn execute_ndjson() {}

/// Alias of the execute WebSocket.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/process/interpreter/execute",
    operation_id = "executeWebSocketAlias",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol", body = Frame),
    ),
    security(("bearer" = []))
)]
pub(crate) fn execute_websocket_alias() {}

/// Alias of `POST …/interpreter/execute`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/process/interpreter/execute",
    operation_id = "executeNdjsonAlias",
    tag = "interpreter",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The execution's frames, one per line",
            content_type = "application/x-ndjson", body = Frame),
    ),
    security(("bearer" = []))
)]
pub(crate) fn execute_ndjson_alias() {}
