//! The agent's HTTP routes. Each parses its request and delegates; each documented one
//! describes itself with a `#[utoipa::path]` annotation (see [`crate::openapi`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hutch_api::limits::COMMANDS_CONCURRENT_MAX;
use hutch_api::processes::{CommandResponse, StreamControl};
use hutch_api::responses::{
    BadRequest, Conflict, ContextNotFound, DiskFull, FileNotFound, Forbidden, Internal,
    PayloadTooLarge, ProcessNotFound, RangeNotSatisfiable, RateLimited,
};
use hutch_api::{CommandRequest, CommandResult, ErrorBody, ErrorCode, ProcessEvent};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::error::{AgentError, error_response};
use crate::route_list::{Build, RouteList, route};
use crate::{Agent, commands};

/// Largest request body: a command with its largest `stdin`, JSON-escaped, fits.
pub(crate) const REQUEST_BODY_MAX_BYTES: usize =
    6 * hutch_api::limits::COMMAND_STDIN_MAX_BYTES + 2 * hutch_api::limits::COMMAND_MAX_BYTES;

/// The documented routes, built as `build` says: each handler's `#[utoipa::path]` annotation
/// describes it, so the router and [`crate::openapi`] come from the same list (see
/// [`crate::route_list`]).
pub(crate) fn documented_routes(build: Build) -> RouteList {
    let mut routes = RouteList::with_openapi(build, AgentDoc::openapi);
    route!(routes, run_command);
    routes
        .merge(crate::files::routes(build))
        .merge(crate::processes::routes::routes(build))
        .merge(crate::interpreter::routes::routes(build))
        .merge(crate::ports::routes(build))
}

/// The agent's routes, waiting for their state.
pub(crate) fn router() -> Router<Arc<Agent>> {
    documented_routes(Build::Served)
        .into_router()
        .route("/health", get(health))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .merge(crate::ports::tunnel_routes())
        // Bodies are read their own bounded way (see read_json).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .fallback(not_found)
        // A known path with the wrong method is still answered in the error envelope.
        .method_not_allowed_fallback(not_found)
        // A handler that panics (say, the OS refusing a thread under the session's pids limit)
        // answers 500 instead of closing the connection with no answer at all.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            answer_panic,
        ))
}

/// A pause begins: the awake clock stops (see [`crate::awake`]), and the `default` context's
/// worker stops if it never ran code (see [`crate::interpreter`]); sent by the control plane
/// just before it freezes the sandbox.
async fn pause(State(agent): State<Arc<Agent>>) -> axum::http::StatusCode {
    crate::awake::pause();
    crate::interpreter::park_unused_default(&agent).await;
    axum::http::StatusCode::NO_CONTENT
}

/// The pause ended: the awake clock runs again, and a `default` worker the pause stopped
/// starts again; sent by the control plane just after it thawed the sandbox.
async fn resume(State(agent): State<Arc<Agent>>) -> axum::http::StatusCode {
    let stood = crate::awake::resume();
    crate::interpreter::unpark_default(&agent);
    tracing::debug!(paused_ms = stood.as_millis() as u64, "resumed");
    axum::http::StatusCode::NO_CONTENT
}

/// The answer of a handler that panicked: 500 `internal`, the panic logged as its cause.
fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = hutch_api::error::panic_message(panic.as_ref());
    // tokio panics when the blocking pool cannot start a thread: the session's own process
    // limit (`pids`) is full, which is the caller's state, not a fault of the agent.
    if what.contains("can't spawn worker thread") {
        return AgentError::Conflict(format!(
            "the session's process limit is reached; end some of its processes or create \
             the session with a higher pids limit ({what})"
        ))
        .into_response();
    }
    AgentError::Runtime(std::io::Error::other(format!("a handler panicked: {what}")))
        .into_response()
}

