//! Tar archives of directories: `GET /files/archive` streams one out, `PUT /files/archive`
//! extracts one in.
//!
//! Extraction is confined to the target directory: every entry is resolved with `openat2`
//! *rooted at that directory*, so not even a symlink made by an earlier entry of the same
//! archive leads out of it. Entries that would escape anyway are refused by name before
//! anything is written for them: absolute paths, `..`, symlinks whose target is absolute or
//! climbs out, hard links to outside names, device nodes and FIFOs, and more entries or bytes
//! than the limits allow. Extraction is not atomic: entries before a refused one stay.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hutch_api::limits::{
    FILES_ARCHIVE_MAX_ENTRIES, FILES_LINK_TARGET_MAX_BYTES, FILES_NAME_MAX_BYTES,
    FILES_PATH_MAX_COMPONENTS,
};
use hutch_api::{ErrorCode, FileType, UploadResult, UploadResults};

use super::fsys::{self, Root, fs_error};
use super::transfer::{BodyReader, BodyWriter, TempFile, blocking, too_large};
use super::{FileQuery, files, query};
use hutch_api::responses::{DiskFull, FileNotFound, Forbidden, PayloadTooLarge};

use crate::Agent;
use crate::error::AgentError;

/// Downloads a directory as a tar archive, streamed.
///
/// Files, directories (empty ones too) and symlinks (as symlinks), with modes and times;
/// special files and other file systems below are left out.
#[utoipa::path(
    get,
    path = "/files/archive",
    operation_id = "downloadArchive",
    tag = "files",
    params(
        ("path" = String, Query, description = "The directory."),
    ),
    responses(
        (status = 200, description = "A tar stream", content_type = "application/x-tar", body = inline(hutch_api::files::Binary)),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    )
)]
pub(super) async fn download(
    State(agent): State<Arc<Agent>>,
    q: Result<FileQuery, AgentError>,
) -> Result<Response, AgentError> {
    let path = query(q)?.path()?;
    let files = files(&agent);
    let dir = {
        let files = Arc::clone(&files);
        let path = path.clone();
        blocking(move || {
            files
                .root
                .resolve(&path, libc::O_RDONLY | libc::O_DIRECTORY)
        })
        .await?
    };
    let (writer, body) = BodyWriter::new();
    tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        let dev = fsys::fstat(dir.as_fd()).map(|st| st.st_dev).unwrap_or(0);
        let result = add_dir(&files.root, &mut builder, dir.as_fd(), b"", dev, 0)
            .and_then(|()| builder.finish());
        if let Err(e) = result {
            builder.get_ref().fail(e);
        } else if let Ok(writer) = builder.into_inner() {
            let mut writer = writer;
            if let Err(e) = io::Write::flush(&mut writer) {
                writer.fail(e);
            }
        }
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

fn header_for(st: &fsys::Stat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(st.st_mode & 0o7777);
    header.set_mtime(st.st_mtime.max(0) as u64);
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_size(0);
    header
}

fn add_dir(
    root: &Root,
    builder: &mut tar::Builder<BodyWriter>,
    dir: BorrowedFd<'_>,
    prefix: &[u8],
    dev: u64,
    depth: usize,
) -> io::Result<()> {
    if depth > 1024 {
        return Err(io::Error::other("directory tree too deep"));
    }
    let mut names = fsys::read_dir(dir)?;
    names.sort();
    for name in names {
        // Names as they are on disk, bytes and all: tar keeps names that are not UTF-8.
        let rel = [prefix, name.to_bytes()].concat();
        let rel_path = Path::new(OsStr::from_bytes(&rel));
        let Ok(st) = fsys::lstatat(dir, &name) else {
            continue;
        };
        match fsys::kind(&st) {
            FileType::File => {
                let Ok(fd) = fsys::openat_nofollow(
                    dir,
                    &name,
                    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
                ) else {
                    continue;
                };
                let Ok(st) = fsys::fstat(fd.as_fd()) else {
                    continue;
                };
                if fsys::kind(&st) != FileType::File {
                    continue;
                }
                let size = st.st_size.max(0) as u64;
                let mut header = header_for(&st, tar::EntryType::Regular);
                header.set_size(size);
                // A file that shrinks while it is read is padded to the size announced.
                let data = std::fs::File::from(fd)
                    .take(size)
                    .chain(io::repeat(0))
                    .take(size);
                builder.append_data(&mut header, rel_path, data)?;
            }
            FileType::Directory => {
                let mut header = header_for(&st, tar::EntryType::Directory);
                let dir_name = [rel.as_slice(), b"/"].concat();
                builder.append_data(
                    &mut header,
                    Path::new(OsStr::from_bytes(&dir_name)),
                    io::empty(),
                )?;
                let Ok(sub) = fsys::openat_nofollow(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY)
                else {
                    continue;
                };
                let same_fs = fsys::fstat(sub.as_fd()).is_ok_and(|s| s.st_dev == dev);
                if same_fs && !root.is_forbidden(sub.as_fd()).unwrap_or(true) {
                    add_dir(root, builder, sub.as_fd(), &dir_name, dev, depth + 1)?;
                }
            }
            FileType::Symlink => {
                let Ok(target) = fsys::readlinkat(dir, &name) else {
                    continue;
                };
                let mut header = header_for(&st, tar::EntryType::Symlink);
                builder.append_link(&mut header, rel_path, OsStr::from_bytes(&target))?;
            }
            FileType::Other => {}
        }
    }
    Ok(())
}

/// Extracts a tar archive into a directory, streamed.
///
/// The directory is created with its parents when missing. Entries keep their modes. Refused,
/// with an error naming the entry (`details.path`): absolute paths, `..`, symlinks that are
/// absolute or climb out of the directory, hard links to outside names, device nodes and
/// FIFOs, more than 100000 entries, more bytes than the maximum upload, and entries whose path
/// runs through a symbolic link (one already there, or one an earlier entry made). Every entry
/// is resolved inside the directory, one real directory at a time, so no symlink leads out.
/// Not atomic as a whole: entries before a refused one stay. Each file lands whole or not at
/// all: it is written beside its place and renamed over what was there once complete, so an
/// archive cut short (or a full disk) leaves the file it would have replaced.
#[utoipa::path(
    put,
    path = "/files/archive",
    operation_id = "uploadArchive",
    tag = "files",
    params(
        ("path" = String, Query, description = "The directory to extract into."),
        ("parents" = Option<bool>, Query, description = "Create the directory's missing parents; default true (false: 404 when its parent is missing)."),
    ),
    request_body(content = inline(hutch_api::files::Binary), content_type = "application/octet-stream",
        description = "A tar stream (any content type is read as one)."),
    responses(
        (status = 200, description = "Extracted", body = hutch_api::UploadResults),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    )
)]
pub(super) async fn upload(
    State(agent): State<Arc<Agent>>,
    q: Result<FileQuery, AgentError>,
    req: Request,
) -> Result<Json<UploadResults>, AgentError> {
    let q = query(q)?;
    let path = q.path()?;
    let parents = q.parents.unwrap_or(true);
    let files = files(&agent);
    let max = files.max_upload_bytes;
    let shown = path.to_string();
    let dest = {
        let files = Arc::clone(&files);
        let path = path.clone();
        blocking(move || {
            if !parents {
                files.root.parent(&path)?; // the parent must exist
            }
            files.root.mkdir_all(&path, 0o755)
        })
        .await?
    };
    let (tx, reader) = BodyReader::new();
    let extractor = {
        let files = Arc::clone(&files);
        tokio::task::spawn_blocking(move || extract(&files.root, &dest, reader, max))
    };
    let mut body = req.into_body().into_data_stream();
    let mut seen = 0u64;
    let mut failure = None;
    {
        use futures_util::StreamExt;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(AgentError::invalid(
                        "body",
                        format!("reading the archive failed: {e}"),
                    ));
                    break;
                }
            };
            seen += chunk.len() as u64;
            if seen > max {
                failure = Some(too_large(&shown, max));
                break;
            }
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    let result = extractor
        .await
        .map_err(|e| AgentError::Runtime(io::Error::other(e)))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let (entries, bytes) = result?;
    Ok(Json(UploadResults {
        files: vec![UploadResult {
            path: shown,
            size: bytes,
            error: None,
        }],
        entries: Some(entries),
    }))
}

