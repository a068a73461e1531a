//! Descriptor-relative file access, and the confinement core that resolves paths inside a
//! root directory.
//!
//! [`openat2`] resolves a path relative to a directory descriptor with `RESOLVE_IN_ROOT`
//! (`..` and absolute symlinks stay inside that directory, as if it were `/` after a chroot)
//! and `RESOLVE_NO_MAGICLINKS` (no `/proc/<pid>/root`, `/proc/self/fd/N` and the like, which
//! lead anywhere). The other calls act on one name in an already resolved directory and never
//! follow a symlink in that name (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`, `renameat2`).
//!
//! Flags and modes are the `libc` constants (`libc::O_PATH | libc::O_DIRECTORY`,
//! `libc::AT_REMOVEDIR`, `libc::RENAME_NOREPLACE`); `O_CLOEXEC` is always added.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps};

pub use rustix::fs::Stat;

fn oflags(flags: i32) -> OFlags {
    OFlags::from_bits_retain(flags as u32) | OFlags::CLOEXEC
}

/// `open(path, flags | O_CLOEXEC)`, for the one path that is not relative to a descriptor: the
/// root itself.
pub fn open(path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, oflags(flags), Mode::empty())?)
}

/// `openat2(dir, path, flags | O_CLOEXEC, mode)` resolving `path` inside `dir`, never
/// through a magic link. `mode` counts only with `O_CREAT` or `O_TMPFILE`. A lookup that a
/// concurrent rename made ambiguous (`EAGAIN`) is retried.
pub fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        Mode::from_raw_mode(mode)
    } else {
        Mode::empty()
    };
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    loop {
        match rustix::fs::openat2(dir, path, oflags(flags), mode, resolve) {
            Err(rustix::io::Errno::AGAIN) => continue,
            result => return Ok(result?),
        }
    }
}

/// Opens the single name `name` in `dir` without following a symlink there.
pub fn openat_nofollow(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    openat_mode(dir, name, flags, 0)
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub fn openat_mode(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let flags = oflags(flags) | OFlags::NOFOLLOW;
    Ok(rustix::fs::openat(
        dir,
        name,
        flags,
        Mode::from_raw_mode(mode),
    )?)
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: a symlink is described, not followed.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The id of the mount `fd` lies on (`statx` with `STATX_MNT_ID`, Linux 5.8 and later): unlike
/// the device number, it tells two bind mounts of one file system apart.
pub fn mount_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)?;
    Ok(st.stx_mnt_id)
}

/// The `statfs` magic number of the file system `fd` lies on (`0x9fa0` for procfs, …).
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    #[allow(clippy::unnecessary_cast)]
    Ok(rustix::fs::fstatfs(fd)?.f_type as i64)
}

/// The target of symlink `name` in `dir`.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// The names in directory `dir` (without `.` and `..`), unsorted.
pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let fd = openat2(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::new(fd)? {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// `unlinkat(dir, name, flags)` (`libc::AT_REMOVEDIR` for a directory).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    let flags = AtFlags::from_bits_retain(flags as u32);
    Ok(rustix::fs::unlinkat(dir, name, flags)?)
}

/// `renameat2(from_dir, from, to_dir, to, flags)` (`libc::RENAME_NOREPLACE`, …).
pub fn renameat2(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
    flags: u32,
) -> io::Result<()> {
    let flags = RenameFlags::from_bits_retain(flags);
    Ok(rustix::fs::renameat_with(
        from_dir, from, to_dir, to, flags,
    )?)
}

/// `symlinkat(target, dir, name)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// `linkat(from_dir, from, to_dir, to, 0)`: a hard link, never following a symlink.
pub fn linkat(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        from_dir,
        from,
        to_dir,
        to,
        AtFlags::empty(),
    )?)
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

/// Sets the modification (and access) time of an open file to `secs` after the epoch.
pub fn set_mtime(fd: BorrowedFd<'_>, secs: i64) -> io::Result<()> {
    let at = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: at,
        last_modification: at,
    };
    Ok(rustix::fs::futimens(fd, &times)?)
}

