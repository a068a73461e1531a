//! Host id ranges: each sandbox maps its 65,536 ids onto a range of host ids of its own.
//!
//! The pool starts at the configured base: its first range (`base ..= base + 65,535`) owns
//! the shared read-only layers (the `default` image's skeleton, hutch's OCI helper layers and
//! every unpacked OCI layer) and is never given to a sandbox. Slot `n` (from 0 to `ranges - 1`)
//! is the range starting at `base + (n + 1) × 65,536`. A sandbox gets the lowest free slot when
//! it is built (warm pool sandboxes too: a claim keeps the range it was built with) and frees
//! it once torn down (its processes dead). Its directory is owned by the first id of its
//! range, which is how a restarted server finds the slots of the sandboxes it adopts.
//!
//! Slots are held on disk (`<data>/leases/uids/`, see `leases.rs`), so that every server
//! process on one data directory sees the others' sandboxes' ranges as taken.
//!
//! A sandbox sees the shared layers through idmapped mounts ([`hutch_sys::idmap`]) whose user
//! namespace maps the shared range onto the sandbox's; one such namespace per slot is made on
//! first use and kept (an open descriptor each).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::leases::{Lease, Leases};
use super::{UID_COUNT, lock};
use crate::SandboxError;

/// The highest host id a range may include (`u32::MAX` is the invalid id `-1`).
const LAST_ID: u64 = u32::MAX as u64 - 1;

/// The slots of the host id pool and which sandbox holds each.
pub(crate) struct IdRanges {
    base: u32,
    ranges: u32,
    held: Leases,
    /// Idmap namespaces per slot, made on first use.
    namespaces: Mutex<HashMap<u32, Arc<OwnedFd>>>,
}

impl IdRanges {
    /// The pool of `ranges` sandbox ranges above the shared range at `base`, held in `data`'s
    /// `leases/uids/`; fails if it does not fit in the host's ids.
    pub(crate) fn new(data: &Path, base: u32, ranges: u32) -> Result<IdRanges, SandboxError> {
        let end = u64::from(base) + (u64::from(ranges) + 1) * u64::from(UID_COUNT) - 1;
        if ranges == 0 || end > LAST_ID || base == 0 {
            return Err(SandboxError::InvalidSpec(format!(
                "host id pool at {base} with {ranges} ranges of {UID_COUNT} ids does not fit: it needs a base above 0, at least one range, and its end ({end}) at most {LAST_ID}"
            )));
        }
        Ok(IdRanges {
            base,
            ranges,
            held: Leases::open(data, "uids", ranges)?,
            namespaces: Mutex::new(HashMap::new()),
        })
    }

    /// The first host id of slot `slot`'s range.
    fn first_id(&self, slot: u32) -> u32 {
        self.base + (slot + 1) * UID_COUNT
    }

