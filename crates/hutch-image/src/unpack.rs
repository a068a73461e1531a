//! Unpacking one layer tarball (gzip, zstd or plain) into a directory an overlay can use as a
//! lower layer.
//!
//! Every entry is created relative to a directory descriptor of its parent, and parents are
//! opened with `openat2(RESOLVE_BENEATH)` from the layer root, so no entry is ever written
//! through a path string and no link (absolute, or climbing with `..`) can lead a write out
//! of the layer. Names that are absolute or contain `..` are refused outright, naming the
//! entry. OCI whiteouts become overlayfs' native form for an overlay mounted with `userxattr`
//! in a user namespace, as sandboxes mount theirs: `.wh.NAME` is a 0/0 character device
//! `NAME`, and `.wh..wh..opq` is the `user.overlay.opaque` xattr on its directory. Device
//! nodes are skipped and reported; modes (setuid bits included) and `user.*` xattrs are kept;
//! owners are shifted into the sandbox uid range, so root inside owns what root owned in the
//! image.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};

use crate::digest::{Digest, HashingReader};

/// Prefix of an OCI whiteout entry name.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads, with `userxattr`, to mark a directory opaque.
const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// xattrs with this prefix steer overlayfs itself and are never taken from a layer.
const OVERLAY_XATTR_PREFIX: &str = "user.overlay.";
/// Prefix of xattr records in PAX headers.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Size of the copy buffer; runs of this many zero bytes become holes.
const COPY_CHUNK: usize = 128 * 1024;
/// Largest entry name accepted.
const MAX_NAME_BYTES: usize = 4096;

/// Limits and ownership applied while unpacking.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Host uid (and gid) of root inside a sandbox; owners are shifted by this much.
    pub uid_base: u32,
    /// Number of ids a sandbox maps; owners at or beyond it become `nobody` (65534).
    pub id_count: u32,
    /// Most bytes of file content one layer may hold.
    pub max_bytes: u64,
    /// Most entries one layer may hold.
    pub max_entries: u64,
}

/// What unpacking a layer did.
#[derive(Debug, Clone)]
pub struct UnpackReport {
    /// Digest of the uncompressed tar stream (the layer's `diff_id`).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Bytes the unpacked files take on disk.
    pub disk_bytes: u64,
    /// Entries (or parts of entries) left out, and why.
    pub skipped: Vec<Skipped>,
}

/// One entry, or one attribute of an entry, that unpacking left out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    /// The entry's name in the layer.
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer tries to write outside its root.
    #[error("refused layer entry {entry:?}: {reason}")]
    Hostile {
        /// The entry's name in the layer.
        entry: String,
        /// What it tried.
        reason: &'static str,
    },
    /// The tar stream is malformed or its compression is broken.
    #[error("the layer is not a readable tar stream: {0}")]
    Tar(#[source] io::Error),
    /// A file system operation failed.
    #[error("{op} {entry:?} while unpacking the layer: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The entry's name in the layer.
        entry: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The layer holds more than [`UnpackOptions::max_bytes`].
    #[error("the layer holds more than {0} bytes")]
    TooLarge(u64),
    /// The layer holds more than [`UnpackOptions::max_entries`] entries.
    #[error("the layer holds more than {0} entries")]
    TooManyEntries(u64),
}

/// Unpacks the layer read from `reader` into the existing, empty directory `root`.
pub fn unpack_layer(
    reader: impl Read,
    root: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error("open layer root", &root.display().to_string(), e))?;
    let mut hashing = HashingReader::new(decompress(reader)?);
    let mut unpacker = Unpacker {
        root: root_fd,
        options,
        skipped: Vec::new(),
        disk_bytes: 0,
        content_bytes: 0,
        entries: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(UnpackError::Tar)? {
            let mut entry = entry.map_err(UnpackError::Tar)?;
            unpacker.entry(&mut entry)?;
        }
    }
    let (diff_id, tar_bytes) = hashing.finish().map_err(UnpackError::Tar)?;
    Ok(UnpackReport {
        diff_id,
        tar_bytes,
        disk_bytes: unpacker.disk_bytes,
        skipped: unpacker.skipped,
    })
}