/// A memfd named `name` holding `bytes`, sealed against writes, resizing and further seals;
/// close-on-exec.
pub fn sealed_memfd(name: &CStr, bytes: &[u8]) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, bytes)?;
    let seals = SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    rustix::fs::fcntl_add_seals(file.as_fd(), seals)?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::ffi::OsStrExt;

    /// A sandbox-like root inside a temporary directory, with a file outside it:
    /// `outside` beside `root/`, and in `root/` a `dir/file` holding "inside".
    struct Tree {
        tmp: tempfile::TempDir,
        root: OwnedFd,
    }

    impl Tree {
        fn new() -> Tree {
            let tmp = tempfile::tempdir().expect("tempdir");
            std::fs::write(tmp.path().join("outside"), "outside").expect("write outside");
            let root = tmp.path().join("root");
            std::fs::create_dir_all(root.join("dir")).expect("mkdir");
            std::fs::write(root.join("dir/file"), "inside").expect("write inside");
            let path = CString::new(root.as_os_str().as_bytes()).expect("path");
            let root = open(&path, libc::O_PATH | libc::O_DIRECTORY).expect("open root");
            Tree { tmp, root }
        }

        fn root(&self) -> BorrowedFd<'_> {
            self.root.as_fd()
        }

        fn link(&self, target: &str, name: &str) {
            std::os::unix::fs::symlink(target, self.tmp.path().join("root").join(name))
                .expect("symlink");
        }

        /// Opens `path` confined to the root and reads it.
        fn read(&self, path: &CStr) -> io::Result<String> {
            let fd = openat2(self.root(), path, libc::O_RDONLY, 0)?;
            let mut text = String::new();
            std::fs::File::from(fd).read_to_string(&mut text)?;
            Ok(text)
        }
    }

    fn errno<T>(result: io::Result<T>) -> Option<i32> {
        result.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn a_path_inside_the_root_opens_and_dot_dot_stops_at_the_root() {
        let tree = Tree::new();
        assert_eq!(tree.read(c"dir/file").expect("inside"), "inside");
        assert_eq!(tree.read(c"dir/../dir/file").expect("inside"), "inside");
        // `..` above the root is the root: "../outside" is "/outside" of the root, absent.
        assert_eq!(errno(tree.read(c"../outside")), Some(libc::ENOENT));
        assert_eq!(
            errno(tree.read(c"dir/../../../outside")),
            Some(libc::ENOENT)
        );
        assert_eq!(errno(tree.read(c"/../outside")), Some(libc::ENOENT));
    }

    #[test]
    fn relative_symlinks_that_climb_out_land_back_inside_the_root() {
        let tree = Tree::new();
        tree.link("../../..", "up");
        tree.link("../outside", "escape");
        assert_eq!(tree.read(c"up/dir/file").expect("through up"), "inside");
        assert_eq!(errno(tree.read(c"up/outside")), Some(libc::ENOENT));
        assert_eq!(errno(tree.read(c"escape")), Some(libc::ENOENT));
        let up = openat2(tree.root(), c"up", libc::O_PATH, 0).expect("open up");
        let root = fstat(tree.root()).expect("stat root");
        let landed = fstat(up.as_fd()).expect("stat up");
        assert_eq!((landed.st_dev, landed.st_ino), (root.st_dev, root.st_ino));
    }

    #[test]
    fn absolute_symlinks_resolve_from_the_root_not_from_the_host() {
        let tree = Tree::new();
        tree.link("/dir/file", "abs_inside");
        let outside = tree.tmp.path().join("outside");
        tree.link(outside.to_str().expect("utf-8"), "abs_outside");
        tree.link("/etc/hostname", "host_file");
        assert_eq!(tree.read(c"abs_inside").expect("inside"), "inside");
        assert_eq!(errno(tree.read(c"abs_outside")), Some(libc::ENOENT));
        assert_eq!(errno(tree.read(c"host_file")), Some(libc::ENOENT));
    }

    #[test]
    fn proc_magic_links_are_refused() {
        let host_root = open(c"/", libc::O_PATH | libc::O_DIRECTORY).expect("open /");
        for path in [
            c"proc/self/root",
            c"proc/self/root/etc",
            c"proc/self/cwd",
            c"proc/self/exe",
            c"proc/self/fd/0",
        ] {
            let result = openat2(host_root.as_fd(), path, libc::O_PATH, 0);
            assert_eq!(errno(result), Some(libc::ELOOP), "{path:?}");
        }
        // A symlink to a magic link, inside a root, resolves inside that root instead.
        let tree = Tree::new();
        tree.link("/proc/self/root", "magic");
        assert_eq!(errno(tree.read(c"magic/etc/hostname")), Some(libc::ENOENT));
    }

    #[test]
    fn single_name_calls_never_follow_a_symlink() {
        let tree = Tree::new();
        tree.link("dir/file", "link");
        let open = openat_nofollow(tree.root(), c"link", libc::O_RDONLY);
        assert_eq!(errno(open), Some(libc::ELOOP));
        let st = lstatat(tree.root(), c"link").expect("lstat");
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(
            readlinkat(tree.root(), c"link").expect("readlink"),
            b"dir/file"
        );
        unlinkat(tree.root(), c"link", 0).expect("unlink the link");
        assert_eq!(tree.read(c"dir/file").expect("target kept"), "inside");
    }

    #[test]
    fn directories_are_made_listed_renamed_and_removed_by_descriptor() {
        let tree = Tree::new();
        let dir = openat2(tree.root(), c"dir", libc::O_PATH | libc::O_DIRECTORY, 0).expect("dir");
        mkdirat(dir.as_fd(), c"sub", 0o700).expect("mkdir");
        assert_eq!(
            errno(mkdirat(dir.as_fd(), c"sub", 0o700)),
            Some(libc::EEXIST)
        );
        let mut names = read_dir(dir.as_fd()).expect("list");
        names.sort();
        assert_eq!(names, vec![c"file".to_owned(), c"sub".to_owned()]);

        let refused = renameat2(
            dir.as_fd(),
            c"sub",
            dir.as_fd(),
            c"file",
            libc::RENAME_NOREPLACE,
        );
        assert_eq!(errno(refused), Some(libc::EEXIST));
        renameat2(dir.as_fd(), c"sub", tree.root(), c"moved", 0).expect("rename");
        linkat(dir.as_fd(), c"file", tree.root(), c"hard").expect("link");
        assert_eq!(tree.read(c"hard").expect("hard link"), "inside");
        symlinkat(c"/dir/file", tree.root(), c"soft").expect("symlink");
        assert_eq!(tree.read(c"soft").expect("symlink"), "inside");

        assert_eq!(
            errno(unlinkat(tree.root(), c"dir", libc::AT_REMOVEDIR)),
            Some(libc::ENOTEMPTY)
        );
        unlinkat(tree.root(), c"moved", libc::AT_REMOVEDIR).expect("rmdir");
        assert_eq!(errno(lstatat(tree.root(), c"moved")), Some(libc::ENOENT));
    }

    #[test]
    fn files_are_created_with_a_mode_and_take_a_new_mode_and_time() {
        let tree = Tree::new();
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let fd = openat_mode(tree.root(), c"new", flags, 0o600).expect("create");
        std::fs::File::from(fd.try_clone().expect("dup"))
            .write_all(b"data")
            .expect("write");
        assert_eq!(fstat(fd.as_fd()).expect("stat").st_mode & 0o777, 0o600);
        fchmod(fd.as_fd(), 0o640).expect("chmod");
        set_mtime(fd.as_fd(), 1_000_000_000).expect("utimens");
        let st = fstat(fd.as_fd()).expect("stat");
        assert_eq!(st.st_mode & 0o777, 0o640);
        assert_eq!(st.st_mtime as i64, 1_000_000_000);
        assert_eq!(st.st_size, 4);
    }

    #[test]
    fn the_file_system_type_tells_procfs_from_an_ordinary_directory() {
        let proc = open(c"/proc", libc::O_PATH | libc::O_DIRECTORY).expect("open /proc");
        assert_eq!(fs_type(proc.as_fd()).expect("statfs"), 0x9fa0);
        let tree = Tree::new();
        assert_ne!(fs_type(tree.root()).expect("statfs"), 0x9fa0);
    }

    #[test]
    fn a_sealed_memfd_holds_its_bytes_and_refuses_changes() {
        let fd = sealed_memfd(c"sealed", b"source").expect("memfd");
        let mut file = std::fs::File::from(fd);
        let mut text = String::new();
        std::io::Seek::seek(&mut file, io::SeekFrom::Start(0)).expect("seek");
        file.read_to_string(&mut text).expect("read");
        assert_eq!(text, "source");
        assert!(file.write_all(b"x").is_err(), "sealed against writes");
        assert!(file.set_len(0).is_err(), "sealed against shrinking");
    }
}
