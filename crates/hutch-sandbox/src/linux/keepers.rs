//! Which live server process keeps each sandbox, for servers sharing one data directory.
//!
//! Every linux runtime names itself with a fresh id and holds the lock (`flock`) of the file
//! `<data>/runtimes/<its id>` for as long as it lives; the kernel drops the lock when the
//! process dies, however it dies. Before anything of a sandbox exists, its builder writes its
//! own id into `<data>/keepers/<sandbox id>`; a runtime that adopts the sandbox later writes
//! its own. The start-up sweep of another runtime leaves alone every sandbox whose keeper's
//! lock is held by a live process (its warm pool, the sandboxes it is building, its sessions),
//! and sweeps those of dead processes as before.
//!
//! The process that runs parts of a claimed sandbox outside it (the watcher of its agent, its
//! resolver bound to the gateway address) holds the lock of `<data>/keepers/<sandbox>.lock`
//! while they run ([`LocalHold`]). Any process may destroy the sandbox: it kills the sandbox's
//! processes, then waits (bounded) for that lock before it frees the sandbox's slots, so that
//! no address or id range goes to another sandbox while a resolver still holds it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::io;
use crate::SandboxError;

/// How often [`Keeper::wait_released`] tries the lock again.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// The lock of `keepers/<sandbox>.lock`, held by the process that runs parts of a sandbox
/// outside it, shared by each of those parts: released when the last one stops.
#[derive(Clone)]
pub(crate) struct LocalHold {
    _lock: Arc<File>,
}

/// This runtime's name and the lock that says it is alive.
pub(crate) struct Keeper {
    id: Uuid,
    runtimes: PathBuf,
    keepers: PathBuf,
    /// Holds the lock of `runtimes/<id>`.
    _alive: File,
}

impl Keeper {
    /// Names this runtime in `data` and takes the lock that says it is alive.
    pub(crate) fn start(data: &Path) -> Result<Keeper, SandboxError> {
        let runtimes = data.join("runtimes");
        let keepers = data.join("keepers");
        for dir in [&runtimes, &keepers] {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let id = Uuid::new_v4();
        let path = runtimes.join(id.to_string());
        // Locked before it has a name: no other process ever sees the file unlocked and takes
        // this live runtime for a dead one.
        let alive = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(&runtimes)
            .map_err(io("create a file in", &runtimes))?;
        alive.lock().map_err(io("lock", &path))?;
        link_open_file(&alive, &path).map_err(io("create", &path))?;
        Ok(Keeper {
            id,
            runtimes,
            keepers,
            _alive: alive,
        })
    }

    /// Records this runtime as the keeper of sandbox `sandbox` (written before anything of a
    /// new sandbox exists, and again when adopting one).
    pub(crate) fn keep(&self, sandbox: Uuid) -> Result<(), SandboxError> {
        let path = self.keepers.join(sandbox.to_string());
        let tmp = self
            .keepers
            .join(format!(".{sandbox}.{}", self.id.simple()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(self.id.to_string().as_bytes()))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io("write", &path)(e));
        }
        Ok(())
    }

    /// Forgets sandbox `sandbox`'s keeper and its local lock (once it is torn down).
    pub(crate) fn forget(&self, sandbox: Uuid) {
        let _ = fs::remove_file(self.keepers.join(sandbox.to_string()));
        let _ = fs::remove_file(self.hold_path(sandbox));
    }

    fn hold_path(&self, sandbox: Uuid) -> PathBuf {
        self.keepers.join(format!("{sandbox}.lock"))
    }

    /// Takes the local lock of sandbox `sandbox`, for this process to run parts of it (its
    /// agent's watcher, its resolver). Fails if another process holds it: that one still
    /// runs them.
    pub(crate) fn hold(&self, sandbox: Uuid) -> Result<LocalHold, SandboxError> {
        let path = self.hold_path(sandbox);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("create", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(LocalHold {
                _lock: Arc::new(file),
            }),
            Err(fs::TryLockError::WouldBlock) => Err(SandboxError::Sys {
                call: format!("lock {}", path.display()),
                source: std::io::Error::other(
                    "another server process still runs parts of this sandbox",
                ),
            }),
            Err(fs::TryLockError::Error(e)) => Err(io("lock", &path)(e)),
        }
    }

