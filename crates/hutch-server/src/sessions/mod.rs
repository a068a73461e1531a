//! The session engine: what creating, changing, expiring and deleting a session does.
//!
//! [`Sessions`] joins the [`Store`] and the [`Runtime`]. Handlers, the TTL reaper, the
//! died-sandbox watcher and crash recovery all go through it, so that the rules live in one
//! place:
//!
//! - tenancy: a session of another tenant is reported exactly like a missing one;
//! - a session's sandbox is destroyed at most once at a time: every path that creates or
//!   destroys a sandbox first takes the session's claim in an in-memory set ([`Claims`]), and
//!   gives up (or, for the died watcher, waits) when another path holds it; across replicas
//!   sharing a store, marking the row DELETING claims its destroy (one conditional statement,
//!   see [`Store::mark_deleting`]), and a replica acts only on sessions it owns or whose owner
//!   is dead;
//! - a row is deleted only after its sandbox is destroyed; a destroy that fails leaves the
//!   row DELETING and the reaper retries it later.
//!
//! It knows nothing of HTTP: it returns [`SessionError`], which the API layer maps to codes.
//!
//! One file per path through it: `create.rs`, `delete.rs` (and the destroy every path shares),
//! `reaper.rs` (expiry), `died.rs` (sandboxes that died on their own), `recovery.rs` (start-up),
//! `storage_sync.rs` (transfers with storage contexts), `images.rs` (each session's image and
//! its lease), `snapshot.rs` (copies of a session's writable layer), `pause.rs` (pausing and
//! resuming); `claims.rs` holds the claims.

mod claims;
mod create;
mod delete;
mod died;
mod error;
mod idle;
mod images;
mod network;
mod pause;
mod reaper;
mod recovery;
mod snapshot;
mod storage_sync;

use std::sync::Arc;

use hutch_api::{Session, SessionList, SessionStatus};
use hutch_sandbox::AgentConnection;
use hutch_sandbox::{Runtime, SandboxError};
use uuid::Uuid;

use crate::auth::Caller;
use crate::storage::Storage;
use crate::store::{Store, StoredSession, now_ms};
use crate::validate::{Page, SessionChanges};

use claims::Claims;

pub use error::SessionError;
pub(crate) use idle::Busy;
pub use network::NetworkLimits;
pub use recovery::RecoverySummary;

