//! The trash thread: destroyed sandboxes' directories are renamed into `<data>/trash/` (fast)
//! and deleted here, off the request path (slow on some disks).

use std::fs;
use std::path::PathBuf;

use super::{io, sys_err};
use crate::SandboxError;

/// Starts the thread that deletes trashed sandbox directories, after emptying what an earlier
/// run left in `trash`.
pub(super) fn start_trash_thread(
    trash: PathBuf,
) -> Result<std::sync::mpsc::Sender<PathBuf>, SandboxError> {
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    for entry in fs::read_dir(&trash).map_err(io("list", &trash))?.flatten() {
        let _ = tx.send(entry.path());
    }
    std::thread::Builder::new()
        .name("hutch-trash".into())
        .spawn(move || {
            for dir in rx {
                if let Err(e) = fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a destroyed sandbox's directory");
                }
            }
        })
        .map_err(sys_err("start trash thread"))?;
    Ok(tx)
}
