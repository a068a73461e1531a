//! Raw system call wrappers for building sandboxes and starting processes in them.
//!
//! Each wrapper turns a failing call into an `io::Error` naming the call and what it acted on,
//! so that an error read in a log says which step of which sandbox failed. The only code that
//! runs between `clone3` and `execve` (see [`spawn_into_namespaces`]) is here too, because it
//! must restrict itself to async-signal-safe calls: the server is multi-threaded, and the child
//! of a raw `clone3` may not allocate or take locks.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// An `io::Error` for the last OS error, prefixed with what was being done.
pub(crate) fn last_error(what: impl std::fmt::Display) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

fn cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} has a NUL byte", path.display()),
        )
    })
}

fn opt_cstring(s: Option<&str>) -> io::Result<Option<CString>> {
    s.map(|s| {
        CString::new(s)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in mount argument"))
    })
    .transpose()
}

/// `mount(2)`.
pub(crate) fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c_source = opt_cstring(source)?;
    let c_target = cstring(target)?;
    let c_fstype = opt_cstring(fstype)?;
    let c_data = opt_cstring(data)?;
    // SAFETY: every pointer is either null or a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c_source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            c_target.as_ptr(),
            c_fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            c_data
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(last_error(format_args!(
            "mount {} on {} ({})",
            source.unwrap_or("none"),
            target.display(),
            fstype.unwrap_or("bind/remount")
        )));
    }
    Ok(())
}

/// An overlay to mount with the new mount API (see [`mount_overlay`]).
pub(crate) struct OverlaySpec<'a> {
    /// Read-only lower directories, topmost first.
    pub(crate) lower: &'a [std::path::PathBuf],
    /// The writable upper directory.
    pub(crate) upper: &'a Path,
    /// Overlayfs' work directory, on the same file system as `upper`.
    pub(crate) work: &'a Path,
}

// The new mount API's constants (linux/mount.h), which the libc crate does not all carry.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Mounts an overlay on `target` (`nosuid,nodev`, `userxattr,volatile`) with `fsopen` and
/// `fsconfig`, handing the lower directories over one `lowerdir+` at a time: unlike one
/// `lowerdir=a:b:…` option string, limited to a page, this takes hundreds of layers with paths
/// of any length (Linux 6.8 and later).
pub(crate) fn mount_overlay(target: &Path, overlay: &OverlaySpec<'_>) -> io::Result<()> {
    // SAFETY: the name is a NUL-terminated string; the call returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(last_error("fsopen overlay"));
    }
    // SAFETY: fsopen returned a new descriptor this function owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let set = |command: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| -> io::Result<()> {
        // SAFETY: key and value are NUL-terminated strings that outlive the call, or null where
        // fsconfig wants null (a flag's value; the key and value of a command).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                command,
                key.map_or(std::ptr::null(), CStr::as_ptr),
                value.map_or(std::ptr::null(), CStr::as_ptr),
                0,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            let detail = fs_context_log(&fs);
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "overlay option {}{}: {err}{detail}",
                    key.map_or("(create)".into(), CStr::to_string_lossy),
                    value.map_or(String::new(), |v| format!("={}", v.to_string_lossy()))
                ),
            ));
        }
        Ok(())
    };
    for lower in overlay.lower {
        set(
            FSCONFIG_SET_STRING,
            Some(c"lowerdir+"),
            Some(&cstring(lower)?),
        )?;
    }
    set(
        FSCONFIG_SET_STRING,
        Some(c"upperdir"),
        Some(&cstring(overlay.upper)?),
    )?;
    set(
        FSCONFIG_SET_STRING,
        Some(c"workdir"),
        Some(&cstring(overlay.work)?),
    )?;
    set(FSCONFIG_SET_FLAG, Some(c"userxattr"), None)?;
    set(FSCONFIG_SET_FLAG, Some(c"volatile"), None)?;
    set(FSCONFIG_CMD_CREATE, None, None).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("create overlay of {} layers: {e}", overlay.lower.len()),
        )
    })?;
    // SAFETY: fs is a configured file system context; the call returns a new descriptor or -1.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    if mnt < 0 {
        return Err(last_error("fsmount overlay"));
    }
    // SAFETY: fsmount returned a new descriptor this function owns.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as RawFd) };
    let c_target = cstring(target)?;
    // SAFETY: mnt is a detached mount; the empty path and target are NUL-terminated strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(last_error(format_args!(
            "move overlay onto {}",
            target.display()
        )));
    }
    Ok(())
}

