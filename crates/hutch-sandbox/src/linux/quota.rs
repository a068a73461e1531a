//! Per-session disk quotas: where a session's writable layers live and what bounds them.
//!
//! Two ways ([`DiskQuotas`]): by default every sandbox gets a btrfs subvolume with a limit in
//! one file system shared by the data directory ([`super::disk_pool`]); where btrfs or its
//! tools are missing, or with `DiskQuotas::PerSandbox`, each gets a file system of its own, as
//! below.
//!
//! A session with a quota gets a sparse image file of that size in its directory, formatted
//! ext4 and loop-mounted at `<sandbox>/disk` on the host before the sandbox starts; the
//! overlay upper and work directories of every layer live on it. Writing past the quota fails
//! with ENOSPC inside the sandbox (and 507 `disk_full` on the file API); removing files frees
//! the space again. Sparse, the image takes only the blocks written.
//!
//! Why this mechanism: ext4 project quotas would be cheaper but need the host file system
//! mounted with `prjquota`, which hutch cannot assume (or, on one shared image of hutch's
//! own, a kernel built with `CONFIG_QUOTA`, which not every host has); a size-limited tmpfs
//! would cost nothing to set up but keeps every byte in memory, charged to the session's
//! memory limit, so a disk quota would just be memory. Formatting and mounting takes tens of
//! milliseconds, so the warm pool builds its sandboxes with the default quota; a session
//! asking for another is built for it.
//!
//! The file system is as lean as a disk that lives and dies with its session can be, since
//! every idle session keeps one mounted (measured with `hutch bench idle`, docs/operations.md):
//! no journal (the session does not outlive a host crash), no reserved blocks, no
//! `resize_inode` (it is never grown online; its reserved descriptor blocks cost about 1,000
//! buffer heads, 110 KiB of reclaimable kernel memory, and 4 MiB of the image file a session),
//! and mounted `noinit_itable`: the image is a new sparse file, so its inode tables already
//! read as zeros and the kernel's background zeroing of them (`ext4lazyinit`) would be work
//! for nothing.
//!
//! Clean-up: the mount is detached lazily at teardown ([`release`]); `mount -o loop` sets the
//! loop device to clear itself once its file system is gone (when the sandbox's mount
//! namespace, which holds a copy, dies with its last process), and the image is deleted with
//! the sandbox's directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

use super::disk_pool::DiskPool;
use crate::SandboxError;

/// How sessions' disk quotas are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskQuotas {
    /// A btrfs subvolume each in one shared file system (falls back to `PerSandbox`, with a
    /// warning, where that file system cannot be set up).
    #[default]
    Pool,
    /// A loop-mounted ext4 image each.
    PerSandbox,
}

/// The quota mechanism a runtime uses.
#[derive(Debug)]
pub(crate) struct Disks {
    /// The shared pool, when new disks are made in it or sandboxes still have one there
    /// (built before a restart with `DiskQuotas::PerSandbox`).
    pool: Option<DiskPool>,
    /// Whether new disks are subvolumes of `pool` (else images of their own).
    new_in_pool: bool,
}

impl Disks {
    /// Sets up the mechanism `wanted` for data directory `data`; a pool stops its sessions'
    /// growth while less than `floor_mb` MiB are free on the host.
    pub(crate) fn start(data: &Path, wanted: DiskQuotas, floor_mb: u64) -> Disks {
        if wanted == DiskQuotas::PerSandbox {
            // A pool an earlier run left mounted still serves the sandboxes it holds.
            let pool = DiskPool::is_mounted_in(data)
                .then(|| DiskPool::open(data, floor_mb).ok())
                .flatten();
            return Disks {
                pool,
                new_in_pool: false,
            };
        }
        match DiskPool::open(data, floor_mb) {
            Ok(pool) => Disks {
                pool: Some(pool),
                new_in_pool: true,
            },
            Err(e) => {
                tracing::warn!(error = %e, "no shared disk pool (btrfs); each session gets a disk image of its own, which costs the host more memory per session");
                Disks {
                    pool: None,
                    new_in_pool: false,
                }
            }
        }
    }

    /// Makes the quota-bound place for the writable layers of sandbox `id` (directory `dir`),
    /// `mb` MiB, owned by `owner`. Returns it.
    pub(crate) fn create(
        &self,
        dir: &Path,
        id: Uuid,
        mb: u64,
        owner: u32,
    ) -> Result<PathBuf, SandboxError> {
        match &self.pool {
            Some(pool) if self.new_in_pool => pool.create(id, mb, owner),
            _ => {
                fs::create_dir_all(dir).map_err(|source| SandboxError::Io {
                    op: "create",
                    path: dir.to_owned(),
                    source,
                })?;
                create(dir, mb, owner)
            }
        }
    }

    /// Where the writable layers of sandbox `id` may be, with a quota: the pool's subvolume,
    /// or the image's mount point in `dir`.
    pub(crate) fn candidates(&self, dir: &Path, id: Uuid) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.pool.iter().map(|pool| pool.layers(id)).collect();
        out.push(dir.join(MOUNT));
        out
    }

    /// Frees sandbox `id`'s disk, whichever it has.
    pub(crate) fn release(&self, dir: &Path, id: Uuid) {
        release(dir);
        if let Some(pool) = &self.pool {
            pool.release(id);
        }
    }

    /// Sandboxes with a disk in the pool (which a sweep must account for too).
    pub(crate) fn found(&self) -> Vec<Uuid> {
        self.pool.iter().flat_map(DiskPool::found).collect()
    }

    /// At shutdown: detaches the pool if no sandbox uses it.
    pub(crate) fn close_if_unused(&self) {
        if let Some(pool) = &self.pool {
            pool.close_if_unused();
        }
    }
}

/// Name of the image file in the sandbox's directory.
const IMAGE: &str = "disk.img";
/// Name of the mount point in the sandbox's directory.
pub(super) const MOUNT: &str = "disk";

/// Creates, formats and mounts a `mb` MiB file system for the sandbox in `dir`, its root owned
/// by `owner`. Returns the mount point.
fn create(dir: &Path, mb: u64, owner: u32) -> Result<PathBuf, SandboxError> {
    let image = dir.join(IMAGE);
    let mount = dir.join(MOUNT);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SandboxError::Io { op, path, source }
    };
    let file = fs::File::create(&image).map_err(io("create", &image))?;
    file.set_len(mb * 1024 * 1024).map_err(io("size", &image))?;
    drop(file);
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            "^has_journal,^resize_inode",
            "-E",
        ])
        .arg(format!(
            "root_owner={owner}:{owner},lazy_itable_init=1,nodiscard"
        ))
        .arg(&image))?;
    fs::create_dir_all(&mount).map_err(io("create", &mount))?;
    run(Command::new("mount")
        .args([
            "-t",
            "ext4",
            "-o",
            "loop,nosuid,nodev,noatime,noinit_itable",
        ])
        .arg(&image)
        .arg(&mount))?;
    Ok(mount)
}

/// Detaches the sandbox's quota file system, if it has one (lazily: the sandbox's own mount
/// namespace may still hold it for a moment).
fn release(dir: &Path) {
    let mount = dir.join(MOUNT);
    if mount.exists() {
        let _ = crate::sys::umount2(&mount, libc::MNT_DETACH);
    }
}

/// Runs `command`; a failure carries its standard error.
pub(super) fn run(command: &mut Command) -> Result<(), SandboxError> {
    let shown = format!("{command:?}");
    let out = command.output().map_err(|source| SandboxError::Sys {
        call: shown.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(SandboxError::Sys {
        call: shown,
        source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    })
}
