//! HTTP and WebSocket routes of interpreter contexts, with the seed-compatible aliases under
//! `/process/interpreter/…` (each alias a handler of its own, so that it is documented too).

use std::sync::Arc;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use hutch_api::interpreter::{Deleted, HistoryList, InterruptResult};
use hutch_api::limits::INTERPRETER_REQUEST_MAX_BYTES;
use hutch_api::responses::{ContextNotFound, LanguageUnavailable, PayloadTooLarge};
use hutch_api::{Context, ContextList, CreateContextRequest, ExecuteRequest, Frame};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::Agent;
use crate::error::AgentError;
use crate::route_list::{Build, RouteList, route};

/// How long a WebSocket client may take to send its execution request.
const FIRST_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Frames buffered between an execution and its client.
const FRAME_BUFFER: usize = 256;

/// The interpreter routes.
pub(crate) fn routes(build: Build) -> RouteList {
    let mut routes = RouteList::new(build);
    route!(routes, create_context, list_contexts);
    route!(routes, create_context_alias);
    route!(routes, list_contexts_alias);
    route!(routes, get_context, delete_context);
    route!(routes, delete_context_alias);
    route!(routes, interrupt);
    route!(routes, restart);
    route!(routes, history);
    route!(routes, execute_ws, execute_ndjson);
    route!(routes, execute_ws_alias, execute_ndjson_alias);
    routes
}

/// The JSON body; an empty one reads as `{}` (so that an execution without one is refused
/// for its missing `code`, and a context without one takes every default).
async fn read_body<T: serde::de::DeserializeOwned>(
    req: Request,
    max: usize,
) -> Result<T, AgentError> {
    let bytes = axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|_| AgentError::TooLarge {
            message: format!("request body is larger than {max} bytes"),
            limit: max,
        })?;
    if !hutch_api::body::is_object_or_empty(&bytes) {
        return Err(AgentError::invalid("body", hutch_api::body::NOT_AN_OBJECT));
    }
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| AgentError::Invalid {
        message: format!("invalid JSON body: {e}"),
        field: None,
    })
}

/// Creates an interpreter context: a python, javascript or bash worker with its own state.
///
/// The context's worker is started before the answer, in its own cgroup and process group, in
/// `cwd` (created if missing), with the session's environment plus `env`. A session holds at
/// most 32 contexts besides `default`. `POST /v1/sessions/{id}/process/interpreter/context`
/// is an alias.
#[utoipa::path(
    post,
    path = "/interpreter/contexts",
    operation_id = "createContext",
    tag = "interpreter",
    request_body = CreateContextRequest,
    responses(
        (status = 200, description = "The context, started", body = Context),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = LanguageUnavailable),
    )
)]
async fn create_context(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<Json<hutch_api::Context>, AgentError> {
    let body: CreateContextRequest = read_body(req, 1024 * 1024).await?;
    super::create(&agent, body).await.map(Json)
}

/// Alias of `POST …/interpreter/contexts`.
#[utoipa::path(
    post,
    path = "/process/interpreter/context",
    operation_id = "createContextAlias",
    tag = "interpreter",
    request_body = CreateContextRequest,
    responses(
        (status = 200, description = "The context, started", body = Context),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = LanguageUnavailable),
    )
)]
async fn create_context_alias(
    agent: State<Arc<Agent>>,
    req: Request,
) -> Result<Json<hutch_api::Context>, AgentError> {
    create_context(agent, req).await
}

/// Lists the session's created contexts (not `default`), oldest first.
///
/// `GET /v1/sessions/{id}/process/interpreter/contexts` is an alias.
#[utoipa::path(
    get,
    path = "/interpreter/contexts",
    operation_id = "listContexts",
    tag = "interpreter",
    responses(
        (status = 200, description = "The contexts", body = ContextList),
    )
)]
async fn list_contexts(State(agent): State<Arc<Agent>>) -> Json<ContextList> {
    Json(ContextList {
        contexts: super::list(&agent),
    })
}

/// Alias of `GET …/interpreter/contexts`.
#[utoipa::path(
    get,
    path = "/process/interpreter/contexts",
    operation_id = "listContextsAlias",
    tag = "interpreter",
    responses(
        (status = 200, description = "The contexts", body = ContextList),
    )
)]
async fn list_contexts_alias(agent: State<Arc<Agent>>) -> Json<ContextList> {
    list_contexts(agent).await
}

