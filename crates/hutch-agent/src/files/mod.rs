//! The file API of a sandbox: list, stat, download (Range, gzip), upload (raw and multipart),
//! delete, mkdir, move, and tar archives in and out.
//!
//! Paths are sandbox paths (absolute, or relative to `/workspace`), validated by [`path`] and
//! resolved by the kernel inside the sandbox root by [`fsys`]: nothing the API does can reach
//! outside the sandbox whatever symlinks it meets, nor touch `/proc`, `/sys` or `/dev` inside
//! it. Bodies stream both ways ([`transfer`]); uploads are bounded by the server's maximum
//! upload size (413 naming the file) and land atomically (temporary file, then rename).
//! Files are created by the agent, root of the sandbox's user namespace, so they belong to the
//! sandbox's root user (an unprivileged uid on the host); modes are the ones asked for.

mod archive;
mod content;
mod fsys;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod path;
mod transfer;

use std::ffi::CString;
use std::os::fd::AsFd;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use hutch_api::limits::{FILES_LIST_DEPTH_DEFAULT, FILES_LIST_DEPTH_MAX, FILES_LIST_MAX_ENTRIES};
use hutch_api::responses::{DiskFull, FileNotFound, Forbidden, PayloadTooLarge};
use hutch_api::{ErrorCode, FileInfo, FileList, FileType, MkdirRequest, MoveRequest};
use serde::Deserialize;

use self::fsys::{Root, fs_error};
use self::path::{SandboxPath, parse_mode};
use self::transfer::blocking;
use crate::Agent;
use crate::error::AgentError;
use crate::route_list::{Build, RouteList, route};

/// State of the file API.
pub(crate) struct Files {
    /// The sandbox root.
    pub(crate) root: Root,
    /// Largest upload (file, archive or multipart request) in bytes.
    pub(crate) max_upload_bytes: u64,
}

impl Files {
    /// Opens the sandbox root (the agent's `/`).
    pub(crate) fn new(max_upload_bytes: u64) -> std::io::Result<Files> {
        Ok(Files {
            root: Root::open()?,
            max_upload_bytes,
        })
    }
}

/// The file routes.
pub(crate) fn routes(build: Build) -> RouteList {
    let mut routes = RouteList::new(build);
    route!(routes, list, content::upload_multipart, remove);
    route!(routes, stat);
    route!(routes, content::download, content::upload);
    route!(routes, mkdir);
    route!(routes, move_file);
    route!(routes, archive::download, archive::upload);
    routes
}

fn files(agent: &Agent) -> Arc<Files> {
    Arc::clone(&agent.files)
}

/// Query of routes naming one path.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathQuery {
    path: Option<String>,
    depth: Option<u32>,
    recursive: Option<bool>,
    mode: Option<String>,
    parents: Option<bool>,
    overwrite: Option<bool>,
}

impl PathQuery {
    fn path(&self) -> Result<SandboxPath, AgentError> {
        match &self.path {
            Some(p) => SandboxPath::parse("path", p),
            None => Err(AgentError::invalid(
                "path",
                "the path query parameter is required",
            )),
        }
    }
}

/// [`PathQuery`] read from a request, refusing a query whose percent-escapes are not UTF-8:
/// decoded lossily (as forms are), `%FF` would become U+FFFD and name another file.
pub(crate) struct FileQuery(PathQuery);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FileQuery {
    type Rejection = AgentError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<FileQuery, AgentError> {
        if !percent_decodes_to_utf8(parts.uri.query().unwrap_or("")) {
            return Err(AgentError::invalid(
                "query",
                "the query is not UTF-8 once decoded: the file API takes UTF-8 paths only",
            ));
        }
        Query::<PathQuery>::try_from_uri(&parts.uri)
            .map(|Query(q)| FileQuery(q))
            .map_err(|e| AgentError::invalid("query", format!("invalid query: {}", e.body_text())))
    }
}

