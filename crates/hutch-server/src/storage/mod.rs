//! Storage contexts: named persistent storage of a tenant, and the transfers that move their
//! content into and out of sessions (see "Storage contexts" in docs/architecture.md and
//! docs/operations.md).
//!
//! [`Storage`] joins the store's rows (`storage_contexts`, `session_context_syncs`,
//! `context_tasks`) and a [`BlobStore`] holding each context's current version as a tar
//! stream. The content moves through the session's agent: an upload reads
//! `GET /files/archive?path=` from it, a download writes `PUT /files/archive?path=` to it, so
//! the agent's confinement applies to every byte a context writes into a session.
//!
//! Versions are atomic. An upload is checked and rewritten ([`archive::rewrite`]) into a new
//! blob, made durable, and only then committed: one statement points the context at the new
//! blob and bumps its version. A reader (a download) opens the blob the row names at that
//! moment and reads it whole, even if a newer version replaces it meanwhile. Commits of one
//! context are serialised, and the last to commit wins; every commit bumps the version once.
//! An upload that fails, however far it got, leaves the previous version as it was; a server
//! killed during one leaves a temporary file that the next start sweeps, and its task is
//! marked Failed then. On S3 (`--blob-store`, [`s3`]) the same holds: the half-written
//! version is an incomplete multipart upload no reader sees.

pub(crate) mod archive;
pub(crate) mod blobs;
pub(crate) mod s3;

use std::collections::HashMap;
use std::io::{self, BufWriter};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use hutch_api::limits::{CONTEXT_TASKS_KEPT, STORAGE_CONTEXT_MAX_ENTRIES};
use hutch_api::{
    ContextStatusData, ContextSync, ErrorBody, ErrorCode, StorageContext, StorageContextList,
    TaskStatus, TaskType,
};
use hutch_sandbox::AgentConnection;
use uuid::Uuid;

use crate::auth::Caller;
use crate::store::{ContextInsert, Store, StoreError, StoredContext, now_ms};
use crate::validate::Page;
use archive::{ArchiveError, ArchiveLimits, PathFilter};
use blobs::BlobStore;

/// Longest one transfer may take before it is abandoned (and fails).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How much of an agent's error answer is read to explain a failed transfer.
const AGENT_ERROR_MAX_BYTES: usize = 64 * 1024;
/// Size of the chunks a download streams.
const DOWNLOAD_CHUNK_BYTES: usize = 256 * 1024;

/// Bounds on storage contexts, configured with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimits {
    /// Most bytes of file content in one context.
    pub context_max_bytes: u64,
    /// Most bytes of file content summed over one tenant's contexts.
    pub tenant_max_bytes: u64,
    /// Most contexts of one tenant.
    pub tenant_max_contexts: usize,
}

impl Default for StorageLimits {
    fn default() -> Self {
        StorageLimits {
            context_max_bytes: 1 << 30,
            tenant_max_bytes: 10 << 30,
            tenant_max_contexts: 100,
        }
    }
}

/// Why a storage context operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    /// No such context for this caller.
    #[error("no storage context {0}")]
    NotFound(Uuid),
    /// The caller has a context of this name.
    #[error("a storage context named {0:?} exists already")]
    NameTaken(String),
    /// The caller holds its most contexts.
    #[error("the tenant holds its maximum of {limit} storage contexts; delete one first")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why moving content between a session and a context failed: the task's error message.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The context was deleted.
    #[error("storage context {0} no longer exists")]
    ContextGone(Uuid),
    /// The session's agent could not be reached or broke off.
    #[error("the session could not be reached: {0}")]
    Unreachable(String),
    /// The session's agent refused.
    #[error("the session answered {status}: {message}")]
    Agent {
        /// Its error code.
        code: Option<ErrorCode>,
        /// Its HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The uploaded content may not be stored.
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    /// The content is larger than what the tenant has left.
    #[error(
        "the tenant's storage contexts hold {used} bytes; this upload would pass the tenant's limit of {limit} bytes"
    )]
    TenantFull {
        /// The limit.
        limit: u64,
        /// Bytes in the tenant's other contexts.
        used: u64,
    },
    /// Blob storage failed.
    #[error("the context's storage failed: {0}")]
    Blob(#[source] io::Error),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// It took longer than [`TRANSFER_TIMEOUT`].
    #[error("the transfer took longer than {} s", TRANSFER_TIMEOUT.as_secs())]
    TimedOut,
}

