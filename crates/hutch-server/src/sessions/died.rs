//! Sandboxes that died on their own: what is left of them destroyed, their sessions deleted.

use std::time::Duration;

use hutch_api::SessionStatus;
use uuid::Uuid;

use super::Sessions;

/// How often the died watcher looks again at a session another task is creating or destroying.
const DIED_RETRY: Duration = Duration::from_millis(100);
/// How many times it looks (a minute in all) before leaving the session to its expiry.
const DIED_ATTEMPTS: u32 = 600;

impl Sessions {
    /// Handles a sandbox whose agent died on its own: destroys what is left and deletes the
    /// session. If another task is creating or destroying the session, waits for it first.
    pub(crate) async fn sandbox_died(&self, id: Uuid) {
        for _ in 0..DIED_ATTEMPTS {
            let Some(claim) = self.claims.try_claim(id) else {
                tokio::time::sleep(DIED_RETRY).await;
                continue;
            };
            // Not RUNNING, PAUSED or DELETING: already deleted, or its create failed; or
            // another replica is destroying it (its delete killed the sandbox).
            let row = match self.store.mark_deleting(id, None).await {
                Ok(Some(row)) => row,
                Ok(None) => {
                    self.forget_if_ended(id).await;
                    return;
                }
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

    /// Drops what this server keeps in memory for session `id` (its image lease, its turns,
    /// its activity) once its row is gone or another replica is destroying it.
    async fn forget_if_ended(&self, id: Uuid) {
        match self.store.get(id).await {
            Ok(Some(row)) if row.status != SessionStatus::Deleting => {}
            Ok(_) => {
                self.leases.release(id);
                self.turns.forget(id);
                self.activity.forget(id);
            }
            Err(err) => {
                tracing::warn!(session = %id, error = %crate::error::chain(&err), "reading a died sandbox's session");
            }
        }
    }
}
