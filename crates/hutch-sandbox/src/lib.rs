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
//! through [`Runtime::connect`], which hands back a stream to the sandbox's agent. Nothing in
//! the trait assumes the sandbox runs on this host: the stream is any byte stream (a unix
//! socket here, TCP to a pod elsewhere), what a runtime must remember about a sandbox is an
//! opaque [`RuntimeData`] in its [`SandboxRecord`], and sandboxes that die on their own are
//! reported through [`Runtime::deaths`].

pub mod container;
pub mod deadline;
pub mod init;
pub mod linux;
pub mod preface;
pub mod process;
mod seccomp;
pub mod shepherd;
mod sys;
mod syscalls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use hutch_api::Resources;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use uuid::Uuid;

pub use linux::network::NetworkCounters;
pub use seccomp::check_allow_names as check_seccomp_allow;

/// What to build: one sandbox for one session.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The session id.
    pub id: Uuid,
    /// Host name inside the sandbox.
    pub hostname: String,
    /// What its root file system is made of.
    pub image: SandboxImage,
    /// Limits enforced by cgroups.
    pub resources: Resources,
    /// Environment every process in the sandbox starts with.
    pub env: BTreeMap<String, String>,
    /// Network egress; `None` or `egress: none`: only `lo`.
    pub network: Option<hutch_api::NetworkPolicy>,
}

/// What a sandbox's root file system is made of.
#[derive(Debug, Clone)]
pub enum SandboxImage {
    /// The embedded `default` image: a read-only view of the host's system directories.
    Default,
    /// An OCI image: its unpacked layers, shared read-only, under the session's own writes.
    Oci(OciImage),
}

impl SandboxImage {
    /// The name users know the image by (`default`, `docker.io/library/python:3.11`).
    pub fn name(&self) -> &str {
        match self {
            SandboxImage::Default => "default",
            SandboxImage::Oci(image) => &image.name,
        }
    }
}

/// An OCI image as a sandbox mounts and runs it.
#[derive(Clone)]
pub struct OciImage {
    /// What identifies the image's content (its config digest): the warm pool keeps ready
    /// sandboxes per key.
    pub key: String,
    /// The name users know it by, as they wrote it, for messages (`busybox:latest`).
    pub name: String,
    /// The unpacked layers' directories on the host, topmost first (overlayfs' order).
    pub layers: Vec<PathBuf>,
    /// `KEY=value` pairs of the image's `Env`; the session's `env` goes on top.
    pub env: Vec<String>,
    /// The image's `WorkingDir`, if it names one (`/workspace` otherwise).
    pub working_dir: Option<String>,
    /// The image's `User` (`name`, `uid`, `name:group`, `uid:gid`), if it names one.
    pub user: Option<String>,
    /// Whatever keeps the layers on disk (the server's image lease): the runtime keeps a
    /// clone while a sandbox built from this image waits in the warm pool.
    pub hold: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// Whether later sessions may use it, so that the warm pool should keep sandboxes of it
    /// ready (not a fork's one-time snapshot, which would only be held on disk by them).
    pub warm: bool,
}

impl std::fmt::Debug for OciImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciImage")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// What the store keeps about a live sandbox so that a restarted server can find it again.
///
/// It is opaque to the server: stored as JSON and handed back to [`Runtime::adopt`] and
/// [`Runtime::destroy`]. What only one runtime needs (the linux runtime's agent pid, a pod's
/// name) lives in [`SandboxRecord::runtime`], whose fields sit beside `id` and `sandboxId` in
/// the JSON: `{"id": …, "sandboxId": …, "agentPid": 1234}` for a linux sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    /// The session id.
    pub id: Uuid,
    /// The sandbox's own id, which names what the runtime made for it (cgroups and directories
    /// on the host, a pod). Sandboxes are built ahead of sessions, so it differs from the
    /// session id.
    pub sandbox_id: Uuid,
    /// What only the runtime that made the sandbox reads.
    #[serde(flatten)]
    pub runtime: RuntimeData,
}

/// A runtime's own data about one sandbox: a JSON object the server stores without reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuntimeData(serde_json::Map<String, serde_json::Value>);