impl TransferError {
    /// Whether the session's disk is full (the download did not fit).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            TransferError::Agent {
                code: Some(ErrorCode::DiskFull),
                ..
            }
        )
    }
}

/// Storage contexts and their transfers.
pub(crate) struct Storage {
    store: Store,
    blobs: Arc<dyn BlobStore>,
    limits: StorageLimits,
    /// One lock per context, held while a new version is committed.
    commits: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

/// The current time in Unix seconds.
fn now_secs() -> i64 {
    now_ms() / 1000
}

impl Storage {
    /// Storage over `store` and `blobs`.
    pub(crate) fn new(store: Store, blobs: Arc<dyn BlobStore>, limits: StorageLimits) -> Self {
        Storage {
            store,
            blobs,
            limits,
            commits: Mutex::new(HashMap::new()),
        }
    }

    /// At start: marks tasks a stopped server left unfinished as Failed and removes blobs no
    /// context points at (half-written uploads among them).
    pub(crate) async fn recover(&self) -> Result<(), StoreError> {
        let failed = self
            .store
            .fail_unfinished_tasks(
                now_secs(),
                "the server stopped while the transfer ran; the context kept its previous version",
            )
            .await?;
        if failed > 0 {
            tracing::warn!(
                tasks = failed,
                "storage transfers interrupted by a restart marked Failed"
            );
        }
        let live: Vec<(Uuid, Option<String>)> = self
            .store
            .all_contexts()
            .await?
            .into_iter()
            .map(|c| (c.id, c.blob))
            .collect();
        let blobs = Arc::clone(&self.blobs);
        match tokio::task::spawn_blocking(move || blobs.sweep(&live)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "swept storage blobs no context uses"),
            Ok(Err(err)) => tracing::error!(error = %err, "sweeping storage blobs"),
            Err(err) => tracing::error!(error = %err, "sweeping storage blobs"),
        }
        Ok(())
    }

    /// Whether the blob store answers (see [`BlobStore::check`]).
    pub(crate) async fn check_blobs(&self) -> io::Result<()> {
        let blobs = Arc::clone(&self.blobs);
        tokio::task::spawn_blocking(move || blobs.check())
            .await
            .map_err(io::Error::other)?
    }

