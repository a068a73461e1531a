//! Crash recovery at start-up: live sandboxes adopted again, the rest destroyed and swept.

use std::collections::HashSet;

use hutch_api::SessionStatus;
use hutch_sandbox::SandboxError;

use super::Sessions;
use super::delete::DESTROY_RETRY_MS;
use crate::store::{StoreError, StoredSession, now_ms};

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

/// The error message of a storage transfer whose replica died while it ran.
const TRANSFER_OF_A_DEAD_REPLICA: &str =
    "the server that ran the transfer stopped; the context kept its previous version";

impl Sessions {
    /// Crash recovery, run once before serving: destroys sessions a crash interrupted, expired
    /// or lost, re-adopts live sandboxes, then sweeps leftovers of unknown ones.
    pub(crate) async fn recover(&self) -> Result<RecoverySummary, StoreError> {
        let now = now_ms();
        let mut summary = RecoverySummary::default();
        let mut known = HashSet::new();
        for row in self.store.all().await? {
            let id = row.id;
            // Another live replica's session (being created, running or being destroyed) is
            // left to it; its sandbox is not this server's to adopt or destroy.
            if !self.store.take_over(id).await? {
                tracing::debug!(session = %id, "owned by another live replica; left to it");
                // Its sandbox too, though the process that ran it may be dead: its owner may
                // yet come back, or a live replica take it over once its lease lapses.
                known.insert(id);
                continue;
            }
            match self.settle(row, now, true).await? {
                Settled::Adopted => {
                    known.insert(id);
                    summary.adopted += 1;
                }
                Settled::Destroyed => summary.destroyed += 1,
                Settled::Left => {}
            }
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

    /// The take-over pass, run every second: first deregisters the replicas whose runtime
    /// process this runtime saw die ([`Runtime::dead_processes`](hutch_sandbox::Runtime),
    /// replicas on this host: known dead at once, not a lease later), then takes over the
    /// sessions of every dead replica ([`Sessions::adopt_orphans`]).
    pub(crate) async fn take_over_dead(&self) -> Result<TakeOver, StoreError> {
        let dead = self.runtime.dead_processes();
        for process in &dead {
            for replica in self.store.forget_process(process).await? {
                tracing::warn!(%replica, %process, "a replica's process is gone; taking its sessions over");
            }
        }
        let mut pass = self.adopt_orphans().await?;
        pass.dead_processes = dead.len();
        Ok(pass)
    }

    /// Takes over, one at a time, the sessions of replicas that died while this one runs
    /// (their lease expired, or their process is gone): live sandboxes are adopted (watched,
    /// their resolvers served by this process), dead ones destroyed, and interrupted creates
    /// cleaned. A sandbox this runtime cannot adopt because another process still runs parts
    /// of it (a replica alive but cut off from the store) is left as it is.
    pub(crate) async fn adopt_orphans(&self) -> Result<TakeOver, StoreError> {
        let now = now_ms();
        let mut pass = TakeOver::default();
        for row in self.store.orphans(now).await? {
            let id = row.id;
            let Some(_claim) = self.claims.try_claim(id) else {
                continue;
            };
            if !self.store.take_over(id).await? {
                continue;
            }
            tracing::info!(session = %id, "taking over a session of a dead replica");
            pass.taken += 1;
            // Its transfers died with their replica (the start-up recovery of storage leaves
            // the tasks of replicas it still counts alive to them).
            let failed = self
                .store
                .fail_unfinished_tasks_of(id, now / 1000, TRANSFER_OF_A_DEAD_REPLICA)
                .await?;
            if failed > 0 {
                tracing::warn!(session = %id, tasks = failed, "storage transfers of a dead replica marked Failed");
            }
            if self.settle(row, now, false).await? == Settled::Adopted {
                pass.adopted += 1;
            }
        }
        Ok(pass)
    }

    /// Sweeps what dead server processes left on this runtime's host (a sandbox half-built or
    /// half-claimed by a replica killed mid-create, its warm pool): every sandbox that no live
    /// process keeps and no session of the store holds, whoever owns that session. Returns
    /// whether the sweep succeeded (on failure, the caller tries again later).
    pub(crate) async fn sweep_left_over(&self) -> bool {
        let known: HashSet<_> = match self.store.all().await {
            Ok(rows) => rows.into_iter().map(|row| row.id).collect(),
            Err(err) => {
                tracing::warn!(error = %crate::error::chain(&err), "listing sessions for the sweep of left-over sandboxes");
                return false;
            }
        };
        match self.runtime.sweep(&known).await {
            Ok(swept) => {
                for sandbox in &swept {
                    tracing::info!(%sandbox, "swept a sandbox a dead server process left");
                }
                true
            }
            Err(err) => {
                tracing::error!(error = %crate::error::chain(&err), "sweeping left-over sandboxes failed");
                false
            }
        }
    }

    /// Adopts the sandbox of a row this server just took over, or destroys it (and deletes
    /// the row) when it was interrupted, expired or lost. With `destroy_unadoptable`, a
    /// sandbox whose adoption fails counts as lost; without, it is left.
    async fn settle(
        &self,
        row: StoredSession,
        now: i64,
        destroy_unadoptable: bool,
    ) -> Result<Settled, StoreError> {
        let id = row.id;
        let fate = match (row.status, &row.record) {
            (SessionStatus::Creating | SessionStatus::Deleting, _) => Fate::Interrupted,
            _ if row.expires_at_ms <= now => Fate::Expired,
            (_, None) => Fate::Lost,
            (_, Some(record)) => match self.runtime.adopt(record).await {
                Ok(true) => {
                    tracing::debug!(session = %id, "sandbox re-adopted");
                    // This server's grace applies from now on.
                    if let Err(err) = self.set_deadline(id, row.expires_at_ms).await {
                        tracing::warn!(session = %id, error = %crate::error::chain(&err), "setting an adopted sandbox's deadline");
                    }
                    // A paused session stays paused, whatever a crash interrupted.
                    if row.status == SessionStatus::Paused
                        && let Err(err) = self.refreeze(&row).await
                    {
                        tracing::warn!(session = %id, error = %crate::error::chain(&err), "freezing an adopted paused sandbox");
                    }
                    self.retake_image(&row).await;
                    return Ok(Settled::Adopted);
                }
                Ok(false) => Fate::Lost,
                Err(err) if !destroy_unadoptable => {
                    tracing::warn!(session = %id, error = %crate::error::chain(&err), "adopting a sandbox failed; left as it is");
                    return Ok(Settled::Left);
                }
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
            return Ok(Settled::Left);
        }
        self.store.delete(id).await?;
        Ok(Settled::Destroyed)
    }
}

/// What a take-over pass did ([`Sessions::take_over_dead`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TakeOver {
    /// Server processes on this runtime's host found dead.
    pub(crate) dead_processes: usize,
    /// Sessions of dead replicas this replica took over.
    pub(crate) taken: usize,
    /// Of those, the ones whose sandbox it adopted (watches from now on).
    pub(crate) adopted: usize,
}

/// What [`Sessions::settle`] did with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Its sandbox is watched by this server now.
    Adopted,
    /// Its sandbox was destroyed and its row deleted.
    Destroyed,
    /// Left as it is (its destroy is retried by the reaper, or another process runs it).
    Left,
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