/// How often the row of a create that failed while the store was unavailable is deleted again.
const FORGET_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How many times (an hour's worth).
const FORGET_ATTEMPTS: u32 = 3600;

/// The session engine.
pub(crate) struct Sessions {
    pub(crate) store: Store,
    runtime: Arc<dyn Runtime>,
    /// Storage contexts, for the transfers of `contextSyncs`.
    pub(crate) storage: Arc<Storage>,
    claims: Claims,
    /// The OCI image store sessions resolve their `image` with; `None`: only `default`.
    images: Option<Arc<crate::images::Images>>,
    /// The image leases of live sessions.
    leases: images::Leases,
    max_sessions: usize,
    tenant_max_sessions: usize,
    tenant_max_memory_mb: u64,
    /// The operator's network limits.
    network: NetworkLimits,
    /// How long a sandbox outlives its session's expiry when nothing destroys it.
    orphan_grace: std::time::Duration,
    /// Pauses, resumes and snapshots of a session take turns.
    turns: pause::Turns,
    /// When each session was last used, for auto-pause.
    activity: idle::Activity,
    /// The auto-pause of sessions created without `autoPause`.
    auto_pause_default: Option<hutch_api::AutoPause>,
    /// Kept connections to the agents, dropped when a sandbox is paused or destroyed.
    pool: Arc<crate::proxy::pool::AgentPool>,
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
            images: None,
            leases: images::Leases::default(),
            max_sessions,
            tenant_max_sessions: usize::MAX,
            tenant_max_memory_mb: u64::MAX,
            network: NetworkLimits::default(),
            orphan_grace: crate::DEFAULT_ORPHAN_GRACE,
            turns: pause::Turns::default(),
            activity: idle::Activity::default(),
            auto_pause_default: None,
            pool: Arc::default(),
        }
    }

    /// The same engine, giving sessions created without `autoPause` this one.
    pub(crate) fn with_auto_pause_default(mut self, auto: Option<hutch_api::AutoPause>) -> Self {
        self.auto_pause_default = auto;
        self
    }

    /// The same engine, whose sandboxes end themselves `grace` after their session's expiry
    /// when no server destroys them.
    pub(crate) fn with_orphan_grace(mut self, grace: std::time::Duration) -> Self {
        self.orphan_grace = grace;
        self
    }

    /// Tells the sandbox of session `id` its deadline: `expires_at_ms` plus the grace.
    async fn set_deadline(&self, id: Uuid, expires_at_ms: i64) -> Result<(), SandboxError> {
        let expires = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(expires_at_ms).unwrap_or(0));
        self.runtime
            .set_deadline(id, expires + self.orphan_grace)
            .await
    }

    /// The same engine, holding at most `max_sessions` sessions and `max_memory_mb` of
    /// `memoryMb` (summed) per tenant.
    pub(crate) fn with_tenant_quotas(mut self, max_sessions: usize, max_memory_mb: u64) -> Self {
        self.tenant_max_sessions = max_sessions;
        self.tenant_max_memory_mb = max_memory_mb;
        self
    }

    /// The same engine, resolving OCI images and snapshots with `images`.
    pub(crate) fn with_images(mut self, images: Arc<crate::images::Images>) -> Self {
        self.images = Some(images);
        self
    }

    /// Deletes a row whose sandbox is gone or never existed (releasing its image), logging a
    /// failure.
    async fn forget(&self, id: Uuid) {
        self.leases.release(id);
        match self.store.delete(id).await {
            Ok(_) => {}
            Err(err) if err.is_unavailable() => self.forget_later(id),
            Err(err) => {
                tracing::error!(session = %id, error = %crate::error::chain(&err), "deleting a session row");
            }
        }
    }

    /// Deletes the row of a create that failed while the store could not be reached (if it
    /// was inserted at all), in the background, as soon as the store answers again: the API
    /// said the session was not created, so it must not show up once the store is back.
    /// Tries every [`FORGET_RETRY`] for a bounded time; past that, the recovery at the next
    /// start deletes the row.
    fn forget_later(&self, id: Uuid) {
        tracing::warn!(session = %id, "the store is unavailable: the row of a failed create is deleted when it answers again");
        let store = self.store.clone();
        tokio::spawn(async move {
            for _ in 0..FORGET_ATTEMPTS {
                tokio::time::sleep(FORGET_RETRY).await;
                match store.delete(id).await {
                    Ok(_) => return,
                    Err(err) if err.is_unavailable() => {}
                    Err(err) => {
                        tracing::error!(session = %id, error = %crate::error::chain(&err), "deleting the row of a failed create");
                        return;
                    }
                }
            }
            tracing::error!(session = %id, "the store stayed unavailable: the row of a failed create is left to the recovery at the next start");
        });
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

    /// One page of the caller's sessions (every tenant's for an admin), in state `status` only
    /// when given.
    pub(crate) async fn list(
        &self,
        caller: &Caller,
        page: Page,
        status: Option<SessionStatus>,
    ) -> Result<SessionList, SessionError> {
        let tenant = (!caller.admin).then_some(caller.tenant.as_str());
        let (rows, total) = self
            .store
            .list(tenant, status, page.limit, page.offset)
            .await?;
        Ok(SessionList {
            sessions: rows.iter().map(StoredSession::to_api).collect(),
            total,
            limit: page.limit,
            offset: page.offset,
        })
    }

    /// Changes a session's expiry, metadata and/or network policy.
    pub(crate) async fn update(
        &self,
        caller: &Caller,
        id: Uuid,
        changes: SessionChanges,
    ) -> Result<Session, SessionError> {
        let row = self.visible(caller, id).await?;
        if let Some(policy) = &changes.network {
            let updated = self.update_network(caller, id, policy).await?;
            if changes.ttl_secs.is_none() && changes.metadata.is_none() {
                return Ok(updated);
            }
        }
        let expires_at_ms = changes.ttl_secs.map(|ttl| {
            now_ms().saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX))
        });
        match self
            .store
            .update(id, expires_at_ms, changes.metadata.as_ref(), None)
            .await?
        {
            Some(updated) => {
                if expires_at_ms.is_some() {
                    self.set_deadline(id, updated.expires_at_ms)
                        .await
                        .map_err(|source| SessionError::Unavailable { id, source })?;
                }
                Ok(updated.to_api())
            }
            None if row.status == SessionStatus::Deleting => Err(SessionError::Conflict(format!(
                "session {id} is being deleted"
            ))),
            None => Err(SessionError::NotFound(id)),
        }
    }

    /// The tenant of a session the caller may see.
    pub(crate) async fn tenant_of(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<String, SessionError> {
        Ok(self.visible(caller, id).await?.tenant)
    }

    /// Marks a request to session `id` in flight (it keeps the session awake) until the
    /// guard is dropped.
    pub(crate) fn busy(&self, id: Uuid) -> idle::Busy {
        self.activity.busy(id)
    }

    /// The runtime the sandboxes run on.
    pub(crate) fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::clone(&self.runtime)
    }

    /// Opens a connection to the agent of a RUNNING session the caller may see (see
    /// [`Sessions::reachable`]).
    pub(crate) async fn connect(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<AgentConnection, SessionError> {
        self.reachable(caller, id).await?;
        self.runtime
            .connect(id)
            .await
            .map_err(|source| SessionError::Unavailable { id, source })
    }

    /// The kept connections to this server's agents.
    pub(crate) fn agent_pool(&self) -> Arc<crate::proxy::pool::AgentPool> {
        Arc::clone(&self.pool)
    }

    /// Checks that the caller may reach the agent of session `id`: the session is visible to
    /// it and RUNNING. A session that paused itself when idle is resumed first; one paused on
    /// request is refused with [`SessionError::Paused`].
    pub(crate) async fn reachable(&self, caller: &Caller, id: Uuid) -> Result<(), SessionError> {
        match self
            .store
            .known_running(id, |tenant| caller.may_see(tenant))
        {
            Some(true) => {
                self.activity.touch(id);
                return Ok(());
            }
            Some(false) => return Err(SessionError::NotFound(id)),
            None => {}
        }
        let mut row = self.visible(caller, id).await?;
        // Only sessions the caller may see are tracked. An auto-pause that slips in between the
        // read above and the connection is undone by the proxy's watchdog, which resumes a
        // session paused by idleness under a request.
        self.activity.touch(id);
        if let Some(paused) = row.paused {
            if paused.cause != crate::store::PauseCause::Idle {
                return Err(SessionError::Paused(id));
            }
            row = self.resume_now(id).await?;
        }
        if row.status != SessionStatus::Running {
            return Err(SessionError::Conflict(format!(
                "session {id} is {}, not RUNNING",
                row.status.as_str()
            )));
        }
        Ok(())
    }
}
