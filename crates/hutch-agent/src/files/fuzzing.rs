//! Fuzz entry points of the file API: path validation, resolution and archive extraction,
//! confined to a scratch directory of the host instead of the sandbox root.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::archive::extract;
use super::fsys::Root;
use super::path::{SandboxPath, parse_mode};
use super::transfer::BodyReader;
use crate::error::AgentError;

/// An error as the API reports it: its code and message.
fn reported(e: AgentError) -> String {
    format!("{:?}: {e}", e.code())
}

fn open_root(root: &Path) -> Result<Root, String> {
    let dir = CString::new(root.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    Root::open_dir(&dir).map_err(|e| format!("opening the root {}: {e}", root.display()))
}

/// Where an open descriptor of this process points on the host.
fn fd_path(fd: &impl AsRawFd) -> Result<PathBuf, String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| e.to_string())
}

/// A path of a request cleaned as the file API cleans it (`/workspace/a`), or the error.
pub fn clean_path(raw: &str) -> Result<String, String> {
    SandboxPath::parse("path", raw)
        .map(|p| p.to_string())
        .map_err(reported)
}

/// A `mode` query value as the file API reads it.
pub fn mode(raw: &str) -> Result<u32, String> {
    parse_mode("mode", Some(raw), 0o644).map_err(reported)
}

/// Resolves a request's path inside the directory `root` as the file API resolves it inside
/// the sandbox: where the opened file and the parent directory of a new entry are on the
/// host (both must be below `root`).
pub fn resolve(root: &Path, raw: &str) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
    let root = open_root(root)?;
    let path = SandboxPath::parse("path", raw).map_err(reported)?;
    let opened = match root.resolve(&path, libc::O_PATH) {
        Ok(fd) => Some(fd_path(&fd)?),
        Err(_) => None,
    };
    let parent = match root.parent(&path) {
        Ok((fd, _name)) => Some(fd_path(&fd)?),
        Err(_) => None,
    };
    Ok((opened, parent))
}

/// Extracts a tar archive into `dest` below the directory `root` as `PUT /files/archive`
/// does, the body arriving in `chunks`; the entries and bytes written, or the error.
pub fn extract_archive(
    root: &Path,
    dest: &str,
    chunks: Vec<Vec<u8>>,
    max: u64,
) -> Result<(u64, u64), String> {
    let root = open_root(root)?;
    let dest = SandboxPath::parse("path", dest).map_err(reported)?;
    let dest = root.mkdir_all(&dest, 0o755).map_err(reported)?;
    let (tx, reader) = BodyReader::new();
    // The request's task feeds the body while the extraction reads it.
    let feeder = std::thread::spawn(move || {
        for chunk in chunks {
            if tx.blocking_send(Bytes::from(chunk)).is_err() {
                return;
            }
        }
    });
    let result = extract(&root, &dest, reader, max).map_err(reported);
    let _ = feeder.join();
    result
}
