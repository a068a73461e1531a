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
//! A sandbox sees the shared layers through idmapped mounts ([`hutch_sys::idmap`]) whose user
//! namespace maps the shared range onto the sandbox's; one such namespace per slot is made on
//! first use and kept (an open descriptor each).

use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::{UID_COUNT, lock};
use crate::SandboxError;

/// The highest host id a range may include (`u32::MAX` is the invalid id `-1`).
const LAST_ID: u64 = u32::MAX as u64 - 1;

/// The slots of the host id pool and which sandbox holds each.
pub(crate) struct IdRanges {
    base: u32,
    ranges: u32,
    held: Mutex<Held>,
    /// Idmap namespaces per slot, made on first use.
    namespaces: Mutex<HashMap<u32, Arc<OwnedFd>>>,
}

#[derive(Default)]
struct Held {
    by_sandbox: HashMap<Uuid, u32>,
    used: BTreeSet<u32>,
}

impl IdRanges {
    /// The pool of `ranges` sandbox ranges above the shared range at `base`; fails if it does
    /// not fit in the host's ids.
    pub(crate) fn new(base: u32, ranges: u32) -> Result<IdRanges, SandboxError> {
        let end = u64::from(base) + (u64::from(ranges) + 1) * u64::from(UID_COUNT) - 1;
        if ranges == 0 || end > LAST_ID || base == 0 {
            return Err(SandboxError::InvalidSpec(format!(
                "host id pool at {base} with {ranges} ranges of {UID_COUNT} ids does not fit: it needs a base above 0, at least one range, and its end ({end}) at most {LAST_ID}"
            )));
        }
        Ok(IdRanges {
            base,
            ranges,
            held: Mutex::new(Held::default()),
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

    /// Gives sandbox `id` the lowest free range (the one it holds, if it holds one); returns
    /// its first host id.
    pub(crate) fn allocate(&self, id: Uuid) -> Result<u32, SandboxError> {
        let mut held = lock(&self.held);
        if let Some(slot) = held.by_sandbox.get(&id) {
            return Ok(self.first_id(*slot));
        }
        let slot = (0..self.ranges)
            .find(|slot| !held.used.contains(slot))
            .ok_or_else(|| {
                SandboxError::Capacity(format!(
                    "all {} host id ranges are in use (raise --uid-ranges)",
                    self.ranges
                ))
            })?;
        held.used.insert(slot);
        held.by_sandbox.insert(id, slot);
        Ok(self.first_id(slot))
    }

    /// Records that sandbox `id` (found on disk after a restart) holds the range starting at
    /// host id `first`. False, and nothing recorded, if `first` starts no slot of this pool or
    /// another sandbox holds that slot.
    pub(crate) fn reserve(&self, id: Uuid, first: u32) -> bool {
        let Some(slot) = self.slot_of(first) else {
            return false;
        };
        let mut held = lock(&self.held);
        if held.by_sandbox.get(&id) == Some(&slot) {
            return true;
        }
        if held.used.contains(&slot) || held.by_sandbox.contains_key(&id) {
            return false;
        }
        held.used.insert(slot);
        held.by_sandbox.insert(id, slot);
        true
    }

    /// The first host id of sandbox `id`'s range, if it holds one.
    pub(crate) fn of(&self, id: Uuid) -> Option<u32> {
        lock(&self.held)
            .by_sandbox
            .get(&id)
            .map(|slot| self.first_id(*slot))
    }

    /// Frees sandbox `id`'s range (call once its processes are gone).
    pub(crate) fn release(&self, id: Uuid) {
        let mut held = lock(&self.held);
        if let Some(slot) = held.by_sandbox.remove(&id) {
            held.used.remove(&slot);
        }
    }

    /// How many ranges are held.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        lock(&self.held).used.len()
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

    #[test]
    fn sandboxes_get_distinct_ranges_above_the_shared_one() {
        let ids = IdRanges::new(BASE, 3).unwrap();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let firsts = [
            ids.allocate(a).unwrap(),
            ids.allocate(b).unwrap(),
            ids.allocate(c).unwrap(),
        ];
        assert_eq!(
            firsts,
            [BASE + UID_COUNT, BASE + 2 * UID_COUNT, BASE + 3 * UID_COUNT]
        );
        assert_eq!(
            ids.allocate(a).unwrap(),
            firsts[0],
            "allocating again keeps the range"
        );
        assert!(matches!(
            ids.allocate(Uuid::new_v4()),
            Err(SandboxError::Capacity(_))
        ));
        ids.release(b);
        let d = Uuid::new_v4();
        assert_eq!(
            ids.allocate(d).unwrap(),
            firsts[1],
            "a freed range is reused"
        );
        assert_eq!(ids.of(c), Some(firsts[2]));
        assert_eq!(ids.of(b), None);
    }

    #[test]
    fn ranges_found_on_disk_are_reserved_once() {
        let ids = IdRanges::new(BASE, 4).unwrap();
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
        assert_eq!(ids.allocate(b).unwrap(), BASE + UID_COUNT);
        assert_eq!(ids.allocate(Uuid::new_v4()).unwrap(), BASE + 3 * UID_COUNT);
        assert_eq!(ids.in_use(), 3);
        ids.release(a);
        assert_eq!(ids.in_use(), 2);
    }

    #[test]
    fn the_pool_must_fit_in_the_host_ids() {
        assert!(IdRanges::new(BASE, 0).is_err());
        assert!(IdRanges::new(0, 1).is_err());
        let most = ((LAST_ID + 1 - u64::from(BASE)) / u64::from(UID_COUNT) - 1) as u32;
        assert!(IdRanges::new(BASE, most).is_ok());
        assert!(IdRanges::new(BASE, most + 1).is_err());
    }

    #[test]
    fn owners_move_to_the_shared_range() {
        let ids = IdRanges::new(BASE, 2).unwrap();
        let first = BASE + 2 * UID_COUNT;
        assert_eq!(ids.to_shared(first, first), BASE);
        assert_eq!(ids.to_shared(first, first + 1000), BASE + 1000);
        assert_eq!(ids.to_shared(first, 0), 0);
        assert_eq!(ids.to_shared(first, first + UID_COUNT), first + UID_COUNT);
    }
}
