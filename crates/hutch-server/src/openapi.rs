//! The API contract: an OpenAPI 3.1 document generated from the code, served at
//! `GET /v1/openapi.json`, and an API reference page rendered from it at `GET /docs`.
//!
//! The operations come from the `#[utoipa::path]` annotations on the handlers in `api.rs`;
//! the schemas are the `ToSchema` wire types of [`hutch_api`]. The agent's routes reach
//! clients through the proxy's catch-all route, so the one clients use is declared here on a
//! documented stub function that nothing calls (`run_command`), as is `GET /metrics`, whose
//! handler lives in `metrics.rs` (`metrics`). Every error response is one of the shared
//! responses below, each an [`ErrorBody`]. The responses every route under
//! `/v1/sessions/{id}/` shares (400, 401, 404, 409, 429, 500, 502: what the control plane may
//! answer before it relays) are added by the `Contract` modifier, so an annotation lists only
//! the responses of its own route.
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
use hutch_api::processes::CommandResponse;
use hutch_api::{CommandRequest, ErrorBody, ErrorCode, ProcessEvent};
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Header, HeaderBuilder, Ref, RefOr, Required, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use crate::error::ApiError;

/// Name of the bearer-token security scheme every `/v1` operation but the document's own
/// requires (the annotations spell it as a literal; a test checks they agree).
pub const BEARER: &str = "bearer";
/// Name of the `X-Request-Id` parameter and header components.
const REQUEST_ID_COMPONENT: &str = "RequestId";
/// Where the reference page's template lives.
const PAGE_TEMPLATE: &str = include_str!("openapi.html");
/// The placeholder in [`PAGE_TEMPLATE`] that the document replaces.
const PAGE_PLACEHOLDER: &str = "{{OPENAPI_JSON}}";
/// What the reference page may load: nothing but its own inline script and style.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The OpenAPI 3.1 document of the public API, built from the code.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
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

