//! Kept HTTP/1.1 connections to agents, reused for ordinary requests.
//!
//! Opening a connection to an agent costs a connect (and, for a pod, a TCP handshake and the
//! preface) and a new HTTP/1.1 handshake: about as much as the request itself. So the proxy
//! keeps the connection of an exchange that ended cleanly and hands it to the next request
//! of the same session:
//!
//! - a connection is returned only once its exchange is over: the client's body was sent
//!   whole, the agent's answer was read whole and did not say `Connection: close`, and the
//!   agent did not stop reading the request ([`AgentStream`](super::agent_io::AgentStream));
//!   a body the client did not read to the end, an upgrade (WebSocket) and an answer the
//!   client left half-read take their connection with them;
//! - connections are kept per session ([`AgentPool::checkout`] takes only the session's own),
//!   at most [`MAX_IDLE_PER_SESSION`] idle ones each and [`MAX_IDLE`] in all, and an idle
//!   one is closed after [`IDLE_TIMEOUT`];
//! - [`AgentPool::forget`] closes every idle connection of a session and refuses the return
//!   of those in use: it is called before a session's sandbox is destroyed (delete, expiry, a
//!   sandbox that died on its own) and when it is paused, so no connection outlives the
//!   sandbox it was opened to (a session recreated under the same id starts afresh);
//! - a kept connection the agent closed meanwhile is noticed by its connection task and
//!   skipped; one that fails under a request before any byte of answer came back is retried
//!   once on a fresh connection when that is safe (see `proxy::exchange`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use uuid::Uuid;

use super::AgentSender;

/// How long a kept connection may wait for its next request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most idle connections kept per session (concurrent requests beyond that open their own,
/// which are closed after their exchange): as many as the interpreter contexts a session may
/// hold besides `default`, so that a client running all of them at once keeps them all.
pub(crate) const MAX_IDLE_PER_SESSION: usize = 32;

/// Most idle connections kept for all sessions together (each holds a descriptor here and
/// one in its agent).
pub(crate) const MAX_IDLE: usize = 4096;

/// What the proxy observes of one connection's socket, shared between the stream (inside
/// the connection's task) and the exchange that uses it.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    /// Bytes the socket took.
    pub(crate) written: AtomicU64,
    /// Bytes read from the socket.
    pub(crate) read: AtomicU64,
    /// Whether the agent stopped reading a request (its writes were dropped): the connection
    /// is done.
    pub(crate) broken: AtomicBool,
}

/// One HTTP/1.1 connection to an agent: its sending half, the task that drives it (aborted
/// when this is dropped, which closes the socket) and what its socket saw.
pub(crate) struct AgentConn {
    /// Sends requests on the connection.
    pub(crate) sender: AgentSender,
    /// Drives the connection.
    pub(crate) task: JoinHandle<()>,
    /// The socket's counters.
    pub(crate) wire: Arc<Wire>,
}

impl Drop for AgentConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An idle connection and when it became idle.
struct Idle {
    conn: AgentConn,
    since: Instant,
}

/// The idle connections of every session.
#[derive(Default)]
struct IdleConns {
    by_session: HashMap<Uuid, Vec<Idle>>,
    /// How many there are in all.
    total: usize,
}

/// The kept connections of every session; see the module's documentation.
pub(crate) struct AgentPool {
    idle: Mutex<IdleConns>,
    /// Counts [`AgentPool::forget`] calls: a connection taken out before one is not returned.
    /// One counter for all sessions: a forget costs the exchanges of other sessions then in
    /// flight their reuse (they open anew next time), never correctness.
    epoch: AtomicU64,
    /// Whether the task closing idle connections runs.
    sweeping: AtomicBool,
    idle_timeout: Duration,
}

impl Default for AgentPool {
    fn default() -> Self {
        AgentPool::new(IDLE_TIMEOUT)
    }
}

/// A connection taken out of the pool (or opened for a request) that may go back when its
/// exchange ends cleanly.
pub(crate) struct Lease {
    pool: Arc<AgentPool>,
    session: Uuid,
    epoch: u64,
}

