//! The routes of streamed commands and processes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hutch_api::limits::PROCESS_STDIN_WRITE_MAX_BYTES;
use hutch_api::processes::StreamControl;
use hutch_api::responses::{BadRequest, PayloadTooLarge, ProcessNotFound};
use hutch_api::{
    CommandRequest, ProcessEvent, ProcessInfo, ProcessList, SignalRequest, StartedProcess,
};
use serde::Deserialize;

use super::{Frame, Managed, Reader, Stdin};
use crate::Agent;
use crate::api::{REQUEST_BODY_MAX_BYTES, read_json};
use crate::commands;
use crate::error::AgentError;
use crate::route_list::{Build, RouteList, route};

/// How long a new command stream waits for its first message (the command).
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a finished stream waits for the client's close before dropping the connection.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long `DELETE` waits for the killed tree to be gone before answering.
const DELETE_WAIT: Duration = Duration::from_secs(5);

/// The routes of this module.
pub(crate) fn routes(build: Build) -> RouteList {
    let mut routes = RouteList::new(build);
    route!(routes, command_stream);
    route!(routes, list);
    route!(routes, get_one, delete);
    route!(routes, reattach);
    route!(routes, stdin);
    route!(routes, signal);
    route!(routes, super::pty::handler);
    route!(routes, crate::code::run);
    routes
}

/// Whether a `POST /commands` asks for a process rather than a one-shot result.
pub(crate) fn wants_process(req: &CommandRequest, accepts_ndjson: bool) -> bool {
    req.background == Some(true) || req.stream == Some(true) || accepts_ndjson
}

/// Validates and starts a command as a process of the session.
fn start(
    agent: &Arc<Agent>,
    req: CommandRequest,
    stdin_open: bool,
) -> Result<(Arc<Managed>, Reader, bool), AgentError> {
    let background = req.background == Some(true);
    let asked = req.timeout;
    let plan = commands::validate(agent, req)?;
    let timeout = super::timeout_of(&plan, asked, background);
    let stdin = if background || stdin_open {
        Stdin::Open
    } else {
        Stdin::Null
    };
    let (process, reader) = super::start(agent, plan, timeout, stdin)?;
    Ok((process, reader, background))
}

/// `POST /commands` with `background` or `stream`: the process's id, or its NDJSON stream.
pub(crate) fn start_over_http(
    agent: &Arc<Agent>,
    req: CommandRequest,
) -> Result<Response, AgentError> {
    let (process, reader, background) = start(agent, req, false)?;
    if background {
        return Ok(Json(StartedProcess {
            process_id: process.id,
            pid: process.pid,
        })
        .into_response());
    }
    Ok(ndjson(&process, reader))
}

fn start_event(process: &Managed) -> ProcessEvent {
    ProcessEvent::Start {
        pid: process.pid,
        process_id: process.id,
    }
}

/// A stream of events as an NDJSON response: `start`, then the reader's events.
fn ndjson(process: &Managed, reader: Reader) -> Response {
    let first = Some(Frame::Event(start_event(process)));
    let stream =
        futures_util::stream::unfold((first, reader), |(mut first, mut reader)| async move {
            let frame = match first.take() {
                Some(frame) => frame,
                None => reader.next().await?,
            };
            let mut line = frame.to_json().into_bytes();
            line.push(b'\n');
            Some((Ok::<_, Infallible>(Bytes::from(line)), (first, reader)))
        });
    (
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Runs a command and streams its events over a WebSocket.
///
/// After the upgrade the client sends the command as its first (text) message, a
/// `CommandRequest` exactly as `POST …/commands` takes it. The server answers with
/// `ProcessEvent`s as text messages: `start` (pid and processId), `stdout`/`stderr` chunks
/// (`seq` numbered from 0 across both streams, `data` base64), and `exit` last, then closes; a
/// request that cannot start gets one `error` event instead. Meanwhile binary client messages
/// are written to the command's standard input and a `StreamControl` text message `{"type":
/// "eof"}` closes it. With `background: true` the server sends `start` and closes at once.
///
/// The command is a process of the session: it runs on when the socket closes (until its
/// timeout, default 60 s) and can be reattached with `…/processes/{pid}/stream?from=SEQ`.
#[utoipa::path(
    get,
    path = "/commands/stream",
    operation_id = "streamCommand",
    tag = "processes",
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; text messages are \
            `ProcessEvent`s", body = ProcessEvent),
    )
)]
async fn command_stream(
    State(agent): State<Arc<Agent>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    Ok(upgrade(ws)?
        .max_message_size(REQUEST_BODY_MAX_BYTES)
        .on_upgrade(move |socket| command_socket(agent, socket)))
}

/// The upgrade, or a 400 in the error envelope for a plain request.
pub(crate) fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, AgentError> {
    ws.map_err(|e| AgentError::Invalid {
        message: format!("this route is a WebSocket: {e}"),
        field: None,
    })
}

