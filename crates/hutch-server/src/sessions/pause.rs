//! Pausing and resuming sessions: every process of the sandbox frozen with its state, and
//! thawed again.
//!
//! A pause, in order: the row becomes PAUSED (so that from then on every in-session request
//! answers 409 `session_paused` at once instead of reaching a frozen agent), the agent is told
//! (`POST /pause`: its awake clock, which every command and execution timeout is measured on,
//! stops), then the runtime freezes the sandbox. A resume undoes it in reverse: thaw, tell the
//! agent (`POST /resume`), the row RUNNING again. When a step fails, the steps before it are
//! undone. Crash recovery brings a sandbox back to what its row says (frozen when PAUSED).
//!
//! Pauses and resumes of one session take turns ([`Turns`]); snapshots take the same turn, so
//! a snapshot's thaw never undoes a pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use hutch_api::{Session, SessionStatus};
use hutch_sandbox::SandboxError;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::auth::Caller;
use crate::store::{PauseCause, StoredSession, now_ms};

/// How long the agent may take to answer `/pause` or `/resume`.
const AGENT_CLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// One lock per session, taken by pauses, resumes and snapshots of it.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl Turns {
    /// Waits for session `id`'s turn.
    pub(crate) async fn take(&self, id: Uuid) -> OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.locks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .or_default(),
        );
        lock.lock_owned().await
    }

    /// Drops the lock of a session that is gone.
    pub(crate) fn forget(&self, id: Uuid) {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

impl Sessions {
    /// Pauses a session the caller may see; a paused one is answered as it is.
    pub(crate) async fn pause(&self, caller: &Caller, id: Uuid) -> Result<Session, SessionError> {
        self.visible(caller, id).await?;
        Ok(self.pause_now(id, PauseCause::Request).await?.to_api())
    }

    /// Resumes a session the caller may see; a running one is answered as it is.
    pub(crate) async fn resume(&self, caller: &Caller, id: Uuid) -> Result<Session, SessionError> {
        self.visible(caller, id).await?;
        Ok(self.resume_now(id).await?.to_api())
    }

    /// What the processes of a session the caller may see use now, running or paused.
    pub(crate) async fn stats(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<hutch_api::SessionStats, SessionError> {
        let row = self.visible(caller, id).await?;
        let record = row.record.ok_or_else(|| not_pausable(id, row.status))?;
        let runtime = Arc::clone(&self.runtime);
        tokio::task::spawn_blocking(move || runtime.stats(&record))
            .await
            .map_err(|err| {
                SessionError::Sandbox(SandboxError::Sys {
                    call: "stats task".to_owned(),
                    source: std::io::Error::other(err.to_string()),
                })
            })?
            .map_err(SessionError::from)
    }

    /// Pauses session `id` for `cause`, unless it is paused already.
    pub(super) async fn pause_now(
        &self,
        id: Uuid,
        cause: PauseCause,
    ) -> Result<StoredSession, SessionError> {
        if !self.runtime.can_pause() {
            return Err(cannot_pause());
        }
        let _turn = self.turns.take(id).await;
        let row = self
            .store
            .get(id)
            .await?
            .ok_or(SessionError::NotFound(id))?;
        match row.status {
            SessionStatus::Paused => {
                // Asked for by a client, a pause for idleness becomes one that only a resume
                // ends (the next request no longer wakes the session).
                if cause == PauseCause::Request
                    && row.paused.is_some_and(|p| p.cause == PauseCause::Idle)
                {
                    return Ok(self.store.set_pause_cause(id, cause).await?.unwrap_or(row));
                }
                return Ok(row);
            }
            SessionStatus::Running => {}
            SessionStatus::Creating | SessionStatus::Deleting => {
                return Err(not_pausable(id, row.status));
            }
        }
        if cause == PauseCause::Idle {
            // A request came in since the pass looked: it stays awake.
            let idle = row.auto_pause.map(|a| a.idle_seconds).unwrap_or(u64::MAX);
            if !self.idle_at_least(id, Duration::from_secs(idle)) {
                return Ok(row);
            }
        }
        let record = row
            .record
            .clone()
            .ok_or_else(|| not_pausable(id, row.status))?;
        let Some(paused) = self.store.set_paused(id, now_ms(), cause).await? else {
            return Err(self.gone_meanwhile(id).await);
        };
        // A frozen agent answers nothing: its kept connections go.
        self.pool.forget(id);
        let frozen = async {
            self.tell_agent(id, "/pause").await?;
            if let Err(err) = self.runtime.set_frozen(&record, true).await {
                let _ = self.tell_agent(id, "/resume").await;
                return Err(err);
            }
            Ok(())
        };
        if let Err(err) = frozen.await {
            if self.store.set_resumed(id).await?.is_none() {
                // Deleted (or expired) meanwhile: its agent was gone, not unavailable.
                return Err(self.gone_meanwhile(id).await);
            }
            return Err(SessionError::Unavailable { id, source: err });
        }
        tracing::info!(session = %id, cause = cause.as_str(), "session paused");
        Ok(paused)
    }

    /// Resumes session `id`, unless it runs already.
    pub(super) async fn resume_now(&self, id: Uuid) -> Result<StoredSession, SessionError> {
        let _turn = self.turns.take(id).await;
        let row = self
            .store
            .get(id)
            .await?
            .ok_or(SessionError::NotFound(id))?;
        match row.status {
            SessionStatus::Running => return Ok(row),
            SessionStatus::Paused => {}
            SessionStatus::Creating | SessionStatus::Deleting => {
                return Err(not_pausable(id, row.status));
            }
        }
        let record = row
            .record
            .as_ref()
            .ok_or_else(|| not_pausable(id, row.status))?;
        self.runtime
            .set_frozen(record, false)
            .await
            .map_err(|source| SessionError::Unavailable { id, source })?;
        if let Err(err) = self.tell_agent(id, "/resume").await {
            // Its timeouts may now count the pause; the session itself runs.
            tracing::warn!(session = %id, error = %crate::error::chain(&err), "telling a resumed agent that the pause ended");
        }
        let Some(running) = self.store.set_resumed(id).await? else {
            return Err(self.gone_meanwhile(id).await);
        };
        self.activity.touch(id);
        let paused_ms = row.paused.map_or(0, |p| now_ms().saturating_sub(p.at_ms));
        tracing::info!(session = %id, paused_ms, "session resumed");
        Ok(running)
    }

    /// Thaws a sandbox whose row left PAUSED for DELETING (deleted or expired while paused),
    /// so that its contexts can be uploaded; the agent's clock runs again too.
    pub(super) async fn thaw_for_end(&self, row: &StoredSession) {
        let _turn = self.turns.take(row.id).await;
        self.thaw(row).await;
    }

    /// [`Sessions::thaw_for_end`] for a caller that holds the session's turn already.
    pub(super) async fn thaw(&self, row: &StoredSession) {
        let Some(record) = &row.record else { return };
        match self.runtime.set_frozen(record, false).await {
            Ok(()) => {
                if let Err(err) = self.tell_agent(row.id, "/resume").await {
                    tracing::warn!(session = %row.id, error = %crate::error::chain(&err), "telling a thawed agent that the pause ended");
                }
            }
            Err(err) => {
                tracing::warn!(session = %row.id, error = %crate::error::chain(&err), "thawing a paused session before its end");
            }
        }
    }

    /// After a restart: freezes the sandbox of a PAUSED row again (it may have been thawed,
    /// or not yet frozen, when the server stopped). Freezing a frozen sandbox changes nothing.
    pub(super) async fn refreeze(&self, row: &StoredSession) -> Result<(), SandboxError> {
        match &row.record {
            Some(record) => self.runtime.set_frozen(record, true).await,
            None => Ok(()),
        }
    }

    /// For the proxy's watchdog, whose probe a frozen agent left unanswered: whether session
    /// `id` is paused, in which case its request waits for the resume. A session that paused
    /// itself while the request was on its way is resumed (the request is activity).
    pub(crate) async fn waits_for_resume(&self, id: Uuid) -> bool {
        match self.store.get(id).await {
            Ok(Some(row)) => match row.paused.map(|p| p.cause) {
                Some(PauseCause::Idle) => self.resume_now(id).await.is_ok(),
                Some(PauseCause::Request) => true,
                None => false,
            },
            _ => false,
        }
    }

    /// Sends `POST {path}` to the agent of session `id` and waits for its answer.
    async fn tell_agent(&self, id: Uuid, path: &str) -> Result<(), SandboxError> {
        let call = async {
            let stream = self.runtime.connect(id).await?;
            let answer = crate::proxy::agent_request(stream, "POST", path, Body::empty())
                .await
                .map_err(|e| SandboxError::Sys {
                    call: format!("agent {path}"),
                    source: std::io::Error::other(e),
                })?;
            if !answer.status().is_success() {
                return Err(SandboxError::Sys {
                    call: format!("agent {path}"),
                    source: std::io::Error::other(format!("answered {}", answer.status())),
                });
            }
            Ok(())
        };
        tokio::time::timeout(AGENT_CLOCK_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(SandboxError::Sys {
                    call: format!("agent {path}"),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"),
                })
            })
    }

    /// The error for a session whose row changed under a pause or resume.
    async fn gone_meanwhile(&self, id: Uuid) -> SessionError {
        match self.store.get(id).await {
            Ok(Some(row)) => not_pausable(id, row.status),
            Ok(None) => SessionError::NotFound(id),
            Err(err) => err.into(),
        }
    }
}

/// The error for a session that cannot be paused or resumed in its state.
/// The refusal of a pause on a runtime that cannot pause.
pub(super) fn cannot_pause() -> SessionError {
    SessionError::Sandbox(SandboxError::NotSupported(
        "this server's runtime cannot pause sessions".to_owned(),
    ))
}

fn not_pausable(id: Uuid, status: SessionStatus) -> SessionError {
    SessionError::Conflict(format!(
        "session {id} is {}; only a RUNNING session can be paused and a PAUSED one resumed",
        status.as_str()
    ))
}
