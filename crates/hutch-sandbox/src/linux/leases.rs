//! Slots shared by every server process on one data directory: host id ranges and network
//! addresses.
//!
//! Several servers (replicas) may run sandboxes out of one data directory, so a slot given to
//! a sandbox must be seen as taken by all of them, even when two processes allocate at the
//! same instant. Each pool is a directory under `<data>/leases/`; slot `n` is held while the
//! file `<pool>/<n>` exists, and the file names the sandbox holding it.
//!
//! - **Taking** a slot writes the sandbox's id into a fresh file `.new-<random>`, locks it
//!   (`flock`) and hard-links it to `<n>`: `link` fails if `<n>` exists, so of two processes
//!   racing for one slot exactly one gets it, and the file is never seen empty. The taker
//!   keeps the lock (the [`Lease`] guard) until the sandbox's directory exists.
//! - **Freeing** a slot (teardown) removes the file, but only while it names that sandbox.
//! - **Reconciling** (the start-up sweep) removes what a crash left: a slot file whose sandbox
//!   has no directory under `sandboxes/`, and half-made `.new-*` files, unless their lock is
//!   held (a live process is still building that sandbox).
//!
//! Every removal holds the file's lock and first checks that the name still points at the
//! locked file, so a removal never takes away a file another process has just put there.
//!
//! Each process also remembers the slots it knows of (taken by it, or found on disk for the
//! sandboxes it adopts), which spares a system call per slot in the common case.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use uuid::Uuid;

use super::{io, lock};
use crate::SandboxError;

/// Prefix of the files a slot is taken through.
const NEW_PREFIX: &str = ".new-";

/// One pool of numbered slots on disk.
pub(crate) struct Leases {
    /// The pool's directory, `<data>/leases/<name>`.
    dir: PathBuf,
    /// Where sandboxes' directories are (`<data>/sandboxes`): a slot whose sandbox has none
    /// there is left over.
    sandboxes: PathBuf,
    /// Slots `0 .. count`.
    count: u32,
    /// What this process knows is held.
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    by_sandbox: HashMap<Uuid, u32>,
    used: BTreeSet<u32>,
}

/// The lock on a slot just taken: held until the sandbox's directory exists, so that no
/// reconciling process takes the slot for left over meanwhile.
#[must_use = "the slot may be reclaimed once the lease is dropped and before the sandbox's directory exists"]
pub(crate) struct Lease {
    _file: Option<File>,
}

/// What a slot file holds, read under its lock.
enum Holder {
    /// The file is gone, or the name now points at another file.
    Moved,
    /// The file names this sandbox (or nothing readable: `None`).
    Sandbox(Option<Uuid>),
}

impl Leases {
    /// The pool `name` of `count` slots in `data`'s `leases/` (created if missing).
    pub(crate) fn open(data: &Path, name: &str, count: u32) -> Result<Leases, SandboxError> {
        let dir = data.join("leases").join(name);
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        Ok(Leases {
            dir,
            sandboxes: data.join("sandboxes"),
            count,
            known: Mutex::new(Known::default()),
        })
    }

    fn path(&self, slot: u32) -> PathBuf {
        self.dir.join(slot.to_string())
    }

    /// Gives sandbox `owner` the lowest free slot (the one this process knows it holds, if
    /// any). `full` words the error when every slot is held.
    pub(crate) fn take(
        &self,
        owner: Uuid,
        full: impl FnOnce() -> String,
    ) -> Result<(u32, Lease), SandboxError> {
        let mut known = lock(&self.known);
        if let Some(slot) = known.by_sandbox.get(&owner) {
            return Ok((*slot, Lease { _file: None }));
        }
        let (new_path, new) = self.new_file(owner)?;
        let try_slots =
            |slots: &mut dyn Iterator<Item = u32>| -> Result<Option<u32>, SandboxError> {
                for slot in slots {
                    let path = self.path(slot);
                    match fs::hard_link(&new_path, &path) {
                        Ok(()) => return Ok(Some(slot)),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(io("link", &path)(e)),
                    }
                }
                Ok(None)
            };
        // First the slots this process knows nothing of; then, only when none is free, those
        // it thinks held (another process may have freed a sandbox it found on disk).
        let taken = try_slots(&mut (0..self.count).filter(|slot| !known.used.contains(slot)))
            .and_then(|slot| match slot {
                Some(slot) => Ok(Some(slot)),
                None => {
                    let mut stale = known.used.iter().copied().collect::<Vec<_>>().into_iter();
                    try_slots(&mut stale)
                }
            });
        let _ = fs::remove_file(&new_path);
        let slot = taken?.ok_or_else(|| SandboxError::Capacity(full()))?;
        known.by_sandbox.retain(|_, held| *held != slot);
        known.used.insert(slot);
        known.by_sandbox.insert(owner, slot);
        Ok((slot, Lease { _file: Some(new) }))
    }