/// The query, or a 400 in the error envelope.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AgentError> {
    query.map(|Query(q)| q).map_err(|e| AgentError::Invalid {
        message: format!("invalid query: {}", e.body_text()),
        field: None,
    })
}

async fn send_event(socket: &mut WebSocket, event: &ProcessEvent) -> bool {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn fail(mut socket: WebSocket, error: AgentError) {
    let event = ProcessEvent::Error {
        error: error.body().error,
    };
    let _ = send_event(&mut socket, &event).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn command_socket(agent: Arc<Agent>, mut socket: WebSocket) {
    let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => Ok(text.as_bytes().to_vec()),
        Ok(Some(Ok(Message::Binary(bytes)))) => Ok(bytes.to_vec()),
        Ok(_) => return,
        Err(_) => Err(AgentError::Invalid {
            message: "the first message (the command) did not arrive in time".into(),
            field: None,
        }),
    };
    let req = text.and_then(|text| {
        serde_json::from_slice::<CommandRequest>(&text).map_err(|e| AgentError::Invalid {
            message: format!("invalid command message: {e}"),
            field: None,
        })
    });
    let started = req.and_then(|req| start(&agent, req, true));
    let (process, reader, background) = match started {
        Ok(started) => started,
        Err(error) => return fail(socket, error).await,
    };
    if !send_event(&mut socket, &start_event(&process)).await {
        return;
    }
    if background {
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    attach(socket, process, reader).await;
}

#[derive(Deserialize)]
struct StreamQuery {
    from: Option<u64>,
}

/// Reattaches to a process's output over a WebSocket.
///
/// The server sends `start`, then every buffered chunk from sequence number `from` (default
/// 0) and live output until `exit`, then closes. When `from` is older than the buffer (1 MiB
/// per process) a `truncated` event `{from, firstAvailable}` comes first. While a client is
/// attached, output it has not yet received is never dropped (the process waits instead).
/// Binary messages and `{"type": "eof"}` go to the process's standard input as on
/// `…/commands/stream`.
#[utoipa::path(
    get,
    path = "/processes/{pid}/stream",
    operation_id = "attachProcess",
    tag = "processes",
    params(
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
        ("from" = Option<u64>, Query, description = "The first sequence number wanted: one past \
            the last one received; at most the process's `nextSeq`."),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; text messages are \
            `ProcessEvent`s", body = ProcessEvent),
        (status = 400, response = BadRequest),
        (status = 404, response = ProcessNotFound),
    )
)]
async fn reattach(
    State(agent): State<Arc<Agent>>,
    Path(pid): Path<String>,
    stream_query: Result<Query<StreamQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    let process = agent.processes.get(parse_pid(&pid)?)?;
    let from = query(stream_query)?.from.unwrap_or(0);
    // A cursor past what the process wrote so far is one no client was given (another
    // process's, or a mistake): it would skip output with no sign.
    let next = process.next_seq();
    if from > next {
        return Err(AgentError::invalid(
            "from",
            format!("from is {from}, past the process's next sequence number {next}"),
        ));
    }
    let ws = upgrade(ws)?;
    let reader = process.subscribe(from);
    Ok(ws
        .max_message_size(REQUEST_BODY_MAX_BYTES)
        .on_upgrade(move |mut socket| async move {
            if send_event(&mut socket, &start_event(&process)).await {
                attach(socket, process, reader).await;
            }
        }))
}

/// Sends the reader's events until `exit` or until the client leaves (the process runs on);
/// meanwhile binary messages go to the process's stdin and `{"type":"eof"}` closes it.
async fn attach(socket: WebSocket, process: Arc<Managed>, mut reader: Reader) {
    let (mut tx, mut rx) = socket.split();
    let input_process = Arc::clone(&process);
    let mut input = tokio::spawn(async move {
        while let Some(Ok(message)) = rx.next().await {
            match message {
                Message::Binary(data) => {
                    // A message of any size the socket takes goes in whole, a write's bound at
                    // a time. A closed or stuck stdin is the process's business; the stream
                    // goes on.
                    for piece in data.chunks(PROCESS_STDIN_WRITE_MAX_BYTES) {
                        if input_process.write_stdin(piece, false).await.is_err() {
                            break;
                        }
                    }
                }
                Message::Text(text) => {
                    if let Ok(StreamControl::Eof) = serde_json::from_str(&text) {
                        let _ = input_process.write_stdin(&[], true).await;
                    }
                }
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    });
    loop {
        tokio::select! {
            frame = reader.next() => {
                let Some(frame) = frame else {
                    // Close properly: wait for the client's close (its input may still be in
                    // flight), so that the connection is not reset under the last events.
                    let _ = tx.send(Message::Close(None)).await;
                    let _ = tokio::time::timeout(CLOSE_WAIT, &mut input).await;
                    break;
                };
                if tx.send(Message::Text(frame.to_json().into())).await.is_err() {
                    break;
                }
            }
            _ = &mut input => break,
        }
    }
    input.abort();
}

fn parse_pid(pid: &str) -> Result<i32, AgentError> {
    pid.parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| AgentError::invalid("pid", "pid must be a positive integer"))
}

/// The session's processes: running ones and the most recent finished ones (up to 32),
/// oldest first.
#[utoipa::path(
    get,
    path = "/processes",
    operation_id = "listProcesses",
    tag = "processes",
    responses(
        (status = 200, description = "The processes", body = ProcessList),
    )
)]
async fn list(State(agent): State<Arc<Agent>>) -> Json<ProcessList> {
    let items = agent.processes.list();
    Json(ProcessList {
        total: items.len(),
        items,
    })
}

