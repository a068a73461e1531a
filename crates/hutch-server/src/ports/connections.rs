//! How many connections are relayed into each session's ports at once, bounded per session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

/// Open relayed connections, counted per session.
#[derive(Debug)]
pub(crate) struct Connections {
    /// Most connections of one session at once.
    limit: usize,
    /// Sessions with at least one open connection, and how many.
    open: Mutex<HashMap<Uuid, usize>>,
}

/// One open connection: counted until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    connections: Arc<Connections>,
    session: Uuid,
}

impl Connections {
    /// A counter allowing `limit` connections per session.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Connections {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The per-session limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for one more connection into `session`, or `None` when it has `limit` open.
    pub(crate) fn acquire(self: &Arc<Self>, session: Uuid) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(session).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            connections: Arc::clone(self),
            session,
        })
    }

    /// How many connections are open into each session that has any.
    pub(crate) fn open_counts(&self) -> HashMap<Uuid, usize> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many connections into `session` are open.
    #[cfg(test)]
    pub(crate) fn open(&self, session: Uuid) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&session).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.session) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_session_and_given_back() {
        let connections = Connections::new(2);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let first = connections.acquire(a).unwrap();
        let _second = connections.acquire(a).unwrap();
        assert!(connections.acquire(a).is_none(), "a third is refused");
        let _other = connections
            .acquire(b)
            .expect("another session has its own bound");
        drop(first);
        assert_eq!(connections.open(a), 1);
        assert!(connections.acquire(a).is_some());
    }
}
