//! The agent: PID 1 inside every sandbox, serving the sandbox's API on a unix socket.
//!
//! The control plane authenticates a request, finds the session and forwards
//! `/v1/sessions/{id}/<rest>` here as `/<rest>`. The agent knows nothing of tenants, tokens or
//! the store; inside the sandbox it is PID 1 of, it runs commands, processes, terminals and
//! code, serves the file API, and keeps interpreter contexts. By the time [`run`] is called the sandbox is already built and
//! locked down (see `hutch_sandbox::init`).
//!
//! As PID 1 the agent also reaps every orphan in the sandbox ([`reaper`]), and it ends the
//! sandbox once its deadline has passed with no server to destroy it ([`deadline`]).
//!
//! Living in the session's network namespace, it also lists the session's listening TCP
//! ports and opens tunnels to them for the control plane ([`ports`]), which is how ports are
//! reached from outside whatever the session's network.
//!
//! A session runs at most [`hutch_api::limits::COMMANDS_CONCURRENT_MAX`] commands at once;
//! a command over it answers 429 `rate_limited` without being read or run. Streamed and
//! background commands are processes of the session ([`processes`]), bounded separately by
//! [`hutch_api::limits::PROCESSES_RUNNING_MAX`].
//!
//! Each route describes itself with an annotation on its handler; [`openapi`] returns that
//! description, which the control plane publishes under `/v1/sessions/{id}/`.

// Tests may unwrap; the non-test build is still checked for it.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
mod awake;
mod code;
mod commands;
mod deadline;
mod error;
mod files;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the fuzz targets (`crates/hutch-fuzz`): the parsers that read client
    //! or worker bytes, reachable without a running agent.
    pub use crate::files::fuzzing::*;
    pub use crate::interpreter::fuzzing::*;
}
mod image;
mod interpreter;
mod oom;
mod ports;
mod processes;
mod reaper;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

pub use error::AgentError;

/// What the agent serves with.
#[derive(Debug)]
pub struct AgentConfig {
    /// The listening unix socket (already bound and listening).
    pub listener: OwnedFd,
    /// The sandbox's delegated cgroup v2 directory: each command gets a child cgroup in it so
    /// that it can be killed whole. Without it commands are killed by process group.
    pub cgroup_dir: Option<OwnedFd>,
    /// Environment every process starts with (the session's `env`).
    pub env: BTreeMap<String, String>,
    /// The sandbox's host name.
    pub hostname: String,
    /// Largest upload the file API accepts, in bytes; default
    /// [`hutch_api::limits::FILES_UPLOAD_MAX_BYTES_DEFAULT`].
    pub max_upload_bytes: Option<u64>,
    /// The session's out-of-memory counters, read-only (`memory.events` or
    /// `memory.oom_control`): how the agent tells that the OOM killer ended a command.
    pub memory_events: Option<OwnedFd>,
    /// The session's memory limit in MiB, named when the OOM killer ends something.
    pub memory_mb: Option<u64>,
    /// The sandbox's deadline: past it, the agent ends the sandbox (see [`deadline`]).
    pub deadline: hutch_sandbox::deadline::DeadlineFile,
    /// The name of the sandbox's image (`default` when absent), named when a language's
    /// program is missing from it.
    pub image: Option<String>,
    /// The default working directory of commands and contexts (`/workspace` when absent).
    pub working_dir: Option<String>,
    /// The user commands and contexts run as (the image's `User`); root when absent.
    pub user: Option<String>,
}

/// Shared state of the agent's handlers.
pub(crate) struct Agent {
    pub(crate) reaper: Arc<reaper::Reaper>,
    pub(crate) cgroup_dir: Option<OwnedFd>,
    pub(crate) base_env: BTreeMap<String, String>,
    /// The image: default working directory, user, name.
    pub(crate) image: image::Image,
    pub(crate) next_command: std::sync::atomic::AtomicU64,
    /// One permit per command that may run at once.
    pub(crate) commands: Arc<tokio::sync::Semaphore>,
    /// The file API's state.
    pub(crate) files: Arc<files::Files>,
    /// Streamed and background processes.
    pub(crate) processes: processes::Processes,
    /// One permit per terminal that may be open at once.
    pub(crate) ptys: Arc<tokio::sync::Semaphore>,
    /// The session's interpreter contexts.
    pub(crate) interpreters: interpreter::Interpreters,
    /// Whether the OOM killer acted.
    pub(crate) oom: oom::OomCounter,
}