    /// A locked file naming `owner`, not yet any slot's.
    fn new_file(&self, owner: Uuid) -> Result<(PathBuf, File), SandboxError> {
        let path = self
            .dir
            .join(format!("{NEW_PREFIX}{}", Uuid::new_v4().simple()));
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("create", &path))?;
        let made = file
            .lock()
            .and_then(|()| file.write_all(owner.to_string().as_bytes()));
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(io("write", &path)(e));
        }
        Ok((path, file))
    }

    /// Records that sandbox `owner` (found on disk) holds `slot`, writing its slot file if it
    /// has none. False, and nothing recorded, if `slot` is out of the pool, another sandbox
    /// with a directory holds it, or `owner` holds another slot.
    pub(crate) fn reserve(&self, owner: Uuid, slot: u32) -> Result<bool, SandboxError> {
        if slot >= self.count {
            return Ok(false);
        }
        let mut known = lock(&self.known);
        match known.by_sandbox.get(&owner) {
            Some(held) => return Ok(*held == slot),
            None if known.used.contains(&slot) => return Ok(false),
            None => {}
        }
        let path = self.path(slot);
        // Bounded: each round either ends or removed a left-over file that was in the way.
        for _ in 0..3 {
            let (new_path, new) = self.new_file(owner)?;
            let linked = fs::hard_link(&new_path, &path);
            let _ = fs::remove_file(&new_path);
            drop(new);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match self.read_locked(&path)? {
                        Some((_, Holder::Sandbox(Some(holder)))) if holder == owner => {}
                        Some((file, Holder::Sandbox(holder))) => {
                            if holder.is_some_and(|h| self.sandboxes.join(h.to_string()).exists()) {
                                return Ok(false);
                            }
                            // Left over by a sandbox that is gone.
                            remove_locked(&path, &file);
                            continue;
                        }
                        // Being taken or freed this instant: look again.
                        _ => continue,
                    }
                }
                Err(e) => return Err(io("link", &path)(e)),
            }
            known.used.insert(slot);
            known.by_sandbox.insert(owner, slot);
            return Ok(true);
        }
        Ok(false)
    }

    /// The slot sandbox `owner` holds, as far as this process knows.
    pub(crate) fn of(&self, owner: Uuid) -> Option<u32> {
        lock(&self.known).by_sandbox.get(&owner).copied()
    }

    /// Frees sandbox `owner`'s slot: the one this process knows of, else `hint` (from the
    /// sandbox's own files). Removes the slot file only while it names `owner`. Call once the
    /// sandbox can no longer use the slot.
    pub(crate) fn release(&self, owner: Uuid, hint: Option<u32>) {
        let slot = {
            let mut known = lock(&self.known);
            let slot = known.by_sandbox.remove(&owner);
            if let Some(slot) = slot {
                known.used.remove(&slot);
            }
            slot.or(hint)
        };
        let Some(slot) = slot.filter(|slot| *slot < self.count) else {
            return;
        };
        let path = self.path(slot);
        match self.read_locked(&path) {
            Ok(Some((file, Holder::Sandbox(Some(holder))))) if holder == owner => {
                remove_locked(&path, &file);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(sandbox = %owner, error = %e, "freeing a slot failed"),
        }
    }

    /// Removes the slot files of sandboxes without a directory and half-made files, skipping
    /// any whose lock a live process holds. Returns how many it removed.
    pub(crate) fn reconcile(&self) -> Result<usize, SandboxError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)
            .map_err(io("list", &self.dir))?
            .flatten()
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let Some((file, holder)) = self.read_locked(&path)? else {
                continue;
            };
            let left_over = if name.starts_with(NEW_PREFIX) {
                true
            } else if let Ok(slot) = name.parse::<u32>() {
                match holder {
                    Holder::Moved => false,
                    Holder::Sandbox(None) => true,
                    Holder::Sandbox(Some(holder)) => {
                        !self.sandboxes.join(holder.to_string()).exists()
                            && lock(&self.known).by_sandbox.get(&holder) != Some(&slot)
                    }
                }
            } else {
                false
            };
            if left_over && !matches!(holder, Holder::Moved) && remove_locked(&path, &file) {
                tracing::info!(lease = %path.display(), "removed a left-over slot file");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Opens and locks the file at `path` without waiting; reads whom it names. `None` if
    /// there is no such file or a live process holds its lock.
    fn read_locked(&self, path: &Path) -> Result<Option<(File, Holder)>, SandboxError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", path)(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(io("lock", path)(e)),
        }
        if !same_file(path, &file) {
            return Ok(Some((file, Holder::Moved)));
        }
        let mut text = String::new();
        let holder = match file.read_to_string(&mut text) {
            Ok(_) => Uuid::parse_str(text.trim()).ok(),
            Err(_) => None,
        };
        Ok(Some((file, Holder::Sandbox(holder))))
    }

    /// How many slots this process knows are held.
    #[cfg(test)]
    pub(crate) fn known(&self) -> usize {
        lock(&self.known).used.len()
    }
}

