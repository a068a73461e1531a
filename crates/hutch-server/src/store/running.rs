//! Which sessions are RUNNING, remembered between reads, for the check every in-session
//! request makes.
//!
//! Each request relayed to a session's agent first makes sure the session is the caller's and
//! RUNNING. Read from SQLite, that check was the dearest part of the relay: about 40 % of the
//! server's CPU time for an `x = 1 + 1` execution, most of it the hand-over to and from the
//! database's thread. On SQLite this process is the only writer of the sessions table (one
//! server per data directory), so what a read found stays true until this process itself
//! moves the row out of RUNNING, which only [`Store::set_paused`](super::Store::set_paused),
//! the marks of a delete and [`Store::delete`](super::Store::delete) do: each forgets the
//! session once its write is over, whatever its outcome ([`Forget`]).
//!
//! A read that raced with such a write must not remember what the write has just made false.
//! Every forget moves a generation on, and a read remembers its row only if no forget came
//! since the read began ([`RunningSessions::remember`]). Between a write and its forget a
//! request can still pass the check, exactly as one that read the row just before the write.
//!
//! On PostgreSQL the other replicas write too: nothing is remembered there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

/// Most sessions remembered; past it, everything is forgotten and read again.
const MAX_REMEMBERED: usize = 65_536;

/// Sessions known to be RUNNING and not paused, with their tenants.
#[derive(Debug, Default)]
pub(crate) struct RunningSessions {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Moves on at every forget.
    generation: u64,
    /// Session id → its tenant.
    tenants: HashMap<Uuid, Arc<str>>,
}

impl RunningSessions {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation now: taken before a read whose row may be remembered.
    pub(crate) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Remembers that session `id` of `tenant` is RUNNING, as a read that began at
    /// `generation` found it, unless a forget came since.
    pub(crate) fn remember(&self, id: Uuid, tenant: &str, generation: u64) {
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.tenants.len() >= MAX_REMEMBERED && !state.tenants.contains_key(&id) {
            state.tenants.clear();
        }
        state.tenants.insert(id, Arc::from(tenant));
    }

    /// Forgets session `id`: its row may no longer be RUNNING.
    pub(crate) fn forget(&self, id: Uuid) {
        let mut state = self.state();
        state.generation = state.generation.wrapping_add(1);
        state.tenants.remove(&id);
    }

    /// Whether session `id` is RUNNING and `may_see` takes its tenant; `None` when it is not
    /// remembered (the row must be read).
    pub(crate) fn check(&self, id: Uuid, may_see: impl FnOnce(&str) -> bool) -> Option<bool> {
        self.state().tenants.get(&id).map(|tenant| may_see(tenant))
    }
}

/// Forgets a session when dropped: held across a write that may move its row out of RUNNING,
/// so the forget follows the write however it ends (done, failed, or its future dropped).
pub(crate) struct Forget<'a> {
    pub(crate) running: &'a RunningSessions,
    pub(crate) id: Uuid,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.running.forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_remembers_and_a_forget_undoes_it() {
        let running = RunningSessions::default();
        let id = Uuid::now_v7();
        assert_eq!(running.check(id, |_| true), None, "nothing read yet");
        running.remember(id, "alice", running.generation());
        assert_eq!(running.check(id, |tenant| tenant == "alice"), Some(true));
        assert_eq!(running.check(id, |tenant| tenant == "bob"), Some(false));
        running.forget(id);
        assert_eq!(running.check(id, |_| true), None);
    }

    #[test]
    fn a_read_that_began_before_a_forget_is_not_remembered() {
        let running = RunningSessions::default();
        let id = Uuid::now_v7();
        let began = running.generation();
        // A pause wrote and forgot while the read was on its way with the old row.
        running.forget(id);
        running.remember(id, "alice", began);
        assert_eq!(running.check(id, |_| true), None);
    }

    #[test]
    fn a_forget_is_kept_however_the_write_ends() {
        let running = RunningSessions::default();
        let id = Uuid::now_v7();
        running.remember(id, "alice", running.generation());
        fn failing_write(running: &RunningSessions, id: Uuid) -> Result<(), ()> {
            let _forget = Forget { running, id };
            Err(())
        }
        let failed = failing_write(&running, id);
        assert!(failed.is_err());
        assert_eq!(running.check(id, |_| true), None);
    }

    #[test]
    fn the_memory_is_bounded() {
        let running = RunningSessions::default();
        for _ in 0..=MAX_REMEMBERED {
            running.remember(Uuid::now_v7(), "t", running.generation());
        }
        assert!(running.state().tenants.len() <= MAX_REMEMBERED);
    }
}
