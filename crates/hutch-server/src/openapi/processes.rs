//! Documented stubs of the session routes for streamed commands, processes, terminals and
//! code runs. The session's agent serves them through the proxy; nothing calls these.

#![allow(dead_code)] // each documents a route the proxy serves; never called

use hutch_api::processes::PtyControl;

use super::{DiskFull, PayloadTooLarge, ProcessNotFound};
use hutch_api::{
    CodeRequest, CommandResult, ProcessEvent, ProcessInfo, ProcessList, SignalRequest,
};

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
    path = "/v1/sessions/{id}/commands/stream",
    operation_id = "streamCommand",
    tag = "processes",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; text messages are \
            `ProcessEvent`s", body = ProcessEvent),
    ),
    security(("bearer" = []))
)]
pub(crate) fn stream_command() {}

/// The session's processes: running ones and the most recent finished ones (up to 32),
/// oldest first.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/processes",
    operation_id = "listProcesses",
    tag = "processes",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The processes", body = ProcessList),
    ),
    security(("bearer" = []))
)]
pub(crate) fn list_processes() {}

/// One process: running or exited, its exit, and which output it still buffers.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/processes/{pid}",
    operation_id = "getProcess",
    tag = "processes",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
    ),
    responses(
        (status = 200, description = "The process", body = ProcessInfo),
        (status = 404, response = ProcessNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn get_process() {}

/// Kills a process and everything it started (its whole cgroup) and answers with its final
/// state. A finished process stays listed, so its exit and output can still be read.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}/processes/{pid}",
    operation_id = "killProcess",
    tag = "processes",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
    ),
    responses(
        (status = 200, description = "The process, killed", body = ProcessInfo),
        (status = 404, response = ProcessNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn kill_process() {}

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
    path = "/v1/sessions/{id}/processes/{pid}/stream",
    operation_id = "attachProcess",
    tag = "processes",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
        ("from" = Option<u64>, Query, description = "The first sequence number wanted: one past \
            the last one received."),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; text messages are \
            `ProcessEvent`s", body = ProcessEvent),
        (status = 404, response = ProcessNotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) fn attach_process() {}

/// Writes the raw request body (at most 1 MiB) to a process's standard input; `eof=true`
/// closes it afterwards (with an empty body, it only closes it).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/processes/{pid}/stdin",
    operation_id = "writeProcessStdin",
    tag = "processes",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
        ("eof" = Option<bool>, Query, description = "Close standard input after the write."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The bytes to write."),
    responses(
        (status = 204, description = "Written"),
        (status = 404, response = ProcessNotFound),
        (status = 413, response = PayloadTooLarge),
    ),
    security(("bearer" = []))
)]
pub(crate) fn write_process_stdin() {}

/// Sends a signal to a process's whole process group (`SIGTERM`, `TERM` or `15`; HUP, INT,
/// QUIT, ABRT, KILL, USR1, USR2, PIPE, ALRM, TERM, CONT, STOP, TSTP and WINCH are accepted).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/processes/{pid}/signal",
    operation_id = "signalProcess",
    tag = "processes",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("pid" = i32, Path, description = "The process's pid inside the session.", minimum = 1),
    ),
    request_body = SignalRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 404, response = ProcessNotFound),
        (status = 413, response = PayloadTooLarge),
    ),
    security(("bearer" = []))
)]
pub(crate) fn signal_process() {}

/// Opens a terminal over a WebSocket.
///
/// The program (`command` run by `/bin/sh -c`, default a login shell) gets a pseudo-terminal
/// as its controlling terminal, in a session of its own, with `TERM=xterm-256color`. Binary
/// messages are terminal bytes both ways; a `PtyControl` text message `{"type": "resize",
/// "cols", "rows"}` resizes it. When the program exits the server sends an `exit`
/// `ProcessEvent` as text and closes; when the client closes, the terminal is hung up and
/// everything started in it is killed. At most 16 terminals per session.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/pty",
    operation_id = "openTerminal",
    tag = "processes",
    params(
        ("id" = uuid::Uuid, Path, description = "The session id."),
        ("cols" = Option<u16>, Query, description = "Columns, 1 to 1000; default 80.",
            minimum = 1, maximum = 1000),
        ("rows" = Option<u16>, Query, description = "Rows, 1 to 1000; default 24.",
            minimum = 1, maximum = 1000),
        ("command" = Option<String>, Query, description = "A shell command line to run instead \
            of a login shell."),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; client text messages \
            are `PtyControl`s", body = PtyControl),
    ),
    security(("bearer" = []))
)]
pub(crate) fn open_terminal() {}

/// Runs a snippet in a fresh process: `python` (`python3 -c`), `javascript` (`node -e`) or
/// `bash` (`bash -c`), answered like a one-shot command. Nothing survives between runs.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/code",
    operation_id = "runCode",
    tag = "processes",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "The code ran (whatever its exit status)",
            body = CommandResult),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
pub(crate) fn run_code() {}
