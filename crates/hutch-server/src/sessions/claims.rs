//! Claims: at most one task at a time creates or destroys a given session's sandbox.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

/// The set of sessions some task is currently creating or destroying.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    held: Arc<Mutex<HashSet<Uuid>>>,
}

/// Exclusive right to create or destroy one session's sandbox; released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    held: Arc<Mutex<HashSet<Uuid>>>,
    /// The session claimed.
    pub(super) id: Uuid,
}

impl Claims {
    /// Takes the claim on `id`, or `None` if another task holds it.
    pub(crate) fn try_claim(&self, id: Uuid) -> Option<Claim> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(id).then(|| Claim {
            held: Arc::clone(&self.held),
            id,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_exclusive_until_dropped() {
        let claims = Claims::default();
        let id = Uuid::now_v7();
        let first = claims.try_claim(id).unwrap();
        assert!(claims.try_claim(id).is_none());
        assert!(claims.try_claim(Uuid::now_v7()).is_some());
        drop(first);
        assert!(claims.try_claim(id).is_some());
    }
}