impl AgentPool {
    /// An empty pool whose idle connections are closed after `idle_timeout`.
    pub(crate) fn new(idle_timeout: Duration) -> AgentPool {
        AgentPool {
            idle: Mutex::new(IdleConns::default()),
            epoch: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
            idle_timeout,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, IdleConns> {
        // The map stays consistent whatever panicked while holding it.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A lease for an exchange with `session`'s agent starting now.
    pub(crate) fn lease(self: &Arc<Self>, session: Uuid) -> Lease {
        Lease {
            pool: Arc::clone(self),
            session,
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// The most recently used idle connection of `session` that is still open and ready for
    /// a request, if any; closed and expired ones met on the way are dropped.
    pub(crate) async fn checkout(&self, session: Uuid) -> Option<AgentConn> {
        loop {
            let idle = {
                let mut idle = self.idle();
                let list = idle.by_session.get_mut(&session)?;
                let conn = list.pop();
                if list.is_empty() {
                    idle.by_session.remove(&session);
                }
                let conn = conn?;
                idle.total -= 1;
                conn
            };
            if idle.since.elapsed() >= self.idle_timeout || idle.conn.sender.is_closed() {
                continue;
            }
            let mut conn = idle.conn;
            // An idle connection is ready at once; one whose task has not yet taken in the end
            // of its last exchange is a moment later. One that is neither is dropped.
            match tokio::time::timeout(self.idle_timeout, conn.sender.ready()).await {
                Ok(Ok(())) => return Some(conn),
                Ok(Err(_)) | Err(_) => continue,
            }
        }
    }

    /// Closes every idle connection of `session` and refuses the return of those in use.
    pub(crate) fn forget(&self, session: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let gone = {
            let mut idle = self.idle();
            let gone = idle.by_session.remove(&session).unwrap_or_default();
            idle.total -= gone.len();
            gone
        };
        drop(gone);
    }

    /// How many idle connections `session` has (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn idle_count(&self, session: Uuid) -> usize {
        self.idle().by_session.get(&session).map_or(0, Vec::len)
    }

    /// Keeps `conn` for `session`'s next request, unless the session was forgotten since the
    /// lease began or it has its most idle connections already.
    fn checkin(self: &Arc<Self>, session: Uuid, epoch: u64, conn: AgentConn) {
        if conn.sender.is_closed() || conn.wire.broken.load(Ordering::Acquire) {
            return;
        }
        {
            let mut idle = self.idle();
            // Under the lock: `forget` bumps the epoch before it takes the lock.
            if self.epoch.load(Ordering::Acquire) != epoch || idle.total >= MAX_IDLE {
                return;
            }
            let list = idle.by_session.entry(session).or_default();
            if list.len() >= MAX_IDLE_PER_SESSION {
                return;
            }
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
            idle.total += 1;
        }
        self.sweep_later();
    }

    /// Starts the task that closes expired idle connections, unless it runs. It ends when
    /// no connection is idle (or the pool is gone).
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let pool: Weak<AgentPool> = Arc::downgrade(self);
        let period = self.idle_timeout;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = pool.upgrade() else { return };
                let expired: Vec<Idle> = {
                    let mut idle = pool.idle();
                    let mut expired = Vec::new();
                    idle.by_session.retain(|_, list| {
                        let (keep, old): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                            .into_iter()
                            .partition(|i| i.since.elapsed() < period);
                        *list = keep;
                        expired.extend(old);
                        !list.is_empty()
                    });
                    idle.total -= expired.len();
                    if idle.by_session.is_empty() {
                        pool.sweeping.store(false, Ordering::Release);
                        drop(idle);
                        drop(expired);
                        return;
                    }
                    expired
                };
                drop(expired);
            }
        });
    }
}

impl Lease {
    /// Gives `conn` back for the session's next request (see [`AgentPool::checkin`]).
    pub(crate) fn give_back(self, conn: AgentConn) {
        self.pool.checkin(self.session, self.epoch, conn);
    }
}