/// Picks the decompressor from the stream's first bytes: gzip, zstd, or none.
fn decompress<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut reader = BufReader::with_capacity(COPY_CHUNK, reader);
    let head = reader.fill_buf().map_err(UnpackError::Tar)?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(UnpackError::Tar)?)
    } else {
        Box::new(reader)
    })
}

struct Unpacker<'o> {
    root: OwnedFd,
    options: &'o UnpackOptions,
    skipped: Vec<Skipped>,
    disk_bytes: u64,
    content_bytes: u64,
    entries: u64,
}

/// An entry's name split into its parent directory and its last component.
struct Target<'a> {
    /// The name as written in the layer, for messages.
    shown: String,
    /// Components of the parent directory, relative to the layer root.
    parent: Vec<&'a OsStr>,
    /// The last component; `None` for the layer root itself.
    name: Option<&'a OsStr>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.options.max_entries {
            return Err(UnpackError::TooManyEntries(self.options.max_entries));
        }
        let raw_path = entry.path_bytes().into_owned();
        let target = split_name(&raw_path)?;
        let header = entry.header();
        let kind = header.entry_type();
        let size = entry.size();
        if matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        ) {
            self.content_bytes = self.content_bytes.saturating_add(size);
            if self.content_bytes > self.options.max_bytes {
                return Err(UnpackError::TooLarge(self.options.max_bytes));
            }
        }
        let meta = Meta {
            mode: header.mode().map_err(UnpackError::Tar)? & 0o7777,
            // Empty owner fields read as root, as Go's archive/tar (Docker's) reads them.
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
        };
        let Some(name) = target.name else {
            // `./` itself: the layer root takes its owner and mode.
            if kind == tar::EntryType::Directory {
                self.set_owner_and_mode(
                    &self
                        .root
                        .try_clone()
                        .map_err(|e| io_fail("dup", &target.shown, e))?,
                    &meta,
                    &target.shown,
                )?;
            }
            return Ok(());
        };
        let parent = self.open_parent(&target)?;
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return rustix::fs::fsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| io_error("mark opaque", &target.shown, e));
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other `.wh..wh.` names are aufs bookkeeping with no meaning here.
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(hostile(&target.shown, "whiteout of no valid name"));
            }
            let hidden = OsStr::from_bytes(hidden);
            self.clear_slot(&parent, hidden, false, &target.shown)?;
            return rustix::fs::mknodat(
                &parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| io_error("create whiteout", &target.shown, e));
        }
        match kind {
            tar::EntryType::Directory => {
                let exists = self.clear_slot(&parent, name, true, &target.shown)?;
                if !exists {
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_error("create directory", &target.shown, e))?;
                }
                let dir = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_error("open directory", &target.shown, e))?;
                self.set_owner_and_mode(&dir, &meta, &target.shown)?;
                self.set_xattrs(entry, &dir, &target.shown)?;
                set_times(&dir, meta.mtime, &target.shown)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear_slot(&parent, name, false, &target.shown)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_error("create file", &target.shown, e))?;
                let mut file = File::from(fd);
                copy_sparse(entry, &mut file, size)
                    .map_err(|e| io_fail("write file", &target.shown, e))?;
                let fd = OwnedFd::from(file);
                self.set_owner_and_mode(&fd, &meta, &target.shown)?;
                self.set_xattrs(entry, &fd, &target.shown)?;
                set_times(&fd, meta.mtime, &target.shown)?;
                let stat =
                    rustix::fs::fstat(&fd).map_err(|e| io_error("stat", &target.shown, e))?;
                self.disk_bytes += stat.st_blocks as u64 * 512;
                Ok(())
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile(&target.shown, "symlink without a target"))?
                    .into_owned();
                self.clear_slot(&parent, name, false, &target.shown)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&link), &parent, name)
                    .map_err(|e| io_error("create symlink", &target.shown, e))?;
                self.chown_entry(&parent, name, &meta, &target.shown)?;
                let times = timestamps(meta.mtime);
                rustix::fs::utimensat(&parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_error("set symlink times", &target.shown, e))
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile(&target.shown, "hard link without a target"))?
                    .into_owned();
                let source = split_name(&link)
                    .map_err(|_| hostile(&target.shown, "hard link to a name outside the layer"))?;
                let Some(source_name) = source.name else {
                    return Err(hostile(&target.shown, "hard link to the layer root"));
                };
                let source_parent = self.open_parent(&source).map_err(|error| match error {
                    UnpackError::Hostile { .. } => hostile(
                        &target.shown,
                        "hard link through a link that leads out of the layer",
                    ),
                    other => other,
                })?;
                self.clear_slot(&parent, name, false, &target.shown)?;
                rustix::fs::linkat(&source_parent, source_name, &parent, name, AtFlags::empty())
                    .map_err(|e| io_error("create hard link", &target.shown, e))
            }
            tar::EntryType::Fifo => {
                self.clear_slot(&parent, name, false, &target.shown)?;
                rustix::fs::mknodat(&parent, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(|e| io_error("create fifo", &target.shown, e))?;
                self.chown_entry(&parent, name, &meta, &target.shown)?;
                rustix::fs::chmodat(
                    &parent,
                    name,
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .map_err(|e| io_error("chmod fifo", &target.shown, e))
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                self.skip(&target.shown, "device node (sandboxes get their own /dev)");
                Ok(())
            }
            other => {
                self.skip(
                    &target.shown,
                    &format!("unsupported tar entry type {other:?}"),
                );
                Ok(())
            }
        }
    }

    fn skip(&mut self, path: &str, reason: &str) {
        tracing::debug!(path, reason, "layer entry skipped");
        self.skipped.push(Skipped {
            path: path.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Opens the parent directory of `target` beneath the layer root, creating missing
    /// directories (owned by root inside) on the way.
    fn open_parent(&self, target: &Target<'_>) -> Result<OwnedFd, UnpackError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let mut dir = self
            .root
            .try_clone()
            .map_err(|e| io_fail("dup", &target.shown, e))?;
        for component in &target.parent {
            match rustix::fs::openat2(&dir, *component, flags, Mode::empty(), resolve) {
                Ok(next) => dir = next,
                Err(rustix::io::Errno::NOENT) => {
                    rustix::fs::mkdirat(&dir, *component, Mode::from_raw_mode(0o755))
                        .map_err(|e| io_error("create parent directory", &target.shown, e))?;
                    self.chown_entry(&dir, component, &Meta::default(), &target.shown)?;
                    dir = rustix::fs::openat2(&dir, *component, flags, Mode::empty(), resolve)
                        .map_err(|e| io_error("open parent directory", &target.shown, e))?;
                }
                Err(rustix::io::Errno::XDEV | rustix::io::Errno::LOOP) => {
                    return Err(hostile(
                        &target.shown,
                        "its path goes through a link that leads out of the layer",
                    ));
                }
                Err(rustix::io::Errno::NOTDIR) => {
                    return Err(hostile(
                        &target.shown,
                        "its path goes through a non-directory",
                    ));
                }
                Err(e) => return Err(io_error("open parent directory", &target.shown, e)),
            }
        }
        Ok(dir)
    }

    /// Makes room for `name` in `parent`. A directory stays when a directory comes again
    /// (and `true` says so); anything else there is removed.
    fn clear_slot(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        directory: bool,
        shown: &str,
    ) -> Result<bool, UnpackError> {
        let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_error("stat", shown, e)),
        };
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        if is_dir && directory {
            return Ok(true);
        }
        if is_dir {
            remove_tree(parent, name).map_err(|e| io_error("replace directory", shown, e))?;
        } else {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| io_error("replace", shown, e))?;
        }
        Ok(false)
    }

    /// The host ids of an entry's owner.
    fn owner(&self, meta: &Meta) -> (Uid, Gid) {
        const NOBODY: u64 = 65_534;
        let shift = |id: u64| {
            let id = if id < u64::from(self.options.id_count) {
                id
            } else {
                NOBODY
            };
            self.options
                .uid_base
                .saturating_add(u32::try_from(id).unwrap_or(u32::MAX))
        };
        (
            Uid::from_raw(shift(meta.uid)),
            Gid::from_raw(shift(meta.gid)),
        )
    }

    /// Gives the entry `name` in `parent` (not following it if it is a symlink) its owner.
    fn chown_entry(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let (uid, gid) = self.owner(meta);
        rustix::fs::chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error("chown", shown, e))
    }

    fn set_owner_and_mode(
        &self,
        fd: &OwnedFd,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let (uid, gid) = self.owner(meta);
        rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| io_error("chown", shown, e))?;
        // After chown, which clears setuid and setgid bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| io_error("chmod", shown, e))
    }

    /// Sets the entry's `user.*` xattrs, except overlayfs' own; reports the others.
    fn set_xattrs<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        fd: &OwnedFd,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Tar)? else {
            return Ok(());
        };
        let mut dropped = Vec::new();
        for extension in extensions {
            let extension = extension.map_err(UnpackError::Tar)?;
            let Some(name) = extension
                .key_bytes()
                .strip_prefix(PAX_XATTR_PREFIX.as_bytes())
                .map(<[u8]>::to_vec)
            else {
                continue;
            };
            let allowed =
                name.starts_with(b"user.") && !name.starts_with(OVERLAY_XATTR_PREFIX.as_bytes());
            if allowed {
                rustix::fs::fsetxattr(
                    fd,
                    OsStr::from_bytes(&name),
                    extension.value_bytes(),
                    XattrFlags::empty(),
                )
                .map_err(|e| io_error("set xattr", shown, e))?;
            } else {
                dropped.push(String::from_utf8_lossy(&name).into_owned());
            }
        }
        if !dropped.is_empty() {
            self.skip(
                shown,
                &format!("xattrs {} (only user.* is kept)", dropped.join(", ")),
            );
        }
        Ok(())
    }
}