/// Runs a command in the session and waits for it to finish.
///
/// Exactly one of `command` (run by `/bin/sh -c`) and `argv` must be given. The command's whole
/// process tree is killed at its timeout and when its first process exits. The session's agent
/// answers this route; the control plane checks the token and that the session is the
/// caller's and `RUNNING`, then relays the request and the answer unchanged.
///
/// With `background: true` the command starts detached and the answer is at once its
/// `StartedProcess` (`processId`, `pid`); see the `processes` routes. With `stream: true` or
/// `Accept: application/x-ndjson` the answer is a stream of `ProcessEvent`s, one JSON object
/// per line, ending with `exit`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/commands",
    operation_id = "runCommand",
    tag = "commands",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = CommandRequest,
    responses(
        (status = 200, description = "The command ran (whatever its exit status), was \
            started in the background, or streams its events",
            content(
                (CommandResponse = "application/json"),
                (ProcessEvent = "application/x-ndjson"),
            )),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn run_command() {}

// The file API. Paths are sandbox paths: absolute, or relative to `/workspace`; every one is
// resolved inside the sandbox root whatever symlinks it meets, and /proc, /sys and /dev are
// refused (403). Modes are octal strings.

/// Lists a directory.
///
/// Entries below `path` (default `/workspace`), `depth` levels down, sorted by name within
/// each directory. Symlinks are listed, not followed; other file systems below are listed,
/// not entered. At most 10000 entries; past them `truncated` is true.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/files",
    operation_id = "listFiles",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = Option<String>, Query, description = "The directory; default `/workspace`."),
        ("depth" = Option<u32>, Query, minimum = 1, maximum = 16, description = "Levels to list, 1 to 16; default 1."),
    ),
    responses(
        (status = 200, description = "The entries", body = hutch_api::FileList),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn list_files() {}

/// Describes one file.
///
/// A final symlink is described, not followed (`linkTarget` gives its target).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/files/stat",
    operation_id = "statFile",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = String, Query, description = "The file."),
    ),
    responses(
        (status = 200, description = "The file", body = hutch_api::FileInfo),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn stat_file() {}

/// Downloads a file, streamed.
///
/// A regular file only (409 for a directory: use the archive route). `Range: bytes=a-b`
/// (one range) answers 206 with `Content-Range`, or 416 outside the file.
/// `Accept-Encoding: gzip` compresses on the fly (`Content-Encoding: gzip`, no length) when no
/// range is asked for.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/files/content",
    operation_id = "downloadFile",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = String, Query, description = "The file."),
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=0-1023`, `bytes=1024-` or `bytes=-512`."),
        ("Accept-Encoding" = Option<String>, Header, description = "`gzip` to compress the whole file on the fly."),
    ),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 416, response = RangeNotSatisfiable),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn download_file() {}

/// Uploads a file: the raw body, streamed.
///
/// Written to a temporary file in the same directory and renamed over `path` once complete:
/// a failed or interrupted upload leaves nothing. The file belongs to the sandbox's root user
/// with `mode` (default `0644`). Past the server's maximum upload size (`--max-upload-mb`),
/// 413; past the session's disk quota, 507.
#[utoipa::path(
    put,
    path = "/v1/sessions/{id}/files/content",
    operation_id = "uploadFile",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = String, Query, description = "Where to write."),
        ("mode" = Option<String>, Query, description = "Permission bits, octal (at most `1777`); default `0644`."),
        ("parents" = Option<bool>, Query, description = "Create missing parent directories; default true (false: 404 when the parent is missing)."),
        ("overwrite" = Option<bool>, Query, description = "Replace an existing file; default true (false: 409 if it exists)."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written", body = hutch_api::UploadResults),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn upload_file() {}

/// Uploads several files in one `multipart/form-data` request.
///
/// Each file part is written to its `filename`, or to the value of a `path` field sent just
/// before it, relative to the `path` query (default `/workspace`); parents are created unless
/// `parents=false`. Each file is written (atomically) or fails on its own. When all are
/// written the answer lists them; when one fails the answer has that failure's status, its
/// error names the file in `details.path`, and `details.files` lists every file's result.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/files",
    operation_id = "uploadFiles",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = Option<String>, Query, description = "Directory relative names go in; default `/workspace`."),
        ("mode" = Option<String>, Query, description = "Permission bits of every file, octal; default `0644`."),
        ("parents" = Option<bool>, Query, description = "Create missing parent directories; default true."),
        ("overwrite" = Option<bool>, Query, description = "Replace existing files; default true."),
    ),
    request_body(content = inline(Object), content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Every file written", body = hutch_api::UploadResults),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn upload_files() {}

/// Deletes a file, a symlink (not its target) or a directory.
///
/// A directory that is not empty needs `recursive=true` (409 otherwise); recursion never
/// follows symlinks nor enters other file systems.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}/files",
    operation_id = "deleteFile",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = String, Query, description = "What to delete."),
        ("recursive" = Option<bool>, Query, description = "Delete a directory and everything in it; default false."),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn delete_file() {}

/// Creates a directory.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/files/mkdir",
    operation_id = "makeDirectory",
    tag = "files",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = hutch_api::MkdirRequest,
    responses(
        (status = 201, description = "Created (or, with `parents`, already there)", body = hutch_api::FileInfo),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn make_directory() {}

/// Moves (renames) a file or directory.
///
/// Within one file system of the sandbox (`/tmp` is its own; across, 409).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/files/move",
    operation_id = "moveFile",
    tag = "files",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = hutch_api::MoveRequest,
    responses(
        (status = 200, description = "Moved; the file at its new path", body = hutch_api::FileInfo),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn move_file() {}

/// Downloads a directory as a tar archive, streamed.
///
/// Files, directories (empty ones too) and symlinks (as symlinks), with modes and times;
/// special files and other file systems below are left out.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/files/archive",
    operation_id = "downloadArchive",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = String, Query, description = "The directory."),
    ),
    responses(
        (status = 200, description = "A tar stream", content_type = "application/x-tar", body = Vec<u8>),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn download_archive() {}

/// Extracts a tar archive into a directory, streamed.
///
/// The directory is created with its parents when missing. Entries keep their modes. Refused,
/// with an error naming the entry (`details.path`): absolute paths, `..`, symlinks that are
/// absolute or climb out of the directory, hard links to outside names, device nodes and
/// FIFOs, more than 100000 entries, more bytes than the maximum upload. Every entry is
/// resolved inside the directory, so not even a symlink made by an earlier entry leads out.
/// Not atomic: entries before a refused one stay.
#[utoipa::path(
    put,
    path = "/v1/sessions/{id}/files/archive",
    operation_id = "uploadArchive",
    tag = "files",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("path" = String, Query, description = "The directory to extract into."),
        ("parents" = Option<bool>, Query, description = "Create the directory's missing parents; default true (false: 404 when its parent is missing)."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "A tar stream (any content type is read as one)."),
    responses(
        (status = 200, description = "Extracted", body = hutch_api::UploadResults),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents a route the proxy serves; never called
pub(crate) fn upload_archive() {}

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

/// The body of `GET /health`.
pub(crate) struct Health;

impl PartialSchema for Health {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("Whether the server has finished starting."))
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["ok", "starting"])),
            )
            .required("status")
            .into()
    }
}

impl ToSchema for Health {}

/// Declares the shared error responses: each is an [`ErrorBody`] whose `code` is the one
/// named, with an example.
macro_rules! error_responses {
    ($($name:ident: $code:ident, $description:literal, $example:literal;)*) => {
        $(
            #[doc = concat!("Shared response: ", $description)]
            pub(crate) struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                    (
                        stringify!($name),
                        error_response(ErrorCode::$code, $description, $example),
                    )
                }
            }
        )*
    };
}

error_responses! {
    BadRequest: InvalidRequest,
        "`invalid_request`: the request is malformed or a value is out of range; \
         `details.field` names the field when there is one.",
        "ttl must be between 60 and 28800 seconds, got 5";
    Unauthorized: Unauthorized,
        "`unauthorized`: the bearer token is missing, malformed, expired or wrongly signed.",
        "missing bearer token";
    SessionNotFound: SessionNotFound,
        "`session_not_found`: no session with this id belongs to the caller.",
        "no session 0196a3c2-0000-7000-8000-000000000000";
    ProcessNotFound: ProcessNotFound,
        "`process_not_found`: the session has no process with this pid (or \
         `session_not_found`: no session with this id belongs to the caller).",
        "no process with pid 42 in this session";
    Conflict: Conflict,
        "`conflict`: the session's state does not allow this (it is being created or \
         deleted, or is not `RUNNING`), its process limit is reached, it holds its maximum \
         of interpreter contexts, or a context's worker cannot start again.",
        "session 0196a3c2-0000-7000-8000-000000000000 is being deleted";
    PayloadTooLarge: PayloadTooLarge,
        "`payload_too_large`: the request body is larger than accepted; `details.limitBytes` \
         gives the limit.",
        "request body is larger than 8388608 bytes";
    UriTooLong: UriTooLong,
        "`uri_too_long`: the request target (path and query) is longer than accepted; \
         `details.limitBytes` gives the limit.",
        "the request target is longer than 8192 bytes";
    HeadersTooLarge: HeadersTooLarge,
        "`headers_too_large`: the request's header fields add up to more than accepted; \
         `details.limitBytes` gives the limit.",
        "the request's header fields add up to more than 16384 bytes";
    RateLimited: RateLimited,
        "`rate_limited`: the tenant sent more requests than its rate limit allows (or, for \
         commands, the session runs as many commands at once as it may); `Retry-After` gives \
         the seconds to wait. Creating a session may also answer `quota_exceeded`: a \
         per-tenant quota (sessions, memory) is used up.",
        "too many lifecycle requests; retry in 1 s";
    Internal: Internal,
        "`internal`: an unexpected fault inside hutch; the server log has the cause.",
        "internal error; the server log has the cause";
    SandboxUnavailable: SandboxUnavailable,
        "`sandbox_unavailable`: the session's sandbox cannot be reached or failed.",
        "the sandbox of session 0196a3c2-0000-7000-8000-000000000000 cannot be reached";
    Capacity: Capacity,
        "`capacity`: the server runs as many sessions as it may; delete one or retry later.",
        "the server runs its maximum of 1000 sessions; delete one or retry later";
    DiskFull: DiskFull,
        "`disk_full`: the session's disk quota is exhausted; `details.path` names the file \
         being written.",
        "write /workspace/data.bin: the session's disk is full";
    StorageContextNotFound: StorageContextNotFound,
        "`storage_context_not_found`: no storage context with this id belongs to the caller.",
        "no storage context 0196a3c2-0000-7000-8000-000000000000";
    SyncFailed: SyncFailed,
        "`sync_failed`: moving content between the session and a storage context failed; \
         the message says which context, which path and why, and `details` name them.",
        "upload of storage context 0196a3c2-0000-7000-8000-000000000000 at /workspace/data \
         failed: the content is larger than the limit of 1073741824 bytes";
    Forbidden: Forbidden,
        "`forbidden`: the file API does not touch this path: /proc, /sys, /dev, device nodes, \
         FIFOs, or the sandbox root itself.",
        "/proc/1/environ is a device node, FIFO or socket, or lies on /proc, /sys or /dev, which the file API does not touch";
    FileNotFound: FileNotFound,
        "`file_not_found`: no file or directory at the path (or a component of it) in the \
         session; `details.path` names it.",
        "open /workspace/missing.txt: no such file or directory";
    RangeNotSatisfiable: RangeNotSatisfiable,
        "`range_not_satisfiable`: the requested range lies outside the file; \
         `Content-Range: bytes */SIZE` and `details.size` give its size.",
        "/workspace/a.txt: the requested range lies outside the file (10 bytes)";
    ContextNotFound: ContextNotFound,
        "`context_not_found`: the session has no interpreter context with this id (or the \
         session is not the caller's).",
        "context not found: 0192f5a4-7c1e-7d30-9b1a-3c1f0e6b2a11";
}

/// One shared error response: `description`, an [`ErrorBody`] schema, an example, and the
/// headers every error carries.
fn error_response(
    code: ErrorCode,
    description: &str,
    example: &str,
) -> RefOr<utoipa::openapi::Response> {
    let example = serde_json::to_value(ErrorBody::new(code, example)).ok();
    let mut response = ResponseBuilder::new()
        .description(description)
        .header_ref("X-Request-Id", Ref::new(header_ref(REQUEST_ID_COMPONENT)))
        .header(
            "X-Hutch-Error-Code",
            HeaderBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorCode::name())))
                .description(Some("The error's `code`, repeated from the body."))
                .build(),
        );
    if code == ErrorCode::RateLimited {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some(
                    "Seconds until a request is allowed again (rate limits only).",
                ))
                .build(),
        );
    }
    response
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .example(example)
                .build(),
        )
        .build()
        .into()
}

/// `#/components/headers/{name}`.
fn header_ref(name: &str) -> String {
    format!("#/components/headers/{name}")
}