/// Whether `path` still names `file` (whose lock the caller holds).
fn same_file(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(named), Ok(held)) => named.dev() == held.dev() && named.ino() == held.ino(),
        _ => false,
    }
}

/// Removes `path` if it still names `file`, whose lock the caller holds (everyone who
/// removes a slot file holds its lock, so the name cannot change between check and removal).
fn remove_locked(path: &Path, file: &File) -> bool {
    same_file(path, file) && fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};

    fn full() -> String {
        "full".into()
    }

    fn pool(data: &Path, count: u32) -> Leases {
        fs::create_dir_all(data.join("sandboxes")).unwrap();
        Leases::open(data, "test", count).unwrap()
    }

    #[test]
    fn two_pools_on_one_directory_never_give_a_slot_twice() {
        let data = tempfile::tempdir().unwrap();
        const COUNT: u32 = 64;
        const EACH: usize = 32;
        let pools: Vec<Arc<Leases>> = (0..4).map(|_| Arc::new(pool(data.path(), COUNT))).collect();
        let start = Arc::new(Barrier::new(pools.len() * 2));
        let threads: Vec<_> = pools
            .iter()
            .flat_map(|p| [p.clone(), p.clone()])
            .map(|p| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    (0..EACH / 2)
                        .filter_map(|_| {
                            let id = Uuid::new_v4();
                            p.take(id, full).ok().map(|(slot, _)| (slot, id))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let taken: Vec<(u32, Uuid)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(taken.len(), COUNT as usize, "every slot is given");
        let slots: HashSet<u32> = taken.iter().map(|(slot, _)| *slot).collect();
        assert_eq!(slots.len(), taken.len(), "no slot is given twice");
        for (slot, id) in &taken {
            let on_disk = fs::read_to_string(data.path().join(format!("leases/test/{slot}")));
            assert_eq!(on_disk.unwrap(), id.to_string());
        }
        assert!(matches!(
            pools[0].take(Uuid::new_v4(), full),
            Err(SandboxError::Capacity(_))
        ));
        // Freed in one process, taken in another.
        let (slot, id) = taken[0];
        let holder = pools.iter().find(|p| p.of(id) == Some(slot)).unwrap();
        holder.release(id, None);
        let other = pools.iter().find(|p| p.of(id).is_none()).unwrap();
        let again = other.take(Uuid::new_v4(), full).unwrap().0;
        assert_eq!(again, slot);
    }

    #[test]
    fn a_slot_another_process_freed_is_taken_again_when_the_rest_are_full() {
        let data = tempfile::tempdir().unwrap();
        let (a, b) = (pool(data.path(), 2), pool(data.path(), 2));
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        let (slot, lease) = a.take(x, full).unwrap();
        fs::create_dir(data.path().join("sandboxes").join(x.to_string())).unwrap();
        drop(lease);
        assert!(b.reserve(x, slot).unwrap(), "b finds x on disk");
        let (other, _lease) = b.take(y, full).unwrap();
        assert_ne!(other, slot);
        // a destroys x; b still thinks its slot held, but takes it once nothing else is free.
        a.release(x, None);
        let z = Uuid::new_v4();
        assert_eq!(b.take(z, full).unwrap().0, slot);
        assert_eq!(b.of(x), None, "b forgot x's stale slot");
        assert_eq!(b.of(z), Some(slot));
    }

    #[test]
    fn a_slot_is_freed_only_by_its_sandbox() {
        let data = tempfile::tempdir().unwrap();
        let (a, b) = (pool(data.path(), 4), pool(data.path(), 4));
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        let (slot, _) = a.take(x, full).unwrap();
        // Another process frees it in x's name only.
        b.release(y, Some(slot));
        assert!(data.path().join(format!("leases/test/{slot}")).exists());
        b.release(x, Some(slot));
        assert!(!data.path().join(format!("leases/test/{slot}")).exists());
    }

    #[test]
    fn reconciling_removes_only_what_no_sandbox_or_process_holds() {
        let data = tempfile::tempdir().unwrap();
        let (a, b) = (pool(data.path(), 8), pool(data.path(), 8));
        // A sandbox with a directory keeps its slot.
        let built = Uuid::new_v4();
        let (kept, lease) = a.take(built, full).unwrap();
        fs::create_dir(data.path().join("sandboxes").join(built.to_string())).unwrap();
        drop(lease);
        // One still being built (its lease held) keeps its slot too.
        let building = Uuid::new_v4();
        let (held, lease) = a.take(building, full).unwrap();
        // One whose process died before its directory existed does not.
        let crashed = Uuid::new_v4();
        let (lost, crashed_lease) = a.take(crashed, full).unwrap();
        drop(crashed_lease);
        // A half-made file of a dead process goes too.
        fs::write(
            data.path().join("leases/test/.new-dead"),
            crashed.to_string(),
        )
        .unwrap();
        assert_eq!(b.reconcile().unwrap(), 2);
        let slot_file = |slot: u32| data.path().join(format!("leases/test/{slot}"));
        assert!(slot_file(kept).exists());
        assert!(slot_file(held).exists());
        assert!(!slot_file(lost).exists());
        assert!(!data.path().join("leases/test/.new-dead").exists());
        drop(lease);
        // Its directory never came: now it is left over as well.
        assert_eq!(b.reconcile().unwrap(), 1);
        assert!(!slot_file(held).exists());
    }

    #[test]
    fn found_sandboxes_reserve_their_slot_once() {
        let data = tempfile::tempdir().unwrap();
        let (a, b) = (pool(data.path(), 4), pool(data.path(), 4));
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        let (slot, lease) = a.take(x, full).unwrap();
        fs::create_dir(data.path().join("sandboxes").join(x.to_string())).unwrap();
        drop(lease);
        assert!(b.reserve(x, slot).unwrap(), "the slot x holds");
        assert!(b.reserve(x, slot).unwrap());
        assert!(!b.reserve(y, slot).unwrap(), "held by x");
        assert!(!b.reserve(y, 4).unwrap(), "past the pool");
        assert!(!b.reserve(x, slot + 1).unwrap(), "x holds another");
        // A slot file naming a sandbox that is gone is taken over.
        let gone = Uuid::new_v4();
        let (stale, lease) = a.take(gone, full).unwrap();
        drop(lease);
        assert!(b.reserve(y, stale).unwrap());
        assert_eq!(
            fs::read_to_string(data.path().join(format!("leases/test/{stale}"))).unwrap(),
            y.to_string()
        );
        assert_eq!(b.known(), 2);
    }
}
