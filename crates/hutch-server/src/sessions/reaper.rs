//! The TTL reaper's pass: expired sessions uploaded (as their bindings say) and destroyed.

use std::sync::Arc;

use hutch_api::{SessionStatus, TaskType};

use super::Sessions;
use crate::store::{StoreError, StoredSession, now_ms};

impl Sessions {
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
                let paused = row.status == SessionStatus::Paused;
                if paused {
                    // Expiry ends a paused session like a running one: thawed for its uploads.
                    this.thaw_for_end(&row).await;
                }
                if matches!(row.status, SessionStatus::Running | SessionStatus::Paused) {
                    this.upload_before_expiry(&row).await;
                }
                let row = match this.store.mark_deleting(id, Some(now)).await {
                    Ok(Some(row)) => row,
                    Ok(None) => {
                        // Extended or deleted meanwhile; a paused one stays paused.
                        if paused && let Err(err) = this.refreeze(&row).await {
                            tracing::warn!(session = %id, error = %crate::error::chain(&err), "freezing a paused session again");
                        }
                        return;
                    }
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
}
