//! Deleting sessions: one on request (after its uploads), or all of them at shutdown, and the
//! destroy of a DELETING row that both share with expiry, deaths and recovery.

use hutch_api::{Session, SessionStatus, TaskType};
use hutch_sandbox::SandboxError;
use uuid::Uuid;

use super::claims::Claim;
use super::{SessionError, Sessions};
use crate::auth::Caller;
use crate::storage::TransferError;
use crate::store::{StoreError, StoredSession, now_ms};

/// How long after a failed destroy the reaper tries again, in milliseconds.
pub(super) const DESTROY_RETRY_MS: i64 = crate::store::DESTROY_CLAIM_MS;

impl Sessions {
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
        let syncs = self.store.syncs(id).await?;
        let uploads = upload
            && !syncs.is_empty()
            && matches!(row.status, SessionStatus::Running | SessionStatus::Paused);
        // While its contexts upload, no pause may freeze the agent that sends them: a pause (by
        // request or for idleness) waits for this turn, held until the row is DELETING, and
        // then finds the session being deleted or gone.
        let mut turn = None;
        let _busy = self.busy(id);
        if uploads {
            turn = Some(self.turns.take(id).await);
            // As it is now, with no pause or resume under way.
            let row = self
                .store
                .get(id)
                .await?
                .ok_or(SessionError::NotFound(id))?;
            let paused = row.status == SessionStatus::Paused;
            if paused {
                // Its contexts are uploaded like a running one's: thawed first.
                self.thaw(&row).await;
            }
            match self
                .transfer_all(id, &row.tenant, &syncs, TaskType::Upload)
                .await
            {
                Ok(()) => {}
                Err(SessionError::SyncFailed {
                    source: TransferError::ContextGone(_),
                    ..
                }) => {}
                Err(err) => {
                    // The session is kept, as it was.
                    if paused && let Err(freeze_err) = self.refreeze(&row).await {
                        tracing::warn!(session = %id, error = %crate::error::chain(&freeze_err), "freezing a paused session again");
                    }
                    return Err(err);
                }
            }
        }
        let marked = match self.store.mark_deleting(id, None).await? {
            Some(marked) => Some(marked),
            // Another live replica's: this one destroys it if its runtime reaches the sandbox
            // (the owner's parts of it stop as its processes die: see the linux runtime).
            None if row.record.as_ref().is_some_and(|r| self.runtime.reaches(r)) => {
                self.store.mark_deleting_any_owner(id).await?
            }
            None => None,
        };
        drop(turn);
        let row = match marked {
            Some(marked) => marked,
            // This replica's delete that was cut short (its sandbox destroyed, say, when the
            // store failed to remove the row): with the claim held here, nothing else is
            // destroying it, so a retried DELETE finishes it now rather than answering 404
            // until the reaper's claim lapses.
            None if row.status == SessionStatus::Deleting
                && self.store.owner_of(id).await?.as_deref() == self.store.replica() =>
            {
                row
            }
            None => return Err(self.not_deletable(id).await),
        };
        self.destroy(&claim, &row).await?;
        tracing::info!(session = %id, tenant = %caller.tenant, "session deleted");
        Ok(row.to_api())
    }

    /// Why a session the caller may see could not be marked DELETING: another live replica
    /// owns it (its sandbox is that replica's to destroy), or it is gone or being destroyed
    /// already (not found, as for a concurrent delete).
    async fn not_deletable(&self, id: Uuid) -> SessionError {
        match self.store.owner_of(id).await {
            Ok(Some(owner)) if Some(owner.as_str()) != self.store.replica() => {
                match self.store.get(id).await {
                    Ok(Some(row))
                        if matches!(row.status, SessionStatus::Running | SessionStatus::Paused) =>
                    {
                        SessionError::Conflict(format!(
                            "session {id} is served by replica {owner}, which is alive: delete it there"
                        ))
                    }
                    _ => SessionError::NotFound(id),
                }
            }
            Ok(_) => SessionError::NotFound(id),
            Err(err) => err.into(),
        }
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
    pub(super) async fn destroy(
        &self,
        claim: &Claim,
        row: &StoredSession,
    ) -> Result<(), SessionError> {
        debug_assert_eq!(claim.id, row.id);
        // No kept connection outlives the sandbox.
        self.pool.forget(row.id);
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
        self.leases.release(row.id);
        self.turns.forget(row.id);
        self.activity.forget(row.id);
        self.store.delete(row.id).await?;
        Ok(())
    }
}