    /// The slot whose range starts at host id `id`, if one does.
    fn slot_of(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.base)?;
        if offset % UID_COUNT != 0 || offset == 0 {
            return None;
        }
        let slot = offset / UID_COUNT - 1;
        (slot < self.ranges).then_some(slot)
    }

    /// Gives sandbox `id` the lowest range no process on this data directory holds (the one
    /// it holds, if it holds one); returns its first host id, and the lease to keep until the
    /// sandbox's directory exists.
    pub(crate) fn allocate(&self, id: Uuid) -> Result<(u32, Lease), SandboxError> {
        let ranges = self.ranges;
        let (slot, lease) = self.held.take(id, || {
            format!("all {ranges} host id ranges are in use (raise --uid-ranges)")
        })?;
        Ok((self.first_id(slot), lease))
    }

    /// Records that sandbox `id` (found on disk after a restart) holds the range starting at
    /// host id `first`. False, and nothing recorded, if `first` starts no slot of this pool or
    /// another sandbox holds that slot.
    pub(crate) fn reserve(&self, id: Uuid, first: u32) -> bool {
        let Some(slot) = self.slot_of(first) else {
            return false;
        };
        self.held.reserve(id, slot).unwrap_or_else(|e| {
            tracing::warn!(sandbox = %id, error = %e, "reserving a found sandbox's id range failed");
            false
        })
    }

    /// The first host id of sandbox `id`'s range, if it holds one.
    pub(crate) fn of(&self, id: Uuid) -> Option<u32> {
        self.held.of(id).map(|slot| self.first_id(slot))
    }

    /// Frees sandbox `id`'s range (call once its processes are gone); `owner` is the owner of
    /// its directory, for a sandbox this process did not know.
    pub(crate) fn release(&self, id: Uuid, owner: Option<u32>) {
        self.held
            .release(id, owner.and_then(|first| self.slot_of(first)));
    }

    /// Removes the range files a crash left (see `leases.rs`); returns how many.
    pub(crate) fn reconcile(&self) -> Result<usize, SandboxError> {
        self.held.reconcile()
    }

    /// How many ranges this process knows are held.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.held.known()
    }

    /// The user namespace mapping the shared range onto the range starting at `first` (made
    /// on first use, then kept).
    pub(crate) fn idmap(&self, first: u32) -> Result<Arc<OwnedFd>, SandboxError> {
        let slot = self.slot_of(first).ok_or_else(|| {
            SandboxError::InvalidSpec(format!("host id {first} starts no range of this pool"))
        })?;
        if let Some(ns) = lock(&self.namespaces).get(&slot) {
            return Ok(ns.clone());
        }
        let map = format!("{} {first} {UID_COUNT}\n", self.base);
        let ns = Arc::new(hutch_sys::idmap::user_namespace(&map).map_err(|source| {
            SandboxError::Sys {
                call: format!("create the idmap namespace {}", map.trim()),
                source,
            }
        })?);
        Ok(lock(&self.namespaces).entry(slot).or_insert(ns).clone())
    }

    /// Host id `id` of the range starting at `first`, moved to the same place in the shared
    /// range (ids outside that range are returned as they are).
    pub(crate) fn to_shared(&self, first: u32, id: u32) -> u32 {
        match id.checked_sub(first) {
            Some(offset) if offset < UID_COUNT => self.base + offset,
            _ => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u32 = 1_000_000_000;

    /// A pool on a scratch data directory (kept alive with it).
    fn pool(ranges: u32) -> (tempfile::TempDir, IdRanges) {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir(data.path().join("sandboxes")).unwrap();
        let ids = IdRanges::new(data.path(), BASE, ranges).unwrap();
        (data, ids)
    }

    #[test]
    fn sandboxes_get_distinct_ranges_above_the_shared_one() {
        let (_data, ids) = pool(3);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let firsts = [
            ids.allocate(a).unwrap().0,
            ids.allocate(b).unwrap().0,
            ids.allocate(c).unwrap().0,
        ];
        assert_eq!(
            firsts,
            [BASE + UID_COUNT, BASE + 2 * UID_COUNT, BASE + 3 * UID_COUNT]
        );
        assert_eq!(
            ids.allocate(a).unwrap().0,
            firsts[0],
            "allocating again keeps the range"
        );
        assert!(matches!(
            ids.allocate(Uuid::new_v4()),
            Err(SandboxError::Capacity(_))
        ));
        ids.release(b, None);
        let d = Uuid::new_v4();
        assert_eq!(
            ids.allocate(d).unwrap().0,
            firsts[1],
            "a freed range is reused"
        );
        assert_eq!(ids.of(c), Some(firsts[2]));
        assert_eq!(ids.of(b), None);
    }

    #[test]
    fn ranges_found_on_disk_are_reserved_once() {
        let (_data, ids) = pool(4);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(ids.reserve(a, BASE + 2 * UID_COUNT));
        assert!(ids.reserve(a, BASE + 2 * UID_COUNT));
        assert!(
            !ids.reserve(b, BASE + 2 * UID_COUNT),
            "held by another sandbox"
        );
        assert!(!ids.reserve(b, BASE), "the shared range is no sandbox's");
        assert!(
            !ids.reserve(b, BASE + UID_COUNT + 1),
            "not the start of a range"
        );
        assert!(!ids.reserve(b, BASE + 5 * UID_COUNT), "past the pool");
        assert!(!ids.reserve(b, 5), "below the pool");
        // New sandboxes go around the reserved range.
        assert_eq!(ids.allocate(b).unwrap().0, BASE + UID_COUNT);
        assert_eq!(
            ids.allocate(Uuid::new_v4()).unwrap().0,
            BASE + 3 * UID_COUNT
        );
        assert_eq!(ids.in_use(), 3);
        ids.release(a, None);
        assert_eq!(ids.in_use(), 2);
    }

    #[test]
    fn the_pool_must_fit_in_the_host_ids() {
        let data = tempfile::tempdir().unwrap();
        let new = |base, ranges| IdRanges::new(data.path(), base, ranges);
        assert!(new(BASE, 0).is_err());
        assert!(new(0, 1).is_err());
        let most = ((LAST_ID + 1 - u64::from(BASE)) / u64::from(UID_COUNT) - 1) as u32;
        assert!(new(BASE, most).is_ok());
        assert!(new(BASE, most + 1).is_err());
    }

    #[test]
    fn owners_move_to_the_shared_range() {
        let (_data, ids) = pool(2);
        let first = BASE + 2 * UID_COUNT;
        assert_eq!(ids.to_shared(first, first), BASE);
        assert_eq!(ids.to_shared(first, first + 1000), BASE + 1000);
        assert_eq!(ids.to_shared(first, 0), 0);
        assert_eq!(ids.to_shared(first, first + UID_COUNT), first + UID_COUNT);
    }
}
