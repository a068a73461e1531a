//! The session engine: what creating, changing, expiring and deleting a session does.
//!
//! [`Sessions`] joins the [`Store`] and the [`Runtime`]. Handlers, the TTL reaper, the
//! died-sandbox watcher and crash recovery all go through it, so that the rules live in one
//! place:
//!
//! - tenancy: a session of another tenant is reported exactly like a missing one;
//! - a session's sandbox is destroyed at most once at a time: every path that creates or
//!   destroys a sandbox first takes the session's claim in an in-memory set ([`Claims`]), and
//!   gives up (or, for the died watcher, waits) when another path holds it;
//! - a row is deleted only after its sandbox is destroyed; a destroy that fails leaves the
//!   row DELETING and the reaper retries it later.
//!
//! It knows nothing of HTTP: it returns [`SessionError`], which the API layer maps to codes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hutch_api::limits::CONTEXT_SYNCS_MAX;
use hutch_api::{
    ContextInfo, ContextSync, Session, SessionList, SessionStatus, SyncStarted, TaskType,
};
use hutch_sandbox::{Runtime, SandboxError, SandboxSpec};
use tokio::net::UnixStream;
use uuid::Uuid;

use crate::auth::Caller;
use crate::storage::{Storage, StorageError, TransferError};
use crate::store::{
    InsertOutcome, RowLimits, Store, StoreError, StoredSession, TaskFilter, now_ms,
};
use crate::validate::{NewSession, Page, SessionChanges, SyncTarget};

/// How long after a failed destroy the reaper tries again, in milliseconds.
const DESTROY_RETRY_MS: i64 = 30_000;
/// How often the died watcher looks again at a session another task is creating or destroying.
const DIED_RETRY: Duration = Duration::from_millis(100);
/// How many times it looks (a minute in all) before leaving the session to its expiry.
const DIED_ATTEMPTS: u32 = 600;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session for this caller.
    #[error("no session {0}")]
    NotFound(Uuid),
    /// The session is in a state that does not allow this.
    #[error("{0}")]
    Conflict(String),
    /// `max_sessions` sessions exist already.
    #[error("the server holds its maximum of {0} sessions")]
    Capacity(usize),
    /// The tenant holds as many sessions as its quota allows.
    #[error(
        "the tenant holds {used} sessions, as many as its quota of {limit} allows; delete one first"
    )]
    TenantSessions {
        /// The quota.
        limit: u64,
        /// The tenant's sessions.
        used: u64,
    },
    /// Another session of this size would take the tenant past its memory quota.
    #[error(
        "the tenant's sessions hold {used} MiB of memory; {requested} MiB more would pass its quota of {limit} MiB"
    )]
    TenantMemory {
        /// The quota, in MiB.
        limit: u64,
        /// The memory of the tenant's sessions, in MiB.
        used: u64,
        /// The memory the new session asks for, in MiB.
        requested: u64,
    },
    /// The session's agent could not be reached.
    #[error("cannot connect to the sandbox of session {id}")]
    Unavailable {
        /// The session id.
        id: Uuid,
        /// What the runtime said.
        #[source]
        source: SandboxError,
    },
    /// A storage context named by the request is not the caller's.
    #[error("no storage context {0}")]
    StorageContextNotFound(Uuid),
    /// Moving content between the session and a storage context failed.
    #[error("{task} of storage context {context} at {path} failed: {source}")]
    SyncFailed {
        /// `upload` or `download`.
        task: &'static str,
        /// The context.
        context: Uuid,
        /// The path in the session.
        path: String,
        /// Why.
        #[source]
        source: TransferError,
    },
    /// The runtime failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StorageError> for SessionError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(id) => SessionError::StorageContextNotFound(id),
            StorageError::Store(err) => SessionError::Store(err),
            other => SessionError::Conflict(other.to_string()),
        }
    }
}

/// What crash recovery did at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Sandboxes found alive and taken back.
    pub adopted: usize,
    /// Sessions whose sandbox was destroyed (interrupted, expired or lost).
    pub destroyed: usize,
    /// Leftovers of unknown sandboxes the runtime cleaned.
    pub swept: usize,
}

/// The set of sessions some task is currently creating or destroying.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    held: Arc<Mutex<HashSet<Uuid>>>,
}

/// Exclusive right to create or destroy one session's sandbox; released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    held: Arc<Mutex<HashSet<Uuid>>>,
    id: Uuid,
}

