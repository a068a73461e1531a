//! Disk quotas from one shared file system: a btrfs subvolume a sandbox, each with a quota
//! group limit, on one loop-mounted image for the whole data directory.
//!
//! Why: a sandbox's own ext4 image ([`super::quota`]) costs the host about a quarter of a MiB
//! of kernel memory while it is mounted (a loop device with its request pool, a superblock and
//! its caches, a rescuer thread of ext4's), and every superblock adds a slot to the shrinker
//! table of every memory cgroup, a cost that grows with the square of the session count (see
//! the operations guide on density). A btrfs subvolume is a tree in a file system already
//! mounted: no device, no superblock, no thread; creating one and setting its limit takes
//! well under a millisecond where formatting and mounting an image took tens.
//!
//! Why btrfs: a shared ext4 or XFS with project quotas would do as well, but their quotas need
//! `CONFIG_QFMT_V2` or `CONFIG_XFS_QUOTA`, which not every kernel has (this project's CI
//! kernel has neither); btrfs quota groups are part of btrfs itself. Simple quotas (Linux 6.7)
//! are enabled where the kernel has them (they count each extent against the subvolume that
//! wrote it, with no back-reference walks); the classic quota groups otherwise.
//!
//! Writing past the limit fails with `EDQUOT` ("Disk quota exceeded") inside the sandbox, and
//! 507 `disk_full` on the file API; a session's files and metadata both count, so neither
//! large files nor millions of empty ones get past it. Root inside a sandbox cannot change or
//! leave its subvolume's quota group (that takes `CAP_SYS_ADMIN` on the host).
//!
//! The image is sparse and sized like the data directory's file system, so the quotas of all
//! sessions together may promise more than the host holds, as per-sandbox images did: the
//! server's disk reserve (`--disk-reserve-mb`) refuses new work before the host's disk is full.
//! One more guard is needed here: btrfs turns itself read-only when a write of its metadata
//! fails, and it would fail when the host's disk is full, for every session at once. So a
//! thread watches the host's free space: below the floor ([`DiskPool::open`]'s `floor_mb`,
//! half the server's reserve) every subvolume's limit drops to zero, so sessions' writes fail
//! with `EDQUOT` while deleting still works, and new subvolumes are refused; once twice the
//! floor is free again each gets its own limit back (kept in the subvolume's
//! `trusted.hutch.disk_mb` attribute, which only the host can read or set).
//!
//! Life cycle: the first server process on a data directory formats the image and mounts it at
//! `<data>/disks`; later ones (and a restarted one) find it mounted. Creating, deleting and
//! unmounting hold `<data>/leases/disks.lock`, so replicas on one data directory never mount it
//! twice nor unmount it under each other. A sandbox's subvolume is deleted at its teardown (the
//! kernel frees its blocks in the background); a server that stops with no subvolume left
//! detaches the mount, and the loop device clears itself once nothing uses the file system.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use uuid::Uuid;

use super::quota::run;
use super::{io, sys_err};
use crate::SandboxError;
use crate::sys;

/// Name of the image file in the data directory.
const IMAGE: &str = "disks.img";
/// Name of the mount point in the data directory.
const MOUNT: &str = "disks";
/// The smallest image formatted (btrfs wants at least about 114 MiB; a larger floor leaves
/// room on a small test file system).
const IMAGE_MIN_BYTES: u64 = 1 << 30;
/// `statfs(2)` type of btrfs.
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683e;

/// One btrfs file system holding every sandbox's writable layers, a subvolume each.
#[derive(Debug)]
pub(crate) struct DiskPool {
    /// Shared with the guard thread, which ends once the pool is dropped.
    inner: Arc<PoolInner>,
}

impl DiskPool {
    /// Opens the pool of data directory `data`, formatting and mounting its image first when
    /// no server process has, and starts its guard, which stops every subvolume's growth while
    /// less than `floor_mb` MiB are free on the data directory's file system. Fails where
    /// btrfs, its tools or its quotas are missing.
    pub(crate) fn open(data: &Path, floor_mb: u64) -> Result<DiskPool, SandboxError> {
        let inner = Arc::new(PoolInner {
            root: data.join(MOUNT),
            image: data.join(IMAGE),
            data: data.to_owned(),
            lock: data.join("leases").join("disks.lock"),
            floor_mb,
            tight: AtomicBool::new(false),
        });
        {
            let _held = inner.hold()?;
            inner.ensure_mounted()?;
            // Also when another process mounted it: a pool from before a kernel upgrade may
            // have no quotas yet.
            enable_quotas(&inner.root)?;
        }
        let watched = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("hutch-disk-guard".into())
            .spawn(move || {
                let mut said_full = false;
                while let Some(pool) = watched.upgrade() {
                    pool.guard_once(&mut said_full);
                    drop(pool);
                    std::thread::sleep(GUARD_PERIOD);
                }
            })
            .map_err(sys_err("start the disk guard thread"))?;
        Ok(DiskPool { inner })
    }

