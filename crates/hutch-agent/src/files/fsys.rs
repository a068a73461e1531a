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

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use hutch_api::ErrorCode;

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
    /// Device numbers of mounts refused besides [`FORBIDDEN_FS`] (the sandbox's `/dev`).
    forbidden_devs: Vec<u64>,
}

/// Resolution flags of every path lookup.
const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

impl Root {
    /// Opens `/` of the calling process, which for the agent is the sandbox root.
    pub(crate) fn open() -> io::Result<Root> {
        let fd = sys_open(c"/", libc::O_PATH | libc::O_DIRECTORY)?;
        let root_dev = fstat(fd.as_fd())?.st_dev;
        let mut forbidden_devs = Vec::new();
        if let Ok(dev) = openat2(fd.as_fd(), c"dev", libc::O_PATH | libc::O_DIRECTORY, 0)
            && let Ok(st) = fstat(dev.as_fd())
            && st.st_dev != root_dev
        {
            forbidden_devs.push(st.st_dev);
        }
        Ok(Root { fd, forbidden_devs })
    }

    /// Opens `dir` as the root, with no forbidden mounts besides [`FORBIDDEN_FS`]: the fuzz
    /// targets confine to a scratch directory of the host.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn open_dir(dir: &CStr) -> io::Result<Root> {
        let fd = sys_open(dir, libc::O_PATH | libc::O_DIRECTORY)?;
        Ok(Root {
            fd,
            forbidden_devs: Vec::new(),
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
        let mut sfs: libc::statfs = unsafe_zeroed_statfs();
        // SAFETY: fd is open; sfs is a valid out pointer.
        if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } != 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast)]
        let fs_type = sfs.f_type as i64;
        if FORBIDDEN_FS.contains(&fs_type) {
            return Ok(true);
        }
        let st = fstat(fd)?;
        Ok(self.forbidden_devs.contains(&st.st_dev))
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

fn unsafe_zeroed_statfs() -> libc::statfs {
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
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
        libc::ENOENT => (ErrorCode::FileNotFound, "no such file or directory"),
        libc::ENOTDIR => (
            ErrorCode::Conflict,
            "a component of the path is not a directory",
        ),
        libc::EISDIR => (ErrorCode::Conflict, "is a directory"),
        libc::EEXIST => (ErrorCode::Conflict, "already exists"),
        libc::ENOTEMPTY => (ErrorCode::Conflict, "directory is not empty"),
        libc::EBUSY => (ErrorCode::Conflict, "is busy (a mount point)"),
        libc::EXDEV => (ErrorCode::Conflict, "cannot be moved across file systems"),
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

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: fd was just returned by the kernel and belongs to nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sys_open(path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: path is NUL-terminated.
    owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, flags, mode)` resolving inside `dir` without magic links.
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: RESOLVE,
    };
    loop {
        // SAFETY: how is a valid open_how of the size passed; path is NUL-terminated.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // EAGAIN: a rename raced the lookup; the kernel asks to retry.
            if err.raw_os_error() == Some(libc::EAGAIN) {
                continue;
            }
            return Err(err);
        }
        // SAFETY: a new descriptor owned by nobody else.
        return Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) });
    }
}

/// Opens the single name `name` in `dir` without following a symlink there.
pub(crate) fn openat_nofollow(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    openat_mode(dir, name, flags, 0)
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub(crate) fn openat_mode(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; dir is open.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// `fstat`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid out pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is open; name is NUL-terminated; st is a valid out pointer.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `readlinkat(dir, name)`.
pub(crate) fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for its length; name is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The names in directory `dir` (without `.` and `..`), unsorted.
pub(crate) fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let fd = openat2(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // SAFETY: fd is an open directory; fdopendir takes it over (closedir closes it).
    let dirp = unsafe { libc::fdopendir(fd.as_raw_fd()) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(fd);
    let mut names = Vec::new();
    loop {
        // SAFETY: dirp is a valid DIR stream until closedir.
        let entry = unsafe { libc::readdir(dirp) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name of a returned entry is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    // SAFETY: dirp came from fdopendir and is closed once.
    unsafe { libc::closedir(dirp) };
    Ok(names)
}

/// `mkdirat(dir, name, mode)`.
pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; dir is open.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `unlinkat(dir, name, flags)`.
pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; dir is open.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2(from_dir, from, to_dir, to, flags)`.
pub(crate) fn renameat2(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; both descriptors are open.
    cvt(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `symlinkat(target, dir, name)`.
pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; dir is open.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `linkat(from_dir, from, to_dir, to, 0)`: a hard link, never following a symlink.
pub(crate) fn linkat(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; both descriptors are open.
    cvt(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `fchmod(fd, mode)`.
pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: fd is open.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// Sets the modification (and access) time of an open file.
pub(crate) fn set_mtime(fd: BorrowedFd<'_>, secs: i64) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: fd is open; times points to two timespecs.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// Whether `st` is a directory / regular file / symlink.
pub(crate) fn kind(st: &libc::stat) -> hutch_api::FileType {
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
