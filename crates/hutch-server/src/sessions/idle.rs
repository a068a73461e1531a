//! Auto-pause: sessions that pause themselves when idle, and the activity that keeps them
//! awake.
//!
//! A session is idle when no request reached its in-session routes for `idleSeconds` and none
//! is in flight (a running command, a streamed execution, an open terminal or WebSocket each
//! hold the session awake until they end). A background process that still runs does not
//! count unless the session asked for `keepAwake`. Each reaper pass pauses the sessions idle
//! for long enough, with cause `idle`: the next request to such a session resumes it first
//! and then goes through, so clients never see the pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use uuid::Uuid;

use super::Sessions;
use crate::store::PauseCause;

/// When each session was last used, and how many of its requests are in flight.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    sessions: Arc<Mutex<HashMap<Uuid, Use>>>,
}

#[derive(Debug, Clone, Copy)]
struct Use {
    last: Instant,
    in_flight: u32,
}

/// A request in flight to a session: it keeps the session awake until dropped.
#[derive(Debug)]
pub(crate) struct Busy {
    sessions: Arc<Mutex<HashMap<Uuid, Use>>>,
    id: Uuid,
}

impl Activity {
    /// Records a use of session `id` now.
    pub(crate) fn touch(&self, id: Uuid) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .entry(id)
            .and_modify(|u| u.last = Instant::now())
            .or_insert(Use {
                last: Instant::now(),
                in_flight: 0,
            });
    }

    /// Records a request to session `id` that is in flight until the guard is dropped.
    pub(crate) fn busy(&self, id: Uuid) -> Busy {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = sessions.entry(id).or_insert(Use {
            last: Instant::now(),
            in_flight: 0,
        });
        entry.in_flight += 1;
        entry.last = Instant::now();
        Busy {
            sessions: Arc::clone(&self.sessions),
            id,
        }
    }

    /// How long session `id` has been idle: zero while a request is in flight. A session not
    /// seen yet (just created or adopted) starts its idle time now.
    fn idle_for(&self, id: Uuid) -> Duration {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = sessions.entry(id).or_insert(Use {
            last: Instant::now(),
            in_flight: 0,
        });
        if entry.in_flight > 0 {
            Duration::ZERO
        } else {
            entry.last.elapsed()
        }
    }

    /// Forgets a session that is gone.
    pub(crate) fn forget(&self, id: Uuid) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = sessions.get_mut(&self.id) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.last = Instant::now();
        }
    }
}

impl Busy {
    /// `body`, holding this guard until it has been sent or dropped.
    pub(crate) fn hold_through(self, body: Body) -> Body {
        Body::new(body.map_frame(move |frame| {
            let _keep = &self;
            frame
        }))
    }
}

impl Sessions {
    /// Whether session `id` has been idle for at least `idle`.
    pub(super) fn idle_at_least(&self, id: Uuid, idle: Duration) -> bool {
        self.activity.idle_for(id) >= idle
    }

    /// One auto-pause pass: pauses every RUNNING session idle for its `idleSeconds`, each in
    /// its own task. Returns how many pauses it started.
    pub(crate) async fn auto_pause(self: &Arc<Self>) -> usize {
        if !self.runtime.can_pause() {
            return 0;
        }
        let rows = match self.store.auto_pausing().await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::error!(error = %crate::error::chain(&err), "auto-pause: listing sessions");
                return 0;
            }
        };
        let mut started = 0;
        for row in rows {
            let Some(auto) = row.auto_pause else { continue };
            let idle = Duration::from_secs(auto.idle_seconds);
            if !self.idle_at_least(row.id, idle) {
                continue;
            }
            started += 1;
            let this = Arc::clone(self);
            tokio::spawn(async move {
                if auto.keep_awake && this.runs_background_processes(row.id).await {
                    this.activity.touch(row.id);
                    return;
                }
                match this.pause_now(row.id, PauseCause::Idle).await {
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(session = %row.id, error = %crate::error::chain(&err), "auto-pause failed");
                    }
                }
            });
        }
        started
    }

    /// Whether a process started in session `id` still runs (asked of its agent; an agent
    /// that cannot say counts as running, so that nothing is paused by mistake).
    async fn runs_background_processes(&self, id: Uuid) -> bool {
        let ask = async {
            let stream = self.runtime.connect(id).await.map_err(|e| e.to_string())?;
            let answer =
                crate::proxy::agent_request(stream, "GET", "/processes", Body::empty()).await?;
            let bytes = answer
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let list: hutch_api::processes::ProcessList =
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            Ok::<_, String>(
                list.items
                    .iter()
                    .any(|p| p.status == hutch_api::processes::ProcessStatus::Running),
            )
        };
        match tokio::time::timeout(Duration::from_secs(5), ask).await {
            Ok(Ok(running)) => running,
            Ok(Err(err)) => {
                tracing::debug!(session = %id, error = %err, "auto-pause: listing processes");
                true
            }
            Err(_) => true,
        }
    }
}