/// Owner, mode and time of an entry.
#[derive(Default)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// Splits an entry name into parent components and last component, refusing absolute names,
/// `..` and overlong names. `./a/./b/` is `a/b`.
fn split_name(raw: &[u8]) -> Result<Target<'_>, UnpackError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    if raw.len() > MAX_NAME_BYTES {
        return Err(hostile(&shown, "name longer than 4096 bytes"));
    }
    if raw.starts_with(b"/") {
        return Err(hostile(&shown, "absolute name"));
    }
    if raw.contains(&0) {
        return Err(hostile(&shown, "name with a NUL byte"));
    }
    let mut components: Vec<&OsStr> = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(hostile(&shown, "name climbs out with '..'")),
            other => components.push(OsStr::from_bytes(other)),
        }
    }
    let name = components.pop();
    Ok(Target {
        shown,
        parent: components,
        name,
    })
}

/// Copies `size` bytes of `from` into `to`, leaving holes where whole chunks are zero.
fn copy_sparse(from: &mut impl Read, to: &mut File, size: u64) -> io::Result<()> {
    let mut buffer = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            let n = from.read(&mut buffer[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let chunk = &buffer[..filled];
        if chunk.iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(filled as i64))?;
        } else {
            to.write_all(chunk)?;
        }
        done += filled as u64;
    }
    if done != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("entry ended after {done} of {size} bytes"),
        ));
    }
    to.set_len(size)
}