/// Whether the bytes `raw` percent-decodes to are UTF-8 (a `%` without two hex digits stays
/// itself, as form decoding leaves it).
fn percent_decodes_to_utf8(raw: &str) -> bool {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .is_ok()
}

fn query(q: Result<FileQuery, AgentError>) -> Result<PathQuery, AgentError> {
    q.map(|FileQuery(q)| q)
}

/// Describes a file from its `lstat`.
pub(crate) fn info(path: &SandboxPath, st: &fsys::Stat, link_target: Option<String>) -> FileInfo {
    let modified = time::OffsetDateTime::from_unix_timestamp(st.st_mtime)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        + time::Duration::nanoseconds(st.st_mtime_nsec as i64);
    FileInfo {
        path: path.to_string(),
        name: path.name().to_owned(),
        file_type: fsys::kind(st),
        size: st.st_size.max(0) as u64,
        mode: format!("{:04o}", st.st_mode & 0o7777),
        uid: st.st_uid,
        gid: st.st_gid,
        modified_at: modified,
        link_target,
    }
}

fn stat_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &CString,
    path: &SandboxPath,
) -> Result<FileInfo, AgentError> {
    let st = fsys::lstatat(dir, name).map_err(|e| fs_error("stat", &path.to_string(), e))?;
    let target = (fsys::kind(&st) == FileType::Symlink)
        .then(|| fsys::readlinkat(dir, name).ok())
        .flatten()
        .map(|t| String::from_utf8_lossy(&t).into_owned());
    Ok(info(path, &st, target))
}

/// Describes one file.
///
/// A final symlink is described, not followed (`linkTarget` gives its target).
#[utoipa::path(
    get,
    path = "/files/stat",
    operation_id = "statFile",
    tag = "files",
    params(
        ("path" = String, Query, description = "The file."),
    ),
    responses(
        (status = 200, description = "The file", body = hutch_api::FileInfo),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    )
)]
async fn stat(
    State(agent): State<Arc<Agent>>,
    q: Result<FileQuery, AgentError>,
) -> Result<Json<FileInfo>, AgentError> {
    let path = query(q)?.path()?;
    let files = files(&agent);
    blocking(move || {
        if path.is_root() {
            let st = fsys::fstat(files.root.fd()).map_err(|e| fs_error("stat", "/", e))?;
            return Ok(Json(info(&path, &st, None)));
        }
        let (dir, name) = files.root.parent(&path)?;
        stat_at(dir.as_fd(), &name, &path).map(Json)
    })
    .await
}

