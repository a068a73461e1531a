//! `hutch ps SESSION` and `hutch logs SESSION PID`: a session's processes and their output.
//!
//! `ps` lists the running processes and the most recent finished ones. `logs` prints what a
//! process has written so far (standard error on ours); with `--follow` it goes on until the
//! process exits and then exits with its exit code, reattaching from the last chunk it
//! printed when the connection drops, so nothing is printed twice or lost while it was away.
//! `--from SEQ` starts at a chunk of the process's output (the `NEXT` of an earlier `ps`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use hutch_api::{ProcessEvent, ProcessStatus};
use hutch_client::HutchClient;
use hutch_client::processes::StreamItem;
use uuid::Uuid;

use crate::connection::{Connection, block_on};
use crate::exec::exit_code_of;
use crate::sessions::{print_json, print_table};

/// How many times `logs --follow` reattaches after its connection dropped (waiting 0.2 s more
/// each time, at most 2 s: about 15 s in all for a server that restarts).
const REATTACH_ATTEMPTS: u32 = 10;

/// Options of `hutch ps`.
#[derive(clap::Args, Debug)]
pub(crate) struct PsArgs {
    #[command(flatten)]
    connection: Connection,
    /// The session.
    session: Uuid,
    /// Print the API's JSON instead of a table.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print only the pids of the running processes, one a line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Options of `hutch logs`.
#[derive(clap::Args, Debug)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Keep printing until the process exits; then exit with its exit code.
    #[arg(long, short = 'f')]
    follow: bool,
    /// The first chunk wanted (a sequence number; default: the oldest still buffered).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    from: u64,
    /// The session.
    session: Uuid,
    /// The process's pid in the session (see `hutch ps`).
    pid: i32,
}

pub(crate) fn ps_main(args: PsArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, ps(args), 1)
}

pub(crate) fn logs_main(args: LogsArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, logs(args), 1)
}

async fn ps(args: PsArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let list = client
        .list_processes(args.session)
        .await
        .context("listing processes")?;
    if args.json {
        print_json(&list)?;
        return Ok(0);
    }
    if args.quiet {
        for process in &list.items {
            if process.status == ProcessStatus::Running {
                println!("{}", process.pid);
            }
        }
        return Ok(0);
    }
    let mut rows = vec![[
        "PID".to_owned(),
        "STATUS".to_owned(),
        "EXIT".to_owned(),
        "STARTED".to_owned(),
        "NEXT".to_owned(),
        "COMMAND".to_owned(),
    ]];
    for p in &list.items {
        let exit = match (p.exit_code, p.signal) {
            (Some(code), _) => code.to_string(),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => String::new(),
        };
        rows.push([
            p.pid.to_string(),
            match p.status {
                ProcessStatus::Running => "running",
                ProcessStatus::Exited => "exited",
            }
            .to_owned(),
            exit,
            p.started_at.clone(),
            p.next_seq.to_string(),
            p.command.join(" "),
        ]);
    }
    print_table(&rows)?;
    Ok(0)
}

async fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    // Without --follow, what was written before this moment, and no more.
    let until = if args.follow {
        None
    } else {
        let process = client
            .get_process(args.session, args.pid)
            .await
            .context("reading the process")?;
        Some(process.next_seq)
    };
    let mut next = args.from;
    let mut failures = 0;
    loop {
        if until.is_some_and(|until| next >= until) {
            return Ok(0);
        }
        match print_from(&client, &args, &mut next, until).await {
            Ok(Some(code)) => return Ok(if args.follow { code } else { 0 }),
            Ok(None) => return Ok(0),
            Err(error) if args.follow && is_dropped(&error) && failures < REATTACH_ATTEMPTS => {
                failures += 1;
                eprintln!("hutch: the stream dropped ({error:#}); reattaching from {next}");
                tokio::time::sleep(Duration::from_millis((200 * u64::from(failures)).min(2000)))
                    .await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether `error` is a dropped connection, worth reattaching after.
fn is_dropped(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<hutch_client::ClientError>())
        .any(|e| e.is_stream_error() || matches!(e, hutch_client::ClientError::Connect { .. }))
}

/// Attaches from `next` and prints output, advancing `next`, until the process exits (its
/// exit code), the chunk before `until` is printed (`None`), or the stream fails.
async fn print_from(
    client: &HutchClient,
    args: &LogsArgs,
    next: &mut u64,
    until: Option<u64>,
) -> anyhow::Result<Option<u8>> {
    let mut stream = client
        .attach_process(args.session, args.pid, *next)
        .await
        .context("attaching to the process")?;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(item) = stream.next().await {
        match item.context("reading the process's output")? {
            StreamItem::Output {
                seq,
                stderr: err,
                data,
            } => {
                if err {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                } else {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                *next = seq + 1;
                if until.is_some_and(|until| *next >= until) {
                    stream.close().await;
                    return Ok(None);
                }
            }
            StreamItem::Event(ProcessEvent::Exit {
                exit_code, signal, ..
            }) => {
                stream.close().await;
                return Ok(Some(exit_code_of(exit_code, signal)));
            }
            StreamItem::Event(ProcessEvent::Truncated {
                first_available, ..
            }) => {
                eprintln!("hutch: output before chunk {first_available} is no longer buffered");
                *next = first_available;
            }
            StreamItem::Event(ProcessEvent::Error { error }) => {
                anyhow::bail!("{}: {}", error.code.as_str(), error.message)
            }
            StreamItem::Event(_) => {}
        }
    }
    Err(anyhow::Error::new(hutch_client::ClientError::Protocol(
        "the stream ended before the process's exit".to_owned(),
    )))
}
