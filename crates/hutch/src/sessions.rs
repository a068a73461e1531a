//! `hutch sessions create|ls|get|rm|pause|resume`: manage sessions from the command line.
//!
//! Each prints a table for people, or with `--json` the API's own JSON for programs;
//! `create -q` and `ls -q` print only ids, one a line, so that `S=$(hutch sessions create -q)`
//! and `hutch sessions rm $(hutch sessions ls -q)` work.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use hutch_api::{
    AutoPause, ContextSync, CreateSessionRequest, Egress, NetworkPolicy, ResourcesRequest, Session,
    SyncPolicy,
};
use hutch_client::HutchClient;
use uuid::Uuid;

use crate::connection::{Connection, block_on};

/// Options of `hutch sessions`.
#[derive(clap::Args, Debug)]
pub(crate) struct SessionsArgs {
    #[command(subcommand)]
    command: SessionsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SessionsCommand {
    /// Create a session; prints it (`-q`: only its id).
    Create(Box<CreateArgs>),
    /// List your sessions, oldest first.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Show one session.
    Get(GetArgs),
    /// Delete sessions (everything in them is destroyed).
    #[command(visible_alias = "delete")]
    Rm(RemoveArgs),
    /// Pause sessions: their processes are frozen until `resume`; prints each one paused.
    Pause(ChangeArgs),
    /// Resume paused sessions; prints each one resumed.
    Resume(ChangeArgs),
}

impl SessionsCommand {
    /// The server and token the subcommand was given.
    fn connection(&self) -> &Connection {
        match self {
            SessionsCommand::Create(args) => &args.connection,
            SessionsCommand::Ls(args) => &args.connection,
            SessionsCommand::Get(args) => &args.connection,
            SessionsCommand::Rm(args) => &args.connection,
            SessionsCommand::Pause(args) | SessionsCommand::Resume(args) => &args.connection,
        }
    }
}

/// How a result is printed (sessions, storage contexts).
#[derive(clap::Args, Debug)]
pub(crate) struct Output {
    /// Print the API's JSON instead of a table.
    #[arg(long, conflicts_with = "quiet")]
    pub(crate) json: bool,
    /// Print only ids, one a line.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    spec: SessionSpec,
    #[command(flatten)]
    output: Output,
}

/// What a new session is made of (`hutch sessions create`, `hutch run`).
#[derive(clap::Args, Debug)]
pub(crate) struct SessionSpec {
    /// Time to live: seconds, or 90s, 30m, 1h (60 s to 8 h; the server's default otherwise).
    #[arg(long, value_parser = crate::duration::parse)]
    ttl: Option<std::time::Duration>,
    /// The image.
    #[arg(long)]
    image: Option<String>,
    /// Memory limit in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// CPU limit in CPUs (0.5 = half a core).
    #[arg(long)]
    cpus: Option<f64>,
    /// Most processes and threads alive at once.
    #[arg(long)]
    pids: Option<u64>,
    /// Disk quota in MiB.
    #[arg(long)]
    disk_mb: Option<u64>,
    /// A label, `KEY=VALUE` (repeatable).
    #[arg(long = "metadata", short = 'm', value_parser = crate::exec::parse_pair)]
    metadata: Vec<(String, String)>,
    /// An environment variable of every process in the session, `NAME=VALUE` (repeatable).
    #[arg(long = "env", short = 'e', value_parser = crate::exec::parse_pair)]
    env: Vec<(String, String)>,
    /// Network egress: `none` (only loopback), `allow` (only the `--allow` list) or `all`
    /// (everything but `--deny`); the server's default otherwise.
    #[arg(long, value_parser = crate::serve_network::parse_egress)]
    network: Option<Egress>,
    /// With `--network allow`: a DNS name, `*.` wildcard name, IPv4 address or CIDR range the
    /// session may reach (repeatable).
    #[arg(long = "allow", value_name = "NAME", requires = "network")]
    allow: Vec<String>,
    /// A name or range refused even when `--network` admits it (repeatable).
    #[arg(long = "deny", value_name = "NAME", requires = "network")]
    deny: Vec<String>,
    /// A storage context bound to a directory, `CONTEXT_ID:/PATH`: downloaded there before
    /// the session runs, uploaded when it is deleted (repeatable; see `hutch contexts`).
    #[arg(long = "context", value_name = "ID:PATH", value_parser = parse_context_sync)]
    contexts: Vec<ContextSync>,
    /// Pause the session once idle this long (10 s to 8 h); the next request resumes it
    /// unseen. The server's default otherwise.
    #[arg(long, value_parser = crate::duration::parse)]
    auto_pause: Option<std::time::Duration>,
    /// With `--auto-pause`: a background process that still runs keeps the session awake.
    #[arg(long, requires = "auto_pause")]
    keep_awake: bool,
}

impl SessionSpec {
    /// The create request these options make.
    pub(crate) fn request(self) -> CreateSessionRequest {
        let resources = ResourcesRequest {
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            pids: self.pids,
            disk_mb: self.disk_mb,
        };
        CreateSessionRequest {
            ttl: self.ttl.map(|ttl| ttl.as_secs()),
            image: self.image,
            metadata: (!self.metadata.is_empty()).then(|| self.metadata.into_iter().collect()),
            resources: (resources != ResourcesRequest::default()).then_some(resources),
            env: (!self.env.is_empty()).then(|| self.env.into_iter().collect::<BTreeMap<_, _>>()),
            context_syncs: (!self.contexts.is_empty()).then_some(self.contexts),
            auto_pause: self.auto_pause.map(|idle| AutoPause {
                idle_seconds: idle.as_secs(),
                keep_awake: self.keep_awake,
            }),
            network: self.network.map(|egress| NetworkPolicy {
                egress,
                allow: self.allow,
                deny: self.deny,
            }),
        }
    }
}

/// Parses `CONTEXT_ID:/PATH`.
fn parse_context_sync(value: &str) -> Result<ContextSync, String> {
    let (id, path) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?} is not CONTEXT_ID:/PATH"))?;
    let context_id = Uuid::parse_str(id).map_err(|e| format!("{id:?} is not a context id: {e}"))?;
    Ok(ContextSync {
        context_id,
        path: path.to_owned(),
        policy: SyncPolicy::default(),
    })
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// At most this many sessions (1 to 100).
    #[arg(long)]
    limit: Option<u32>,
    /// Skip this many first.
    #[arg(long)]
    offset: Option<u64>,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    connection: Connection,
    /// The session.
    session: Uuid,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RemoveArgs {
    #[command(flatten)]
    connection: Connection,
    /// The sessions.
    #[arg(required = true)]
    sessions: Vec<Uuid>,
}

#[derive(clap::Args, Debug)]
struct ChangeArgs {
    #[command(flatten)]
    connection: Connection,
    /// The sessions.
    #[arg(required = true)]
    sessions: Vec<Uuid>,
    /// Print each session's JSON, one object a line, instead of its id.
    #[arg(long)]
    json: bool,
}

pub(crate) fn main(args: SessionsArgs) -> ExitCode {
    let server = args.command.connection().url.clone();
    block_on(&server, run(args.command), 1)
}

async fn run(command: SessionsCommand) -> anyhow::Result<u8> {
    let client = command.connection().client()?;
    match command {
        SessionsCommand::Create(args) => create(&client, *args).await,
        SessionsCommand::Ls(args) => list(&client, args).await,
        SessionsCommand::Get(args) => {
            let session = client.get_session(args.session).await?;
            print_sessions(&[session], args.json, false)?;
            Ok(0)
        }
        SessionsCommand::Rm(args) => remove(&client, args).await,
        SessionsCommand::Pause(args) => change(&client, args, "pause").await,
        SessionsCommand::Resume(args) => change(&client, args, "resume").await,
    }
}

async fn create(client: &HutchClient, args: CreateArgs) -> anyhow::Result<u8> {
    let req = args.spec.request();
    let session = client
        .create_session(&req)
        .await
        .context("creating the session")?;
    print_sessions(&[session], args.output.json, args.output.quiet)?;
    Ok(0)
}

async fn list(client: &HutchClient, args: ListArgs) -> anyhow::Result<u8> {
    let page = client
        .list_sessions(args.limit, args.offset)
        .await
        .context("listing sessions")?;
    if args.output.json {
        print_json(&page)?;
    } else {
        print_sessions(&page.sessions, false, args.output.quiet)?;
        let shown = page.offset + page.sessions.len() as u64;
        if !args.output.quiet && shown < page.total {
            eprintln!(
                "({} of {} shown; --offset {shown} for the next page)",
                page.sessions.len(),
                page.total
            );
        }
    }
    Ok(0)
}

/// Deletes each session, printing its id once it is gone; a failure is reported and the
/// rest are still deleted (exit 1 if any failed).
async fn remove(client: &HutchClient, args: RemoveArgs) -> anyhow::Result<u8> {
    delete_each(args.sessions, |id| async move {
        client.delete_session(id).await.map(|_| id.to_string())
    })
    .await
}

/// `POST /v1/sessions/{id}/pause|resume` for each session (`action`); like `rm`, a failure is
/// reported and the rest are still changed.
async fn change(client: &HutchClient, args: ChangeArgs, action: &str) -> anyhow::Result<u8> {
    let json = args.json;
    let verb = if action == "pause" {
        "pausing"
    } else {
        "resuming"
    };
    for_each_item(verb, args.sessions, |id| async move {
        let session = if action == "pause" {
            client.pause_session(id).await?
        } else {
            client.resume_session(id).await?
        };
        Ok(if json {
            serde_json::to_string(&session).map_err(hutch_client::ClientError::Encode)?
        } else {
            id.to_string()
        })
    })
    .await
}

/// Deletes each item with `delete`, printing what it answers once the item is gone; a failure
/// is reported and the rest are still deleted (exit 1 if any failed). An unreachable server
/// fails them all alike, so it stops at once.
pub(crate) async fn delete_each<T, F, Fut>(items: Vec<T>, delete: F) -> anyhow::Result<u8>
where
    T: std::fmt::Display + Clone,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<String, hutch_client::ClientError>>,
{
    for_each_item("deleting", items, delete).await
}

/// Does `action` (`verb`, as in "deleting") to each item, printing what it answers; a failure
/// is reported and the rest are still done (exit 1 if any failed). An unreachable server fails
/// them all alike, so it stops at once.
pub(crate) async fn for_each_item<T, F, Fut>(
    verb: &str,
    items: Vec<T>,
    action: F,
) -> anyhow::Result<u8>
where
    T: std::fmt::Display + Clone,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<String, hutch_client::ClientError>>,
{
    let mut failed = false;
    for item in items {
        match action(item.clone()).await {
            Ok(shown) => println!("{shown}"),
            Err(error) => {
                let error = anyhow::Error::new(error).context(format!("{verb} {item}"));
                if matches!(
                    error.downcast_ref::<hutch_client::ClientError>(),
                    Some(hutch_client::ClientError::Connect { .. })
                ) {
                    return Err(error);
                }
                eprintln!("hutch: {error:#}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints sessions as JSON (one object for one session), as ids, or as a table.
fn print_sessions(sessions: &[Session], json: bool, quiet: bool) -> anyhow::Result<()> {
    if json {
        return match sessions {
            [one] => print_json(one),
            many => print_json(&many),
        };
    }
    if quiet {
        let mut out = std::io::stdout().lock();
        for session in sessions {
            writeln!(out, "{}", session.session_id)?;
        }
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let mut rows = vec![[
        "SESSION".to_owned(),
        "STATUS".to_owned(),
        "IMAGE".to_owned(),
        "CPUS".to_owned(),
        "MEMORY".to_owned(),
        "EXPIRES IN".to_owned(),
        "METADATA".to_owned(),
    ]];
    for s in sessions {
        let left = (s.expires_at - now).whole_seconds().max(0);
        let metadata: Vec<String> = s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push([
            s.session_id.to_string(),
            s.status.as_str().to_owned(),
            s.image.clone(),
            s.resources.cpus.to_string(),
            format!("{} MiB", s.resources.memory_mb),
            format!("{}m{:02}s", left / 60, left % 60),
            metadata.join(","),
        ]);
    }
    print_table(&rows)
}

/// Prints rows as a table of left-aligned columns, the first row being the header.
pub(crate) fn print_table<const N: usize>(rows: &[[String; N]]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
