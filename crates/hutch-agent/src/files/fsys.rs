//! Confined file system access: every path is resolved by the kernel inside the sandbox root,
//! and everything after resolution is done through descriptors.
//!
//! [`Root::resolve`] calls `openat2(2)` relative to a descriptor of the sandbox root with
//! `RESOLVE_IN_ROOT` (absolute symlinks and `..` stay inside the root, as if chrooted) and
//! `RESOLVE_NO_MAGICLINKS` (no `/proc/<pid>/root`, `/proc/self/fd/N` and the like). What is
//! resolved once is never resolved again by name: creating, removing, renaming and changing
//! modes all happen with the `*at` calls on the parent's descriptor and a single name, which
//! the kernel does not follow (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`,
//! `renameat2`), so a directory swapped for a symlink while an operation runs leads nowhere
//! but inside the sandbox.
//!
//! Kernel interfaces are out of bounds even inside the sandbox: anything on procfs, sysfs,
//! devpts or the sandbox's `/dev` (where the device nodes are) is refused with 403, and only
//! regular files are read or written (never a device node or a FIFO).
//!
//! The system calls themselves are `hutch_sys::fs`'s, which has the confinement core's tests.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use hutch_api::ErrorCode;
pub(crate) use hutch_sys::fs::{
    Stat, fchmod, fstat, linkat, lstatat, mkdirat, openat_mode, openat_nofollow, openat2, read_dir,
    readlinkat, renameat2, set_mtime, symlinkat, unlinkat,
};
use hutch_sys::fs::{fs_type, mount_id, open};

use super::path::SandboxPath;
use crate::error::AgentError;

/// `statfs` magic numbers of file systems the API refuses to touch.
const FORBIDDEN_FS: &[i64] = &[
    0x9fa0,      // procfs
    0x6265_6572, // sysfs
    0x1cd1,      // devpts
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x7363_6673, // securityfs
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0xcafe_4a11, // bpf
];

/// The sandbox root, and what below it is out of bounds.
pub(crate) struct Root {
    fd: OwnedFd,
    /// Ids of mounts refused besides [`FORBIDDEN_FS`] (the sandbox's `/dev`). Mount ids, not
    /// device numbers: `/tmp` and `/dev/shm` are bind mounts of the same tmpfs as `/dev`.
    forbidden_mounts: Vec<u64>,
}

impl Root {
    /// Opens `/` of the calling process, which for the agent is the sandbox root.
    pub(crate) fn open() -> io::Result<Root> {
        let fd = open(c"/", libc::O_PATH | libc::O_DIRECTORY)?;
        let root_mount = mount_id(fd.as_fd())?;
        let mut forbidden_mounts = Vec::new();
        if let Ok(dev) = openat2(fd.as_fd(), c"dev", libc::O_PATH | libc::O_DIRECTORY, 0)
            && let Ok(id) = mount_id(dev.as_fd())
            && id != root_mount
        {
            forbidden_mounts.push(id);
        }
        Ok(Root {
            fd,
            forbidden_mounts,
        })
    }

