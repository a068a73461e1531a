//! The agent: PID 1 inside every sandbox, serving the sandbox's API on a unix socket; or, in
//! container mode (`hutch agent --container`), a pod's main process serving the same API on
//! TCP to whoever opens the connection with the session's secret ([`listener`]).
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
mod listener;
mod oom;
mod ports;
mod processes;
mod reaper;
mod route_list;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::SystemTime;

pub use error::AgentError;
pub use interpreter::{PYTHON_COMPILED_MAX_BYTES, compile_python_worker};

/// Where the agent takes its connections.
#[derive(Debug)]
pub enum Listener {
    /// The listening unix socket of a sandbox hutch built (already bound and listening): only
    /// the control plane on the host reaches it.
    Unix(OwnedFd),
    /// A listening TCP socket (container mode): every connection must start with the preface
    /// carrying `secret` (see [`hutch_sandbox::preface`]).
    Tcp {
        /// The socket, bound and listening.
        listener: std::net::TcpListener,
        /// The session's credential.
        secret: hutch_sandbox::preface::Secret,
    },
}

/// Where the agent learns when to end its sandbox (see [`deadline`]).
#[derive(Debug)]
pub enum Deadline {
    /// The file the linux runtime rewrites as the session's TTL changes.
    File(hutch_sandbox::deadline::DeadlineFile),
    /// A time fixed at start (container mode's `HUTCH_SESSION_DEADLINE`).
    At(SystemTime),
    /// None: the agent lives until it is killed.
    Never,
}

/// What the agent serves with.
#[derive(Debug)]
pub struct AgentConfig {
    /// Where connections come from.
    pub listener: Listener,
    /// Whether the agent is a container's main process (`hutch agent --container`) rather than
    /// PID 1 of a sandbox hutch built: it then ends its commands' process groups when told to
    /// stop (`SIGTERM`), and takes any user id for the image's user.
    pub container: bool,
    /// The sandbox's delegated cgroup v2 directory: each command gets a child cgroup in it so
    /// that it can be killed whole. Without it commands are killed by process group.
    pub cgroup_dir: Option<OwnedFd>,
    /// The environment processes start from, under the session's `env`: in container mode the
    /// container's own (without `HUTCH_*`); `PATH`, `HOME`, `USER` and `LANG` of their own when
    /// absent.
    pub base_env: Option<BTreeMap<String, String>>,
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
    pub deadline: Deadline,
    /// The name of the sandbox's image (`default` when absent), named when a language's
    /// program is missing from it.
    pub image: Option<String>,
    /// The default working directory of commands and contexts (`/workspace` when absent).
    pub working_dir: Option<String>,
    /// The user commands and contexts run as (the image's `User`); root when absent.
    pub user: Option<String>,
    /// The python worker compiled ahead by the server for this image's interpreter (see
    /// [`compile_python_worker`]); python workers start from their source without it.
    pub python_compiled: Option<OwnedFd>,
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
    /// The python worker compiled ahead, when the server gave one.
    pub(crate) python_compiled: Option<interpreter::CompiledPython>,
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
    let mut openapi = api::documented_routes(route_list::Build::Documented).into_openapi();
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

/// Sets `HOME` and `USER` in `env` to `user`'s.
fn user_env(env: &mut BTreeMap<String, String>, user: &image::RunAs) {
    env.insert(
        "HOME".to_owned(),
        user.home.clone().unwrap_or("/".to_owned()),
    );
    env.insert(
        "USER".to_owned(),
        user.name.clone().unwrap_or_else(|| user.uid.to_string()),
    );
}

/// The C allocator's arenas in the agent (see [`hutch_sys::heap::limit_arenas`]).
const AGENT_MALLOC_ARENAS: i32 = 2;

/// The agent's routes, built ahead of [`run`].
///
/// Building them takes milliseconds (each route's OpenAPI description is built with it): a
/// sandbox builds them while it waits in the warm pool, so its session's first request does
/// not wait for them. What the building freed is given back to the kernel at once.
pub struct Routes(axum::Router<Arc<Agent>>);

impl Routes {
    /// Builds the routes.
    pub fn build() -> Routes {
        let routes = Routes(api::router());
        hutch_sys::heap::give_back_free();
        routes
    }
}

/// Serves the agent API with `routes` until the process is killed.
pub fn run(config: AgentConfig, routes: Routes) -> Result<(), AgentError> {
    // One thread serves; the blocking pool's threads would each get an arena of their own,
    // whose freed memory stays with it. Two are plenty for the agent's own allocations.
    hutch_sys::heap::limit_arenas(AGENT_MALLOC_ARENAS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(serve(config, routes))
}

async fn serve(config: AgentConfig, Routes(routes): Routes) -> Result<(), AgentError> {
    let reaper = reaper::Reaper::start().map_err(AgentError::Runtime)?;
    let image = image::Image::new(
        config.image,
        config.working_dir,
        config.user.as_deref(),
        config.container,
    );
    let mut base_env = BTreeMap::from([
        (
            "PATH".to_owned(),
            hutch_sandbox::process::DEFAULT_PATH.to_owned(),
        ),
        ("HOME".to_owned(), "/root".to_owned()),
        ("USER".to_owned(), "root".to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ]);
    // In a container, commands that cannot be switched to another user run as the agent's.
    if config.container
        && let Some(me) = image::current_user()
    {
        user_env(&mut base_env, &me);
    }
    base_env.extend(config.base_env.unwrap_or_default());
    if let Some(user) = image.user() {
        user_env(&mut base_env, user);
        give_workspace_to(user);
    }
    base_env.insert("HOSTNAME".to_owned(), config.hostname.clone());
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
        python_compiled: config.python_compiled.map(interpreter::CompiledPython::new),
    });
    interpreter::prewarm(&agent);
    deadline::watch(config.deadline, agent.reaper.clone());
    if config.container {
        agent
            .reaper
            .end_on_terminate()
            .map_err(AgentError::Runtime)?;
    }
    let listener = match config.listener {
        Listener::Unix(fd) => listener::AgentListener::unix(fd),
        Listener::Tcp { listener, secret } => listener::AgentListener::tcp(listener, secret),
    }
    .map_err(AgentError::Runtime)?;
    serve_http1(listener, routes.with_state(agent)).await
}

/// Serves `router` on every connection `listener` accepts, over HTTP/1.1 with upgrades (for
/// WebSockets): the server speaks nothing else to an agent. Not `axum::serve`, which answers
/// HTTP/2 too whenever hyper-util is built with it (as it is in this workspace, for the
/// server's other clients): that linked the `h2` crate into every agent, with about 30 KB of
/// pointers the loader relocates, private memory in every session.
async fn serve_http1(
    mut listener: listener::AgentListener,
    router: axum::Router,
) -> Result<(), AgentError> {
    use axum::serve::Listener as _;
    loop {
        let (io, _) = listener.accept().await;
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "agent connection ended");
            }
        });
    }
}