impl RuntimeData {
    /// Encodes `value`, which must serialise as a JSON object whose keys are not `id` or
    /// `sandboxId` (the record's own).
    pub fn encode<T: Serialize>(value: &T) -> Result<RuntimeData, SandboxError> {
        match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(map))
                if !map.contains_key("id") && !map.contains_key("sandboxId") =>
            {
                Ok(RuntimeData(map))
            }
            Ok(other) => Err(SandboxError::Record(format!(
                "runtime data must be an object without `id` or `sandboxId`, not {other}"
            ))),
            Err(err) => Err(SandboxError::Record(err.to_string())),
        }
    }

    /// Decodes what [`RuntimeData::encode`] stored.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, SandboxError> {
        serde_json::from_value(serde_json::Value::Object(self.0.clone()))
            .map_err(|err| SandboxError::Record(err.to_string()))
    }
}

/// A connection to a sandbox's agent: any byte stream (a unix socket, TCP, TLS over TCP).
pub trait AgentIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AgentIo for T {}

/// What [`Runtime::connect`] hands back.
pub type AgentConnection = Box<dyn AgentIo>;

/// The receiving end of the ids of sessions whose sandbox died on its own (see
/// [`Runtime::deaths`]).
pub type Deaths = mpsc::UnboundedReceiver<Uuid>;

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec asks for something this runtime does not have (such as an unknown image).
    #[error("{0}")]
    InvalidSpec(String),
    /// This runtime cannot do what was asked (pause, snapshot, usage counters); the message
    /// says what.
    #[error("{0}")]
    NotSupported(String),
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
    /// A sandbox record's runtime data is not what this runtime wrote.
    #[error("sandbox record: {0}")]
    Record(String),
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