/// What the kernel logged on a file system context (overlayfs names the option it refused
/// there), as `: message; message`, or nothing.
fn fs_context_log(fs: &OwnedFd) -> String {
    let mut lines = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        // SAFETY: reading into a local buffer of the given size from a descriptor we own.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        lines.push(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
    }
    if lines.is_empty() {
        String::new()
    } else {
        format!(" ({})", lines.join("; "))
    }
}

/// Grows a pipe's buffer to at least `bytes` (`F_SETPIPE_SZ`).
pub(crate) fn set_pipe_size(pipe: &OwnedFd, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size too large"))?;
    // SAFETY: fcntl on a descriptor the caller owns.
    if unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) } < 0 {
        return Err(last_error("F_SETPIPE_SZ"));
    }
    Ok(())
}

/// `umount2(2)`.
pub(crate) fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let c_target = cstring(target)?;
    // SAFETY: c_target is a valid NUL-terminated string.
    if unsafe { libc::umount2(c_target.as_ptr(), flags) } != 0 {
        return Err(last_error(format_args!("umount {}", target.display())));
    }
    Ok(())
}

/// `pivot_root(new_root, put_old)`.
pub(crate) fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let c_new = cstring(new_root)?;
    let c_old = cstring(put_old)?;
    // SAFETY: both are valid NUL-terminated strings; pivot_root has no other pointer arguments.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c_new.as_ptr(), c_old.as_ptr()) } != 0 {
        return Err(last_error("pivot_root"));
    }
    Ok(())
}

/// `sethostname(2)`.
pub(crate) fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(last_error(format_args!("sethostname {name}")));
    }
    Ok(())
}

/// `unshare(2)`.
pub(crate) fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes only an integer.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(last_error(format_args!("unshare {flags:#x}")));
    }
    Ok(())
}

/// Brings the loopback interface up in the current network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes only integers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_error("socket for loopback"));
    }
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq naming "lo"; SIOCGIFFLAGS writes only into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(last_error("SIOCGIFFLAGS lo"));
    }
    // SAFETY: reading and writing the flags member of the union that SIOCGIFFLAGS filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: req is a valid ifreq; SIOCSIFFLAGS only reads it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(last_error("SIOCSIFFLAGS lo"));
    }
    Ok(())
}

/// `prctl(2)` with integer arguments.
pub(crate) fn prctl(option: libc::c_int, arg2: libc::c_ulong, what: &str) -> io::Result<()> {
    // SAFETY: every prctl option used by hutch takes integer arguments only.
    if unsafe { libc::prctl(option, arg2, 0, 0, 0) } != 0 {
        return Err(last_error(what));
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable capability sets (`capset(2)`, version 3).
pub(crate) fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let data = [
        Data {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        Data {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: header and data match the kernel's v3 layout (one header, two data words).
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(last_error("capset"));
    }
    Ok(())
}

/// Opens `path` and returns the owned descriptor.
pub(crate) fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c_path = cstring(path)?;
    // SAFETY: c_path is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_error(format_args!("open {}", path.display())));
    }
    // SAFETY: fd was just returned by open() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Duplicates `fd` to a descriptor numbered at least `min`, close-on-exec.
pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl with F_DUPFD_CLOEXEC takes an fd and an integer.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(last_error(format_args!("dup fd {fd}")));
    }
    // SAFETY: new was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    hutch_sys::pipe::pipe().map_err(|e| io::Error::new(e.kind(), format!("pipe2: {e}")))
}

/// Sends `signal` to the process behind `pidfd`. A process that already exited is not an error.
pub(crate) fn pidfd_send_signal(pidfd: RawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes an fd, an integer, a null siginfo and flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(last_error("pidfd_send_signal"));
    }
    Ok(())
}