    /// Opens `dir` as the root, with no forbidden mounts besides [`FORBIDDEN_FS`]: the fuzz
    /// targets confine to a scratch directory of the host.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn open_dir(dir: &CStr) -> io::Result<Root> {
        let fd = open(dir, libc::O_PATH | libc::O_DIRECTORY)?;
        Ok(Root {
            fd,
            forbidden_mounts: Vec::new(),
        })
    }

    /// The root's descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolves `path` inside the root and opens it with `flags` (`O_CLOEXEC` added), then
    /// checks that it is not on a forbidden file system.
    pub(crate) fn resolve(&self, path: &SandboxPath, flags: i32) -> Result<OwnedFd, AgentError> {
        let fd = openat2(self.fd(), &path.relative(), flags, 0)
            .map_err(|e| fs_error("open", &path.to_string(), e))?;
        self.check(fd.as_fd(), &path.to_string())?;
        Ok(fd)
    }

    /// Resolves the parent directory of `path` (`O_PATH`) and returns it with the last name.
    pub(crate) fn parent(&self, path: &SandboxPath) -> Result<(OwnedFd, CString), AgentError> {
        let Some((parent, name)) = path.split() else {
            return Err(AgentError::File {
                code: ErrorCode::Forbidden,
                message: "the sandbox root itself cannot be changed".into(),
                path: "/".into(),
            });
        };
        let fd = self.resolve(&parent, libc::O_PATH | libc::O_DIRECTORY)?;
        Ok((fd, name))
    }

    /// Refuses a descriptor on procfs, sysfs, devpts or `/dev`.
    pub(crate) fn check(&self, fd: BorrowedFd<'_>, path: &str) -> Result<(), AgentError> {
        if self
            .is_forbidden(fd)
            .map_err(|e| fs_error("stat", path, e))?
        {
            return Err(forbidden(path));
        }
        Ok(())
    }

    /// Whether `fd` lies on a file system the API does not touch.
    pub(crate) fn is_forbidden(&self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        if FORBIDDEN_FS.contains(&fs_type(fd)?) {
            return Ok(true);
        }
        Ok(self.forbidden_mounts.contains(&mount_id(fd)?))
    }

    /// Creates every missing directory of `path` (mode `mode`), like `mkdir -p`, one name at a
    /// time through descriptors. Returns the last one (`O_PATH`).
    pub(crate) fn mkdir_all(&self, path: &SandboxPath, mode: u32) -> Result<OwnedFd, AgentError> {
        let mut dir = self.resolve(
            &SandboxPath::parse("path", "/")?,
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        let mut so_far = SandboxPath::parse("path", "/")?;
        for part in path.parts() {
            so_far = so_far.child(part);
            let name = CString::new(part.as_str()).map_err(|_| forbidden(&so_far.to_string()))?;
            match mkdirat(dir.as_fd(), &name, mode) {
                Ok(()) => {
                    let fd =
                        openat_nofollow(dir.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY)
                            .map_err(|e| fs_error("open", &so_far.to_string(), e))?;
                    fchmod(fd.as_fd(), mode)
                        .map_err(|e| fs_error("chmod", &so_far.to_string(), e))?;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(fs_error("mkdir", &so_far.to_string(), e)),
            }
            // An existing symlink is followed, inside the root, like any path.
            dir = self.resolve(&so_far, libc::O_PATH | libc::O_DIRECTORY)?;
        }
        Ok(dir)
    }
}

/// The 403 of a path on a forbidden file system.
pub(crate) fn forbidden(path: &str) -> AgentError {
    AgentError::File {
        code: ErrorCode::Forbidden,
        message: format!(
            "{path} is a device node, FIFO or socket, or lies on /proc, /sys or /dev, which the file API does not touch"
        ),
        path: path.to_owned(),
    }
}

/// Maps an OS error of operation `op` on `path` to the API error it answers with.
pub(crate) fn fs_error(op: &str, path: &str, e: io::Error) -> AgentError {
    let (code, what) = match e.raw_os_error().unwrap_or(0) {
        // What `open` answers for a socket (and a device with no driver behind it).
        libc::ENXIO => return forbidden(path),
        libc::ENOENT => (ErrorCode::FileNotFound, "no such file or directory"),
        libc::ENOTDIR => (
            ErrorCode::Conflict,
            "a component of the path is not a directory",
        ),
        libc::EISDIR => (ErrorCode::Conflict, "is a directory"),
        libc::EEXIST => (ErrorCode::Conflict, "already exists"),
        libc::ENOTEMPTY => (ErrorCode::Conflict, "directory is not empty"),
        libc::EBUSY => (ErrorCode::Conflict, "is busy (a mount point)"),
        libc::EXDEV => (
            ErrorCode::Conflict,
            "cannot be renamed there: the two names lie on different file systems, or it is a directory that came with the image (its overlay cannot rename those in place); copy it instead",
        ),
        libc::ELOOP => (
            ErrorCode::InvalidRequest,
            "runs through a /proc magic link, a symbolic link where none may be, or too many links",
        ),
        libc::EACCES | libc::EPERM | libc::EROFS => (ErrorCode::Forbidden, "permission denied"),
        libc::ENOSPC | libc::EDQUOT => (ErrorCode::DiskFull, "the session's disk is full"),
        libc::EFBIG => (ErrorCode::PayloadTooLarge, "file too large"),
        libc::ENAMETOOLONG => (ErrorCode::InvalidRequest, "name too long"),
        libc::EINVAL => (ErrorCode::InvalidRequest, "invalid argument"),
        _ => (ErrorCode::Internal, ""),
    };
    let message = if what.is_empty() {
        format!("{op} {path}: {e}")
    } else {
        format!("{op} {path}: {what}")
    };
    AgentError::File {
        code,
        message,
        path: path.to_owned(),
    }
}

/// Whether `st` is a directory / regular file / symlink.
pub(crate) fn kind(st: &Stat) -> hutch_api::FileType {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => hutch_api::FileType::Directory,
        libc::S_IFREG => hutch_api::FileType::File,
        libc::S_IFLNK => hutch_api::FileType::Symlink,
        _ => hutch_api::FileType::Other,
    }
}

/// Removes `name` in `dir`: a file or link, or (with `recursive`) a directory and everything
/// in it, never following a symlink and never descending into another file system.
pub(crate) fn remove(
    root: &Root,
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: &str,
    recursive: bool,
    depth: usize,
) -> Result<(), AgentError> {
    let st = lstatat(dir, name).map_err(|e| fs_error("remove", path, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return unlinkat(dir, name, 0).map_err(|e| fs_error("remove", path, e));
    }
    match unlinkat(dir, name, libc::AT_REMOVEDIR) {
        Ok(()) => return Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOTEMPTY)
                || e.raw_os_error() == Some(libc::EEXIST) =>
        {
            if !recursive {
                return Err(AgentError::File {
                    code: ErrorCode::Conflict,
                    message: format!(
                        "{path} is a directory that is not empty; pass recursive=true to remove it and everything in it"
                    ),
                    path: path.to_owned(),
                });
            }
        }
        Err(e) => return Err(fs_error("remove", path, e)),
    }
    if depth > 4096 {
        return Err(fs_error(
            "remove",
            path,
            io::Error::from_raw_os_error(libc::ELOOP),
        ));
    }
    let sub = openat_nofollow(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|e| fs_error("open", path, e))?;
    if fstat(sub.as_fd())
        .map_err(|e| fs_error("stat", path, e))?
        .st_dev
        != st.st_dev
    {
        return Err(fs_error(
            "remove",
            path,
            io::Error::from_raw_os_error(libc::EBUSY),
        ));
    }
    root.check(sub.as_fd(), path)?;
    for child in read_dir(sub.as_fd()).map_err(|e| fs_error("list", path, e))? {
        let child_path = format!("{path}/{}", child.to_string_lossy());
        remove(root, sub.as_fd(), &child, &child_path, true, depth + 1)?;
    }
    unlinkat(dir, name, libc::AT_REMOVEDIR).map_err(|e| fs_error("remove", path, e))
}
