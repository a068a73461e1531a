//! Snapshots: a copy of a live sandbox's writable root layer, taken while its processes are
//! frozen so that no file is copied half-written.
//!
//! The root overlay's upper directory (`<sandbox>/upper/root`, or the same inside the
//! sandbox's quota file system) already holds what a layer needs, in overlayfs' native form:
//! a deleted file is a `0:0` character device, an opaque directory carries the
//! `user.overlay.opaque` xattr (the overlay is mounted with `userxattr`). The copy keeps
//! owners (host ids of the sandbox's range, as the image store keeps them), modes, times,
//! hard links, symlinks, FIFOs, whiteouts and `user.*` xattrs, and drops overlayfs'
//! bookkeeping xattrs other than `opaque`. Sockets are skipped. Owners move from the
//! sandbox's own id range to the shared range that owns every image layer (see `ids.rs`).
//!
//! The sandbox's cgroup is frozen (`cgroup.freeze`, or the v1 freezer) for the copy and thawed
//! afterwards, whatever happened; a sandbox without a freezer is refused.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{SandboxError, SandboxRecord, SnapshotReport};

use super::LinuxRuntime;

/// How long freezing may take before the snapshot is given up.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// The xattr that marks an overlay directory opaque (with `userxattr`).
const OPAQUE_XATTR: &[u8] = b"user.overlay.opaque";
/// Prefix of the xattrs overlayfs keeps for itself (with `userxattr`).
const OVERLAY_XATTR_PREFIX: &[u8] = b"user.overlay.";

impl LinuxRuntime {
    /// Copies sandbox `record`'s writable root layer into `into` (created; must not exist),
    /// with the sandbox frozen meanwhile.
    pub(super) async fn snapshot_root(
        &self,
        record: &SandboxRecord,
        into: &Path,
    ) -> Result<SnapshotReport, SandboxError> {
        let runtime = self.clone();
        let record = record.clone();
        let into = into.to_owned();
        tokio::task::spawn_blocking(move || runtime.snapshot_blocking(&record, &into))
            .await
            .map_err(|err| SandboxError::Sys {
                call: "snapshot task".to_owned(),
                source: io::Error::other(err.to_string()),
            })?
    }

    fn snapshot_blocking(
        &self,
        record: &SandboxRecord,
        into: &Path,
    ) -> Result<SnapshotReport, SandboxError> {
        let upper = self.root_upper(record)?;
        let cgroup = self.inner.cgroups.existing(record.sandbox_id);
        let started = Instant::now();
        self.inner
            .cgroups
            .freeze(&cgroup, true, FREEZE_TIMEOUT)
            .map_err(|err| SandboxError::Sys {
                call: format!("freeze sandbox {}", record.sandbox_id),
                source: io::Error::other(err.to_string()),
            })?;
        let frozen_at = Instant::now();
        let ids = &self.inner.ids;
        // A sandbox another server built: its directory's owner is its range's first id.
        let first = ids.of(record.sandbox_id).or_else(|| {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(self.sandbox_dir(record.sandbox_id))
                .ok()
                .map(|meta| meta.uid())
        });
        let owner = |id: u32| first.map_or(id, |first| ids.to_shared(first, id));
        let copied = copy_layer(&upper, into, &owner);
        let frozen_for = frozen_at.elapsed();
        let thawed = self
            .inner
            .cgroups
            .freeze(&cgroup, false, FREEZE_TIMEOUT)
            .map_err(|err| SandboxError::Sys {
                call: format!("thaw sandbox {}", record.sandbox_id),
                source: io::Error::other(err.to_string()),
            });
        let mut report = copied?;
        thawed?;
        report.frozen = frozen_for;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The upper directory of the sandbox's root overlay.
    fn root_upper(&self, record: &SandboxRecord) -> Result<PathBuf, SandboxError> {
        let dir = self.sandbox_dir(record.sandbox_id);
        let mut candidates = vec![dir.join("upper/root")];
        candidates.extend(
            self.inner
                .disks
                .candidates(&dir, record.sandbox_id)
                .into_iter()
                .map(|layers| layers.join("upper/root")),
        );
        candidates
            .into_iter()
            .find(|path| path.is_dir())
            .ok_or(SandboxError::Gone(record.id))
    }
}

/// Copies the layer at `from` into the new directory `to`, each owner id changed by `owner`.
fn copy_layer(
    from: &Path,
    to: &Path,
    owner: &dyn Fn(u32) -> u32,
) -> Result<SnapshotReport, SandboxError> {
    let mut copy = Copy {
        links: HashMap::new(),
        report: SnapshotReport::default(),
        owner,
    };
    copy.entry(from, to)?;
    Ok(copy.report)
}

struct Copy<'a> {
    /// Inodes with more than one link already copied, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
    report: SnapshotReport,
    /// The owner id a copy gets for its original's.
    owner: &'a dyn Fn(u32) -> u32,
}

