//! `hutch exec SESSION -- CMD…`: run a command in a session, streaming its output.
//!
//! Standard output and error arrive on the user's own as they are produced; `hutch exec` exits
//! with the command's exit code, or `128 + n` when signal `n` ended it (as a shell reports it),
//! or 125 when the command could not be run at all. When standard input is not a terminal it
//! is forwarded to the command, and its end closes the command's input; from a terminal, the
//! command's input is closed at once (use `hutch shell` for interactive programs).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use hutch_api::{CommandRequest, ProcessEvent};
use hutch_client::HutchClient;
use hutch_client::processes::StreamItem;
use uuid::Uuid;

/// How `hutch exec` exits when the command could not be run.
const EXIT_NOT_RUN: u8 = 125;

/// Where the server is and who is asking, shared by the client subcommands.
#[derive(clap::Args, Debug)]
pub(crate) struct Connection {
    /// The server's URL.
    #[arg(long, env = "HUTCH_URL", default_value = "http://127.0.0.1:7420")]
    pub(crate) url: String,
    /// A bearer token (see `hutch token`).
    #[arg(long, env = "HUTCH_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
}

impl Connection {
    /// A client of the server.
    pub(crate) fn client(&self) -> anyhow::Result<HutchClient> {
        HutchClient::new(&self.url, &self.token).context("creating the client")
    }
}

/// Options of `hutch exec`.
#[derive(clap::Args, Debug)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    connection: Connection,
    /// Working directory inside the session.
    #[arg(long)]
    cwd: Option<String>,
    /// An environment variable, `NAME=VALUE` (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Seconds before the command and everything it started is killed.
    #[arg(long)]
    timeout: Option<f64>,
    /// The session.
    session: Uuid,
    /// The program and its arguments (after `--`).
    #[arg(last = true, required = true)]
    argv: Vec<String>,
}

fn parse_env(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not NAME=VALUE"))
}

pub(crate) fn main(args: ExecArgs) -> ExitCode {
    block_on(run(args), EXIT_NOT_RUN)
}

/// Runs a client subcommand to its exit code; a failure prints its cause and exits with
/// `failure`.
pub(crate) fn block_on(
    work: impl std::future::Future<Output = anyhow::Result<u8>>,
    failure: u8,
) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(work));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("hutch: {error:#}");
            ExitCode::from(failure)
        }
    }
}

/// Reads standard input on a thread of its own (a blocked read must not hold up the exit)
/// and hands its chunks over; an empty chunk is the end.
pub(crate) fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin.read(&mut buf).unwrap_or(0);
            if tx.blocking_send(buf[..n].to_vec()).is_err() || n == 0 {
                return;
            }
        }
    });
    rx
}

/// The exit code a shell reports for an `exit` event.
pub(crate) fn exit_code_of(exit_code: Option<i32>, signal: Option<i32>) -> u8 {
    match (exit_code, signal) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => EXIT_NOT_RUN,
    }
}

async fn run(args: ExecArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let req = CommandRequest {
        argv: Some(args.argv),
        cwd: args.cwd,
        env: (!args.env.is_empty()).then(|| args.env.into_iter().collect::<BTreeMap<_, _>>()),
        timeout: args.timeout,
        ..CommandRequest::default()
    };
    let mut stream = client
        .stream_command(args.session, &req)
        .await
        .context("starting the command")?;
    let mut input = if std::io::stdin().is_terminal() {
        stream.close_stdin().await?;
        None
    } else {
        Some(stdin_chunks())
    };
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            chunk = async { input.as_mut()?.recv().await }, if input.is_some() => {
                // Input is best effort: a command that has exited takes no more, and its
                // exit event, still to be read, says how it ended.
                let sent = match chunk {
                    Some(chunk) if !chunk.is_empty() => stream.write_stdin(&chunk).await,
                    _ => {
                        input = None;
                        stream.close_stdin().await
                    }
                };
                if sent.is_err() {
                    input = None;
                }
                continue;
            }
        };
        let Some(item) = item else {
            anyhow::bail!("the stream ended before the command's exit");
        };
        match item? {
            StreamItem::Output {
                stderr: false,
                data,
                ..
            } => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            StreamItem::Output { data, .. } => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            StreamItem::Event(ProcessEvent::Exit {
                exit_code, signal, ..
            }) => {
                stream.close().await;
                return Ok(exit_code_of(exit_code, signal));
            }
            StreamItem::Event(ProcessEvent::Error { error }) => {
                anyhow::bail!("{}: {}", error.code.as_str(), error.message)
            }
            StreamItem::Event(ProcessEvent::Truncated { .. }) => {
                eprintln!("hutch: some output was dropped");
            }
            StreamItem::Event(_) => {}
        }
    }
}