/// The refusal of archive entry `name`.
fn refuse(code: ErrorCode, name: &str, why: &str) -> AgentError {
    AgentError::File {
        code,
        message: format!("archive entry {name:?}: {why}"),
        path: name.to_owned(),
    }
}

/// Splits an entry's path into validated names; `None` when it names the directory itself.
fn entry_names(raw: &[u8], name: &str) -> Result<Vec<CString>, AgentError> {
    if raw.first() == Some(&b'/') {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            name,
            "absolute paths are refused",
        ));
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    name,
                    "`..` in a path is refused",
                ));
            }
            part => {
                if part.len() > FILES_NAME_MAX_BYTES || part.contains(&0) {
                    return Err(refuse(ErrorCode::InvalidRequest, name, "invalid name"));
                }
                out.push(
                    CString::new(part)
                        .map_err(|_| refuse(ErrorCode::InvalidRequest, name, "invalid name"))?,
                );
            }
        }
    }
    if out.len() > FILES_PATH_MAX_COMPONENTS {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            name,
            "too many path components",
        ));
    }
    Ok(out)
}

/// Whether a symlink at `depth` names below the root, pointing at `target`, stays inside it.
fn link_stays_inside(depth: usize, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') || target.is_empty() {
        return false;
    }
    let mut level = depth as i64;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                level -= 1;
                if level < 0 {
                    return false;
                }
            }
            _ => level += 1,
        }
    }
    true
}