/// The root of the agent's own document: what the routes' annotations refer to.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hutch agent",
        description = "The API a session's agent serves inside its sandbox. The control plane \
            publishes it under `/v1/sessions/{id}/`."
    ),
    components(
        schemas(ErrorBody, ErrorCode, StreamControl),
        responses(
            BadRequest,
            Conflict,
            ContextNotFound,
            DiskFull,
            FileNotFound,
            Forbidden,
            Internal,
            PayloadTooLarge,
            ProcessNotFound,
            RangeNotSatisfiable,
            RateLimited,
        ),
    )
)]
struct AgentDoc;

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The answer to a path or method the agent does not serve. The body is read (and thrown
/// away) first, so that a client still sending it receives the answer instead of a broken
/// pipe.
async fn not_found(req: Request) -> Response {
    drain(req.into_body()).await;
    let code = ErrorCode::NotFound;
    error_response(
        code,
        ErrorBody::new(code, "no such route in the session API"),
    )
}

/// Runs a command in the session and waits for it to finish.
///
/// Exactly one of `command` (run by `/bin/sh -c`) and `argv` must be given. The command's whole
/// process tree is killed at its timeout and when its first process exits.
///
/// With `background: true` the command starts detached and the answer is at once its
/// `StartedProcess` (`processId`, `pid`); see the `processes` routes. With `stream: true` or
/// `Accept: application/x-ndjson` the answer is a stream of `ProcessEvent`s, one JSON object
/// per line, ending with `exit`.
#[utoipa::path(
    post,
    path = "/commands",
    operation_id = "runCommand",
    tag = "commands",
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
    )
)]
// A command holds one of the session's `COMMANDS_CONCURRENT_MAX` permits from before its body
// is read until its result is ready, so that the memory commands hold (bodies, output buffers)
// is bounded per session; without a free permit the request answers 429 `rate_limited` at
// once. A background or streamed command becomes a process of the session instead (see
// `crate::processes`) and gives its permit back once its body is read.
async fn run_command(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<Response, AgentError> {
    let Ok(permit) = Arc::clone(&agent.commands).try_acquire_owned() else {
        drain(req.into_body()).await;
        return Err(AgentError::Busy {
            limit: COMMANDS_CONCURRENT_MAX,
        });
    };
    let accepts_ndjson = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let command: CommandRequest = read_json(req.into_body()).await?;
    if crate::processes::routes::wants_process(&command, accepts_ndjson) {
        drop(permit);
        return crate::processes::routes::start_over_http(&agent, command);
    }
    let result: CommandResult = commands::run(&agent, command).await?;
    drop(permit);
    Ok(Json(result).into_response())
}

/// Past the size limit, how much of a body is still read (and thrown away) so that the
/// client, which may still be sending, reliably receives the error instead of a broken pipe.
const DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Reads a JSON body (any content type) of at most [`REQUEST_BODY_MAX_BYTES`]; an empty body
/// reads as `{}`. Rejections answer in the error envelope.
pub(crate) async fn read_json<T: DeserializeOwned>(
    body: axum::body::Body,
) -> Result<T, AgentError> {
    use http_body_util::BodyExt;
    let mut body = body;
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
        seen = seen.saturating_add(data.len());
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
        return Err(AgentError::TooLarge {
            message: format!("request body is larger than {REQUEST_BODY_MAX_BYTES} bytes"),
            limit: REQUEST_BODY_MAX_BYTES,
        });
    }
    if !hutch_api::body::is_object_or_empty(&bytes) {
        return Err(AgentError::invalid("body", hutch_api::body::NOT_AN_OBJECT));
    }
    let bytes = if bytes.is_empty() {
        b"{}".to_vec()
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| AgentError::Invalid {
        message: format!("invalid JSON body: {e}"),
        field: None,
    })
}

/// Reads and throws away up to `REQUEST_BODY_MAX_BYTES + DRAIN_MAX_BYTES` of a body that is
/// refused before it is read, keeping nothing.
pub(crate) async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > REQUEST_BODY_MAX_BYTES + DRAIN_MAX_BYTES {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (path, method) of a document, as `("/files", "GET")`.
    fn documented_paths(doc: &utoipa::openapi::OpenApi) -> Vec<(String, String)> {
        let mut paths = Vec::new();
        for (path, item) in &doc.paths.paths {
            let operations = [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("OPTIONS", &item.options),
                ("HEAD", &item.head),
                ("PATCH", &item.patch),
                ("TRACE", &item.trace),
            ];
            for (method, operation) in operations {
                if operation.is_some() {
                    paths.push((path.clone(), method.to_owned()));
                }
            }
        }
        paths.sort();
        paths
    }

    fn method_name(method: &utoipa::openapi::HttpMethod) -> &'static str {
        use utoipa::openapi::HttpMethod;
        match method {
            HttpMethod::Get => "GET",
            HttpMethod::Put => "PUT",
            HttpMethod::Post => "POST",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Head => "HEAD",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Trace => "TRACE",
        }
    }

    #[test]
    fn the_served_router_has_exactly_the_documented_routes() {
        let served = documented_routes(Build::Served);
        let mut served: Vec<(String, String)> = served
            .served_paths()
            .iter()
            .flat_map(|(path, methods)| {
                methods
                    .iter()
                    .map(|method| (path.clone(), method_name(method).to_owned()))
            })
            .collect();
        served.sort();
        let documented = documented_paths(&crate::openapi());
        assert!(documented.len() > 20, "{documented:?}");
        assert_eq!(served, documented);
        // Built to be served, the list carries no description.
        assert!(
            documented_routes(Build::Served)
                .into_openapi()
                .paths
                .paths
                .is_empty()
        );
    }

    #[tokio::test]
    async fn empty_body_reads_as_an_empty_object() {
        let req: CommandRequest = read_json(axum::body::Body::empty()).await.unwrap();
        assert_eq!(req, CommandRequest::default());
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let big = vec![b' '; REQUEST_BODY_MAX_BYTES + 1];
        let err = read_json::<CommandRequest>(axum::body::Body::from(big))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::TooLarge { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn bad_json_is_invalid() {
        let err = read_json::<CommandRequest>(axum::body::Body::from("{"))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Invalid { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_panic_answers_500_in_the_envelope() {
        let response = answer_panic(Box::new("thread limit"));
        assert_eq!(response.status(), 500);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error.code, ErrorCode::Internal);
        assert!(body.error.message.contains("thread limit"), "{body:?}");
    }

    #[tokio::test]
    async fn a_full_process_limit_answers_409_not_500() {
        let panic = "OS can't spawn worker thread: Resource temporarily unavailable (os error 11)";
        let response = answer_panic(Box::new(panic.to_owned()));
        assert_eq!(response.status(), 409);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error.code, ErrorCode::Conflict);
        assert!(body.error.message.contains("process limit"), "{body:?}");
    }
}