    /// Creates an empty context named `name` (already validated).
    pub(crate) async fn create(
        &self,
        caller: &Caller,
        name: String,
    ) -> Result<StorageContext, StorageError> {
        let now = now_ms();
        let row = StoredContext {
            id: Uuid::now_v7(),
            tenant: caller.tenant.clone(),
            name,
            version: 0,
            size_bytes: 0,
            blob: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        match self
            .store
            .insert_context(&row, self.limits.tenant_max_contexts)
            .await?
        {
            ContextInsert::Inserted => {
                tracing::info!(context = %row.id, tenant = %caller.tenant, "storage context created");
                Ok(row.to_api())
            }
            ContextInsert::NameTaken => Err(StorageError::NameTaken(row.name)),
            ContextInsert::TooMany => Err(StorageError::TooMany {
                limit: self.limits.tenant_max_contexts,
            }),
        }
    }

    /// A context the caller may see.
    pub(crate) async fn visible(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<StoredContext, StorageError> {
        match self.store.get_context(id).await? {
            Some(row) if caller.may_see(&row.tenant) => Ok(row),
            _ => Err(StorageError::NotFound(id)),
        }
    }

    /// One page of the caller's contexts (every tenant's for an admin).
    pub(crate) async fn list(
        &self,
        caller: &Caller,
        page: Page,
    ) -> Result<StorageContextList, StorageError> {
        let tenant = (!caller.admin).then_some(caller.tenant.as_str());
        let (rows, total) = self
            .store
            .list_contexts(tenant, page.limit, page.offset)
            .await?;
        Ok(StorageContextList {
            contexts: rows.iter().map(StoredContext::to_api).collect(),
            total,
            limit: page.limit,
            offset: page.offset,
        })
    }

    /// Deletes a context and its content. Sessions binding it fail their next transfer.
    pub(crate) async fn delete(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<StorageContext, StorageError> {
        let row = self.visible(caller, id).await?;
        let lock = self.commit_lock(id);
        let _held = lock.lock().await;
        if !self.store.delete_context(id).await? {
            return Err(StorageError::NotFound(id));
        }
        let blobs = Arc::clone(&self.blobs);
        match tokio::task::spawn_blocking(move || blobs.retain(id, None)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(context = %id, error = %err, "removing a deleted context's content")
            }
            Err(err) => {
                tracing::error!(context = %id, error = %err, "removing a deleted context's content")
            }
        }
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        tracing::info!(context = %id, tenant = %row.tenant, "storage context deleted");
        Ok(row.to_api())
    }

    fn commit_lock(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.commits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .or_default(),
        )
    }

    /// Records a task of `session` as Pending (or Running, with `running`).
    pub(crate) async fn record_task(
        &self,
        session: Uuid,
        sync: &ContextSync,
        task_type: TaskType,
        running: bool,
    ) -> Result<(i64, ContextStatusData), StoreError> {
        let data = ContextStatusData {
            context_id: sync.context_id,
            path: sync.path.clone(),
            status: if running {
                TaskStatus::Running
            } else {
                TaskStatus::Pending
            },
            task_type,
            start_time: now_secs(),
            finish_time: 0,
            error_message: String::new(),
            version: 0,
        };
        let id = self
            .store
            .insert_task(session, &data, CONTEXT_TASKS_KEPT)
            .await?;
        Ok((id, data))
    }

    /// Runs a recorded task to its end and records how it ended.
    pub(crate) async fn run_task(
        &self,
        task: i64,
        tenant: &str,
        session: Uuid,
        agent: Result<AgentConnection, String>,
        sync: &ContextSync,
        task_type: TaskType,
    ) -> Result<u64, TransferError> {
        self.store
            .update_task(task, TaskStatus::Running, 0, 0, "")
            .await?;
        let outcome = match agent {
            Err(why) => Err(TransferError::Unreachable(why)),
            Ok(agent) => {
                let transfer = async {
                    match task_type {
                        TaskType::Upload => self.upload(tenant, agent, sync).await,
                        TaskType::Download => self.download(agent, sync).await,
                    }
                };
                tokio::time::timeout(TRANSFER_TIMEOUT, transfer)
                    .await
                    .unwrap_or(Err(TransferError::TimedOut))
            }
        };
        let (status, version, message) = match &outcome {
            Ok(version) => (TaskStatus::Success, *version, String::new()),
            Err(err) => (TaskStatus::Failed, 0, err.to_string()),
        };
        match &outcome {
            Ok(version) => tracing::info!(
                session = %session, context = %sync.context_id, path = %sync.path,
                task = task_type.as_str(), version, "storage transfer done"
            ),
            Err(err) => tracing::warn!(
                session = %session, context = %sync.context_id, path = %sync.path,
                task = task_type.as_str(), error = %err, "storage transfer failed"
            ),
        }
        self.store
            .update_task(task, status, version, now_secs(), &message)
            .await?;
        outcome
    }

    /// Reads the bound path out of the session and commits it as the context's next
    /// version. Returns that version.
    async fn upload(
        &self,
        tenant: &str,
        agent: AgentConnection,
        sync: &ContextSync,
    ) -> Result<u64, TransferError> {
        let id = sync.context_id;
        let context = self
            .store
            .get_context(id)
            .await?
            .filter(|c| c.tenant == tenant)
            .ok_or(TransferError::ContextGone(id))?;
        let others = self.store.tenant_context_bytes(tenant, id).await?;
        let tenant_left = self.limits.tenant_max_bytes.saturating_sub(others);
        let limits = ArchiveLimits {
            max_bytes: self.limits.context_max_bytes.min(tenant_left),
            max_entries: STORAGE_CONTEXT_MAX_ENTRIES,
        };
        let filter = PathFilter::new(&sync.policy.include, &sync.policy.exclude)
            .map_err(|e| TransferError::Unreachable(format!("invalid policy: {e}")))?;
        let response = crate::proxy::agent_request(
            agent,
            "GET",
            &format!("/files/archive?path={}", query_escape(&sync.path)),
            Body::empty(),
        )
        .await
        .map_err(TransferError::Unreachable)?;
        let response = agent_ok(response).await?;
        let stream = response
            .into_body()
            .into_data_stream()
            .map_err(io::Error::other);
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let blobs = Arc::clone(&self.blobs);
        let written = tokio::task::spawn_blocking(move || {
            let mut writer = blobs.create(id).map_err(TransferError::Blob)?;
            let summary = archive::rewrite(
                reader,
                BufWriter::with_capacity(1 << 20, &mut writer),
                &filter,
                limits,
            )?;
            Ok::<_, TransferError>((writer, summary))
        })
        .await
        .map_err(|e| TransferError::Blob(io::Error::other(e)))?;
        let (writer, summary) = match written {
            Err(TransferError::Archive(ArchiveError::TooLarge { .. }))
                if tenant_left < self.limits.context_max_bytes =>
            {
                return Err(TransferError::TenantFull {
                    limit: self.limits.tenant_max_bytes,
                    used: others,
                });
            }
            other => other?,
        };
        // Commit under the context's lock, so that cleaning up after one commit never
        // removes the blob of another that is about to commit.
        let lock = self.commit_lock(id);
        let _held = lock.lock().await;
        let blobs = Arc::clone(&self.blobs);
        let blob = tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| TransferError::Blob(io::Error::other(e)))?
            .map_err(TransferError::Blob)?;
        let version = self
            .store
            .commit_version(id, &blob, summary.bytes, now_ms())
            .await?;
        let Some(version) = version else {
            let _ = tokio::task::spawn_blocking(move || blobs.retain(id, None)).await;
            return Err(TransferError::ContextGone(id));
        };
        let keep = blob.clone();
        let cleaned = tokio::task::spawn_blocking(move || blobs.retain(id, Some(&keep))).await;
        if let Ok(Err(err)) = cleaned {
            tracing::warn!(context = %id, error = %err, "removing older versions of a context");
        }
        tracing::debug!(context = %id, previous = context.version, version, bytes = summary.bytes, entries = summary.entries, "context version committed");
        Ok(version)
    }