/// Opens a pidfd for `pid` (which need not be a child of this process).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers only.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(last_error(format_args!("pidfd_open {pid}")));
    }
    // SAFETY: fd was just returned by pidfd_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reaps `pid` if it is an exited child of this process; a non-child is ignored. False when
/// `pid` is a child that cannot be reaped yet: it runs, or it exited while a tracer
/// (`strace`, a debugger) holds it, which hands it back only once the tracer lets go.
pub(crate) fn reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid writes only into `status`. WNOHANG keeps it from blocking.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) != 0 }
}

/// `lchown(2)` to `uid:gid`.
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c_path = cstring(path)?;
    // SAFETY: c_path is a valid NUL-terminated string.
    if unsafe { libc::lchown(c_path.as_ptr(), uid, gid) } != 0 {
        return Err(last_error(format_args!("chown {}", path.display())));
    }
    Ok(())
}

/// The file descriptors a sandbox's first process starts with, and where.
pub(crate) struct ChildFd {
    /// Descriptor in this process (close-on-exec, numbered above every `target`).
    pub(crate) source: RawFd,
    /// Number it gets in the child.
    pub(crate) target: RawFd,
}

/// A process started by [`spawn_into_namespaces`].
pub(crate) struct Spawned {
    /// Host pid.
    pub(crate) pid: i32,
    /// A pidfd for it.
    pub(crate) pidfd: OwnedFd,
}

/// The kernel's `struct clone_args`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub(crate) flags: u64,
    pub(crate) pidfd: u64,
    pub(crate) child_tid: u64,
    pub(crate) parent_tid: u64,
    pub(crate) exit_signal: u64,
    pub(crate) stack: u64,
    pub(crate) stack_size: u64,
    pub(crate) tls: u64,
    pub(crate) set_tid: u64,
    pub(crate) set_tid_size: u64,
    pub(crate) cgroup: u64,
}

/// Every `fds[].source` and `exe` must be numbered above every `fds[].target` (see
/// [`dup_above`]), so that the child's `dup2` calls cannot overwrite one another.
///
/// Clones a child into new namespaces (`flags`, `CLONE_NEW*`), optionally straight into the
/// cgroup v2 directory `cgroup`, and execs `exe` (an fd) with `argv` and an empty environment.
///
/// The child first waits for one byte on the descriptor mapped to `go_target`: the caller
/// writes its uid/gid maps and joins its cgroups in the meantime. Once released, the child
/// becomes uid and gid 0 of its user namespace, so that it keeps its capabilities there across
/// `execve`. Between `clone3` and `execve` it makes raw system calls only.
pub(crate) fn spawn_into_namespaces(
    flags: u64,
    cgroup: Option<RawFd>,
    exe: RawFd,
    argv: &[CString],
    fds: &[ChildFd],
    go_target: RawFd,
) -> io::Result<Spawned> {
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let empty = c"";
    let highest_target = fds.iter().map(|f| f.target).max().unwrap_or(2);

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags
            | libc::CLONE_PIDFD as u64
            | if cgroup.is_some() {
                CLONE_INTO_CGROUP
            } else {
                0
            },
        pidfd: (&mut pidfd as *mut RawFd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args of the size passed. Without CLONE_VM the child gets a
    // copy of this address space; it runs only `child_after_clone`, which makes raw system
    // calls on memory prepared above and never returns.
    let rc = unsafe { clone3(&mut args) };
    if rc < 0 {
        return Err(last_error("clone3 into new namespaces"));
    }
    if rc == 0 {
        // SAFETY: we are the freshly cloned child; see child_after_clone's contract.
        unsafe {
            child_after_clone(
                fds,
                highest_target,
                go_target,
                exe,
                empty,
                &argv_ptrs,
                &envp,
            )
        }
    }
    // SAFETY: the kernel stored a new pidfd owned by this process in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: rc as i32,
        pidfd,
    })
}