/// Removes the directory `name` in `parent` and everything in it, without following links.
fn remove_tree(parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    let dir = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    let mut listing = Dir::read_from(&dir)?;
    while let Some(child) = listing.read() {
        let child = child?;
        let child_name = child.file_name().to_bytes();
        if child_name != b"." && child_name != b".." {
            children.push((
                child_name.to_vec(),
                child.file_type() == FileType::Directory,
            ));
        }
    }
    for (child, is_dir) in children {
        let child = OsStr::from_bytes(&child);
        if is_dir {
            remove_tree(&dir, child)?;
        } else {
            rustix::fs::unlinkat(&dir, child, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

fn timestamps(mtime: u64) -> Timestamps {
    let time = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

fn set_times(fd: &impl AsFd, mtime: u64, shown: &str) -> Result<(), UnpackError> {
    rustix::fs::futimens(fd, &timestamps(mtime)).map_err(|e| io_error("set times", shown, e))
}

fn hostile(entry: &str, reason: &'static str) -> UnpackError {
    UnpackError::Hostile {
        entry: entry.to_owned(),
        reason,
    }
}

fn io_error(op: &'static str, entry: &str, errno: rustix::io::Errno) -> UnpackError {
    io_fail(op, entry, errno.into())
}

fn io_fail(op: &'static str, entry: &str, source: io::Error) -> UnpackError {
    UnpackError::Io {
        op,
        entry: entry.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> UnpackOptions {
        UnpackOptions {
            uid_base: 1_000_000_000,
            id_count: 65_536,
            max_bytes: 1 << 20,
            max_entries: 16,
        }
    }

    /// A tar of `count` small files.
    fn files(count: usize) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..count {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(6);
            builder
                .append_data(&mut header, format!("dir/file-{i}"), &b"hello\n"[..])
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn unpack_into(
        layer: &[u8],
        options: &UnpackOptions,
    ) -> (tempfile::TempDir, Result<UnpackReport, UnpackError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = unpack_layer(layer, dir.path(), options);
        (dir, report)
    }

    #[test]
    fn plain_gzip_and_zstd_layers_unpack_alike() {
        let tar = files(2);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).expect("gzip");
        let gzip = gzip.finish().expect("gzip");
        let zstd = zstd::stream::encode_all(&tar[..], 1).expect("zstd");
        for layer in [&tar, &gzip, &zstd] {
            let (dir, report) = unpack_into(layer, &options());
            let report = report.expect("unpacks");
            assert_eq!(
                report.diff_id,
                Digest::of(&tar),
                "the diff id is the plain tar's"
            );
            assert_eq!(report.tar_bytes, tar.len() as u64);
            let content = std::fs::read(dir.path().join("dir/file-1")).expect("file");
            assert_eq!(content, b"hello\n");
        }
    }

    #[test]
    fn layers_beyond_the_bounds_are_refused() {
        let (_dir, report) = unpack_into(&files(17), &options());
        assert!(matches!(report, Err(UnpackError::TooManyEntries(16))));
        let small = UnpackOptions {
            max_bytes: 10,
            ..options()
        };
        let (_dir, report) = unpack_into(&files(2), &small);
        assert!(matches!(report, Err(UnpackError::TooLarge(10))));
        let (_dir, report) = unpack_into(b"not a tar at all, and longer than nothing", &options());
        assert!(matches!(report, Err(UnpackError::Tar(_))), "{report:?}");
    }

    #[test]
    fn names_are_split_and_checked() {
        let target = split_name(b"./usr/./bin/sh").expect("plain name");
        assert_eq!(target.parent, vec![OsStr::new("usr"), OsStr::new("bin")]);
        assert_eq!(target.name, Some(OsStr::new("sh")));
        assert!(split_name(b"./").expect("root").name.is_none());
        for bad in [&b"/etc/passwd"[..], b"../../etc/x", b"a/../../b", b"a/.."] {
            assert!(
                matches!(split_name(bad), Err(UnpackError::Hostile { .. })),
                "{:?} must be refused",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
