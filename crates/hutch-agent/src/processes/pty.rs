//! Terminals: WS `/pty?cols=&rows=&command=`.
//!
//! The agent allocates a pseudo-terminal from the sandbox's private devpts (`/dev/ptmx`),
//! starts the program in its own cgroup and session with the terminal as its controlling
//! terminal (`setsid` + `TIOCSCTTY`) and `TERM=xterm-256color`, and relays: binary messages
//! are terminal bytes both ways, a text message `{"type":"resize","cols":C,"rows":R}` resizes
//! the terminal (`TIOCSWINSZ`, which sends the foreground group `SIGWINCH`). When the program
//! exits the agent sends `{"type":"exit",…}` and closes; when the client closes, the terminal
//! is hung up and everything started in it is killed.

use std::os::fd::AsFd;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use hutch_api::limits::{PTY_SESSIONS_MAX, PTY_SIZE_MAX};
use hutch_api::processes::PtyControl;
use hutch_api::{CommandRequest, ProcessEvent};
use hutch_sandbox::process::SpawnOptions;
use hutch_sys::pty::PtyMaster;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::Agent;
use crate::commands::{self, Started};
use crate::error::AgentError;
use crate::reaper::Exit;

/// Terminal size when the request names none.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// The query of `/pty`.
#[derive(Deserialize)]
pub(crate) struct PtyQuery {
    cols: Option<u16>,
    rows: Option<u16>,
    command: Option<String>,
}

fn check_size(cols: u16, rows: u16) -> Result<(), AgentError> {
    for (field, value) in [("cols", cols), ("rows", rows)] {
        if value == 0 || value > PTY_SIZE_MAX {
            return Err(AgentError::invalid(
                field,
                format!("{field} must be between 1 and {PTY_SIZE_MAX}"),
            ));
        }
    }
    Ok(())
}

/// A running terminal session; dropping it kills everything started in it.
struct Session {
    master: PtyMaster,
    started: Started,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Session {
    fn drop(&mut self) {
        commands::kill_tree(self.started.cgroup.as_ref(), self.started.pid);
    }
}

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
    path = "/pty",
    operation_id = "openTerminal",
    tag = "processes",
    params(
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
    )
)]
pub(crate) async fn handler(
    State(agent): State<Arc<Agent>>,
    pty_query: Result<Query<PtyQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    let query = super::routes::query(pty_query)?;
    let ws = super::routes::upgrade(ws)?;
    let (cols, rows) = (
        query.cols.unwrap_or(DEFAULT_SIZE.0),
        query.rows.unwrap_or(DEFAULT_SIZE.1),
    );
    check_size(cols, rows)?;
    let Ok(permit) = Arc::clone(&agent.ptys).try_acquire_owned() else {
        return Err(AgentError::Busy {
            limit: PTY_SESSIONS_MAX,
        });
    };
    let request = match query.command {
        Some(command) => CommandRequest {
            command: Some(command),
            ..CommandRequest::default()
        },
        None => CommandRequest {
            argv: Some(vec![default_shell().to_owned(), "-l".to_owned()]),
            ..CommandRequest::default()
        },
    };
    let mut plan = commands::validate(&agent, request)?;
    plan.env.retain(|(k, _)| k != "TERM");
    plan.env
        .push(("TERM".to_owned(), "xterm-256color".to_owned()));
    let (master, terminal) = PtyMaster::open(cols, rows).map_err(AgentError::Runtime)?;
    let started = commands::start(
        &agent,
        &plan,
        [terminal.as_fd(), terminal.as_fd(), terminal.as_fd()],
        SpawnOptions {
            controlling_terminal: true,
            ..SpawnOptions::default()
        },
    )?;
    drop(terminal);
    let session = Session {
        master,
        started,
        _permit: permit,
    };
    Ok(ws.on_upgrade(move |socket| relay(socket, session, agent)))
}

fn default_shell() -> &'static str {
    if std::path::Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

async fn relay(mut socket: WebSocket, mut session: Session, agent: Arc<Agent>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited = None;
    loop {
        tokio::select! {
            read = session.master.read(&mut buf) => match read {
                Ok(n) if n > 0 => {
                    let data = axum::body::Bytes::copy_from_slice(&buf[..n]);
                    if socket.send(Message::Binary(data)).await.is_err() {
                        return;
                    }
                }
                // EIO: every process holding the terminal is gone.
                _ => break,
            },
            exit = &mut session.started.exited, if exited.is_none() => {
                exited = Some(exit.unwrap_or(Exit::Signal(libc::SIGKILL)));
                // The tree dies with its leader; the terminal then reads EIO.
                commands::kill_tree(session.started.cgroup.as_ref(), session.started.pid);
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if session.master.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(PtyControl::Resize { cols, rows }) = serde_json::from_str(&text)
                        && check_size(cols, rows).is_ok()
                    {
                        let _ = session.master.resize(cols, rows);
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // The client left: hang up and kill (Session's drop).
                _ => return,
            },
        }
    }
    let exit = match exited {
        Some(exit) => exit,
        None => {
            commands::kill_tree(session.started.cgroup.as_ref(), session.started.pid);
            (&mut session.started.exited)
                .await
                .unwrap_or(Exit::Signal(libc::SIGKILL))
        }
    };
    let (exit_code, signal) = super::split_exit(exit);
    let event = ProcessEvent::Exit {
        exit_code,
        signal,
        duration_ms: session.started.started.elapsed().as_millis() as u64,
        timed_out: false,
        oom_killed: agent.oom.killed(session.started.oom, exit),
    };
    let text = serde_json::to_string(&event).unwrap_or_default();
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket.send(Message::Close(None)).await;
    // Wait for the client's close so that the connection is not reset under the last events.
    let _ = tokio::time::timeout(super::routes::CLOSE_WAIT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    })
    .await;
}