/// Gets one context (`default` included).
#[utoipa::path(
    get,
    path = "/interpreter/contexts/{cid}",
    operation_id = "getContext",
    tag = "interpreter",
    params(
        ("cid" = String, Path, description = "The context id, or `default`."),
    ),
    responses(
        (status = 200, description = "The context", body = Context),
        (status = 404, response = ContextNotFound),
    )
)]
async fn get_context(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<hutch_api::Context>, AgentError> {
    super::get(&agent, &cid).map(Json)
}

/// Deletes a context and kills its worker (and an execution it runs).
///
/// `default` cannot be deleted (400). `DELETE /v1/sessions/{id}/process/interpreter/context/{cid}`
/// is an alias.
#[utoipa::path(
    delete,
    path = "/interpreter/contexts/{cid}",
    operation_id = "deleteContext",
    tag = "interpreter",
    params(
        ("cid" = String, Path, description = "The context id."),
    ),
    responses(
        (status = 200, description = "`{\"message\": \"Context deleted\"}`", body = Deleted),
        (status = 404, response = ContextNotFound),
    )
)]
async fn delete_context(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<Deleted>, AgentError> {
    super::delete(&agent, &cid)?;
    Ok(Json(Deleted {
        message: "Context deleted".to_owned(),
    }))
}

/// Alias of `DELETE …/interpreter/contexts/{cid}`.
#[utoipa::path(
    delete,
    path = "/process/interpreter/context/{cid}",
    operation_id = "deleteContextAlias",
    tag = "interpreter",
    params(
        ("cid" = String, Path, description = "The context id."),
    ),
    responses(
        (status = 200, description = "`{\"message\": \"Context deleted\"}`", body = Deleted),
        (status = 404, response = ContextNotFound),
    )
)]
async fn delete_context_alias(
    agent: State<Arc<Agent>>,
    cid: Path<String>,
) -> Result<Json<Deleted>, AgentError> {
    delete_context(agent, cid).await
}

/// Interrupts the context's running execution (SIGINT to its worker's process group).
///
/// The cell ends with a `KeyboardInterrupt` error frame and control `interrupted`; the
/// context's state is kept. `interrupted` is false when nothing was running.
#[utoipa::path(
    post,
    path = "/interpreter/contexts/{cid}/interrupt",
    operation_id = "interruptContext",
    tag = "interpreter",
    params(
        ("cid" = String, Path, description = "The context id, or `default`."),
    ),
    responses(
        (status = 200, description = "Whether an execution was interrupted",
            body = InterruptResult),
        (status = 404, response = ContextNotFound),
    )
)]
async fn interrupt(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<InterruptResult>, AgentError> {
    super::interrupt(&agent, &cid).map(|interrupted| Json(InterruptResult { interrupted }))
}

/// Restarts a context: kills its worker (ending a running execution) and starts a fresh one.
#[utoipa::path(
    post,
    path = "/interpreter/contexts/{cid}/restart",
    operation_id = "restartContext",
    tag = "interpreter",
    params(
        ("cid" = String, Path, description = "The context id, or `default`."),
    ),
    responses(
        (status = 200, description = "The context, with a fresh worker", body = Context),
        (status = 404, response = ContextNotFound),
    )
)]
async fn restart(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<hutch_api::Context>, AgentError> {
    super::restart(&agent, &cid).await.map(Json)
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

/// The context's last executions (at most its `historySize`), newest last.
#[utoipa::path(
    get,
    path = "/interpreter/contexts/{cid}/history",
    operation_id = "getContextHistory",
    tag = "interpreter",
    params(
        ("cid" = String, Path, description = "The context id, or `default`."),
        ("limit" = Option<u32>, Query, description = "Only the last `limit` executions."),
    ),
    responses(
        (status = 200, description = "The executions", body = HistoryList),
        (status = 404, response = ContextNotFound),
    )
)]
async fn history(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryList>, AgentError> {
    let q = crate::processes::routes::query(q)?;
    super::history(&agent, &cid, q.limit).map(|executions| Json(HistoryList { executions }))
}

/// Starts an execution in a task of its own (it outlives the client) and returns its frames.
fn start(agent: Arc<Agent>, req: ExecuteRequest) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    tokio::spawn(super::execute(agent, req, tx));
    rx
}

/// Runs a cell and streams its frames as NDJSON.
///
/// The same frames as the WebSocket, one JSON object per line; the last line is the
/// `control` frame (or, for an unknown context, one that could not start or one with 16
/// executions already waiting, the single `ContextError` frame saying which). An invalid
/// request answers 400 before anything runs. `…/process/interpreter/execute` is an alias.
#[utoipa::path(
    post,
    path = "/interpreter/execute",
    operation_id = "executeNdjson",
    tag = "interpreter",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The execution's frames, one per line",
            content_type = "application/x-ndjson", body = Frame),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = LanguageUnavailable),
    )
)]
async fn execute_ndjson(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<Response, AgentError> {
    let body: ExecuteRequest = read_body(req, INTERPRETER_REQUEST_MAX_BYTES).await?;
    super::validate_execute(&body)?;
    super::require_context_language(
        &agent,
        body.context_id
            .as_deref()
            .unwrap_or(hutch_api::interpreter::DEFAULT_CONTEXT_ID),
    )?;
    let mut rx = start(agent, body);
    let (first, ended) = first_lines(&mut rx).await;
    let ndjson = [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")];
    if ended {
        // The whole answer, of known length: its head and body leave in one write.
        return Ok((ndjson, first).into_response());
    }
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        let frame = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(ndjson_line(&frame)), rx))
    });
    let first = (!first.is_empty()).then_some(Ok(first));
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(first), rest);
    Ok((ndjson, axum::body::Body::from_stream(stream)).into_response())
}

