//! `hutch contexts ls|create|get|rm|sync|status`: storage contexts, directories that outlive
//! sessions.
//!
//! A context is bound to a session's directory when the session is created
//! (`hutch sessions create --context ID:/PATH`); `sync` uploads that directory into a new
//! version of the context (or downloads the context into it) and, unless `--no-wait`, waits
//! for the transfers to finish, exiting 1 if one failed; `status` shows a session's transfers.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use http::Method;
use hutch_api::{
    ContextInfo, ContextStatusData, CreateStorageContextRequest, StorageContext,
    StorageContextList, SyncRequest, SyncStarted, TaskStatus, TaskType,
};
use hutch_client::HutchClient;
use uuid::Uuid;

use crate::connection::{Connection, block_on};
use crate::sessions::{Output, delete_each, print_json, print_table};

/// How often `sync` asks whether its transfers are done.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Options of `hutch contexts`.
#[derive(clap::Args, Debug)]
pub(crate) struct ContextsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: ContextsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ContextsCommand {
    /// List your storage contexts, oldest first.
    #[command(visible_alias = "list")]
    Ls {
        /// At most this many (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Skip this many first.
        #[arg(long)]
        offset: Option<u64>,
        #[command(flatten)]
        output: Output,
    },
    /// Create an empty storage context; prints it (`-q`: only its id).
    Create {
        /// Its name.
        name: String,
        #[command(flatten)]
        output: Output,
    },
    /// Show one storage context.
    Get {
        /// The context.
        context: Uuid,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete storage contexts and every version of their content.
    #[command(visible_alias = "delete")]
    Rm {
        /// The contexts.
        #[arg(required = true)]
        contexts: Vec<Uuid>,
    },
    /// Transfer between a session and its contexts, and wait for the transfers.
    Sync {
        /// The session.
        session: Uuid,
        /// Only this context (default: every context bound to the session).
        #[arg(long)]
        context: Option<Uuid>,
        /// Only this directory of the session; with `--context`, it need not be bound.
        #[arg(long)]
        path: Option<String>,
        /// `upload` (the session's directory becomes a new version) or `download`.
        #[arg(long, default_value = "upload", value_parser = parse_mode)]
        mode: TaskType,
        /// Start the transfers and print them without waiting for them.
        #[arg(long)]
        no_wait: bool,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a session's transfers, oldest first.
    Status {
        /// The session.
        session: Uuid,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_mode(value: &str) -> Result<TaskType, String> {
    TaskType::parse(value).ok_or_else(|| format!("{value:?} is not upload or download"))
}

pub(crate) fn main(args: ContextsArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, run(args), 1)
}

async fn run(args: ContextsArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    match args.command {
        ContextsCommand::Ls {
            limit,
            offset,
            output,
        } => {
            let mut query = vec![];
            query.extend(limit.map(|l| format!("limit={l}")));
            query.extend(offset.map(|o| format!("offset={o}")));
            let path = format!("/v1/contexts?{}", query.join("&"));
            let page: StorageContextList = client
                .call(Method::GET, &path, None::<&()>)
                .await
                .context("listing storage contexts")?;
            if output.json {
                print_json(&page)?;
            } else {
                print_contexts(&page.contexts, output.quiet)?;
            }
        }
        ContextsCommand::Create { name, output } => {
            let req = CreateStorageContextRequest { name };
            let context: StorageContext = client
                .call(Method::POST, "/v1/contexts", Some(&req))
                .await
                .context("creating the storage context")?;
            if output.json {
                print_json(&context)?;
            } else {
                print_contexts(&[context], output.quiet)?;
            }
        }
        ContextsCommand::Get { context, json } => {
            let context: StorageContext = client
                .call(Method::GET, &format!("/v1/contexts/{context}"), None::<&()>)
                .await?;
            if json {
                print_json(&context)?;
            } else {
                print_contexts(&[context], false)?;
            }
        }
        ContextsCommand::Rm { contexts } => {
            return delete_each(contexts, |id| {
                let client = &client;
                async move {
                    let path = format!("/v1/contexts/{id}");
                    let _: serde_json::Value =
                        client.call(Method::DELETE, &path, None::<&()>).await?;
                    Ok(id.to_string())
                }
            })
            .await;
        }
        ContextsCommand::Sync {
            session,
            context,
            path,
            mode,
            no_wait,
            json,
        } => {
            let req = SyncRequest {
                context_id: context,
                path,
                mode: Some(mode),
            };
            let started: SyncStarted = client
                .call(
                    Method::POST,
                    &format!("/v1/sessions/{session}/context/sync"),
                    Some(&req),
                )
                .await
                .context("starting the transfers")?;
            let tasks = if no_wait {
                started.tasks
            } else {
                wait(&client, session, started.tasks).await?
            };
            let failed = tasks.iter().any(|t| t.status == TaskStatus::Failed);
            print_tasks(&tasks, json)?;
            return Ok(u8::from(failed));
        }
        ContextsCommand::Status { session, json } => {
            let info = context_info(&client, session).await?;
            print_tasks(&info.context_status_data, json)?;
        }
    }
    Ok(0)
}

async fn context_info(client: &HutchClient, session: Uuid) -> anyhow::Result<ContextInfo> {
    let path = format!("/v1/sessions/{session}/context/info");
    client
        .call(Method::GET, &path, None::<&()>)
        .await
        .context("reading the session's transfers")
}

/// Polls the session's transfers until each of `started` is done; answers them as they ended.
async fn wait(
    client: &HutchClient,
    session: Uuid,
    started: Vec<ContextStatusData>,
) -> anyhow::Result<Vec<ContextStatusData>> {
    let same = |a: &ContextStatusData, b: &ContextStatusData| {
        a.context_id == b.context_id
            && a.path == b.path
            && a.task_type == b.task_type
            && a.start_time == b.start_time
    };
    loop {
        let info = context_info(client, session).await?;
        let now: Vec<ContextStatusData> = started
            .iter()
            .map(|task| {
                info.context_status_data
                    .iter()
                    .rev()
                    .find(|t| same(t, task))
                    .cloned()
                    .unwrap_or_else(|| task.clone())
            })
            .collect();
        if now.iter().all(|t| t.status.is_final()) {
            return Ok(now);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn print_contexts(contexts: &[StorageContext], quiet: bool) -> anyhow::Result<()> {
    if quiet {
        for context in contexts {
            println!("{}", context.id);
        }
        return Ok(());
    }
    let mut rows = vec![[
        "CONTEXT".to_owned(),
        "NAME".to_owned(),
        "VERSION".to_owned(),
        "SIZE".to_owned(),
        "UPDATED".to_owned(),
    ]];
    for c in contexts {
        rows.push([
            c.id.to_string(),
            c.name.clone(),
            c.version.to_string(),
            format!("{} B", c.size_bytes),
            c.updated_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        ]);
    }
    print_table(&rows)
}

fn print_tasks(tasks: &[ContextStatusData], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&tasks);
    }
    let mut rows = vec![[
        "CONTEXT".to_owned(),
        "PATH".to_owned(),
        "TYPE".to_owned(),
        "STATUS".to_owned(),
        "VERSION".to_owned(),
        "ERROR".to_owned(),
    ]];
    for t in tasks {
        rows.push([
            t.context_id.to_string(),
            t.path.clone(),
            t.task_type.as_str().to_owned(),
            t.status.as_str().to_owned(),
            t.version.to_string(),
            t.error_message.clone(),
        ]);
    }
    print_table(&rows)
}
