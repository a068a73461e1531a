//! `hutch shell SESSION`: an interactive terminal in a session.
//!
//! The user's terminal goes into raw mode (restored on exit, however the shell ends), keys go
//! to the remote terminal as they are typed, its output comes back as it is produced, and a
//! resize of the user's window (`SIGWINCH`) resizes the remote terminal. Exits with the remote
//! program's exit code.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hutch_api::ProcessEvent;
use hutch_client::processes::resize_message;
use hutch_client::terminal::{RawMode, size};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::connection::{Connection, block_on};
use crate::exec::{exit_code_of, stdin_chunks};

/// Options of `hutch shell`.
#[derive(clap::Args, Debug)]
pub(crate) struct ShellArgs {
    #[command(flatten)]
    connection: Connection,
    /// Run this command line instead of a login shell.
    #[arg(long, short = 'c')]
    command: Option<String>,
    /// The session.
    session: Uuid,
}

pub(crate) fn main(args: ShellArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, run(args), 1)
}

async fn run(args: ShellArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let stdin_fd = std::io::stdin().as_raw_fd();
    let (cols, rows) = size(std::io::stdout().as_raw_fd()).unwrap_or((80, 24));
    let terminal = client
        .open_terminal(args.session, cols, rows, args.command.as_deref())
        .await
        .context("opening the terminal")?;
    let _raw = if std::io::stdin().is_terminal() {
        Some(RawMode::enable(stdin_fd).context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watching window size changes")?;
    let mut input = stdin_chunks();
    let mut input_open = true;
    let mut socket = terminal.socket;
    let mut stdout = std::io::stdout();
    let mut code = 0;
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(ProcessEvent::Exit { exit_code, signal, .. }) =
                        serde_json::from_str(&text)
                    {
                        code = exit_code_of(exit_code, signal);
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("the terminal's connection"),
            },
            chunk = input.recv(), if input_open => match chunk {
                Some(chunk) if !chunk.is_empty() => {
                    socket.send(Message::Binary(chunk.into())).await?;
                }
                _ => input_open = false,
            },
            _ = winch.recv() => {
                if let Some((cols, rows)) = size(std::io::stdout().as_raw_fd()) {
                    socket.send(resize_message(cols, rows)).await?;
                }
            }
        }
    }
    Ok(code)
}