/// One process: running or exited, its exit, and which output it still buffers.
#[utoipa::path(
    get,
    path = "/processes/{pid}",
    operation_id = "getProcess",
    tag = "processes",
    params(
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
    ),
    responses(
        (status = 200, description = "The process", body = ProcessInfo),
        (status = 404, response = ProcessNotFound),
    )
)]
async fn get_one(
    State(agent): State<Arc<Agent>>,
    Path(pid): Path<String>,
) -> Result<Response, AgentError> {
    let process = agent.processes.get(parse_pid(&pid)?)?;
    Ok(Json(process.info()).into_response())
}

/// Kills a process and everything it started (its whole cgroup) and answers with its final
/// state. A finished process stays listed, so its exit and output can still be read.
#[utoipa::path(
    delete,
    path = "/processes/{pid}",
    operation_id = "killProcess",
    tag = "processes",
    params(
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
    ),
    responses(
        (status = 200, description = "The process, killed", body = ProcessInfo),
        (status = 404, response = ProcessNotFound),
    )
)]
async fn delete(
    State(agent): State<Arc<Agent>>,
    Path(pid): Path<String>,
) -> Result<Response, AgentError> {
    let process = agent.processes.get(parse_pid(&pid)?)?;
    process.kill();
    let mut changed = process.changed.subscribe();
    let _ = tokio::time::timeout(DELETE_WAIT, async {
        while !process.finished() {
            if changed.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    Ok(Json(process.info()).into_response())
}

#[derive(Deserialize)]
struct StdinQuery {
    eof: Option<bool>,
}

/// Writes the raw request body (at most 1 MiB) to a process's standard input; `eof=true`
/// closes it afterwards (with an empty body, it only closes it).
#[utoipa::path(
    post,
    path = "/processes/{pid}/stdin",
    operation_id = "writeProcessStdin",
    tag = "processes",
    params(
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
        ("eof" = Option<bool>, Query, description = "Close standard input after the write."),
    ),
    request_body(content = inline(hutch_api::files::Binary), content_type = "application/octet-stream",
        description = "The bytes to write."),
    responses(
        (status = 204, description = "Written"),
        (status = 404, response = ProcessNotFound),
        (status = 413, response = PayloadTooLarge),
    )
)]
async fn stdin(
    State(agent): State<Arc<Agent>>,
    Path(pid): Path<String>,
    stdin_query: Result<Query<StdinQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, AgentError> {
    let process = agent.processes.get(parse_pid(&pid)?)?;
    let eof = query(stdin_query)?.eof.unwrap_or(false);
    let body = axum::body::to_bytes(req.into_body(), PROCESS_STDIN_WRITE_MAX_BYTES)
        .await
        .map_err(|_| AgentError::TooLarge {
            message: format!("a stdin write is at most {PROCESS_STDIN_WRITE_MAX_BYTES} bytes"),
            limit: PROCESS_STDIN_WRITE_MAX_BYTES,
        })?;
    process.write_stdin(&body, eof).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// Sends a signal to a process's whole process group (`SIGTERM`, `TERM` or `15`; HUP, INT,
/// QUIT, ABRT, KILL, USR1, USR2, PIPE, ALRM, TERM, CONT, STOP, TSTP and WINCH are accepted).
#[utoipa::path(
    post,
    path = "/processes/{pid}/signal",
    operation_id = "signalProcess",
    tag = "processes",
    params(
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
    ),
    request_body = SignalRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 404, response = ProcessNotFound),
        (status = 413, response = PayloadTooLarge),
    )
)]
async fn signal(
    State(agent): State<Arc<Agent>>,
    Path(pid): Path<String>,
    req: Request,
) -> Result<Response, AgentError> {
    let process = agent.processes.get(parse_pid(&pid)?)?;
    let body: SignalRequest = read_json(req.into_body()).await?;
    let number = body.signal.number().ok_or_else(|| {
        AgentError::invalid(
            "signal",
            "signal must be a name such as SIGTERM or a number of one of HUP, INT, QUIT, ABRT, \
             KILL, USR1, USR2, PIPE, ALRM, TERM, CONT, STOP, TSTP, WINCH",
        )
    })?;
    process.signal(number)?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
