//! The shared error responses of the OpenAPI document: one per error code a route may answer,
//! each an [`ErrorBody`] whose `code` is the one named, with an example and the
//! `X-Hutch-Error-Code` header.
//!
//! Both sides use them: the agent's route annotations name the responses of their own routes
//! (`response = FileNotFound`), and the server's name its own and adds, for every route inside
//! a session, what the control plane answers before it relays (see `hutch-server`'s
//! `openapi.rs`).

use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{ToResponse, ToSchema};

use crate::error::{ErrorBody, ErrorCode};

/// Declares the shared error responses: each is an [`ErrorBody`] whose `code` is the one
/// named, with an example.
macro_rules! error_responses {
    ($($name:ident: $code:ident, $description:literal, $example:literal;)*) => {
        $(
            #[doc = concat!("Shared response: ", $description)]
            #[derive(Debug, Clone, Copy)]
            pub struct $name;

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
    NetworkForbidden: Forbidden,
        "`forbidden`: the server's operator does not allow what the request asks for: a \
         network egress wider than the server's `--network-allowed`, or an image from a \
         registry not on the server's list of allowed registries.",
        "network egress \"all\" is not allowed on this server; its operator allows at most \"allow\"";
    Conflict: Conflict,
        "`conflict`: the session's state does not allow this (it is being created or \
         deleted, or is not `RUNNING`), its process limit is reached, it holds its maximum \
         of interpreter contexts, or a context's worker cannot start again; or \
         `session_paused`: the session is paused (`POST /v1/sessions/{id}/resume` first).",
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
         the seconds to wait. Creating a session, a storage context or a snapshot may also \
         answer `quota_exceeded`: a per-tenant quota (sessions, memory, storage contexts, \
         snapshots) is used up; `details.quota` names it.",
        "too many lifecycle requests; retry in 1 s";
    Internal: Internal,
        "`internal`: an unexpected fault inside hutch; the server log has the cause.",
        "internal error; the server log has the cause";
    SandboxUnavailable: SandboxUnavailable,
        "`sandbox_unavailable`: the session's sandbox cannot be reached or failed.",
        "the sandbox of session 0196a3c2-0000-7000-8000-000000000000 cannot be reached";
    SandboxTimeout: SandboxTimeout,
        "`sandbox_timeout`: the session's sandbox accepted the request but did not start \
         answering in time (it is stopped or stuck); `details.waitedMs` says how long it was \
         given.",
        "the sandbox of session 0196a3c2-0000-7000-8000-000000000000 did not answer within 10 s";
    Capacity: Capacity,
        "`capacity`: the server runs as many sessions as it may; delete one or retry later. \
         Any route that reads or writes sessions may also answer `store_unavailable`: the \
         sessions store (PostgreSQL) cannot be reached or did not answer in time; nothing \
         was changed, retry later.",
        "the server runs its maximum of 1000 sessions; delete one or retry later";
    DiskFull: DiskFull,
        "`disk_full`: the session's disk quota is exhausted (`details.path` names the file \
         being written), or, on creates, storage transfers and image pulls and imports, the \
         server's data directory has less free space than its reserve.",
        "write /workspace/data.bin: the session's disk is full";
    LanguageUnavailable: LanguageUnavailable,
        "`language_unavailable`: the session's image has no program for this language \
         (`python3`, `node`, `bash`); `details` name the image and the program.",
        "image docker.io/library/busybox:latest has no python3";
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
    PortUnreachable: PortUnreachable,
        "`port_unreachable`: nothing in the session accepts connections on the port; \
         `details.port` names it.",
        "nothing in session 0196a3c2-0000-7000-8000-000000000000 accepts connections on port 8000";
    LinkExpired: LinkExpired,
        "`link_expired`: the preview link has expired; ask for a new one.",
        "this preview link expired at 2026-01-01T12:00:00Z; ask for a new one";
    LinkInvalid: LinkInvalid,
        "`link_invalid`: the preview link is malformed, wrongly signed, or made for another \
         session or port.",
        "this preview link is not valid: wrong signature";
    ImageNotFound: ImageNotFound,
        "`image_not_found`: no image of this name is stored or in its registry, and the \
         caller has no snapshot of this name; `details.image` names it.",
        "image docker.io/library/pyhton:3.11 not found: manifest unknown";
    ImagePullFailed: ImagePullFailed,
        "`image_pull_failed`: the image could not be pulled (the registry refused, failed or \
         could not be reached, a blob did not match its digest, or the image is unusable); \
         `details.image` names it and `details.registryAnswer` gives the registry's answer.",
        "pulling localhost:5000/tool:1.2 failed: error sending request";
    ImageImportFailed: ImageImportFailed,
        "`image_import_failed`: the body is not an importable image archive (an OCI image \
         layout tarball or a `docker save` archive), or a blob in it does not match its digest.",
        "not an importable image archive: neither index.json (OCI layout) nor manifest.json \
         (docker save) found";
    ImageForbidden: Forbidden,
        "`forbidden`: the token may not do this (importing and deleting images needs an admin \
         token unless the server opens them to tenants), or the image's registry is not on \
         the server's list of allowed registries.",
        "registry quay.io is not on the list of allowed registries";
}

/// One shared error response: `description`, an [`ErrorBody`] schema with an example, and the
/// `X-Hutch-Error-Code` header (the server adds the headers of its own, such as
/// `X-Request-Id`).
fn error_response(
    code: ErrorCode,
    description: &str,
    example: &str,
) -> RefOr<utoipa::openapi::Response> {
    let example = serde_json::to_value(ErrorBody::new(code, example)).ok();
    ResponseBuilder::new()
        .description(description)
        .header(
            "X-Hutch-Error-Code",
            HeaderBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorCode::name())))
                .description(Some("The error's `code`, repeated from the body."))
                .build(),
        )
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