    /// Whether data directory `data` has its pool mounted.
    pub(crate) fn is_mounted_in(data: &Path) -> bool {
        is_mounted(&data.join(MOUNT))
    }

    /// Where sandbox `id`'s writable layers live.
    pub(crate) fn layers(&self, id: Uuid) -> PathBuf {
        self.inner.layers(id)
    }

    /// Creates sandbox `id`'s subvolume, owned by `owner` (the host id root inside maps to),
    /// with a limit of `mb` MiB. Returns its path.
    pub(crate) fn create(&self, id: Uuid, mb: u64, owner: u32) -> Result<PathBuf, SandboxError> {
        self.inner.create(id, mb, owner)
    }

    /// Deletes sandbox `id`'s subvolume, if it has one (its processes are gone; a mount that
    /// still uses it keeps what it holds until it goes).
    pub(crate) fn release(&self, id: Uuid) {
        let Ok(_held) = self.inner.hold() else {
            return;
        };
        self.inner.delete(id);
    }

    /// The sandboxes that have a subvolume.
    pub(crate) fn found(&self) -> Vec<Uuid> {
        self.inner.found()
    }

    /// Detaches the pool's mount when no sandbox has a subvolume in it (at shutdown): nothing
    /// of it stays on the host but its image file.
    pub(crate) fn close_if_unused(&self) {
        self.inner.close_if_unused();
    }
}

/// The pool's paths and state.
#[derive(Debug)]
struct PoolInner {
    /// Mount point: `<data>/disks`.
    root: PathBuf,
    /// The image file: `<data>/disks.img`.
    image: PathBuf,
    /// The data directory, whose file system's size the image takes.
    data: PathBuf,
    /// Taken around mounting, creating, deleting and unmounting.
    lock: PathBuf,
    /// MiB of the host's file system below which subvolumes stop growing.
    floor_mb: u64,
    /// Set while the host is short of the floor and every limit is zero.
    tight: AtomicBool,
}

impl PoolInner {
    /// One look at the host's free space: stops or restores every subvolume's growth.
    /// `said_full` is set once the guard has said that the host is too full to act (said
    /// once, not every second).
    fn guard_once(&self, said_full: &mut bool) {
        let Some(free_mb) = self.host_free_mb() else {
            return;
        };
        let tight = self.tight.load(Ordering::SeqCst);
        if free_mb >= GUARD_MIN_FREE_MB {
            *said_full = false;
        }
        if !tight && free_mb < self.floor_mb {
            if free_mb < GUARD_MIN_FREE_MB {
                // Too late: changing limits writes metadata, which could not be written now.
                // Left alone, the file system writes nothing (until a session does).
                if !*said_full {
                    tracing::error!(
                        free_mb,
                        "the data directory's file system is full: a write to the sessions' disk pool may turn it read-only"
                    );
                    *said_full = true;
                }
                return;
            }
            tracing::warn!(
                free_mb,
                floor_mb = self.floor_mb,
                "the data directory's file system is nearly full: sessions' disks take no more writes until space is freed"
            );
            self.tight.store(true, Ordering::SeqCst);
            self.set_limits(|_| Some(0));
            // Written now, while there is room for it.
            if let Ok(root) = open_dir(&self.root) {
                // SAFETY: syncfs on a descriptor this function owns.
                unsafe { libc::syncfs(root.as_raw_fd()) };
            }
        } else if tight && free_mb >= self.floor_mb.saturating_mul(2) {
            tracing::info!(
                free_mb,
                "the data directory's file system has room again: sessions' disks have their limits back"
            );
            self.tight.store(false, Ordering::SeqCst);
            self.set_limits(read_limit);
        }
    }

