//! Sessions: isolated sandboxes with a time to live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a session is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    /// The sandbox is being built; not yet usable.
    Creating,
    /// The sandbox is up and accepts work.
    Running,
    /// The sandbox is frozen; its processes do not run.
    Paused,
    /// The sandbox is being torn down.
    Deleting,
}

impl SessionStatus {
    /// The name stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Creating => "CREATING",
            SessionStatus::Running => "RUNNING",
            SessionStatus::Paused => "PAUSED",
            SessionStatus::Deleting => "DELETING",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATING" => SessionStatus::Creating,
            "RUNNING" => SessionStatus::Running,
            "PAUSED" => SessionStatus::Paused,
            "DELETING" => SessionStatus::Deleting,
            _ => return None,
        })
    }
}

/// Resource limits of a session, as granted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU time per wall-clock second, in CPUs (0.5 = half a core).
    #[schema(minimum = 0.05, maximum = 64)]
    pub cpus: f64,
    /// Memory limit in MiB (swap is off).
    #[schema(minimum = 32, maximum = 65536)]
    pub memory_mb: u64,
    /// Most processes and threads alive at once.
    #[schema(minimum = 8, maximum = 32768)]
    pub pids: u64,
    /// Disk quota of the writable layer in MiB, as requested; absent when none was asked
    /// for (the server's default, if it has one, applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 1048576)]
    pub disk_mb: Option<u64>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: crate::limits::DEFAULT_CPUS,
            memory_mb: crate::limits::DEFAULT_MEMORY_MB,
            pids: crate::limits::DEFAULT_PIDS,
            disk_mb: None,
        }
    }
}

/// Resource limits as requested: each omitted field takes its default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcesRequest {
    /// CPUs, 0.05 to 64; default 1.
    #[schema(minimum = 0.05, maximum = 64)]
    pub cpus: Option<f64>,
    /// Memory in MiB, 32 to 65536; default 512.
    #[schema(minimum = 32, maximum = 65536)]
    pub memory_mb: Option<u64>,
    /// Process limit, 8 to 32768; default 512.
    #[schema(minimum = 8, maximum = 32768)]
    pub pids: Option<u64>,
    /// Disk quota in MiB, 16 to 1048576, over everything the session writes (its writable
    /// layer, `/tmp` and `/dev/shm`); past it writes fail inside (EDQUOT, "Disk quota
    /// exceeded"; ENOSPC in `/tmp` and with per-session disks) and the file API answers 507
    /// `disk_full`. Default: the server's `--disk-mb-default` (10240 unless the operator set
    /// another).
    #[schema(minimum = 16, maximum = 1048576)]
    pub disk_mb: Option<u64>,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"ttl": 600, "metadata": {"owner": "ci"}, "resources": {"cpus": 0.5, "memoryMb": 256}}))]
pub struct CreateSessionRequest {
    /// Time to live in seconds, 60..=28800; default 300.
    #[schema(minimum = 60, maximum = 28800)]
    pub ttl: Option<u64>,
    /// Image: `default` (the default: the host's own `/usr` and a copy of its `/etc`), an OCI
    /// image reference (pulled when the server lacks it), an imported image's name or one of
    /// the tenant's snapshots.
    #[schema(example = "default")]
    pub image: Option<String>,
    /// Free-form string labels, bounded in count and size.
    #[schema(schema_with = crate::schema::metadata_request)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Resource limits.
    pub resources: Option<ResourcesRequest>,
    /// Environment variables every process in the session starts with.
    #[schema(schema_with = crate::schema::env_request)]
    pub env: Option<BTreeMap<String, String>>,
    /// Storage contexts to bind to paths of the session: each is downloaded into its path
    /// before the session runs and uploaded back when it is deleted or expires. At most 8,
    /// each context once, at absolute paths none inside another and none under `/proc`,
    /// `/sys` or `/dev`, compared and kept in their plain spelling (`/./a//b/` is `/a/b`).
    #[schema(max_items = 8)]
    pub context_syncs: Option<Vec<crate::storage::ContextSync>>,
    /// Network egress; default: the server's `--network-default` (out of the box `none`: only
    /// `lo`).
    pub network: Option<crate::network::NetworkPolicy>,
    /// Pause the session after it has been idle this long; default: the server's
    /// `--auto-pause-idle` (out of the box: never). A request to a session paused this way
    /// resumes it first.
    pub auto_pause: Option<AutoPause>,
}

/// When a session pauses itself: after `idleSeconds` with no API request to it and no
/// command, execution or terminal of it running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"idleSeconds": 300}))]
pub struct AutoPause {
    /// Seconds of idleness before the session pauses, 10..=28800.
    #[schema(minimum = 10, maximum = 28800)]
    pub idle_seconds: u64,
    /// Also count a background process that is still running (started with `POST
    /// /processes`) as activity; default false.
    #[serde(default)]
    pub keep_awake: bool,
}

/// `GET /v1/sessions/{id}/stats`: what the session's processes use now, read from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"memoryBytes": 9437184, "rssBytes": 6291456, "cacheBytes": 3145728, "cpuSeconds": 0.42, "pids": 3}))]
pub struct SessionStats {
    /// Memory charged to the session in all (its processes' memory, page cache and kernel
    /// memory), in bytes.
    pub memory_bytes: u64,
    /// Anonymous memory of its processes (their resident set less file pages), in bytes.
    pub rss_bytes: u64,
    /// Page cache charged to the session, in bytes.
    pub cache_bytes: u64,
    /// CPU time its processes used since it started, user and system, in seconds.
    pub cpu_seconds: f64,
    /// Processes and threads alive in it.
    pub pids: u64,
}

/// `PATCH /v1/sessions/{id}`: each present field replaces the current value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"ttl": 3600}))]
pub struct UpdateSessionRequest {
    /// New time to live in seconds, 60..=28800, counted from now.
    #[schema(minimum = 60, maximum = 28800)]
    pub ttl: Option<u64>,
    /// New metadata, replacing the old.
    #[schema(schema_with = crate::schema::metadata_request)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// New network policy; applies to connections opened from now on. A session created
    /// with `egress: none` has no network interface and cannot be given one.
    pub network: Option<crate::network::NetworkPolicy>,
}

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// UUID (v7, so ids sort by creation time).
    pub session_id: Uuid,
    /// Lifecycle state.
    pub status: SessionStatus,
    /// Image the sandbox runs.
    pub image: String,
    /// Labels given on create or update.
    #[schema(schema_with = crate::schema::metadata_response)]
    pub metadata: BTreeMap<String, String>,
    /// Granted resource limits.
    pub resources: Resources,
    /// When the session was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the session expires and is destroyed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The session's network policy: the one asked for on create (or the server's default),
    /// as last changed by `PATCH /v1/sessions/{id}`.
    pub network: crate::network::NetworkPolicy,
    /// When the session pauses itself; absent when it never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<AutoPause>,
    /// When a `PAUSED` session was paused; absent otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub paused_at: Option<OffsetDateTime>,
}

/// `GET /v1/sessions`: one page of the caller's sessions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    /// The page.
    pub sessions: Vec<Session>,
    /// How many sessions the caller has in all: of the status asked for, when the list is
    /// filtered by one.
    pub total: u64,
    /// The page size used, 1..=100.
    #[schema(minimum = 1, maximum = 100)]
    pub limit: u32,
    /// How many sessions were skipped.
    pub offset: u64,
}