    /// Waits up to `timeout` until no process holds sandbox `sandbox`'s local lock (blocking).
    /// Returns whether it is free: every part of the sandbox outside it has stopped.
    pub(crate) fn wait_released(&self, sandbox: Uuid, timeout: Duration) -> bool {
        let path = self.hold_path(sandbox);
        let Ok(file) = File::open(&path) else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return true,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(RELEASE_POLL);
                }
                Err(_) => return false,
            }
        }
    }

    /// The runtime recorded as keeping sandbox `sandbox`.
    fn keeper_of(&self, sandbox: &str) -> Option<Uuid> {
        fs::read_to_string(self.keepers.join(sandbox))
            .ok()
            .and_then(|text| Uuid::parse_str(text.trim()).ok())
    }

    /// Whether a live runtime, this one included, keeps sandbox `sandbox`: a process is
    /// building it, pools it or runs it.
    pub(crate) fn kept_alive(&self, sandbox: Uuid) -> bool {
        self.keeper_of(&sandbox.to_string())
            .is_some_and(|keeper| keeper == self.id || self.is_alive(keeper))
    }

    /// The sandboxes a live runtime, this one included, keeps (see [`Keeper::kept_alive`]).
    pub(crate) fn live_kept(&self) -> HashSet<Uuid> {
        fs::read_dir(&self.keepers)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Uuid::parse_str(&entry.file_name().to_string_lossy()).ok())
            .filter(|sandbox| self.kept_alive(*sandbox))
            .collect()
    }

    /// The other runtimes on this data directory whose process is gone and whose file the
    /// next [`Keeper::reconcile`] removes: what they kept is left over unless a session
    /// still holds it.
    pub(crate) fn dead_others(&self) -> Vec<Uuid> {
        fs::read_dir(&self.runtimes)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Uuid::parse_str(&entry.file_name().to_string_lossy()).ok())
            .filter(|id| *id != self.id && !self.is_alive(*id))
            .collect()
    }

    /// Whether runtime `id`'s process lives (holds its lock).
    fn is_alive(&self, id: Uuid) -> bool {
        let Ok(file) = File::open(self.runtimes.join(id.to_string())) else {
            return false;
        };
        matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
    }

    /// Whether any other runtime on this data directory is alive.
    pub(crate) fn others_alive(&self) -> bool {
        self.live_others().next().is_some()
    }

    fn live_others(&self) -> impl Iterator<Item = Uuid> + '_ {
        fs::read_dir(&self.runtimes)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Uuid::parse_str(&entry.file_name().to_string_lossy()).ok())
            .filter(|id| *id != self.id && self.is_alive(*id))
    }

    /// Removes the files of dead runtimes, and the keeper files of sandboxes that have no
    /// directory in `sandboxes` and no live keeper.
    pub(crate) fn reconcile(&self, sandboxes: &Path) {
        for entry in fs::read_dir(&self.runtimes).into_iter().flatten().flatten() {
            let Ok(id) = Uuid::parse_str(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            // A dead process's file: nobody can take its lock again but a new process of
            // that id, and ids are never reused.
            if id != self.id && !self.is_alive(id) {
                let _ = fs::remove_file(entry.path());
            }
        }
        for entry in fs::read_dir(&self.keepers).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match Uuid::parse_str(&name) {
                Ok(_) => {
                    let kept = self
                        .keeper_of(&name)
                        .is_some_and(|keeper| keeper == self.id || self.is_alive(keeper));
                    if !kept && !sandboxes.join(&*name).exists() {
                        let _ = fs::remove_file(entry.path());
                    }
                }
                // A local lock nobody holds, of a sandbox that is gone.
                Err(_) if name.ends_with(".lock") => {
                    let sandbox = name.trim_end_matches(".lock");
                    let free = File::open(entry.path()).is_ok_and(|file| file.try_lock().is_ok());
                    if free && !sandboxes.join(sandbox).exists() {
                        let _ = fs::remove_file(entry.path());
                    }
                }
                // Half-written by a process that died; a live writer renames it at once.
                Err(_) if name.starts_with('.') => {
                    let writer = name
                        .rsplit('.')
                        .next()
                        .and_then(|w| Uuid::parse_str(w).ok());
                    if writer.is_none_or(|w| w != self.id && !self.is_alive(w)) {
                        let _ = fs::remove_file(entry.path());
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// This runtime's id.
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }
}

/// Gives the anonymous file `file` (opened with `O_TMPFILE`) the name `path`.
fn link_open_file(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_is_kept_while_its_keeper_lives() {
        let data = tempfile::tempdir().unwrap();
        let sandboxes = data.path().join("sandboxes");
        fs::create_dir(&sandboxes).unwrap();
        let (a, b) = (
            Keeper::start(data.path()).unwrap(),
            Keeper::start(data.path()).unwrap(),
        );
        assert!(a.others_alive() && b.others_alive());
        let sandbox = Uuid::new_v4();
        a.keep(sandbox).unwrap();
        assert!(b.kept_alive(sandbox), "a lives and keeps it");
        assert!(a.kept_alive(sandbox), "a's own");
        assert!(b.live_kept().contains(&sandbox));
        assert!(b.dead_others().is_empty());
        b.reconcile(&sandboxes);
        assert!(b.kept_alive(sandbox), "a live keeper's file stays");
        let a_id = a.id();
        drop(a);
        assert!(!b.kept_alive(sandbox), "a is gone");
        assert!(b.live_kept().is_empty());
        assert_eq!(b.dead_others(), [a_id], "a died");
        assert!(!b.others_alive());
        b.reconcile(&sandboxes);
        assert!(b.dead_others().is_empty(), "reconciled");
        assert!(!data.path().join("runtimes").join(a_id.to_string()).exists());
        assert!(
            !data
                .path()
                .join("keepers")
                .join(sandbox.to_string())
                .exists()
        );
        // Adopted: b keeps it now.
        let adopted = Uuid::new_v4();
        fs::create_dir(sandboxes.join(adopted.to_string())).unwrap();
        b.keep(adopted).unwrap();
        let c = Keeper::start(data.path()).unwrap();
        assert!(c.kept_alive(adopted));
        c.reconcile(&sandboxes);
        assert!(
            data.path()
                .join("keepers")
                .join(adopted.to_string())
                .exists()
        );
    }

    #[test]
    fn a_local_lock_is_free_only_once_every_part_let_go() {
        let data = tempfile::tempdir().unwrap();
        let sandboxes = data.path().join("sandboxes");
        fs::create_dir(&sandboxes).unwrap();
        let (a, b) = (
            Keeper::start(data.path()).unwrap(),
            Keeper::start(data.path()).unwrap(),
        );
        let sandbox = Uuid::new_v4();
        assert!(b.wait_released(sandbox, Duration::ZERO), "never held");
        let watcher = a.hold(sandbox).unwrap();
        let resolver = watcher.clone();
        assert!(b.hold(sandbox).is_err(), "a runs it");
        assert!(!b.wait_released(sandbox, Duration::from_millis(20)));
        drop(watcher);
        assert!(
            !b.wait_released(sandbox, Duration::ZERO),
            "the resolver runs"
        );
        let released = std::thread::spawn(move || {
            let b = b;
            let free = b.wait_released(sandbox, Duration::from_secs(30));
            (b, free)
        });
        drop(resolver);
        let (b, free) = released.join().unwrap();
        assert!(free);
        // Adopted after a's parts stopped: b holds it now.
        let held = b.hold(sandbox).unwrap();
        assert!(!a.wait_released(sandbox, Duration::ZERO));
        b.reconcile(&sandboxes);
        assert!(
            data.path()
                .join("keepers")
                .join(format!("{sandbox}.lock"))
                .exists(),
            "held: kept"
        );
        drop(held);
        b.reconcile(&sandboxes);
        assert!(
            !data
                .path()
                .join("keepers")
                .join(format!("{sandbox}.lock"))
                .exists(),
            "free and its sandbox gone: removed"
        );
    }
}