    /// Writes the context's current version into the bound path of the session. Returns the
    /// version written (0 for an empty context, which only makes the directory).
    async fn download(
        &self,
        agent: AgentConnection,
        sync: &ContextSync,
    ) -> Result<u64, TransferError> {
        let id = sync.context_id;
        // The row names the current blob; a commit may remove it before it is opened, in
        // which case the row names a newer one.
        let mut attempts = 0;
        let (context, reader) = loop {
            let context = self
                .store
                .get_context(id)
                .await?
                .ok_or(TransferError::ContextGone(id))?;
            let Some(blob) = context.blob.clone() else {
                break (context, None);
            };
            let blobs = Arc::clone(&self.blobs);
            let opened = tokio::task::spawn_blocking(move || blobs.open(id, &blob))
                .await
                .map_err(|e| TransferError::Blob(io::Error::other(e)))?;
            match opened {
                Ok(reader) => break (context, Some(reader)),
                Err(err) if err.kind() == io::ErrorKind::NotFound && attempts < 5 => {
                    attempts += 1;
                }
                Err(err) => return Err(TransferError::Blob(err)),
            }
        };
        let (mut sender, connection) = crate::proxy::agent_connection(agent)
            .await
            .map_err(TransferError::Unreachable)?;
        let mkdir = serde_json::json!({"path": sync.path, "parents": true}).to_string();
        let response = crate::proxy::agent_send(
            &mut sender,
            "POST",
            "/files/mkdir",
            Body::from(mkdir),
            Some("application/json"),
        )
        .await
        .map_err(TransferError::Unreachable)?;
        agent_ok(response).await?;
        if let Some(reader) = reader {
            let response = crate::proxy::agent_send(
                &mut sender,
                "PUT",
                &format!("/files/archive?path={}", query_escape(&sync.path)),
                stream_blob(reader),
                Some("application/x-tar"),
            )
            .await
            .map_err(TransferError::Unreachable)?;
            agent_ok(response).await?;
        }
        drop(sender);
        connection.abort();
        Ok(context.version)
    }
}

/// A blob as a streamed request body, read on a blocking thread.
fn stream_blob(mut reader: Box<dyn io::Read + Send>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut chunk = vec![0u8; DOWNLOAD_CHUNK_BYTES];
            let item = match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    Ok(Bytes::from(chunk))
                }
                Err(err) => Err(err),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

/// The agent's answer if it is a success; its error envelope as a [`TransferError`]
/// otherwise.
async fn agent_ok(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<hyper::Response<hyper::body::Incoming>, TransferError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), AGENT_ERROR_MAX_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
    Err(match parsed {
        Some(err) => TransferError::Agent {
            code: Some(err.error.code),
            status,
            message: err.error.message,
        },
        None => TransferError::Agent {
            code: None,
            status,
            message: String::from_utf8_lossy(&body).into_owned(),
        },
    })
}

/// Percent-encodes a query value: everything but unreserved characters and `/`.
pub(crate) fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("/workspace/a b&c"), "/workspace/a%20b%26c");
        assert_eq!(query_escape("/ü"), "/%C3%BC");
    }
}
