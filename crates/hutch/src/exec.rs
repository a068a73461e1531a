//! `hutch exec SESSION CMD…`: run a command in a session, streaming its output.
//!
//! Several arguments are a program and its arguments, run directly (`hutch exec S ls -l /`;
//! a `--` before them is allowed and needed only when the program's first argument would
//! read as an option of `hutch exec` itself). A single argument with spaces or shell syntax
//! in it is a command line, run by `/bin/sh -c` (`hutch exec S 'ls / | wc -l'`), as a shell
//! would run it; a single plain word is a program (`hutch exec S ls`).
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

use crate::connection::{Connection, block_on};

/// How `hutch exec` exits when the command could not be run.
pub(crate) const EXIT_NOT_RUN: u8 = 125;

/// Options of `hutch exec`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  hutch exec $S ls -l /workspace        a program and its arguments, run directly
  hutch exec $S 'ls / | wc -l'          one argument with spaces or shell syntax:
                                        a command line for /bin/sh -c
  hutch exec $S -- grep -r --count x .  `--` ends hutch's own options
  echo hi | hutch exec $S cat           standard input goes to the command
  P=$(hutch exec -d $S ./serve.sh)      in the background: prints its pid for
                                        `hutch logs $S $P` and `hutch ps $S`")]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    connection: Connection,
    /// Working directory inside the session.
    #[arg(long)]
    cwd: Option<String>,
    /// An environment variable, `NAME=VALUE` (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Seconds before the command and everything it started is killed.
    #[arg(long)]
    timeout: Option<f64>,
    /// Start the command in the background and print its pid (see `hutch ps` and
    /// `hutch logs`) instead of waiting for it.
    #[arg(long, short = 'd')]
    detach: bool,
    /// With `--detach`: print the API's JSON instead of the pid.
    #[arg(long, requires = "detach")]
    json: bool,
    /// The session.
    session: Uuid,
    /// The program and its arguments, or one command line for `/bin/sh -c`.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Characters that make a lone argument a shell command line rather than a program's name.
const SHELL_SYNTAX: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
    '=', '{', '}',
];

/// The request that runs `command` as `hutch exec` reads it: one argument with spaces or
/// shell syntax is a command line for `/bin/sh -c`; otherwise an argv (so that a program
/// that cannot be run is told as such, exit 125, rather than by a shell's 127).
pub(crate) fn command_request(mut command: Vec<String>) -> CommandRequest {
    let shell_line = |line: &str| line.contains(char::is_whitespace) || line.contains(SHELL_SYNTAX);
    if command.len() == 1 && shell_line(&command[0]) {
        CommandRequest {
            command: command.pop(),
            ..CommandRequest::default()
        }
    } else {
        CommandRequest {
            argv: Some(command),
            ..CommandRequest::default()
        }
    }
}

/// Parses `KEY=VALUE` (an environment variable, a label).
pub(crate) fn parse_pair(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not KEY=VALUE"))
}

pub(crate) fn main(args: ExecArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, run(args), EXIT_NOT_RUN)
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
        cwd: args.cwd,
        env: (!args.env.is_empty()).then(|| args.env.into_iter().collect::<BTreeMap<_, _>>()),
        timeout: args.timeout,
        ..command_request(args.command)
    };
    if args.detach {
        let started = client
            .start_process(args.session, &req)
            .await
            .context("starting the command")?;
        if args.json {
            crate::sessions::print_json(&started)?;
        } else {
            println!("{}", started.pid);
        }
        return Ok(0);
    }
    stream(&client, args.session, &req).await
}

/// Runs `req` in `session`, its output on ours and our standard input (unless a terminal) on
/// its; answers its exit code as a shell reports it.
pub(crate) async fn stream(
    client: &HutchClient,
    session: Uuid,
    req: &CommandRequest,
) -> anyhow::Result<u8> {
    let mut stream = client
        .stream_command(session, req)
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        exec: ExecArgs,
    }

    fn parse(args: &[&str]) -> ExecArgs {
        let argv = [
            "exec",
            "--token",
            "t",
            "0190a0b0-0000-7000-8000-000000000000",
        ];
        match Cli::try_parse_from(argv.iter().chain(args)) {
            Ok(cli) => cli.exec,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn several_arguments_are_an_argv_with_or_without_a_double_dash() {
        for args in [&["ls", "-l", "/"][..], &["--", "ls", "-l", "/"]] {
            let req = command_request(parse(args).command);
            assert_eq!(req.argv, Some(vec!["ls".into(), "-l".into(), "/".into()]));
            assert_eq!(req.command, None);
        }
    }

    #[test]
    fn one_argument_is_a_shell_command_line() {
        for args in [&["ls / | wc -l"][..], &["--", "ls / | wc -l"]] {
            let req = command_request(parse(args).command);
            assert_eq!(req.command.as_deref(), Some("ls / | wc -l"));
            assert_eq!(req.argv, None);
        }
    }

    #[test]
    fn one_plain_word_is_a_program() {
        let req = command_request(parse(&["ls"]).command);
        assert_eq!(req.argv, Some(vec!["ls".into()]));
        let req = command_request(parse(&["echo $HOME"]).command);
        assert_eq!(req.command.as_deref(), Some("echo $HOME"));
        let req = command_request(parse(&["ls>out"]).command);
        assert_eq!(req.command.as_deref(), Some("ls>out"));
    }

    #[test]
    fn options_before_the_command_are_hutchs_after_it_the_commands() {
        let args = parse(&["--cwd", "/tmp", "grep", "--cwd", "x"]);
        assert_eq!(args.cwd.as_deref(), Some("/tmp"));
        assert_eq!(args.command, ["grep", "--cwd", "x"]);
    }
}
