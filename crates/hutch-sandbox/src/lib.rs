//! Sandboxes: the `Runtime` trait and its linux backend.
//!
//! This crate owns everything that touches the kernel to isolate a session: namespaces,
//! the overlayfs root, cgroups, capabilities and the seccomp filter. It has two halves:
//!
//! - the host side ([`linux::LinuxRuntime`]), used by `hutch serve` through [`Runtime`] to
//!   create, find again, and destroy sandboxes;
//! - the inside ([`init`]), run by `hutch agent` as PID 1 of a new sandbox before it serves,
//!   to build its root filesystem and lock itself down.
//!
//! It knows nothing of HTTP, tenants, tokens or the store: the server talks to a sandbox only
//! through [`Runtime::connect`], which hands back a stream to the sandbox's agent.

pub mod deadline;
pub mod init;
pub mod linux;
pub mod process;
mod seccomp;
mod sys;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use async_trait::async_trait;
use hutch_api::Resources;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use uuid::Uuid;

pub use linux::network::NetworkCounters;

/// What to build: one sandbox for one session.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The session id.
    pub id: Uuid,
    /// Host name inside the sandbox.
    pub hostname: String,
    /// Image name; only `default` exists so far.
    pub image: String,
    /// Limits enforced by cgroups.
    pub resources: Resources,
    /// Environment every process in the sandbox starts with.
    pub env: BTreeMap<String, String>,
    /// Network egress; `None` or `egress: none`: only `lo`.
    pub network: Option<hutch_api::NetworkPolicy>,
}

/// What the store keeps about a live sandbox so that a restarted server can find it again.
///
/// It is opaque to the server: stored as JSON and handed back to [`Runtime::adopt`] and
/// [`Runtime::destroy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    /// The session id.
    pub id: Uuid,
    /// The sandbox's own id, which names its cgroups and directories on the host. Sandboxes
    /// are built ahead of sessions, so it differs from the session id.
    pub sandbox_id: Uuid,
    /// Host pid of the sandbox's agent (PID 1 inside).
    pub agent_pid: i32,
}

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec asks for something this runtime does not have (such as an unknown image).
    #[error("{0}")]
    InvalidSpec(String),
    /// No more sandboxes can be started (uid ranges or a configured cap are exhausted).
    #[error("no capacity for another sandbox: {0}")]
    Capacity(String),
    /// The sandbox does not exist (any more).
    #[error("sandbox {0} is gone")]
    Gone(Uuid),
    /// Starting the sandbox failed; the message comes from the step that failed.
    #[error("sandbox {id} failed to start: {reason}")]
    Start {
        /// The sandbox id.
        id: Uuid,
        /// What failed, as reported by the sandbox's init.
        reason: String,
    },
    /// A file system operation on the host failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{call}: {source}")]
    Sys {
        /// The call, with the object it acted on.
        call: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A backend that runs sandboxes. `hutch serve` holds one and reaches sandboxes only through it.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Builds and starts a sandbox; returns once its agent accepts connections.
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError>;

    /// Kills every process of the sandbox and removes all it left on the host (cgroups,
    /// directories, sockets). Destroying a sandbox that is already gone succeeds.
    async fn destroy(&self, record: &SandboxRecord) -> Result<(), SandboxError>;

    /// After a restart: takes back a sandbox started by an earlier server process. Returns
    /// `Ok(true)` when it is alive and its agent answers (it is watched again from now on),
    /// `Ok(false)` when it is dead or unreachable (the caller should destroy it).
    async fn adopt(&self, record: &SandboxRecord) -> Result<bool, SandboxError>;

    /// Removes leftovers (cgroups, directories) of sandboxes whose ids are not in `known`,
    /// killing any process still in them. Returns the ids it cleaned.
    async fn sweep(&self, known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError>;

    /// Opens a new connection to the sandbox's agent, which speaks HTTP/1.1 on it.
    async fn connect(&self, id: Uuid) -> Result<UnixStream, SandboxError>;

    /// Replaces the network policy of a running sandbox; connections opened from now on
    /// follow it. Fails for a sandbox created without network.
    async fn set_network(
        &self,
        record: &SandboxRecord,
        policy: &hutch_api::NetworkPolicy,
    ) -> Result<(), SandboxError> {
        let _ = (record, policy);
        Err(SandboxError::InvalidSpec(
            "this runtime gives sandboxes no network".into(),
        ))
    }

    /// Traffic counters of every networked sandbox, by session id.
    fn network_counters(&self) -> HashMap<Uuid, NetworkCounters> {
        HashMap::new()
    }

    /// Sets the time after which the sandbox of session `id` ends itself, whether or not a
    /// server is there to destroy it (see [`deadline`]); a later call replaces it.
    async fn set_deadline(&self, id: Uuid, deadline: SystemTime) -> Result<(), SandboxError>;
}