/// What [`Runtime::snapshot`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Entries copied (files, directories, links, whiteouts).
    pub entries: u64,
    /// Bytes of file content copied.
    pub bytes: u64,
    /// Entries left out (sockets).
    pub skipped: u64,
    /// How long the sandbox's processes were frozen.
    pub frozen: std::time::Duration,
    /// How long the whole snapshot took.
    pub elapsed: std::time::Duration,
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

    /// Removes leftovers (cgroups, directories) of sandboxes that belong to no session in
    /// `known` (the sessions whose sandboxes stay: those just adopted, and those another
    /// replica owns), killing any process still in them. Returns the ids it cleaned. Runs at
    /// start-up and while serving (after another server process sharing the sandboxes
    /// died): whatever a live process is creating, pooling or running stays (the linux
    /// runtime: every sandbox a live runtime on its data directory keeps).
    async fn sweep(&self, known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError>;

    /// This server process's name among the processes that share this runtime's sandboxes
    /// (the linux runtime: its id on the data directory), for other processes to learn of its
    /// death through [`Runtime::dead_processes`]; `None` when the runtime cannot tell.
    fn process_id(&self) -> Option<String> {
        None
    }

    /// The processes that shared this runtime's sandboxes and are gone, as their
    /// [`Runtime::process_id`] named them, until a [`Runtime::sweep`] has cleaned after them
    /// (the linux runtime: runtimes on the data directory whose lock the kernel released).
    /// What they kept that no known session holds is left over: the next sweep removes it.
    fn dead_processes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether this process can serve and destroy the sandbox of `record` though another
    /// server process (a replica) runs it: true when both reach the same sandboxes (the linux
    /// runtime on one data directory). Otherwise only the process that runs a sandbox may
    /// destroy it.
    fn reaches(&self, record: &SandboxRecord) -> bool {
        let _ = record;
        false
    }

    /// Tells the runtime which server processes share its sandboxes (replicas on one store):
    /// `me` is this process's replica id, `live` the ids of the replicas whose lease holds
    /// now, `me` among them. The server calls it before its start-up recovery and after each
    /// heartbeat; without replicas (SQLite) never. A runtime whose sandboxes every replica
    /// sees (pods of one cluster) spares, in [`Runtime::sweep`], what live replicas made, and
    /// removes the warm sandboxes of replicas that died.
    async fn replicas(&self, me: &str, live: &[String]) {
        let _ = (me, live);
    }

    /// Opens a new connection to the agent of session `id`'s sandbox, which speaks HTTP/1.1
    /// on it.
    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError>;

    /// A receiver of the ids of sessions whose sandbox dies on its own from now on (its agent
    /// exited, its pod went away) rather than through [`Runtime::destroy`]. A later call
    /// replaces it: the earlier receiver ends. The server destroys what is left of each such
    /// sandbox and deletes its session.
    fn deaths(&self) -> Deaths;

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

    /// Copies the sandbox's writable root layer (overlayfs' upper directory, whiteouts
    /// included) into the new directory `into`, freezing the sandbox's processes while it
    /// copies so that no file is torn; they run on afterwards. Runtimes without snapshots
    /// refuse with [`SandboxError::NotSupported`].
    async fn snapshot(
        &self,
        record: &SandboxRecord,
        into: &std::path::Path,
    ) -> Result<SnapshotReport, SandboxError> {
        let _ = (record, into);
        Err(SandboxError::NotSupported(
            "this runtime cannot snapshot sessions".to_owned(),
        ))
    }

    /// Whether [`Runtime::set_frozen`] can pause this runtime's sandboxes: the server refuses
    /// pauses (409 `not_supported`) up front, and auto-pauses none, when it cannot.
    fn can_pause(&self) -> bool {
        false
    }

    /// Freezes (`frozen = true`) or thaws every process of the sandbox, its agent included,
    /// with all their state: a paused session costs no CPU and comes back as it was. Doing it
    /// twice is harmless. Runtimes that cannot pause refuse with [`SandboxError::NotSupported`].
    async fn set_frozen(&self, record: &SandboxRecord, frozen: bool) -> Result<(), SandboxError> {
        let _ = (record, frozen);
        Err(SandboxError::NotSupported(
            "this runtime cannot pause sessions".to_owned(),
        ))
    }

    /// What the sandbox's processes use now (memory, CPU time, tasks), from its cgroup
    /// (blocking: reads a few kernel files). Runtimes without counters refuse with
    /// [`SandboxError::NotSupported`].
    fn stats(&self, record: &SandboxRecord) -> Result<hutch_api::SessionStats, SandboxError> {
        let _ = record;
        Err(SandboxError::NotSupported(
            "this runtime keeps no usage counters".to_owned(),
        ))
    }

    /// [`Runtime::stats`] of every live sandbox, by session id (blocking).
    fn all_stats(&self) -> HashMap<Uuid, hutch_api::SessionStats> {
        HashMap::new()
    }

    /// Lets go of the OCI image `key` ([`OciImage::key`]): sandboxes built from it and waiting
    /// unclaimed are torn down, dropping their hold on it (before the image is removed, say).
    /// Sessions running on it are not touched.
    async fn forget_image(&self, key: &str) {
        let _ = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stored_before_runtime_data_read_back_the_same() {
        let json = r#"{"id":"0190f3a1-0000-7000-8000-000000000001","sandboxId":"0190f3a1-0000-7000-8000-000000000002","agentPid":4242}"#;
        let record: SandboxRecord = serde_json::from_str(json).unwrap();
        assert_eq!(
            record.runtime.decode::<serde_json::Value>().unwrap(),
            serde_json::json!({"agentPid": 4242})
        );
        assert_eq!(serde_json::to_string(&record).unwrap(), json);
    }

    #[test]
    fn runtime_data_is_an_object_that_leaves_the_ids_alone() {
        assert!(RuntimeData::encode(&7).is_err());
        assert!(RuntimeData::encode(&serde_json::json!({"id": 1})).is_err());
        assert!(RuntimeData::encode(&serde_json::json!({"sandboxId": 1})).is_err());
        let data = RuntimeData::encode(&serde_json::json!({"pod": "p"})).unwrap();
        assert!(matches!(
            data.decode::<std::collections::BTreeMap<String, u32>>(),
            Err(SandboxError::Record(_))
        ));
    }
}