/// Opens (creating missing ones) the directories `parts` below `dest`, one name at a time and
/// never through a symbolic link: an entry's directories are real directories, so its depth
/// below `dest` is the count of its parents, which is what [`link_stays_inside`] measures a
/// symlink's target against (a link `a/s -> ..` followed by an entry `a/s/t -> ..` would
/// otherwise leave `t` in `dest`, pointing above it).
fn open_dirs(
    root: &Root,
    dest: &OwnedFd,
    parts: &[CString],
    name: &str,
) -> Result<OwnedFd, AgentError> {
    let mut dir = fsys::openat2(dest.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| fs_error("open", name, e))?;
    for part in parts {
        if let Err(e) = fsys::mkdirat(dir.as_fd(), part, 0o755)
            && e.raw_os_error() != Some(libc::EEXIST)
        {
            return Err(entry_error(name, "mkdir", e));
        }
        let next = fsys::openat_nofollow(dir.as_fd(), part, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| {
                let is_link = fsys::lstatat(dir.as_fd(), part)
                    .is_ok_and(|st| fsys::kind(&st) == FileType::Symlink);
                if is_link {
                    refuse(
                        ErrorCode::InvalidRequest,
                        name,
                        &format!(
                            "{:?} on its path is a symbolic link: entries are extracted only into real directories",
                            part.to_string_lossy()
                        ),
                    )
                } else {
                    entry_error(name, "open", e)
                }
            })?;
        root.check(next.as_fd(), name)?;
        dir = next;
    }
    Ok(dir)
}

fn entry_error(name: &str, op: &str, e: io::Error) -> AgentError {
    match fs_error(op, name, e) {
        AgentError::File { code, message, .. } => AgentError::File {
            code,
            message: format!("archive entry {name:?}: {message}"),
            path: name.to_owned(),
        },
        other => other,
    }
}

/// Makes room for a new entry: removes a file or link already at `leaf` (not a directory).
fn clear(dir: BorrowedFd<'_>, leaf: &CString) {
    if let Ok(st) = fsys::lstatat(dir, leaf)
        && fsys::kind(&st) != FileType::Directory
    {
        let _ = fsys::unlinkat(dir, leaf, 0);
    }
}

