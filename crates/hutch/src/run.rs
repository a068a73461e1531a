//! `hutch run [OPTIONS] -- CMD…`: a command in a session of its own.
//!
//! Creates a session (the options of `hutch sessions create`), runs the command in it as
//! `hutch exec` does (output streamed, standard input forwarded), then deletes the session,
//! also when the command cannot run and when the user presses Ctrl-C or the process gets
//! SIGTERM. Exits with the command's exit code (`128 + n` for signal `n`), 130 after Ctrl-C,
//! 125 when the command could not be run at all.

use std::process::ExitCode;

use anyhow::Context;
use hutch_api::CommandRequest;
use tokio::signal::unix::{SignalKind, signal};

use crate::connection::{Connection, block_on};
use crate::exec::{EXIT_NOT_RUN, command_request, stream};
use crate::sessions::SessionSpec;

/// How `hutch run` exits when interrupted (as a shell reports SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Options of `hutch run`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  hutch run -- python3 -c 'print(1 + 1)'
  hutch run --image python:3.12-slim --network none -- 'pip list | wc -l'")]
pub(crate) struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    spec: SessionSpec,
    /// Working directory inside the session.
    #[arg(long)]
    cwd: Option<String>,
    /// Seconds before the command and everything it started is killed.
    #[arg(long)]
    timeout: Option<f64>,
    /// The program and its arguments, or one command line for `/bin/sh -c`.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) fn main(args: RunArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, run(args), EXIT_NOT_RUN)
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let mut interrupt = signal(SignalKind::interrupt()).context("watching Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let session = client
        .create_session(&args.spec.request())
        .await
        .context("creating the session")?;
    let id = session.session_id;
    let req = CommandRequest {
        cwd: args.cwd,
        timeout: args.timeout,
        ..command_request(args.command)
    };
    let outcome = tokio::select! {
        outcome = stream(&client, id, &req) => outcome,
        _ = interrupt.recv() => Ok(EXIT_INTERRUPTED),
        _ = terminate.recv() => Ok(EXIT_INTERRUPTED),
    };
    let deleted = client
        .delete_session(id)
        .await
        .with_context(|| format!("deleting the session {id}"));
    match (outcome, deleted) {
        (Ok(code), Ok(_)) => Ok(code),
        (Err(error), Ok(_)) => Err(error),
        (Ok(_), Err(error)) => Err(error),
        (Err(error), Err(also)) => Err(error.context(format!("{also:#}"))),
    }
}