/// `#/components/parameters/{name}`.
fn parameter_ref(name: &str) -> String {
    format!("#/components/parameters/{name}")
}

/// The optional `X-Request-Id` request header.
fn request_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("X-Request-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "An id for this request, 1 to 128 bytes, echoed in the response and logged with \
             the request; a new UUID is made when it is missing or out of bounds.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(128)),
        ))
        .build()
}

/// The `X-Request-Id` response header.
fn request_id_header() -> Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(
            "The request's id: the client's `X-Request-Id`, or a new UUID.",
        ))
        .build()
}

/// Adds what the annotations do not say: the bearer scheme, and the `X-Request-Id` header
/// on every request and every response.
struct Contract;

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT signed with the server's secret: `sub` names the tenant, `exp` \
                         is required, `admin: true` sees every tenant's sessions. Mint one \
                         with `hutch token --sub TENANT`.",
                    ))
                    .build(),
            ),
        );
        if let Some(derived) = components.schemas.remove(CommandRequest::name().as_ref()) {
            components.schemas.insert(
                CommandRequest::name().into_owned(),
                command_request_schema(derived),
            );
        }
        components.parameters.insert(
            REQUEST_ID_COMPONENT.to_owned(),
            RefOr::T(request_id_parameter()),
        );
        components.headers.insert(
            REQUEST_ID_COMPONENT.to_owned(),
            RefOr::T(request_id_header()),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let in_session = path.starts_with("/v1/sessions/{id}/");
            for operation in operations_mut(item) {
                // Every route inside a session may answer what the control plane answers
                // before it relays: a malformed id, a missing token, another tenant's or a
                // missing session, one not RUNNING, a rate limit, an unreachable sandbox.
                if in_session {
                    for (status, name) in [
                        ("400", BadRequest::response().0),
                        ("401", Unauthorized::response().0),
                        ("404", SessionNotFound::response().0),
                        ("409", Conflict::response().0),
                        ("429", RateLimited::response().0),
                        ("500", Internal::response().0),
                        ("502", SandboxUnavailable::response().0),
                    ] {
                        operation
                            .responses
                            .responses
                            .entry(status.to_owned())
                            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                    }
                }
                // The control plane reads an empty body as `{}`, so its bodies are optional.
                let own_route = operation.tags.as_ref().is_some_and(|tags| {
                    tags.iter()
                        .any(|tag| tag == "sessions" || tag == "storage contexts")
                });
                if let (true, Some(RefOr::T(body))) = (own_route, operation.request_body.as_mut()) {
                    body.required = Some(Required::False);
                }
                // Every route bounds the request head before anything else.
                for (status, name) in [
                    ("414", UriTooLong::response().0),
                    ("431", HeadersTooLarge::response().0),
                ] {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .push(RefOr::Ref(Ref::new(parameter_ref(REQUEST_ID_COMPONENT))));
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            "X-Request-Id".to_owned(),
                            RefOr::Ref(Ref::new(header_ref(REQUEST_ID_COMPONENT))),
                        );
                    }
                }
            }
        }
    }
}

