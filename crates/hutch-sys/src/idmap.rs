//! Idmapped mounts: a directory seen with its owners shifted onto another range of host ids.
//!
//! hutch's shared read-only layers (the `default` image's skeleton, unpacked OCI layers) are
//! owned on disk by one host id range that no sandbox runs as. Each sandbox sees them through
//! an idmapped clone of their directory that shows those owners in the sandbox's own range, so
//! that its root may copy them up as if it owned them, while on disk nothing changes.
//!
//! The idmap of a mount is a user namespace ([`user_namespace`]); [`idmapped_tree`] makes a
//! detached, idmapped copy of a directory's mount (root in the initial user namespace only),
//! and [`attach`] mounts such a copy somewhere in the caller's mount namespace (a sandbox's
//! first process, root of its own user and mount namespaces, may do that; overlayfs refuses a
//! detached tree as a lower layer, so it must be attached first).
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use rustix::process::{Pid, Signal, WaitOptions};

/// `MOUNT_ATTR_IDMAP` of `mount_setattr(2)`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A new user namespace whose uid and gid maps are both `map` (`/proc/<pid>/uid_map` lines:
/// `<inside> <outside> <count>`), held by descriptor only: the process made to create it is
/// gone when this returns. Needs `CAP_SETUID`/`CAP_SETGID` over the outside ids (root).
pub fn user_namespace(map: &str) -> io::Result<OwnedFd> {
    // The child shares this address space (`CLONE_VM`: nothing is copied, however large the
    // server) and runs on a stack of its own, doing nothing but wait to be killed.
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack is ours and outlives the child (it is killed and reaped below, before
    // `stack` is dropped); its top is 16-byte aligned as the ABI wants; the child function
    // touches no memory of this process.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK) as usize & !15;
        libc::clone(
            wait_to_be_killed,
            top as *mut libc::c_void,
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        for file in ["uid_map", "gid_map"] {
            fs::write(format!("/proc/{pid}/{file}"), map)?;
        }
        let ns = rustix::fs::open(
            format!("/proc/{pid}/ns/user"),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(ns)
    })();
    if let Some(child) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(child, Signal::KILL);
        let _ = rustix::process::waitpid(Some(child), WaitOptions::empty());
    }
    drop(stack);
    result
}

/// Stack size of the child [`user_namespace`] makes.
const CHILD_STACK: usize = 16 * 1024;

/// The child of [`user_namespace`]: only raw system calls, until it is killed.
extern "C" fn wait_to_be_killed(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: plain system calls without memory arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        loop {
            libc::pause();
        }
    }
}

/// A detached copy of the mount at `dir` (just that mount, not those below it) whose file
/// owners are shifted through `userns`'s maps: an id `i` on disk shows as what `i` inside
/// `userns` is outside it. Ids the namespace does not map show as the overflow id (`nobody`).
/// Needs root in the initial user namespace and a file system that supports idmapped mounts
/// (ext4, xfs, btrfs, tmpfs since Linux 6.3, …).
pub fn idmapped_tree(dir: &Path, userns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let tree = rustix::mount::open_tree(
        CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: the path is an empty NUL-terminated string and `attr` a valid `mount_attr` of the
    // size passed; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Mounts the detached tree `tree` (from [`idmapped_tree`]) at `target` in the caller's mount
/// namespace.
pub fn attach(tree: impl AsFd, target: &Path) -> io::Result<()> {
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const SHARED: u32 = 1_000_000_000;
    const RANGE: u32 = 1_000_065_536;

    fn owned_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        std::os::unix::fs::lchown(&file, Some(SHARED + 5), Some(SHARED + 7)).unwrap();
        std::os::unix::fs::lchown(dir.path(), Some(SHARED), Some(SHARED)).unwrap();
        dir
    }

    #[test]
    fn an_idmapped_tree_shows_owners_in_the_namespaces_range() {
        let dir = owned_dir();
        let ns = user_namespace(&format!("{SHARED} {RANGE} 65536\n")).unwrap();
        let tree = idmapped_tree(dir.path(), ns.as_fd()).unwrap();
        let seen = format!("/proc/self/fd/{}", tree.as_raw_fd());
        let root = fs::metadata(&seen).unwrap();
        assert_eq!((root.uid(), root.gid()), (RANGE, RANGE));
        let file = fs::symlink_metadata(format!("{seen}/file")).unwrap();
        assert_eq!((file.uid(), file.gid()), (RANGE + 5, RANGE + 7));
        // On disk nothing changed.
        let on_disk = fs::symlink_metadata(dir.path().join("file")).unwrap();
        assert_eq!(on_disk.uid(), SHARED + 5);
    }

    #[test]
    fn ids_outside_the_map_show_as_overflow() {
        let dir = owned_dir();
        let ns = user_namespace(&format!("{} {RANGE} 65536\n", SHARED + 65_536)).unwrap();
        let tree = idmapped_tree(dir.path(), ns.as_fd()).unwrap();
        let file =
            fs::symlink_metadata(format!("/proc/self/fd/{}/file", tree.as_raw_fd())).unwrap();
        assert_eq!(file.uid(), 65_534);
    }

    #[test]
    fn a_bad_map_is_refused() {
        let err = user_namespace("not a map\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn attaching_onto_a_missing_target_fails() {
        let dir = owned_dir();
        let ns = user_namespace(&format!("{SHARED} {RANGE} 65536\n")).unwrap();
        let tree = idmapped_tree(dir.path(), ns.as_fd()).unwrap();
        let err = attach(&tree, &dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