    /// Sets the limit of every subvolume to what `limit` gives for its path (in bytes).
    fn set_limits(&self, limit: impl Fn(&Path) -> Option<u64>) {
        let Ok(_held) = self.hold() else {
            return;
        };
        for id in self.found() {
            let path = self.layers(id);
            if let Some(bytes) = limit(&path)
                && let Err(e) = set_limit(&path, bytes)
            {
                tracing::warn!(error = %e, "cannot change a session disk's limit");
            }
        }
    }

    /// MiB free on the data directory's file system for unprivileged writers.
    fn host_free_mb(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.data).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize) / (1024 * 1024))
    }

    fn layers(&self, id: Uuid) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn create(&self, id: Uuid, mb: u64, owner: u32) -> Result<PathBuf, SandboxError> {
        let _held = self.hold()?;
        if self.tight.load(Ordering::SeqCst) {
            return Err(SandboxError::Capacity(format!(
                "the data directory's file system has less than {} MiB free; no session disk is made until space is freed",
                self.floor_mb
            )));
        }
        self.ensure_mounted()?;
        let path = self.layers(id);
        let made = (|| {
            let root = open_dir(&self.root)?;
            vol_ioctl(&root, SUBVOL_CREATE, &id.to_string())
                .map_err(sys_err(format!("create subvolume {}", path.display())))?;
            let bytes = mb.saturating_mul(1024 * 1024);
            write_limit(&path, bytes)?;
            set_limit(&path, bytes)?;
            sys::lchown(&path, owner, owner).map_err(io("chown", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(io("chmod", &path))
        })();
        if let Err(e) = made {
            self.delete(id);
            return Err(e);
        }
        Ok(path)
    }

    /// Deletes subvolume `id`; called with the lock.
    fn delete(&self, id: Uuid) {
        let path = self.layers(id);
        if fs::symlink_metadata(&path).is_err() {
            return;
        }
        let deleted = open_dir(&self.root).and_then(|root| {
            vol_ioctl(&root, SNAP_DESTROY, &id.to_string())
                .map_err(sys_err(format!("delete subvolume {}", path.display())))
        });
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "a sandbox's disk could not be deleted; the next start's sweep tries again");
        }
    }

    fn found(&self) -> Vec<Uuid> {
        fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| Uuid::parse_str(&e.file_name().to_string_lossy()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn close_if_unused(&self) {
        let Ok(_held) = self.hold() else {
            return;
        };
        if !is_mounted(&self.root) || !self.found().is_empty() {
            return;
        }
        match sys::umount2(&self.root, libc::MNT_DETACH) {
            Ok(()) => tracing::debug!(pool = %self.root.display(), "disk pool detached"),
            Err(e) => {
                tracing::warn!(pool = %self.root.display(), error = %e, "cannot detach the disk pool")
            }
        }
    }

    /// Mounts the image at the mount point unless it is mounted there (formatting it first
    /// when there is none) and turns quotas on. Called with the lock.
    fn ensure_mounted(&self) -> Result<(), SandboxError> {
        if is_mounted(&self.root) {
            return Ok(());
        }
        if fs::symlink_metadata(&self.image).is_err() {
            self.format()?;
        }
        fs::create_dir_all(&self.root).map_err(io("create", &self.root))?;
        run(Command::new("mount")
            .args(["-t", "btrfs", "-o", "loop,nosuid,nodev,noatime"])
            .arg(&self.image)
            .arg(&self.root))?;
        if !is_mounted(&self.root) {
            return Err(sys_err(format!("mount {}", self.root.display()))(
                io::Error::other("no btrfs file system is mounted there after mount"),
            ));
        }
        // The sandbox's root user passes through to its own subvolume; nothing is listable.
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o711))
            .map_err(io("chmod", &self.root))?;
        enable_quotas(&self.root)?;
        tracing::info!(pool = %self.root.display(), image = %self.image.display(), "disk pool mounted");
        Ok(())
    }

    /// Creates the sparse image, as large as the data directory's file system, and formats it.
    fn format(&self) -> Result<(), SandboxError> {
        let data = &self.data;
        let stat = rustix::fs::statvfs(data).map_err(|e| SandboxError::Io {
            op: "statfs",
            path: data.to_owned(),
            source: e.into(),
        })?;
        let size = stat
            .f_blocks
            .saturating_mul(stat.f_frsize)
            .max(IMAGE_MIN_BYTES);
        // Formatted under a temporary name: an image found is always a whole one.
        let partial = self.image.with_extension("img.partial");
        let file = fs::File::create(&partial).map_err(io("create", &partial))?;
        file.set_len(size).map_err(io("size", &partial))?;
        drop(file);
        // Metadata kept once (`single`): the image lives and dies with this host's disk, so
        // a second copy would guard against nothing but cost every metadata write twice.
        let formatted = run(Command::new("mkfs.btrfs")
            .args(["-q", "-f", "-K", "-m", "single", "-d", "single"])
            .arg(&partial));
        if let Err(e) = formatted {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        fs::rename(&partial, &self.image).map_err(io("rename", &partial))
    }

    /// Holds the data directory's disk lock until the returned descriptor is dropped.
    fn hold(&self) -> Result<OwnedFd, SandboxError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io("open", &self.lock))?;
        let fd = OwnedFd::from(file);
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(fd);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(io("lock", &self.lock)(err));
            }
        }
    }
}