/// `CommandRequest` as derived, plus what the derive cannot say: exactly one of `command`
/// and `argv` is given, and not `null`.
fn command_request_schema(derived: RefOr<Schema>) -> RefOr<Schema> {
    let given = |field: &str, ty: Type| {
        ObjectBuilder::new()
            .property(field, ObjectBuilder::new().schema_type(ty))
            .required(field)
    };
    AllOfBuilder::new()
        .item(derived)
        .item(
            OneOfBuilder::new()
                .description(Some(
                    "Exactly one of `command` and `argv` is given, and not null.",
                ))
                .item(given("command", Type::String))
                .item(given("argv", Type::Array)),
        )
        .into()
}

/// Every operation of a path item.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document's root: metadata, every path, the shared responses and the modifier.
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
        crate::api::create_session,
        crate::api::list_sessions,
        crate::api::get_session,
        crate::api::update_session,
        crate::api::delete_session,
        crate::storage_api::create_context,
        crate::storage_api::list_contexts,
        crate::storage_api::get_context,
        crate::storage_api::delete_context,
        crate::storage_api::sync_context,
        crate::storage_api::context_info,
        run_command,
        list_files,
        stat_file,
        download_file,
        upload_file,
        upload_files,
        delete_file,
        make_directory,
        move_file,
        download_archive,
        upload_archive,
        processes::stream_command,
        processes::list_processes,
        processes::get_process,
        processes::kill_process,
        processes::attach_process,
        processes::write_process_stdin,
        processes::signal_process,
        processes::open_terminal,
        processes::run_code,
        interpreter::create_context,
        interpreter::list_contexts,
        interpreter::get_context,
        interpreter::delete_context,
        interpreter::interrupt_context,
        interpreter::restart_context,
        interpreter::context_history,
        interpreter::execute_websocket,
        interpreter::execute_ndjson,
        interpreter::create_context_alias,
        interpreter::list_contexts_alias,
        interpreter::delete_context_alias,
        interpreter::execute_websocket_alias,
        interpreter::execute_ndjson_alias,
        metrics,
        serve_json,
        serve_docs,
    ),
    components(
        schemas(ErrorBody, ErrorCode, hutch_api::processes::StreamControl),
        responses(
            BadRequest,
            Unauthorized,
            SessionNotFound,
            ProcessNotFound,
            Conflict,
            PayloadTooLarge,
            UriTooLong,
            HeadersTooLarge,
            RateLimited,
            Internal,
            SandboxUnavailable,
            Capacity,
            DiskFull,
            StorageContextNotFound,
            SyncFailed,
            Forbidden,
            FileNotFound,
            RangeNotSatisfiable,
            ContextNotFound,
        ),
    ),
    modifiers(&Contract),
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
        (name = "meta", description = "Health, metrics, and this contract."),
    ),
)]
struct ApiDoc;

mod interpreter;
mod processes;

#[cfg(test)]
mod tests;
