//! The API contract: an OpenAPI 3.1 document generated from the code, served at
//! `GET /v1/openapi.json`, and an API reference page rendered from it at `GET /docs`.
//!
//! The control plane's operations come from the `#[utoipa::path]` annotations on the handlers
//! in `api.rs` and `storage_api.rs` (and, for `GET /metrics`, whose handler lives in
//! `metrics.rs`, on the stub `metrics` below). The routes of a session's agent, which clients
//! reach through the proxy, come from the agent itself ([`hutch_agent::openapi`]), described by
//! the annotations on its own handlers; [`contract`] nests them under `/v1/sessions/{id}` and
//! adds, in one place, what the control plane does around every route: the token, the
//! responses it may answer before it relays (400, 401, 404, 409, 429, 500, 502), the request
//! id, and the rate-limit headers. So an annotation lists only the responses of its own route.
//! The schemas are the `ToSchema` wire types of [`hutch_api`], and every error response is one
//! of the shared responses of [`hutch_api::responses`], each an [`ErrorBody`].
//!
//! The document is checked in as `docs/openapi.json`. The test
//! `openapi::tests::checked_in_document_is_current` fails when the generated document differs
//! from it; `HUTCH_UPDATE_OPENAPI=1 cargo test -p hutch-server openapi` rewrites the file.
//!
//! The reference page is one self-contained HTML file with the document embedded in it: it
//! loads nothing else (its `Content-Security-Policy` forbids it), so it works offline.

use std::sync::LazyLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use hutch_api::{ErrorBody, ErrorCode};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use self::contract::{Contract, nest_agent_routes};
use crate::error::ApiError;
pub(crate) use hutch_api::responses::{
    BadRequest, Capacity, Conflict, DiskFull, HeadersTooLarge, ImageForbidden, ImageImportFailed,
    ImageNotFound, ImagePullFailed, Internal, LanguageUnavailable, LinkExpired, LinkInvalid,
    NetworkForbidden, PayloadTooLarge, PortUnreachable, RateLimited, SandboxTimeout,
    SandboxUnavailable, SessionNotFound, StorageContextNotFound, SyncFailed, Unauthorized,
    UriTooLong,
};

/// Name of the bearer-token security scheme every `/v1` operation but the document's own
/// requires (the annotations spell it as a literal; a test checks they agree).
pub const BEARER: &str = "bearer";
/// Where the reference page's template lives.
const PAGE_TEMPLATE: &str = include_str!("openapi.html");
/// The placeholder in [`PAGE_TEMPLATE`] that the document replaces.
const PAGE_PLACEHOLDER: &str = "{{OPENAPI_JSON}}";
/// What the reference page may load: nothing but its own inline script and style.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The OpenAPI 3.1 document of the public API, built from the code: the control plane's
/// routes, the agent's routes nested under `/v1/sessions/{id}`, and the control plane's layer
/// over both.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut openapi = nest_agent_routes(ApiDoc::openapi(), hutch_agent::openapi());
    Contract.modify(&mut openapi);
    openapi
}

/// The document as pretty JSON with a final newline: exactly the bytes of
/// `docs/openapi.json` and of `GET /v1/openapi.json`.
pub fn openapi_json() -> Result<String, serde_json::Error> {
    openapi().to_pretty_json().map(|mut json| {
        json.push('\n');
        json
    })
}

/// The document, rendered once.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| openapi_json().map_err(|err| err.to_string()));

/// The reference page with the document embedded, rendered once.
static PAGE: LazyLock<Result<String, String>> = LazyLock::new(|| {
    DOCUMENT
        .as_ref()
        .map(|json| render_page(json))
        .map_err(Clone::clone)
});

/// Embeds `json` in the page template. `<`, `>` and `&` only occur inside JSON strings, where
/// their `\u` escapes mean the same, so no text of the document can close the script element.
fn render_page(json: &str) -> String {
    let escaped = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    PAGE_TEMPLATE.replace(PAGE_PLACEHOLDER, &escaped)
}

/// Why a rendered document is missing, as a 500 (the cause is logged).
fn render_failed(what: &str, cause: &str) -> ApiError {
    ApiError::Internal(format!("rendering the {what}: {cause}").into())
}

/// The OpenAPI document of this API.
///
/// No token is needed. The same document is checked in as `docs/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json",
            body = inline(Object)),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn serve_json() -> Response {
    match DOCUMENT.as_ref() {
        Ok(json) => (
            [
                (CONTENT_TYPE, "application/json"),
                (CACHE_CONTROL, "no-cache"),
            ],
            json.clone(),
        )
            .into_response(),
        Err(cause) => render_failed("OpenAPI document", cause).into_response(),
    }
}

