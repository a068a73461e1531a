//! Per-session disk quotas: the session's writable layers on a file system of their own.
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

use crate::SandboxError;

/// Name of the image file in the sandbox's directory.
const IMAGE: &str = "disk.img";
/// Name of the mount point in the sandbox's directory.
pub(super) const MOUNT: &str = "disk";

/// Creates, formats and mounts a `mb` MiB file system for the sandbox in `dir`, its root owned
/// by `owner`. Returns the mount point.
pub(crate) fn create(dir: &Path, mb: u64, owner: u32) -> Result<PathBuf, SandboxError> {
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
pub(crate) fn release(dir: &Path) {
    let mount = dir.join(MOUNT);
    if mount.exists() {
        let _ = crate::sys::umount2(&mount, libc::MNT_DETACH);
    }
}

fn run(command: &mut Command) -> Result<(), SandboxError> {
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
