//! `hutch agent` and `hutch-agent`: build the sandbox around this process, then serve the
//! agent API.

use std::process::ExitCode;

/// The id of the sources the agent of this build comes from (see `build.rs`), the same in
/// `hutch` and in `hutch-agent` of one build.
pub(crate) const BUILD_ID: &str = env!("HUTCH_AGENT_BUILD_ID");

/// Exit code of an agent whose sandbox could not be set up.
const SETUP_FAILED: u8 = 70;

/// Runs the agent. The runtime starts it with its descriptors in place (see
/// `hutch_sandbox::init`); anything else gets a setup error.
pub(crate) fn main() -> ExitCode {
    let sandboxed = match hutch_sandbox::init::enter() {
        Ok(sandboxed) => sandboxed,
        Err(error) => {
            eprintln!("hutch agent: {error}");
            return ExitCode::from(SETUP_FAILED);
        }
    };
    let (listener, cgroup_dir, memory_events, claim, deadline) = sandboxed.report_ready();
    // Warnings and errors go to the sandbox's agent.log on the host (the agent's stderr).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();
    let agent_config = hutch_agent::AgentConfig {
        listener,
        cgroup_dir,
        env: claim.env,
        hostname: claim.hostname,
        max_upload_bytes: claim.max_upload_bytes,
        memory_events,
        memory_mb: claim.memory_mb,
        deadline,
        image: claim.image,
        working_dir: claim.working_dir,
        user: claim.user,
    };
    match hutch_agent::run(agent_config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hutch agent: {error}");
            ExitCode::FAILURE
        }
    }
}