/// The API reference, an HTML page rendered from the OpenAPI document.
///
/// No token is needed. The page is self-contained and loads nothing else, so it works with no
/// network access.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "getDocs",
    tag = "meta",
    responses(
        (status = 200, description = "The API reference page", content_type = "text/html",
            body = String),
        (status = 500, response = Internal),
    )
)]
pub(crate) async fn serve_docs() -> Response {
    match PAGE.as_ref() {
        Ok(page) => (
            [
                (CONTENT_TYPE, "text/html; charset=utf-8"),
                (CONTENT_SECURITY_POLICY, PAGE_CSP),
                (CACHE_CONTROL, "no-cache"),
            ],
            page.clone(),
        )
            .into_response(),
        Err(cause) => render_failed("API reference page", cause).into_response(),
    }
}

/// The server's metrics.
///
/// Every series in the Prometheus text format. No token is needed.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "meta",
    responses(
        (status = 200, description = "The metrics, in the Prometheus text format",
            content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, response = Internal),
    )
)]
#[allow(dead_code)] // documents the route of `crate::metrics::scrape`; never called
pub(crate) fn metrics() {}

/// The body of `GET /health`, `/health/live` and `/health/ready`.
pub(crate) struct Health;

impl PartialSchema for Health {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "Whether the server has finished starting (and, for `/health/ready`, whether \
                 its sessions store answers).",
            ))
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["ok", "starting", "store_unavailable"])),
            )
            .required("status")
            .into()
    }
}

impl ToSchema for Health {}

/// The control plane's part of the document: metadata, its own paths, the shared responses of
/// its own routes, and every tag.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hutch",
        description = "hutch runs untrusted code in isolated Linux sandboxes behind this HTTP \
            API. A client creates a *session* (a sandbox with a time to live), runs commands \
            in it, and deletes it or lets it expire.\n\nEvery `/v1` route but this document \
            needs an `Authorization: Bearer <JWT>` header; the token's `sub` is the tenant, \
            and another tenant's session answers 404. Every error is an `ErrorBody`, \
            `{\"error\": {\"code\", \"message\", \"details\"}}`, whose `code` is stable and \
            maps to exactly one status.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::api::health,
        crate::api::health_live,
        crate::api::health_ready,
        crate::api::create_session,
        crate::api::list_sessions,
        crate::api::get_session,
        crate::api::update_session,
        crate::api::delete_session,
        crate::api::pause_session,
        crate::api::resume_session,
        crate::api::session_stats,
        crate::storage_api::create_context,
        crate::storage_api::list_contexts,
        crate::storage_api::get_context,
        crate::storage_api::delete_context,
        crate::storage_api::sync_context,
        crate::storage_api::context_info,
        crate::ports::routes::create_link,
        crate::ports::routes::relay_to_port,
        crate::ports::routes::open_preview_link,
        crate::images_api::list_images,
        crate::images_api::get_image,
        crate::images_api::delete_image,
        crate::images_api::pull_image,
        crate::images_api::import_image,
        crate::images_api::snapshot_session,
        crate::images_api::fork_session,
        crate::mcp::mcp,
        metrics,
        serve_json,
        serve_docs,
    ),
    components(
        schemas(ErrorBody, ErrorCode),
        responses(
            BadRequest,
            Unauthorized,
            SessionNotFound,
            NetworkForbidden,
            Conflict,
            PayloadTooLarge,
            UriTooLong,
            HeadersTooLarge,
            RateLimited,
            Internal,
            SandboxUnavailable,
            SandboxTimeout,
            Capacity,
            DiskFull,
            LanguageUnavailable,
            StorageContextNotFound,
            SyncFailed,
            PortUnreachable,
            LinkExpired,
            LinkInvalid,
            ImageNotFound,
            ImagePullFailed,
            ImageImportFailed,
            ImageForbidden,
        ),
    ),
    tags(
        (name = "sessions", description = "Sandboxes with a time to live, each owned by one \
            tenant."),
        (name = "commands", description = "Work inside a session, answered by its agent."),
        (name = "storage contexts", description = "Named persistent storage of a tenant, \
            downloaded into sessions and uploaded back from them, in atomic versions."),
        (name = "files", description = "The files of a session, answered by its agent: \
            streamed, confined to the sandbox, bounded."),
        (name = "processes", description = "Streamed and background commands, terminals and \
            code runs in a session, answered by its agent."),
        (name = "interpreter", description = "Interpreter contexts: long-lived python, \
            javascript and bash workers with their own state, answered by the session's agent."),
        (name = "ports", description = "Ports a process listens on inside a session, \
            reached from outside through the control plane (HTTP and WebSocket), and signed \
            preview links that open one port in a browser without a bearer token."),
        (name = "images", description = "OCI images pulled from registries or imported, \
            shared by every tenant, and snapshots of sessions, owned by one."),
        (name = "mcp", description = "The Model Context Protocol server over streamable \
            HTTP: the same sessions as MCP tools and resources, for agents that speak MCP."),
        (name = "meta", description = "Health, metrics, and this contract."),
    ),
)]
struct ApiDoc;

mod contract;

#[cfg(test)]
mod tests;
