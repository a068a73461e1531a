//! Storage contexts: named persistent storage of a tenant, synchronised into sessions.
//!
//! A context's content is a tree of files kept by the control plane. A session binds contexts
//! to paths with `contextSyncs` on create: the content is downloaded into the path before the
//! session is `RUNNING` and uploaded back when the session is deleted or expires. Each upload
//! makes a new version, atomically: a reader sees the previous content or the new one, never
//! a mix.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/contexts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "project-cache"}))]
pub struct CreateStorageContextRequest {
    /// Name, unique among the tenant's contexts: 1 to 128 characters of letters, digits,
    /// `.`, `_` and `-`.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: String,
}

/// A storage context as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageContext {
    /// UUID (v7).
    pub id: Uuid,
    /// Name, unique per tenant.
    pub name: String,
    /// Number of completed uploads; 0 while the context is empty.
    pub version: u64,
    /// Bytes of file content in the current version.
    pub size_bytes: u64,
    /// When the context was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the current version was made (the creation time for version 0).
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `GET /v1/contexts`: one page of the caller's contexts, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageContextList {
    /// The page.
    pub contexts: Vec<StorageContext>,
    /// How many contexts the caller has in all.
    pub total: u64,
    /// The page size used, 1..=100.
    #[schema(minimum = 1, maximum = 100)]
    pub limit: u32,
    /// How many contexts were skipped.
    pub offset: u64,
}

/// When a bound context is transferred, and what of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncPolicy {
    /// Download the content into the path before the session runs; default true.
    #[serde(default = "yes")]
    pub download: bool,
    /// Upload the path's content when the session is deleted or expires; default true.
    #[serde(default = "yes")]
    pub upload: bool,
    /// Only paths matching one of these globs (relative to the bound path; `*` stays within
    /// a directory, `**` crosses directories) are uploaded; empty means everything.
    #[serde(default)]
    pub include: Vec<String>,
    /// Paths matching one of these globs are never uploaded (applied after `include`).
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            download: true,
            upload: true,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// One context bound to a path of a session (`contextSyncs` on create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"contextId": "0192f0a4-3c1e-7d2a-9b1c-2d3e4f5a6b7c", "path": "/workspace/data"}))]
pub struct ContextSync {
    /// The storage context.
    pub context_id: Uuid,
    /// Absolute directory inside the sandbox; created if missing.
    #[schema(max_length = 4096, example = "/workspace/data")]
    pub path: String,
    /// What is transferred when; default: download on create, upload on delete and expiry.
    #[serde(default)]
    pub policy: SyncPolicy,
}

/// Direction of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    /// From the session into the context (makes a new version).
    Upload,
    /// From the context into the session.
    Download,
}

impl TaskType {
    /// The name stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Upload => "upload",
            TaskType::Download => "download",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upload" => Some(TaskType::Upload),
            "download" => Some(TaskType::Download),
            _ => None,
        }
    }
}

/// Where a transfer task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum TaskStatus {
    /// Recorded, not started.
    Pending,
    /// Transferring.
    Running,
    /// Done; for an upload, the new version is durable.
    Success,
    /// Stopped; `errorMessage` says why. An upload that failed left the previous version.
    Failed,
}

impl TaskStatus {
    /// The name stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "Pending",
            TaskStatus::Running => "Running",
            TaskStatus::Success => "Success",
            TaskStatus::Failed => "Failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Pending" => Some(TaskStatus::Pending),
            "Running" => Some(TaskStatus::Running),
            "Success" => Some(TaskStatus::Success),
            "Failed" => Some(TaskStatus::Failed),
            _ => None,
        }
    }

    /// Whether the task has finished, well or not.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Success | TaskStatus::Failed)
    }
}

/// One transfer between a session and a context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextStatusData {
    /// The storage context.
    pub context_id: Uuid,
    /// The path in the session.
    pub path: String,
    /// Where the task is.
    pub status: TaskStatus,
    /// Direction.
    pub task_type: TaskType,
    /// When the task was recorded, Unix seconds.
    pub start_time: i64,
    /// When it finished, Unix seconds; 0 while it runs.
    pub finish_time: i64,
    /// Why it failed; empty otherwise.
    pub error_message: String,
    /// The context version an upload made or a download read; 0 when none.
    pub version: u64,
}

/// `GET /v1/sessions/{id}/context/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextInfo {
    /// The session's transfer tasks, oldest first (the most recent ones, bounded).
    pub context_status_data: Vec<ContextStatusData>,
}

/// `POST /v1/sessions/{id}/context/sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"mode": "upload"}))]
pub struct SyncRequest {
    /// Only this context; default every context bound to the session.
    pub context_id: Option<Uuid>,
    /// Only this path; with `contextId`, a path need not be bound beforehand.
    #[schema(max_length = 4096)]
    pub path: Option<String>,
    /// Direction; default upload.
    pub mode: Option<TaskType>,
}

/// The answer to a sync request: the tasks it started (they run in the background; poll
/// `context/info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStarted {
    /// Always true: the tasks were recorded.
    pub success: bool,
    /// The tasks, `Pending` or `Running`.
    pub tasks: Vec<ContextStatusData>,
}