/// The OpenAPI description of the agent's routes, at the paths the agent serves them
/// (`/commands`, `/files`, …), built from the annotations on their handlers. The control plane
/// publishes it under `/v1/sessions/{id}/` with its own responses added; the agent knows
/// nothing of those. Every tagged union's variants are named schemas (see
/// [`hutch_api::variants`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut openapi = api::documented_routes().into_openapi();
    hutch_api::variants::name_tagged_variants(
        openapi.components.get_or_insert_with(Default::default),
    );
    openapi
}

/// Hands `/workspace` to the image's user, so that its commands can write where they start.
fn give_workspace_to(user: &image::RunAs) {
    let workspace = std::path::Path::new(image::DEFAULT_CWD);
    if let Err(e) = std::os::unix::fs::lchown(workspace, Some(user.uid), Some(user.gid)) {
        tracing::warn!(error = %e, uid = user.uid, "cannot hand /workspace to the image's user");
    }
}

/// The C allocator's arenas in the agent (see [`hutch_sys::heap::limit_arenas`]).
const AGENT_MALLOC_ARENAS: i32 = 2;

/// Serves the agent API until the process is killed.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    // One thread serves; the blocking pool's threads would each get an arena of their own,
    // whose freed memory stays with it. Two are plenty for the agent's own allocations.
    hutch_sys::heap::limit_arenas(AGENT_MALLOC_ARENAS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(serve(config))
}

async fn serve(config: AgentConfig) -> Result<(), AgentError> {
    let reaper = reaper::Reaper::start().map_err(AgentError::Runtime)?;
    let image = image::Image::new(config.image, config.working_dir, config.user.as_deref());
    let mut base_env = BTreeMap::from([
        (
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ),
        ("HOME".to_owned(), "/root".to_owned()),
        ("USER".to_owned(), "root".to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("HOSTNAME".to_owned(), config.hostname.clone()),
    ]);
    if let Some(user) = image.user() {
        base_env.insert(
            "HOME".to_owned(),
            user.home.clone().unwrap_or("/".to_owned()),
        );
        base_env.insert(
            "USER".to_owned(),
            user.name.clone().unwrap_or_else(|| user.uid.to_string()),
        );
        give_workspace_to(user);
    }
    base_env.extend(config.env);
    // Python `libraries` installed in any context are importable everywhere.
    let base_env = interpreter::with_libraries_on_python_path(base_env);
    let files = files::Files::new(
        config
            .max_upload_bytes
            .unwrap_or(hutch_api::limits::FILES_UPLOAD_MAX_BYTES_DEFAULT),
    )
    .map_err(AgentError::Runtime)?;
    let interpreters = interpreter::Interpreters::new(&image.cwd);
    let agent = Arc::new(Agent {
        files: Arc::new(files),
        reaper,
        cgroup_dir: config.cgroup_dir,
        base_env,
        image,
        next_command: std::sync::atomic::AtomicU64::new(1),
        commands: Arc::new(tokio::sync::Semaphore::new(
            hutch_api::limits::COMMANDS_CONCURRENT_MAX,
        )),
        processes: processes::Processes::default(),
        ptys: Arc::new(tokio::sync::Semaphore::new(
            hutch_api::limits::PTY_SESSIONS_MAX,
        )),
        interpreters,
        oom: oom::OomCounter::new(config.memory_events, config.memory_mb),
    });
    interpreter::prewarm(&agent);
    deadline::watch(config.deadline);
    let std_listener = std::os::unix::net::UnixListener::from(config.listener);
    std_listener
        .set_nonblocking(true)
        .map_err(AgentError::Runtime)?;
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(AgentError::Runtime)?;
    axum::serve(listener, api::router(agent))
        .await
        .map_err(AgentError::Runtime)
}