/// How long an NDJSON execution's answer waits for the execution to end before its head is
/// sent and its frames stream. Most cells an agent sends end well within it; their answer
/// then goes out whole, with a `Content-Length`, in one write (no chunk framing, no separate
/// head and end of stream for the control plane to relay: some 15 % of its CPU time for
/// each such execution, see docs/architecture.md). A longer cell's first frames wait this
/// long at most.
const WHOLE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// The most of an execution's frames gathered before its answer starts to stream.
const WHOLE_ANSWER_MAX_BYTES: usize = 64 * 1024;

/// One frame as an NDJSON line.
fn ndjson_line(frame: &Frame) -> Vec<u8> {
    let mut line = Vec::new();
    push_ndjson_line(&mut line, frame);
    line
}

/// Appends `frame` to `out` as an NDJSON line (a frame always serializes: a string-keyed
/// JSON value).
fn push_ndjson_line(out: &mut Vec<u8>, frame: &Frame) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, frame).is_err() {
        out.truncate(start);
        return;
    }
    out.push(b'\n');
}

/// The lines of the frames `rx` gives within [`WHOLE_ANSWER_WAIT`] (and
/// [`WHOLE_ANSWER_MAX_BYTES`]), and whether the execution ended by then: it sent its
/// `control` frame, which is always its last, or ended without one (a `ContextError`).
async fn first_lines(rx: &mut mpsc::Receiver<Frame>) -> (Vec<u8>, bool) {
    let mut lines = Vec::new();
    let window = tokio::time::sleep(WHOLE_ANSWER_WAIT);
    tokio::pin!(window);
    while lines.len() < WHOLE_ANSWER_MAX_BYTES {
        tokio::select! {
            biased;
            frame = rx.recv() => match frame {
                Some(frame) => {
                    push_ndjson_line(&mut lines, &frame);
                    // The last frame of an execution: its task has no more to send.
                    if matches!(frame, Frame::Control { .. }) {
                        return (lines, true);
                    }
                }
                None => return (lines, true),
            },
            () = &mut window => break,
        }
    }
    (lines, false)
}

/// Alias of `POST …/interpreter/execute`.
#[utoipa::path(
    post,
    path = "/process/interpreter/execute",
    operation_id = "executeNdjsonAlias",
    tag = "interpreter",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The execution's frames, one per line",
            content_type = "application/x-ndjson", body = Frame),
        (status = 413, response = PayloadTooLarge),
    )
)]
async fn execute_ndjson_alias(
    agent: State<Arc<Agent>>,
    req: Request,
) -> Result<Response, AgentError> {
    execute_ndjson(agent, req).await
}

/// Runs a cell over a WebSocket.
///
/// Upgrade, then send one text message, an `ExecuteRequest`. The server answers with
/// `Frame`s as text messages — `stdout`/`stderr` (with `seq`), `result`, `artifact`, `error`
/// — and always last a `control` frame stating the outcome (`completed`, `interrupted`,
/// `timeout`, `exited`, `crashed`), then closes: 1000 (completed, interrupted, exited), 4008
/// (timeout: the cell was interrupted, and its worker killed if it ignored that for 2 s),
/// 1011 (the worker crashed). An unknown context (or one that could not start, or one with 16
/// executions already waiting) answers one `ContextError` error frame and closes 1000; an
/// invalid request one `InvalidRequest` error frame and closes 1008. Executions of one
/// context run one at a time in arrival order (at most 16 waiting); a client that
/// disconnects does not stop its execution. `…/process/interpreter/execute` is an alias.
#[utoipa::path(
    get,
    path = "/interpreter/execute",
    operation_id = "executeWebSocket",
    tag = "interpreter",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; first client \
            message: an `ExecuteRequest`; server messages: `Frame`s", body = Frame),
    )
)]
async fn execute_ws(
    State(agent): State<Arc<Agent>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    Ok(crate::processes::routes::upgrade(ws)?
        .max_message_size(INTERPRETER_REQUEST_MAX_BYTES)
        .on_upgrade(move |socket| ws_session(agent, socket)))
}