impl Claims {
    /// Takes the claim on `id`, or `None` if another task holds it.
    pub(crate) fn try_claim(&self, id: Uuid) -> Option<Claim> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(id).then(|| Claim {
            held: Arc::clone(&self.held),
            id,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The session engine.
pub(crate) struct Sessions {
    pub(crate) store: Store,
    runtime: Arc<dyn Runtime>,
    /// Storage contexts, for the transfers of `contextSyncs`.
    pub(crate) storage: Arc<Storage>,
    claims: Claims,
    max_sessions: usize,
    tenant_max_sessions: usize,
    tenant_max_memory_mb: u64,
}

impl Sessions {
    /// An engine over `store`, `runtime` and `storage` holding at most `max_sessions`
    /// sessions, with no per-tenant quotas.
    pub(crate) fn new(
        store: Store,
        runtime: Arc<dyn Runtime>,
        storage: Arc<Storage>,
        max_sessions: usize,
    ) -> Self {
        Sessions {
            store,
            runtime,
            storage,
            claims: Claims::default(),
            max_sessions,
            tenant_max_sessions: usize::MAX,
            tenant_max_memory_mb: u64::MAX,
        }
    }

    /// The same engine, holding at most `max_sessions` sessions and `max_memory_mb` of
    /// `memoryMb` (summed) per tenant.
    pub(crate) fn with_tenant_quotas(mut self, max_sessions: usize, max_memory_mb: u64) -> Self {
        self.tenant_max_sessions = max_sessions;
        self.tenant_max_memory_mb = max_memory_mb;
        self
    }

    /// Creates a session and its sandbox; returns once the sandbox's agent accepts connections.
    pub(crate) async fn create(
        &self,
        caller: &Caller,
        new: NewSession,
    ) -> Result<Session, SessionError> {
        for sync in &new.context_syncs {
            self.storage.visible(caller, sync.context_id).await?;
        }
        let id = Uuid::now_v7();
        let claim = self.claims.try_claim(id).ok_or_else(|| {
            SessionError::Conflict(format!("session id {id} is already in use; retry"))
        })?;
        let created_at_ms = now_ms();
        let ttl_ms = i64::try_from(new.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let row = StoredSession {
            id,
            tenant: caller.tenant.clone(),
            status: SessionStatus::Creating,
            image: new.image,
            metadata: new.metadata,
            resources: new.resources,
            env: new.env,
            created_at_ms,
            expires_at_ms: created_at_ms.saturating_add(ttl_ms),
            record: None,
        };
        let limits = RowLimits {
            max_rows: self.max_sessions,
            tenant_max_rows: self.tenant_max_sessions,
            tenant_max_memory_mb: self.tenant_max_memory_mb,
        };
        match self.store.insert_creating_within(&row, limits).await? {
            InsertOutcome::Inserted => {}
            InsertOutcome::Capacity { .. } => {
                return Err(SessionError::Capacity(self.max_sessions));
            }
            InsertOutcome::TenantRows { rows } => {
                return Err(SessionError::TenantSessions {
                    limit: u64::try_from(self.tenant_max_sessions).unwrap_or(u64::MAX),
                    used: rows,
                });
            }
            InsertOutcome::TenantMemory { memory_mb } => {
                return Err(SessionError::TenantMemory {
                    limit: self.tenant_max_memory_mb,
                    used: memory_mb,
                    requested: row.resources.memory_mb,
                });
            }
        }
        if let Err(err) = self.store.insert_syncs(id, &new.context_syncs).await {
            self.forget(id).await;
            return Err(err.into());
        }
        let spec = SandboxSpec {
            id,
            hostname: hostname(id),
            image: row.image.clone(),
            resources: row.resources,
            env: row.env.clone(),
        };
        let record = match self.runtime.create(&spec).await {
            Ok(record) => record,
            Err(err) => {
                self.forget(id).await;
                return Err(err.into());
            }
        };
        if let Err(err) = self
            .transfer_all(id, &caller.tenant, &new.context_syncs, TaskType::Download)
            .await
        {
            if let Err(destroy_err) = self.runtime.destroy(&record).await {
                tracing::error!(session = %id, error = %crate::error::chain(&destroy_err), "destroying a sandbox whose download failed");
            }
            self.forget(id).await;
            return Err(err);
        }
        let running = match self.store.set_running(id, &record).await {
            Ok(Some(running)) => running,
            outcome => {
                if let Err(err) = self.runtime.destroy(&record).await {
                    tracing::error!(session = %id, error = %crate::error::chain(&err), "destroying a sandbox whose session could not be recorded");
                }
                self.forget(id).await;
                return Err(match outcome {
                    Err(err) => err.into(),
                    Ok(_) => SessionError::Conflict(format!("session {id} vanished while created")),
                });
            }
        };
        drop(claim);
        tracing::info!(session = %id, tenant = %caller.tenant, "session created");
        Ok(running.to_api())
    }

    /// Deletes a row whose sandbox is gone or never existed, logging a failure.
    async fn forget(&self, id: Uuid) {
        if let Err(err) = self.store.delete(id).await {
            tracing::error!(session = %id, error = %crate::error::chain(&err), "deleting a session row");
        }
    }

    /// A session the caller may see.
    async fn visible(&self, caller: &Caller, id: Uuid) -> Result<StoredSession, SessionError> {
        match self.store.get(id).await? {
            Some(row) if caller.may_see(&row.tenant) => Ok(row),
            _ => Err(SessionError::NotFound(id)),
        }
    }

    /// One session.
    pub(crate) async fn get(&self, caller: &Caller, id: Uuid) -> Result<Session, SessionError> {
        Ok(self.visible(caller, id).await?.to_api())
    }

    /// One page of the caller's sessions (every tenant's for an admin).
    pub(crate) async fn list(
        &self,
        caller: &Caller,
        page: Page,
    ) -> Result<SessionList, SessionError> {
        let tenant = (!caller.admin).then_some(caller.tenant.as_str());
        let (rows, total) = self.store.list(tenant, page.limit, page.offset).await?;
        Ok(SessionList {
            sessions: rows.iter().map(StoredSession::to_api).collect(),
            total,
            limit: page.limit,
            offset: page.offset,
        })
    }

    /// Changes a session's expiry and/or metadata.
    pub(crate) async fn update(
        &self,
        caller: &Caller,
        id: Uuid,
        changes: SessionChanges,
    ) -> Result<Session, SessionError> {
        let row = self.visible(caller, id).await?;
        let expires_at_ms = changes.ttl_secs.map(|ttl| {
            now_ms().saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX))
        });
        match self
            .store
            .update(id, expires_at_ms, changes.metadata.as_ref())
            .await?
        {
            Some(updated) => Ok(updated.to_api()),
            None if row.status == SessionStatus::Deleting => Err(SessionError::Conflict(format!(
                "session {id} is being deleted"
            ))),
            None => Err(SessionError::NotFound(id)),
        }
    }

    /// Deletes a session and destroys its sandbox; returns the session as it was last seen.
    ///
    /// First, with `upload`, each bound storage context whose policy says so is uploaded; if
    /// one fails (for any reason but the context having been deleted), the session is kept
    /// and the error says why, so that nothing is lost (`upload = false` skips the uploads).
    /// A concurrent delete of the same session (or one racing the reaper) answers not found.
    pub(crate) async fn delete(
        &self,
        caller: &Caller,
        id: Uuid,
        upload: bool,
    ) -> Result<Session, SessionError> {
        let row = self.visible(caller, id).await?;
        let Some(claim) = self.claims.try_claim(id) else {
            return Err(if row.status == SessionStatus::Creating {
                SessionError::Conflict(format!("session {id} is still being created"))
            } else {
                SessionError::NotFound(id)
            });
        };
        if upload && row.status == SessionStatus::Running {
            let syncs = self.store.syncs(id).await?;
            match self
                .transfer_all(id, &row.tenant, &syncs, TaskType::Upload)
                .await
            {
                Ok(()) => {}
                Err(SessionError::SyncFailed {
                    source: TransferError::ContextGone(_),
                    ..
                }) => {}
                Err(err) => return Err(err),
            }
        }
        let Some(row) = self.store.mark_deleting(id, None).await? else {
            return Err(SessionError::NotFound(id));
        };
        self.destroy(&claim, &row).await?;
        tracing::info!(session = %id, tenant = %caller.tenant, "session deleted");
        Ok(row.to_api())
    }

    /// Destroys every session (for a shutdown that must leave nothing running). Sessions
    /// another task holds (being created or destroyed) are left to that task.
    pub(crate) async fn destroy_all(&self) -> Result<usize, StoreError> {
        let mut destroyed = 0;
        for row in self.store.all().await? {
            let Some(claim) = self.claims.try_claim(row.id) else {
                continue;
            };
            let Some(row) = self.store.mark_deleting(row.id, None).await? else {
                continue;
            };
            match self.destroy(&claim, &row).await {
                Ok(()) => destroyed += 1,
                Err(err) => {
                    tracing::error!(session = %row.id, error = %crate::error::chain(&err), "destroying a session at shutdown failed")
                }
            }
        }
        Ok(destroyed)
    }

    /// Destroys the sandbox of a DELETING row and deletes the row, under the session's claim.
    ///
    /// If the runtime fails, the row stays DELETING and is due again after [`DESTROY_RETRY_MS`].
    async fn destroy(&self, claim: &Claim, row: &StoredSession) -> Result<(), SessionError> {
        debug_assert_eq!(claim.id, row.id);
        if let Some(record) = &row.record {
            match self.runtime.destroy(record).await {
                Ok(()) | Err(SandboxError::Gone(_)) => {}
                Err(err) => {
                    let retry = now_ms().saturating_add(DESTROY_RETRY_MS);
                    if let Err(store_err) = self.store.retry_at(row.id, retry).await {
                        tracing::error!(session = %row.id, error = %crate::error::chain(&store_err), "scheduling a destroy retry");
                    }
                    return Err(err.into());
                }
            }
        }
        self.store.delete(row.id).await?;
        Ok(())
    }

    /// Opens a connection to the agent of a RUNNING session the caller may see.
    pub(crate) async fn connect(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<UnixStream, SessionError> {
        let row = self.visible(caller, id).await?;
        if row.status != SessionStatus::Running {
            return Err(SessionError::Conflict(format!(
                "session {id} is {}, not RUNNING",
                row.status.as_str()
            )));
        }
        self.runtime
            .connect(id)
            .await
            .map_err(|source| SessionError::Unavailable { id, source })
    }

    /// One pass of the TTL reaper: destroys every session past its expiry (and retries failed
    /// destroys), each in its own task. Returns how many destroys it started.
    pub(crate) async fn reap(self: &Arc<Self>) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut started = 0;
        for row in self.store.due(now).await? {
            let Some(claim) = self.claims.try_claim(row.id) else {
                continue;
            };
            started += 1;
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let id = claim.id;
                if row.status == SessionStatus::Running {
                    this.upload_before_expiry(&row).await;
                }
                let row = match this.store.mark_deleting(id, Some(now)).await {
                    Ok(Some(row)) => row,
                    Ok(None) => return, // extended or deleted meanwhile
                    Err(err) => {
                        tracing::error!(session = %id, error = %crate::error::chain(&err), "reaper: marking an expired session");
                        return;
                    }
                };
                match this.destroy(&claim, &row).await {
                    Ok(()) => {
                        tracing::info!(session = %id, tenant = %row.tenant, "session expired, destroyed");
                    }
                    Err(err) => {
                        tracing::error!(session = %id, error = %crate::error::chain(&err), "reaper: destroying an expired session failed; will retry");
                    }
                }
            });
        }
        Ok(started)
    }

