//! `hutch agent` and `hutch-agent`: build the sandbox around this process, then serve the
//! agent API; or, with `--container`, serve it as a container's main process (a pod's), on TCP.

use std::process::ExitCode;

/// The id of the sources the agent of this build comes from (see `build.rs`), the same in
/// `hutch` and in `hutch-agent` of one build.
pub(crate) const BUILD_ID: &str = env!("HUTCH_AGENT_BUILD_ID");

/// Exit code of an agent whose sandbox (or container configuration) could not be set up.
const SETUP_FAILED: u8 = 70;

/// Warnings and errors go to the agent's stderr (the sandbox's agent.log on the host, the
/// container's log in a pod).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();
}

/// Runs the agent. The runtime starts it with its descriptors in place (see
/// `hutch_sandbox::init`); anything else gets a setup error.
pub(crate) fn main() -> ExitCode {
    // Before the sandbox is set up, and so before its claim: a pooled sandbox builds its
    // routes while it is being built, not while its session's create waits.
    let routes = hutch_agent::Routes::build();
    let sandboxed = match hutch_sandbox::init::enter() {
        Ok(sandboxed) => sandboxed,
        Err(error) => {
            eprintln!("hutch agent: {error}");
            return ExitCode::from(SETUP_FAILED);
        }
    };
    let ready = sandboxed.report_ready();
    init_logging();
    let claim = ready.claim;
    let agent_config = hutch_agent::AgentConfig {
        listener: hutch_agent::Listener::Unix(ready.listener),
        container: false,
        cgroup_dir: ready.cgroup_dir,
        base_env: None,
        env: claim.env,
        hostname: claim.hostname,
        max_upload_bytes: claim.max_upload_bytes,
        memory_events: ready.memory_events,
        memory_mb: claim.memory_mb,
        deadline: hutch_agent::Deadline::File(ready.deadline),
        image: claim.image,
        working_dir: claim.working_dir,
        user: claim.user,
        python_compiled: ready.python_compiled,
    };
    serve(agent_config, routes)
}

/// Runs the agent in container mode, listening on `listen` (see
/// `hutch_sandbox::container`). Prints `hutch agent: listening on ADDR` to stderr once it
/// accepts connections.
pub(crate) fn container_main(listen: &str) -> ExitCode {
    // Logging starts no thread: the environment is still safe to change below.
    init_logging();
    let container = match hutch_sandbox::container::enter() {
        Ok(container) => container,
        Err(error) => {
            eprintln!("hutch agent: {error}");
            return ExitCode::from(SETUP_FAILED);
        }
    };
    let routes = hutch_agent::Routes::build();
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("hutch agent: cannot listen on {listen}: {error}");
            return ExitCode::from(SETUP_FAILED);
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("hutch agent: listening on {addr}"),
        Err(error) => eprintln!("hutch agent: listening (address unknown: {error})"),
    }
    let agent_config = hutch_agent::AgentConfig {
        listener: hutch_agent::Listener::Tcp {
            listener,
            secret: container.secret,
        },
        container: true,
        cgroup_dir: None,
        base_env: Some(container.base_env),
        env: container.env,
        hostname: container.hostname,
        max_upload_bytes: container.max_upload_bytes,
        memory_events: container.memory_events,
        memory_mb: container.memory_mb,
        deadline: container
            .deadline
            .map_or(hutch_agent::Deadline::Never, hutch_agent::Deadline::At),
        image: container.image,
        working_dir: container.working_dir,
        user: container.user,
        python_compiled: None,
    };
    serve(agent_config, routes)
}

fn serve(config: hutch_agent::AgentConfig, routes: hutch_agent::Routes) -> ExitCode {
    match hutch_agent::run(config, routes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hutch agent: {error}");
            ExitCode::FAILURE
        }
    }
}
