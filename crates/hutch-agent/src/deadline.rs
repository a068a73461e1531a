//! The end of a sandbox nobody destroys: once the deadline the runtime wrote (the session's
//! expiry plus a grace; see [`hutch_sandbox::deadline`]) has passed, the agent exits, and as
//! PID 1 it takes every process of the sandbox with it. A server that runs destroys its
//! sessions at expiry long before; this bounds the life of a sandbox whose server stopped and
//! did not come back.

use std::time::{Duration, SystemTime};

use hutch_sandbox::deadline::DeadlineFile;

/// How often the deadline is read.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The deadline of a sandbox whose runtime never wrote one: the longest TTL a session may
/// have, plus this, from the moment the agent starts serving.
const UNSET_GRACE: Duration = Duration::from_secs(600);

/// The exit status of an agent that ended its sandbox at its deadline.
pub(crate) const DEADLINE_EXIT: i32 = 0;

/// Watches `file` in the background; exits the process once the deadline has passed on two
/// reads in a row (one read could meet a rewrite half done).
pub(crate) fn watch(file: DeadlineFile) {
    let unset =
        SystemTime::now() + Duration::from_secs(hutch_api::limits::TTL_MAX_SECS) + UNSET_GRACE;
    tokio::spawn(async move {
        let mut passed_before = false;
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            let deadline = file.read().unwrap_or(unset);
            let passed = SystemTime::now() > deadline;
            if passed && passed_before {
                tracing::warn!(
                    ?deadline,
                    "the sandbox's deadline passed and no server renewed or destroyed it: ending the sandbox"
                );
                std::process::exit(DEADLINE_EXIT);
            }
            passed_before = passed;
        }
    });
}