/// How often the guard looks at the host's free space.
const GUARD_PERIOD: Duration = Duration::from_secs(1);
/// MiB free on the host below which the guard no longer changes limits.
const GUARD_MIN_FREE_MB: u64 = 16;
/// The attribute of a subvolume's root that keeps its limit in bytes.
const LIMIT_XATTR: &std::ffi::CStr = c"trusted.hutch.disk_mb";

/// Limits the subvolume at `path` to `bytes` (0: every write that needs space fails).
///
/// The request goes through the pool's top level, not the subvolume: the kernel reserves the
/// change's own metadata against the quota group of the descriptor's subvolume, which a limit
/// of zero would refuse.
fn set_limit(path: &Path, bytes: u64) -> Result<(), SandboxError> {
    let qgroupid = subvolume_id(path)?;
    let top = open_dir(path.parent().unwrap_or(Path::new("/")))?;
    let mut limit = QgroupLimitArgs {
        qgroupid, // level 0: the subvolume's own group
        flags: QGROUP_LIMIT_MAX_RFER,
        max_rfer: bytes,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: `limit` is the `btrfs_ioctl_qgroup_limit_args` the request reads.
    if unsafe { libc::ioctl(top.as_raw_fd(), QGROUP_LIMIT, &mut limit) } == 0 {
        Ok(())
    } else {
        Err(sys_err(format!("limit subvolume {}", path.display()))(
            io::Error::last_os_error(),
        ))
    }
}

/// The id of the subvolume whose root is `path`.
fn subvolume_id(path: &Path) -> Result<u64, SandboxError> {
    let dir = open_dir(path)?;
    let mut args = InoLookupArgs {
        treeid: 0, // the tree of the descriptor
        objectid: FIRST_FREE_OBJECTID,
        name: [0; INO_LOOKUP_PATH_MAX],
    };
    // SAFETY: `args` is the `btrfs_ioctl_ino_lookup_args` the request reads and writes.
    if unsafe { libc::ioctl(dir.as_raw_fd(), INO_LOOKUP, &mut args) } == 0 {
        Ok(args.treeid)
    } else {
        Err(sys_err(format!("look up subvolume {}", path.display()))(
            io::Error::last_os_error(),
        ))
    }
}

/// Keeps the subvolume's own limit (in bytes) on its root, for the guard to restore.
fn write_limit(path: &Path, bytes: u64) -> Result<(), SandboxError> {
    let c_path = c_path(path)?;
    let value = bytes.to_string();
    // SAFETY: NUL-terminated path and name; `value` outlives the call.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            LIMIT_XATTR.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io("set the limit attribute of", path)(
            io::Error::last_os_error(),
        ))
    }
}

/// The subvolume's own limit in bytes, as [`write_limit`] kept it.
fn read_limit(path: &Path) -> Option<u64> {
    let c_path = c_path(path).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: NUL-terminated path and name; the kernel writes at most `buf.len()` bytes.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            LIMIT_XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    std::str::from_utf8(buf.get(..n)?).ok()?.parse().ok()
}