/// Lists a directory.
///
/// Entries below `path` (default `/workspace`), `depth` levels down, sorted by name within
/// each directory. Symlinks are listed, not followed; other file systems below are listed,
/// not entered. At most 10000 entries; past them `truncated` is true.
#[utoipa::path(
    get,
    path = "/files",
    operation_id = "listFiles",
    tag = "files",
    params(
        ("path" = Option<String>, Query, description = "The directory; default `/workspace`."),
        ("depth" = Option<u32>, Query, minimum = 1, maximum = 16, description = "Levels to list, 1 to 16; default 1."),
    ),
    responses(
        (status = 200, description = "The entries", body = hutch_api::FileList),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    )
)]
async fn list(
    State(agent): State<Arc<Agent>>,
    q: Result<FileQuery, AgentError>,
) -> Result<Json<FileList>, AgentError> {
    let q = query(q)?;
    let path = match &q.path {
        Some(p) => SandboxPath::parse("path", p)?,
        None => SandboxPath::parse("path", path::BASE_DIR)?,
    };
    let depth = q.depth.unwrap_or(FILES_LIST_DEPTH_DEFAULT);
    if !(1..=FILES_LIST_DEPTH_MAX).contains(&depth) {
        return Err(AgentError::invalid(
            "depth",
            format!("depth must be between 1 and {FILES_LIST_DEPTH_MAX}, got {depth}"),
        ));
    }
    let files = files(&agent);
    blocking(move || {
        let dir = files
            .root
            .resolve(&path, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut out = FileList {
            path: path.to_string(),
            entries: Vec::new(),
            truncated: false,
        };
        walk(&files.root, dir.as_fd(), &path, depth, &mut out)?;
        Ok(Json(out))
    })
    .await
}

fn walk(
    root: &Root,
    dir: std::os::fd::BorrowedFd<'_>,
    path: &SandboxPath,
    depth: u32,
    out: &mut FileList,
) -> Result<(), AgentError> {
    let shown = path.to_string();
    let dev = fsys::fstat(dir)
        .map_err(|e| fs_error("stat", &shown, e))?
        .st_dev;
    let mut names = fsys::read_dir(dir).map_err(|e| fs_error("list", &shown, e))?;
    names.sort();
    for name in names {
        if out.entries.len() >= FILES_LIST_MAX_ENTRIES {
            out.truncated = true;
            return Ok(());
        }
        let child = path.child(&name.to_string_lossy());
        let Ok(entry) = stat_at(dir, &name, &child) else {
            continue; // removed meanwhile
        };
        let is_dir = entry.file_type == FileType::Directory;
        out.entries.push(entry);
        if is_dir && depth > 1 {
            let Ok(sub) = fsys::openat_nofollow(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY)
            else {
                continue;
            };
            let same_fs = fsys::fstat(sub.as_fd()).is_ok_and(|st| st.st_dev == dev);
            if same_fs && !root.is_forbidden(sub.as_fd()).unwrap_or(true) {
                walk(root, sub.as_fd(), &child, depth - 1, out)?;
            }
        }
    }
    Ok(())
}

/// Deletes a file, a symlink (not its target) or a directory.
///
/// A directory that is not empty needs `recursive=true` (409 otherwise); recursion never
/// follows symlinks nor enters other file systems.
#[utoipa::path(
    delete,
    path = "/files",
    operation_id = "deleteFile",
    tag = "files",
    params(
        ("path" = String, Query, description = "What to delete."),
        ("recursive" = Option<bool>, Query, description = "Delete a directory and everything in it; default false."),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
    )
)]
async fn remove(
    State(agent): State<Arc<Agent>>,
    q: Result<FileQuery, AgentError>,
) -> Result<StatusCode, AgentError> {
    let q = query(q)?;
    let path = q.path()?;
    let recursive = q.recursive.unwrap_or(false);
    let files = files(&agent);
    blocking(move || {
        let (dir, name) = files.root.parent(&path)?;
        fsys::remove(
            &files.root,
            dir.as_fd(),
            &name,
            &path.to_string(),
            recursive,
            0,
        )?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Creates a directory.
#[utoipa::path(
    post,
    path = "/files/mkdir",
    operation_id = "makeDirectory",
    tag = "files",
    request_body = hutch_api::MkdirRequest,
    responses(
        (status = 201, description = "Created (or, with `parents`, already there)", body = hutch_api::FileInfo),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    )
)]
// `POST /files/mkdir`: with `parents` (the default) creates missing parents too and
// succeeds when the directory is already there (`mkdir -p`); with `parents: false` the
// parent must exist and the directory must not (409).
async fn mkdir(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<(StatusCode, Json<FileInfo>), AgentError> {
    let req: MkdirRequest = crate::api::read_json(req.into_body()).await?;
    let path = SandboxPath::parse("path", &req.path)?;
    let mode = parse_mode("mode", req.mode.as_deref(), 0o755)?;
    let files = files(&agent);
    let parents = req.parents.unwrap_or(true);
    blocking(move || {
        let shown = path.to_string();
        // Missing parents get the usual 0755, like `mkdir -p -m`: `mode` is the last one's.
        let (parent, name) = match path.split() {
            Some((dir, name)) if parents => (files.root.mkdir_all(&dir, 0o755)?, name),
            _ => files.root.parent(&path)?,
        };
        let exists = || {
            fs_error(
                "mkdir",
                &shown,
                std::io::Error::from_raw_os_error(libc::EEXIST),
            )
        };
        match fsys::mkdirat(parent.as_fd(), &name, mode) {
            Ok(()) => {
                let fd = fsys::openat_nofollow(
                    parent.as_fd(),
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )
                .map_err(|e| fs_error("open", &shown, e))?;
                fsys::fchmod(fd.as_fd(), mode).map_err(|e| fs_error("chmod", &shown, e))?;
            }
            // With `parents`, a directory already there is fine, and so is a link to one
            // (followed inside the root, as a path is).
            Err(e) if parents && e.raw_os_error() == Some(libc::EEXIST) => {
                files
                    .root
                    .resolve(&path, libc::O_PATH | libc::O_DIRECTORY)
                    .map_err(|_| exists())?;
            }
            Err(e) => return Err(fs_error("mkdir", &shown, e)),
        }
        Ok((
            StatusCode::CREATED,
            Json(stat_at(parent.as_fd(), &name, &path)?),
        ))
    })
    .await
}

/// Moves (renames) a file or directory.
///
/// Within one file system of the sandbox (`/tmp` is its own; across, 409).
#[utoipa::path(
    post,
    path = "/files/move",
    operation_id = "moveFile",
    tag = "files",
    request_body = hutch_api::MoveRequest,
    responses(
        (status = 200, description = "Moved; the file at its new path", body = hutch_api::FileInfo),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
    )
)]
// `POST /files/move`: renames within the sandbox (one file system: `/workspace` and the
// image's directories are one overlay each, `/tmp` is another; across them answers 409).
// Missing parents of the destination are created unless `parents: false`.
async fn move_file(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<Json<FileInfo>, AgentError> {
    let req: MoveRequest = crate::api::read_json(req.into_body()).await?;
    let from = SandboxPath::parse("from", &req.from)?;
    let to = SandboxPath::parse("to", &req.to)?;
    if to.starts_with(&from) {
        return Err(AgentError::invalid(
            "to",
            format!("cannot move {from} into itself ({to})"),
        ));
    }
    let flags = if req.overwrite.unwrap_or(false) {
        0
    } else {
        libc::RENAME_NOREPLACE
    };
    let parents = req.parents.unwrap_or(true);
    let files = files(&agent);
    blocking(move || {
        let (from_dir, from_name) = files.root.parent(&from)?;
        let (to_dir, to_name) = match to.split() {
            Some((dir, name)) if parents => (files.root.mkdir_all(&dir, 0o755)?, name),
            _ => files.root.parent(&to)?,
        };
        fsys::renameat2(
            from_dir.as_fd(),
            &from_name,
            to_dir.as_fd(),
            &to_name,
            flags,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => AgentError::File {
                code: ErrorCode::Conflict,
                message: format!("{to} already exists; pass overwrite=true to replace it"),
                path: to.to_string(),
            },
            Some(libc::ENOENT) => fs_error("move", &from.to_string(), e),
            _ => fs_error(&format!("move {from} to"), &to.to_string(), e),
        })?;
        stat_at(to_dir.as_fd(), &to_name, &to).map(Json)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::percent_decodes_to_utf8;

    #[test]
    fn a_query_must_decode_to_utf8() {
        assert!(percent_decodes_to_utf8(
            "path=/workspace/a%20b&recursive=true"
        ));
        assert!(percent_decodes_to_utf8("path=%E2%82%AC")); // €
        assert!(percent_decodes_to_utf8("path=%zz%2")); // stray `%` stay themselves
        assert!(percent_decodes_to_utf8(""));
        assert!(!percent_decodes_to_utf8("path=a%FFb"));
        assert!(!percent_decodes_to_utf8("path=%E2%82")); // a cut sequence
        assert!(!percent_decodes_to_utf8("p%C3ath=x")); // keys too
    }
}