/// `CLONE_INTO_CGROUP`: start the child in the cgroup v2 directory `clone_args.cgroup`.
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Raw `clone3(2)`: returns 0 in the child, the pid in the parent, -1 on error.
///
/// # Safety
/// Without `CLONE_VM` in `args.flags` the child runs on a copy of the caller's memory and must
/// make raw system calls only until it execs or exits.
pub(crate) unsafe fn clone3(args: &mut CloneArgs) -> libc::c_long {
    // SAFETY: args is a valid clone_args of the size passed; the caller upholds the rest.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    }
}

/// Waits for child `pid` to exit and reaps it.
pub(crate) fn wait_blocking(pid: i32) {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only into `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Gives the calling process every signal's default disposition and an empty signal mask,
/// whatever it inherited: an ignored signal (`nohup`, a shell's `&`) survives `execve`, and so
/// does the mask, so a sandbox started by a server that ignores SIGINT would ignore it in
/// every process it runs. Raw system calls only: safe between `clone3` and `execve`.
///
/// # Safety
/// Changes the dispositions of the whole process: only for a process about to `execve` (a
/// handler installed by this program would be gone anyway).
pub(crate) unsafe fn reset_signals_for_exec() {
    // SAFETY: rt_sigprocmask and rt_sigaction read only the structures passed, which live on
    // this stack frame.
    unsafe {
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const libc::sigset_t,
            std::ptr::null_mut::<libc::sigset_t>(),
            8usize,
        );
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        // Signals 1..=64; SIGKILL and SIGSTOP refuse (EINVAL) and are always default.
        for signal in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const libc::sigaction,
                std::ptr::null_mut::<libc::sigaction>(),
                8usize,
            );
        }
    }
}

/// Runs in the child of `clone3` until `execve`.
///
/// # Safety
/// Must be called only in a child created by `clone3` without `CLONE_VM`. It uses raw system
/// calls only (no allocation, no locks) and never returns.
unsafe fn child_after_clone(
    fds: &[ChildFd],
    highest_target: RawFd,
    go_target: RawFd,
    exe: RawFd,
    empty: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: raw system calls on descriptors and memory this process owns, as the
    // function's contract requires.
    unsafe {
        let fail = |code: libc::c_int| -> ! { libc::_exit(code) };
        for fd in fds {
            if libc::dup2(fd.source, fd.target) < 0 {
                fail(120);
            }
        }
        // Everything above the targets goes, but for the binary (close-on-exec) for execveat.
        libc::syscall(libc::SYS_close_range, highest_target + 1, exe - 1, 0);
        libc::syscall(libc::SYS_close_range, exe + 1, u32::MAX, 0);
        let mut byte = 0u8;
        if libc::read(go_target, (&mut byte as *mut u8).cast(), 1) != 1 {
            fail(122);
        }
        libc::close(go_target);
        // Become root of the new user namespace. Raw calls: glibc's wrappers would try to
        // synchronise threads this copy of the process does not have.
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
        {
            fail(123);
        }
        reset_signals_for_exec();
        libc::syscall(
            libc::SYS_execveat,
            exe,
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        fail(124)
    }
}

/// Overwrites with NUL bytes the value of every `name=` entry of the process's environment
/// block (what the kernel shows as `/proc/<pid>/environ` is the block the process started
/// with, which removing a variable leaves as it was), then removes the variable.
///
/// # Safety
/// No other thread may run: the environment is read and written without a lock others take.
pub(crate) unsafe fn scrub_env(name: &str) {
    let prefix = format!("{name}=");
    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated strings the process owns
    // (on its initial stack, or allocated by setenv), writable, and no other thread touches
    // it (the caller's contract). Each write stays within its string, before its NUL.
    unsafe {
        let mut entry = libc::environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = CStr::from_ptr(*entry);
            let len = text.to_bytes().len();
            if text.to_bytes().starts_with(prefix.as_bytes()) {
                std::ptr::write_bytes((*entry).add(prefix.len()), 0, len - prefix.len());
            }
            entry = entry.add(1);
        }
        std::env::remove_var(name);
    }
}

/// Removes `name` from the process's environment.
///
/// # Safety
/// No other thread may run (see [`std::env::remove_var`]).
pub(crate) unsafe fn remove_env(name: &std::ffi::OsStr) {
    // SAFETY: single-threaded, as the caller guarantees.
    unsafe { std::env::remove_var(name) }
}