    /// Uploads the bound contexts of a session that expired; failures are logged and left in
    /// the task log (the session is destroyed whatever happens: its time is up).
    async fn upload_before_expiry(&self, row: &StoredSession) {
        let syncs = match self.store.syncs(row.id).await {
            Ok(syncs) => syncs,
            Err(err) => {
                tracing::error!(session = %row.id, error = %crate::error::chain(&err), "reading the contexts of an expired session");
                return;
            }
        };
        if let Err(err) = self
            .transfer_all(row.id, &row.tenant, &syncs, TaskType::Upload)
            .await
        {
            tracing::warn!(session = %row.id, error = %crate::error::chain(&err), "uploading an expired session's context failed; destroying it anyway");
        }
    }

    /// Runs one transfer per binding whose policy allows `task_type`, in order, each recorded
    /// in the task log; stops at the first failure.
    async fn transfer_all(
        &self,
        id: Uuid,
        tenant: &str,
        syncs: &[ContextSync],
        task_type: TaskType,
    ) -> Result<(), SessionError> {
        for sync in syncs {
            let wanted = match task_type {
                TaskType::Upload => sync.policy.upload,
                TaskType::Download => sync.policy.download,
            };
            if !wanted {
                continue;
            }
            let (task, _) = self.storage.record_task(id, sync, task_type, true).await?;
            let agent = self.runtime.connect(id).await.map_err(|e| e.to_string());
            self.storage
                .run_task(task, tenant, id, agent, sync, task_type)
                .await
                .map_err(|source| SessionError::SyncFailed {
                    task: task_type.as_str(),
                    context: sync.context_id,
                    path: sync.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Starts transfers between a RUNNING session and its contexts in the background, one
    /// after the other, and returns their task records (`POST …/context/sync`).
    ///
    /// With a context and a path, that pair is transferred whether or not it is bound; with
    /// only one of them, the bindings matching it; with neither, every binding. The
    /// policy's include and exclude globs apply to bound pairs.
    pub(crate) async fn sync(
        self: &Arc<Self>,
        caller: &Caller,
        id: Uuid,
        target: SyncTarget,
    ) -> Result<SyncStarted, SessionError> {
        let row = self.visible(caller, id).await?;
        if row.status != SessionStatus::Running {
            return Err(SessionError::Conflict(format!(
                "session {id} is {}, not RUNNING",
                row.status.as_str()
            )));
        }
        let bound = self.store.syncs(id).await?;
        let mut chosen: Vec<ContextSync> = bound
            .into_iter()
            .filter(|s| target.context_id.is_none_or(|c| c == s.context_id))
            .filter(|s| target.path.as_ref().is_none_or(|p| *p == s.path))
            .collect();
        if let (Some(context_id), Some(path), true) =
            (target.context_id, &target.path, chosen.is_empty())
        {
            chosen.push(ContextSync {
                context_id,
                path: path.clone(),
                policy: hutch_api::SyncPolicy::default(),
            });
        }
        if chosen.is_empty() {
            return Err(SessionError::Conflict(
                "no storage context is bound to this session (or none matches); give contextId and path".to_owned(),
            ));
        }
        for sync in &chosen {
            self.storage.visible(caller, sync.context_id).await?;
        }
        let unfinished = self.store.unfinished_tasks(id).await?;
        if unfinished >= CONTEXT_SYNCS_MAX as u64 * 2 {
            return Err(SessionError::Conflict(format!(
                "session {id} has {unfinished} transfers under way; wait for them to finish"
            )));
        }
        let mut tasks = Vec::with_capacity(chosen.len());
        let mut records = Vec::with_capacity(chosen.len());
        for sync in chosen {
            let (task, data) = self
                .storage
                .record_task(id, &sync, target.mode, false)
                .await?;
            records.push(data);
            tasks.push((task, sync));
        }
        let this = Arc::clone(self);
        let tenant = row.tenant.clone();
        tokio::spawn(async move {
            for (task, sync) in tasks {
                let agent = this.runtime.connect(id).await.map_err(|e| e.to_string());
                // The outcome is in the task log.
                let _ = this
                    .storage
                    .run_task(task, &tenant, id, agent, &sync, target.mode)
                    .await;
            }
        });
        Ok(SyncStarted {
            success: true,
            tasks: records,
        })
    }

    /// The session's transfer tasks matching `filter` (`GET …/context/info`).
    pub(crate) async fn context_info(
        &self,
        caller: &Caller,
        id: Uuid,
        filter: &TaskFilter,
    ) -> Result<ContextInfo, SessionError> {
        self.visible(caller, id).await?;
        let tasks = self.store.tasks(id, filter).await?;
        Ok(ContextInfo {
            context_status_data: tasks.into_iter().map(|t| t.data).collect(),
        })
    }

    /// Handles a sandbox whose agent died on its own: destroys what is left and deletes the
    /// session. If another task is creating or destroying the session, waits for it first.
    pub(crate) async fn sandbox_died(&self, id: Uuid) {
        for _ in 0..DIED_ATTEMPTS {
            let Some(claim) = self.claims.try_claim(id) else {
                tokio::time::sleep(DIED_RETRY).await;
                continue;
            };
            // Not RUNNING, PAUSED or DELETING: already deleted, or its create failed.
            let row = match self.store.mark_deleting(id, None).await {
                Ok(Some(row)) => row,
                Ok(None) => return,
                Err(err) => {
                    tracing::error!(session = %id, error = %crate::error::chain(&err), "handling a died sandbox");
                    return;
                }
            };
            match self.destroy(&claim, &row).await {
                Ok(()) => {
                    tracing::warn!(session = %id, tenant = %row.tenant, "sandbox died on its own; session destroyed");
                }
                Err(err) => {
                    tracing::error!(session = %id, error = %crate::error::chain(&err), "destroying a died sandbox failed; the reaper will retry");
                }
            }
            return;
        }
        tracing::error!(session = %id, "sandbox died but its session stayed busy; left to expire");
    }

    /// Crash recovery, run once before serving: destroys sessions a crash interrupted, expired
    /// or lost, re-adopts live sandboxes, then sweeps leftovers of unknown ones.
    pub(crate) async fn recover(&self) -> Result<RecoverySummary, StoreError> {
        let now = now_ms();
        let mut summary = RecoverySummary::default();
        let mut known = HashSet::new();
        for row in self.store.all().await? {
            let id = row.id;
            let fate = match (row.status, &row.record) {
                (SessionStatus::Creating | SessionStatus::Deleting, _) => Fate::Interrupted,
                _ if row.expires_at_ms <= now => Fate::Expired,
                (_, None) => Fate::Lost,
                (_, Some(record)) => match self.runtime.adopt(record).await {
                    Ok(true) => {
                        tracing::debug!(session = %id, "sandbox re-adopted");
                        known.insert(id);
                        summary.adopted += 1;
                        continue;
                    }
                    Ok(false) => Fate::Lost,
                    Err(err) => {
                        tracing::warn!(session = %id, error = %crate::error::chain(&err), "adopting a sandbox failed");
                        Fate::Lost
                    }
                },
            };
            match fate {
                Fate::Lost => {
                    tracing::warn!(session = %id, "session {id} lost in restart, destroyed")
                }
                Fate::Interrupted => {
                    tracing::info!(session = %id, status = row.status.as_str(), "session interrupted by the restart, destroyed")
                }
                Fate::Expired => {
                    tracing::info!(session = %id, "session expired while the server was down, destroyed")
                }
            }
            if let Some(record) = &row.record
                && let Err(err) = self.runtime.destroy(record).await
                && !matches!(err, SandboxError::Gone(_))
            {
                tracing::error!(session = %id, error = %crate::error::chain(&err), "destroying a sandbox during recovery failed; the reaper will retry");
                self.store.mark_deleting(id, None).await?;
                self.store
                    .retry_at(id, now.saturating_add(DESTROY_RETRY_MS))
                    .await?;
                continue;
            }
            self.store.delete(id).await?;
            summary.destroyed += 1;
        }
        match self.runtime.sweep(&known).await {
            Ok(swept) => {
                for id in &swept {
                    tracing::info!(session = %id, "swept leftovers of an unknown sandbox");
                }
                summary.swept = swept.len();
            }
            Err(err) => {
                tracing::error!(error = %crate::error::chain(&err), "sweeping leftover sandboxes failed");
            }
        }
        tracing::info!(
            adopted = summary.adopted,
            destroyed = summary.destroyed,
            swept = summary.swept,
            "recovery: adopted {}, destroyed {}, swept {}",
            summary.adopted,
            summary.destroyed,
            summary.swept
        );
        Ok(summary)
    }
}

/// Why recovery destroys a session.
enum Fate {
    /// It was being created or deleted when the server stopped.
    Interrupted,
    /// It expired while the server was down.
    Expired,
    /// Its sandbox is dead, unreachable or unrecorded.
    Lost,
}

/// The sandbox's host name: the first 12 hex digits of the session id.
fn hostname(id: Uuid) -> String {
    let mut name = id.simple().to_string();
    name.truncate(12);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_exclusive_until_dropped() {
        let claims = Claims::default();
        let id = Uuid::now_v7();
        let first = claims.try_claim(id).unwrap();
        assert!(claims.try_claim(id).is_none());
        assert!(claims.try_claim(Uuid::now_v7()).is_some());
        drop(first);
        assert!(claims.try_claim(id).is_some());
    }

    #[test]
    fn hostname_is_twelve_hex_digits() {
        let id = Uuid::parse_str("01234567-89ab-7def-8123-456789abcdef").unwrap();
        assert_eq!(hostname(id), "0123456789ab");
    }
}
