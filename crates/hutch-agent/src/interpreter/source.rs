//! The worker programs' source, handed to each worker as a sealed memory file.
//!
//! The sources are compiled into the agent (`hutch-agent/workers/`). Each is written once into
//! a memfd that is then sealed against every change (`F_SEAL_WRITE`, `F_SEAL_SHRINK`,
//! `F_SEAL_GROW`, `F_SEAL_SEAL`), and every worker gets it as descriptor
//! 5. The worker's interpreter opens it as `/proc/self/fd/5`, so its
//! command line stays short (`python3 -S /proc/self/fd/5`) instead of carrying the whole
//! source. The python worker's file there is only its start (`python_boot.py`), which reads
//! the worker's code from descriptor 6 (`PYTHON_CODE`) and compiles it in a forked child, so
//! that the parser's leftovers do not stay in every worker. (A sandbox of the `default` image
//! starts python workers from code the server compiled ahead instead: see `compiled.rs`.) Nothing in the sandbox can
//! replace either: the seals hold for every descriptor of the file, however it is opened,
//! and the path is on `/proc`, which the sandbox cannot remount (no `CAP_SYS_ADMIN`, and
//! `mount` is filtered).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

/// The path a worker's interpreter opens its source by: its descriptor 5 (after control in 3
/// and control out 4).
pub(crate) const WORKER_SOURCE_PATH: &str = "/proc/self/fd/5";

/// A worker program: its source and the memfd it is served from, made at first use.
pub(crate) struct WorkerSource {
    name: &'static CStr,
    text: &'static str,
    file: OnceLock<OwnedFd>,
}

/// The descriptor the python worker's start reads the worker's code from.
pub(crate) const PYTHON_CODE_FD: i32 = 6;

/// The python worker's start, the file its interpreter runs.
pub(crate) static PYTHON: WorkerSource = WorkerSource::new(
    c"hutch-python-worker",
    include_str!("../../workers/python_boot.py"),
);
/// The python worker's code, read by its start from descriptor [`PYTHON_CODE_FD`].
pub(crate) static PYTHON_CODE: WorkerSource = WorkerSource::new(
    c"hutch-python-worker-code",
    include_str!("../../workers/python_worker.py"),
);
/// The javascript worker.
pub(crate) static NODE: WorkerSource = WorkerSource::new(
    c"hutch-node-worker",
    include_str!("../../workers/node_worker.js"),
);
/// The bash worker.
pub(crate) static BASH: WorkerSource = WorkerSource::new(
    c"hutch-bash-worker",
    include_str!("../../workers/bash_worker.sh"),
);

impl WorkerSource {
    const fn new(name: &'static CStr, text: &'static str) -> WorkerSource {
        WorkerSource {
            name,
            text,
            file: OnceLock::new(),
        }
    }

    /// The sealed memfd holding the source (made on first use).
    pub(crate) fn file(&self) -> io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.file.get() {
            return Ok(fd.as_fd());
        }
        let fd = hutch_sys::fs::sealed_memfd(self.name, self.text.as_bytes())?;
        // Two first uses at once both make one; the loser's is closed.
        let _ = self.file.set(fd);
        self.file
            .get()
            .map(AsFd::as_fd)
            .ok_or_else(|| io::Error::other("worker source not set"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn the_python_start_reads_the_code_from_its_descriptor() {
        let call = format!("exec(_compile_apart({PYTHON_CODE_FD}, ");
        assert!(PYTHON.text.contains(&call), "python_boot.py runs {call}…");
        assert!(PYTHON_CODE.text.contains("_main()"));
    }

    #[test]
    fn the_source_file_holds_the_source_and_refuses_changes() {
        let fd = PYTHON.file().unwrap().try_clone_to_owned().unwrap();
        let mut file = std::fs::File::from(fd);
        let mut text = String::new();
        file.seek(io::SeekFrom::Start(0)).unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, PYTHON.text);
        assert!(file.write_all(b"x").is_err(), "sealed against writes");
        assert!(file.set_len(0).is_err(), "sealed against shrinking");
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert!(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(b"x"))
                .is_err(),
            "reopened, still sealed"
        );
        assert_eq!(
            PYTHON.file().unwrap().as_raw_fd(),
            PYTHON.file().unwrap().as_raw_fd(),
            "made once"
        );
    }
}