fn c_path(path: &Path) -> Result<std::ffi::CString, SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io("name", path)(io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Turns quotas on for the file system at `root`: simple quotas where the kernel has them,
/// classic quota groups otherwise.
fn enable_quotas(root: &Path) -> Result<(), SandboxError> {
    let dir = open_dir(root)?;
    let mut last = None;
    for cmd in [QUOTA_CTL_ENABLE_SIMPLE_QUOTA, QUOTA_CTL_ENABLE] {
        let mut args = QuotaCtlArgs { cmd, status: 0 };
        // SAFETY: `args` is the `btrfs_ioctl_quota_ctl_args` the request reads and writes.
        if unsafe { libc::ioctl(dir.as_raw_fd(), QUOTA_CTL, &mut args) } == 0 {
            return Ok(());
        }
        last = Some(io::Error::last_os_error());
    }
    Err(sys_err(format!("enable quotas on {}", root.display()))(
        last.unwrap_or_else(|| io::Error::other("no quota mode")),
    ))
}

/// Whether a btrfs file system is mounted at `path` (the root of a mount, not a directory of
/// the data directory's own file system, which may be btrfs too).
fn is_mounted(path: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    let mount_root = statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    )
    .is_ok_and(|s| {
        s.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
            && s.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    });
    mount_root && rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 == BTRFS_SUPER_MAGIC)
}

fn open_dir(path: &Path) -> Result<OwnedFd, SandboxError> {
    sys::open(path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(io("open", path))
}

/// Runs a `btrfs_ioctl_vol_args` request (subvolume create or delete) naming `name` in `dir`.
fn vol_ioctl(dir: &OwnedFd, request: libc::c_ulong, name: &str) -> io::Result<()> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; VOL_NAME_MAX + 1],
    };
    if name.len() > VOL_NAME_MAX || name.contains(['/', '\0']) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    args.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `args` is the `btrfs_ioctl_vol_args` the request reads.
    if unsafe { libc::ioctl(dir.as_raw_fd(), request, &mut args) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// The btrfs ioctls used, from `include/uapi/linux/btrfs.h`.

/// `BTRFS_IOCTL_MAGIC`.
const BTRFS_IOCTL_MAGIC: libc::c_ulong = 0x94;
/// `BTRFS_PATH_NAME_MAX`.
const VOL_NAME_MAX: usize = 4087;

const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong, size: usize) -> libc::c_ulong {
    (dir << 30) | ((size as libc::c_ulong) << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr
}
const IOC_WRITE: libc::c_ulong = 1;
const IOC_READ: libc::c_ulong = 2;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; VOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args` (with its `struct btrfs_qgroup_limit` inlined).
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `BTRFS_INO_LOOKUP_PATH_MAX`.
const INO_LOOKUP_PATH_MAX: usize = 4080;
/// `BTRFS_FIRST_FREE_OBJECTID`: the inode of a subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

/// `BTRFS_IOC_INO_LOOKUP` (`_IOWR`).
const INO_LOOKUP: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 18, size_of::<InoLookupArgs>());
/// `BTRFS_IOC_SUBVOL_CREATE`.
const SUBVOL_CREATE: libc::c_ulong = ioc(IOC_WRITE, 14, size_of::<VolArgs>());
/// `BTRFS_IOC_SNAP_DESTROY`.
const SNAP_DESTROY: libc::c_ulong = ioc(IOC_WRITE, 15, size_of::<VolArgs>());
/// `BTRFS_IOC_QUOTA_CTL` (`_IOWR`).
const QUOTA_CTL: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 40, size_of::<QuotaCtlArgs>());
/// `BTRFS_IOC_QGROUP_LIMIT` (declared `_IOR` though the kernel only reads it).
const QGROUP_LIMIT: libc::c_ulong = ioc(IOC_READ, 43, size_of::<QgroupLimitArgs>());
/// `BTRFS_QUOTA_CTL_ENABLE`.
const QUOTA_CTL_ENABLE: u64 = 1;
/// `BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA` (Linux 6.7).
const QUOTA_CTL_ENABLE_SIMPLE_QUOTA: u64 = 4;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`.
const QGROUP_LIMIT_MAX_RFER: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers the kernel's headers give (`_IOW(0x94, 14, 4096)` and so on).
    #[test]
    fn ioctl_numbers_match_the_kernels() {
        assert_eq!(SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(SNAP_DESTROY, 0x5000_940f);
        assert_eq!(QUOTA_CTL, 0xc010_9428);
        assert_eq!(QGROUP_LIMIT, 0x8030_942b);
        assert_eq!(INO_LOOKUP, 0xd000_9412);
    }
}