pub(super) fn extract(
    root: &Root,
    dest: &OwnedFd,
    reader: BodyReader,
    max: u64,
) -> Result<(u64, u64), AgentError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| AgentError::invalid("body", format!("not a tar archive: {e}")))?;
    let (mut count, mut bytes) = (0u64, 0u64);
    for entry in entries {
        let mut entry =
            entry.map_err(|e| AgentError::invalid("body", format!("reading the archive: {e}")))?;
        count += 1;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        if count > FILES_ARCHIVE_MAX_ENTRIES as u64 {
            return Err(refuse(
                ErrorCode::PayloadTooLarge,
                &name,
                &format!("the archive has more than {FILES_ARCHIVE_MAX_ENTRIES} entries"),
            ));
        }
        let parts = entry_names(&raw, &name)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o1777;
        let mtime = entry.header().mtime().ok();
        let Some((leaf, parents)) = parts.split_last() else {
            continue; // the directory itself
        };
        match kind {
            tar::EntryType::Directory => {
                let dir = open_dirs(root, dest, &parts, &name)?;
                let fd = fsys::openat2(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|e| entry_error(&name, "open", e))?;
                fsys::fchmod(fd.as_fd(), mode).map_err(|e| entry_error(&name, "chmod", e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().unwrap_or(u64::MAX);
                if size > max || bytes + size > max {
                    return Err(refuse(
                        ErrorCode::PayloadTooLarge,
                        &name,
                        &format!(
                            "the archive's files are larger than {max} bytes in all, this server's maximum upload"
                        ),
                    ));
                }
                // Written beside its place and renamed over it once whole: an entry cut short
                // (a broken archive, a full disk) leaves what was there before.
                let dir = Arc::new(open_dirs(root, dest, parents, &name)?);
                let (mut temp, fd) = TempFile::create(Arc::clone(&dir), mode)
                    .map_err(|e| entry_error(&name, "create", e))?;
                let mut file = std::fs::File::from(fd);
                let n = io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| entry_error(&name, "write", e))?;
                if n != size {
                    return Err(AgentError::invalid(
                        "body",
                        format!("reading the archive: it ends inside entry {name:?}"),
                    ));
                }
                bytes += n;
                fsys::fchmod(file.as_fd(), mode).map_err(|e| entry_error(&name, "chmod", e))?;
                if let Some(mtime) = mtime {
                    let _ = fsys::set_mtime(file.as_fd(), mtime as i64);
                }
                temp.rename_over(leaf, 0)
                    .map_err(|e| entry_error(&name, "rename into", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.len() > FILES_LINK_TARGET_MAX_BYTES
                    || !link_stays_inside(parents.len(), &target)
                {
                    return Err(refuse(
                        ErrorCode::InvalidRequest,
                        &name,
                        "symbolic links must be relative and stay inside the extracted directory",
                    ));
                }
                let target = CString::new(target)
                    .map_err(|_| refuse(ErrorCode::InvalidRequest, &name, "invalid link target"))?;
                let dir = open_dirs(root, dest, parents, &name)?;
                clear(dir.as_fd(), leaf);
                fsys::symlinkat(&target, dir.as_fd(), leaf)
                    .map_err(|e| entry_error(&name, "symlink", e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_name = String::from_utf8_lossy(&target).into_owned();
                let target_parts = entry_names(&target, &name).map_err(|_| {
                    refuse(
                        ErrorCode::InvalidRequest,
                        &name,
                        &format!(
                            "hard link target {target_name:?} is outside the extracted directory"
                        ),
                    )
                })?;
                let Some((target_leaf, target_parents)) = target_parts.split_last() else {
                    return Err(refuse(
                        ErrorCode::InvalidRequest,
                        &name,
                        "hard link to the directory itself",
                    ));
                };
                let from_dir = open_dirs(root, dest, target_parents, &name)?;
                let dir = open_dirs(root, dest, parents, &name)?;
                clear(dir.as_fd(), leaf);
                fsys::linkat(from_dir.as_fd(), target_leaf, dir.as_fd(), leaf)
                    .map_err(|e| entry_error(&name, "link", e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    &name,
                    "device nodes and FIFOs are refused",
                ));
            }
            other => {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    &name,
                    &format!("unsupported entry type {other:?}"),
                ));
            }
        }
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_that_climb_out_are_caught() {
        assert!(link_stays_inside(0, b"a/b"));
        assert!(link_stays_inside(1, b"../x"));
        assert!(!link_stays_inside(0, b"../x"));
        assert!(!link_stays_inside(2, b"../../../etc"));
        assert!(!link_stays_inside(0, b"/etc/passwd"));
        assert!(link_stays_inside(0, b"a/../b"));
        assert!(!link_stays_inside(0, b"a/../../b"));
    }

    #[test]
    fn entry_paths_are_refused_when_they_escape() {
        assert!(entry_names(b"/etc/passwd", "x").is_err());
        assert!(entry_names(b"a/../../x", "x").is_err());
        assert_eq!(entry_names(b"./a//b/", "x").unwrap().len(), 2);
        assert!(entry_names(b"./", "x").unwrap().is_empty());
    }
}