/// Alias of the execute WebSocket.
#[utoipa::path(
    get,
    path = "/process/interpreter/execute",
    operation_id = "executeWebSocketAlias",
    tag = "interpreter",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol", body = Frame),
    )
)]
async fn execute_ws_alias(
    agent: State<Arc<Agent>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    execute_ws(agent, ws).await
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    // Let the client see the close before the connection goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Close(_) = msg {
                break;
            }
        }
    })
    .await;
}

async fn send_frame(socket: &mut WebSocket, frame: &Frame) -> bool {
    let text = serde_json::to_string(frame).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn ws_session(agent: Arc<Agent>, mut socket: WebSocket) {
    let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(text))) => return Some(Ok(text.as_str().to_owned())),
                Some(Ok(Message::Binary(bytes))) => {
                    return Some(Ok(String::from_utf8_lossy(&bytes).into_owned()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // Past the message bound: the socket can still say why.
                Some(Err(e)) if e.to_string().contains("too long") => {
                    return Some(Err(AgentError::TooLarge {
                        message: format!(
                            "the execution request is larger than {INTERPRETER_REQUEST_MAX_BYTES} bytes"
                        ),
                        limit: INTERPRETER_REQUEST_MAX_BYTES,
                    }));
                }
                _ => return None,
            }
        }
    })
    .await;
    let Ok(Some(first)) = first else {
        return;
    };
    let req = first.and_then(|text| {
        serde_json::from_str::<ExecuteRequest>(&text)
            .map_err(|e| AgentError::Invalid {
                message: format!("invalid execution request: {e}"),
                field: None,
            })
            .and_then(|req| super::validate_execute(&req).map(|()| req))
    });
    let req = match req {
        Ok(req) => req,
        Err(e) => {
            let frame = Frame::Error {
                name: "InvalidRequest".to_owned(),
                value: e.to_string(),
                traceback: String::new(),
            };
            send_frame(&mut socket, &frame).await;
            close(socket, 1008, "invalid request").await;
            return;
        }
    };
    let mut rx = start(agent, req);
    let mut code = 1000;
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                if let Frame::Control { text, .. } = &frame {
                    code = match text.as_str() {
                        "timeout" => 4008,
                        "crashed" => 1011,
                        _ => 1000,
                    };
                }
                if !send_frame(&mut socket, &frame).await {
                    // The client is gone; the execution runs on and its frames are dropped.
                    return;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    close(socket, code, "").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdout(text: &str) -> Frame {
        Frame::Stdout {
            text: text.into(),
            seq: 0,
        }
    }

    fn completed() -> Frame {
        Frame::Control {
            text: "completed".into(),
            execution_count: Some(1),
            exit_code: None,
            signal: None,
            duration_ms: 0,
        }
    }

    #[tokio::test]
    async fn an_execution_that_ends_in_time_is_answered_whole() {
        let (tx, mut rx) = mpsc::channel(FRAME_BUFFER);
        tx.send(stdout("hi")).await.unwrap();
        tx.send(completed()).await.unwrap();
        // The sender is still there: the control frame alone says the answer is complete.
        let (lines, ended) = first_lines(&mut rx).await;
        assert!(ended);
        let text = String::from_utf8(lines).unwrap();
        let types: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
            .collect();
        assert_eq!(types, [r#""stdout""#, r#""control""#]);
        drop(tx);
    }

    #[tokio::test]
    async fn an_execution_that_ends_without_a_control_frame_is_answered_whole() {
        let (tx, mut rx) = mpsc::channel(FRAME_BUFFER);
        tx.send(stdout("context not found")).await.unwrap();
        drop(tx);
        let (lines, ended) = first_lines(&mut rx).await;
        assert!(ended);
        assert_eq!(lines.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[tokio::test]
    async fn a_longer_execution_streams_after_the_wait() {
        let (tx, mut rx) = mpsc::channel(FRAME_BUFFER);
        tx.send(stdout("first")).await.unwrap();
        let started = std::time::Instant::now();
        let (lines, ended) = first_lines(&mut rx).await;
        assert!(!ended);
        assert!(started.elapsed() >= WHOLE_ANSWER_WAIT);
        assert!(String::from_utf8(lines).unwrap().contains("first"));
        // What comes later is still there to stream.
        tx.send(completed()).await.unwrap();
        assert!(matches!(rx.recv().await, Some(Frame::Control { .. })));
    }

    #[tokio::test]
    async fn a_large_output_streams_without_waiting() {
        let (tx, mut rx) = mpsc::channel(FRAME_BUFFER);
        let chunk = "x".repeat(16 * 1024);
        for _ in 0..8 {
            tx.send(stdout(&chunk)).await.unwrap();
        }
        let (lines, ended) = first_lines(&mut rx).await;
        assert!(!ended);
        assert!(lines.len() >= WHOLE_ANSWER_MAX_BYTES);
        assert!(lines.len() < 8 * chunk.len());
    }
}