impl Copy<'_> {
    fn entry(&mut self, from: &Path, to: &Path) -> Result<(), SandboxError> {
        let meta = fs::symlink_metadata(from).map_err(io_at("stat", from))?;
        let kind = meta.file_type();
        if !kind.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, to).map_err(io_at("link", to))?;
                self.report.entries += 1;
                return Ok(());
            }
            self.links.insert((meta.dev(), meta.ino()), to.to_owned());
        }
        if kind.is_dir() {
            fs::create_dir(to).map_err(io_at("create", to))?;
            let mut names: Vec<_> = fs::read_dir(from)
                .map_err(io_at("list", from))?
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_at("list", from))?;
            names.sort();
            for name in names {
                self.entry(&from.join(&name), &to.join(&name))?;
            }
        } else if kind.is_file() {
            let bytes = fs::copy(from, to).map_err(io_at("copy", from))?;
            self.report.bytes += bytes;
        } else if kind.is_symlink() {
            let target = fs::read_link(from).map_err(io_at("read link", from))?;
            std::os::unix::fs::symlink(&target, to).map_err(io_at("symlink", to))?;
        } else if kind.is_char_device() && meta.rdev() == 0 {
            mknod(to, libc::S_IFCHR, 0).map_err(io_at("whiteout", to))?;
        } else if kind.is_fifo() {
            mknod(to, libc::S_IFIFO, 0).map_err(io_at("mkfifo", to))?;
        } else {
            // Sockets and device nodes (which a sandbox cannot make) are not part of a layer.
            self.report.skipped += 1;
            return Ok(());
        }
        self.report.entries += 1;
        lchown(to, (self.owner)(meta.uid()), (self.owner)(meta.gid()))
            .map_err(io_at("chown", to))?;
        if !kind.is_symlink() {
            fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_at("chmod", to))?;
            copy_xattrs(from, to).map_err(io_at("copy xattrs of", from))?;
        }
        set_times(to, &meta).map_err(io_at("set times of", to))?;
        Ok(())
    }
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.to_owned();
    move |source| SandboxError::Io { op, path, source }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is a valid C string; mknod reads it only.
    let rc = unsafe { libc::mknod(path.as_ptr(), kind | 0o600, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is a valid C string; lchown reads it only.
    let rc = unsafe { libc::lchown(path.as_ptr(), uid, gid) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the access and modification times of `path` (not following a symlink) from `meta`.
fn set_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let path = c_path(path)?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: `path` is a valid C string and `times` two valid timespecs; utimensat reads
    // them only.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies the `user.*` xattrs of `from` to `to`, of overlayfs' own only `opaque`.
fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    let from_c = c_path(from)?;
    let to_c = c_path(to)?;
    let names = xattr_names(&from_c)?;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let keep = name.starts_with(b"user.")
            && (!name.starts_with(OVERLAY_XATTR_PREFIX) || name == OPAQUE_XATTR);
        if !keep {
            continue;
        }
        let name = CString::new(name).map_err(io::Error::other)?;
        let value = xattr_value(&from_c, &name)?;
        // SAFETY: valid C strings and a buffer of `value.len()` bytes, read only.
        let rc = unsafe {
            libc::lsetxattr(
                to_c.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn xattr_names(path: &CString) -> io::Result<Vec<u8>> {
    // SAFETY: a null buffer of size 0 asks for the size only.
    let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    let size = usize::try_from(size).map_err(|_| io::Error::last_os_error())?;
    let mut names = vec![0u8; size];
    if size == 0 {
        return Ok(names);
    }
    // SAFETY: the buffer holds `names.len()` bytes.
    let got = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    names.truncate(got);
    Ok(names)
}

fn xattr_value(path: &CString, name: &CString) -> io::Result<Vec<u8>> {
    // SAFETY: a null buffer of size 0 asks for the size only.
    let size = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    let size = usize::try_from(size).map_err(|_| io::Error::last_os_error())?;
    let mut value = vec![0u8; size];
    if size == 0 {
        return Ok(value);
    }
    // SAFETY: the buffer holds `value.len()` bytes.
    let got = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    value.truncate(got);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer with a file, a hard link, a symlink, a whiteout and an opaque directory is
    /// copied entry for entry.
    #[test]
    fn copies_files_links_whiteouts_and_opaque_dirs() {
        if !rustix_is_root() {
            eprintln!("skipped: needs root to make whiteouts");
            return;
        }
        let dir = std::env::temp_dir().join(format!("hutch-snapshot-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let from = dir.join("upper");
        fs::create_dir_all(from.join("opaque")).unwrap();
        fs::write(from.join("a.txt"), b"hello").unwrap();
        fs::hard_link(from.join("a.txt"), from.join("b.txt")).unwrap();
        std::os::unix::fs::symlink("a.txt", from.join("link")).unwrap();
        mknod(&from.join("gone"), libc::S_IFCHR, 0).unwrap();
        let opaque = c_path(&from.join("opaque")).unwrap();
        let name = CString::new(OPAQUE_XATTR).unwrap();
        // SAFETY: valid C strings and a one-byte value.
        let rc =
            unsafe { libc::lsetxattr(opaque.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        let to = dir.join("copy");
        let report = copy_layer(&from, &to, &|id| id).unwrap();
        assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"hello");
        let a = fs::metadata(to.join("a.txt")).unwrap();
        let b = fs::metadata(to.join("b.txt")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard links stay one file");
        assert_eq!(fs::read_link(to.join("link")).unwrap(), Path::new("a.txt"));
        let gone = fs::symlink_metadata(to.join("gone")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        let value = xattr_value(&c_path(&to.join("opaque")).unwrap(), &name).unwrap();
        assert_eq!(value, b"y");
        assert_eq!(report.bytes, 5);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn rustix_is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
