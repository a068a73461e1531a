//! The python worker's code compiled ahead, once per server, for the `default` image's
//! interpreter.
//!
//! A worker that compiles its own code keeps what the compiler and its own start allocated
//! and freed as holes in its heap, for as long as it lives: in every idle `default` context.
//! Run from code compiled ahead, an idle worker holds about 0.15 MiB less private memory (see
//! the operations guide on density). The server runs [`compile_python_worker`] at start with
//! the interpreter the `default` image's `PATH` finds (the host's own, which that image
//! shows), as an unprivileged user, and hands the result to every sandbox of that image as a
//! sealed, read-only memfd (`hutch_sandbox::init::PYTHON_COMPILED_FD`). The agent passes it to
//! each python worker as descriptor 5 and runs `python3 -S -c <python_start.py>`, which checks
//! the interpreter's magic number before it unmarshals anything: a worker whose `python3` is
//! another interpreter (the user replaced it) exits with [`WRONG_INTERPRETER_EXIT`], and the
//! agent starts it, and every later worker of the sandbox, from the source instead.
//!
//! One file serves every sandbox: it is sealed against every change, owned by the server's
//! user with mode 0400 (no sandbox user can open it by a path, or watch it), and its
//! descriptor is read-only.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The code `python3 -S -c` runs to start a worker from [`CompiledPython`] at descriptor 5.
pub(crate) const PYTHON_START: &str = include_str!("../../workers/python_start.py");

/// What the server runs to compile the worker: the worker's code on stdin, the magic number
/// and the marshalled code on stdout.
const PYTHON_COMPILE: &str = include_str!("../../workers/python_compile.py");

/// The worker's code, compiled here.
const PYTHON_WORKER: &str = include_str!("../../workers/python_worker.py");

/// Exit code of a worker started from compiled code that its interpreter cannot run.
pub(crate) const WRONG_INTERPRETER_EXIT: i32 = 76;

/// The largest compiled code `python_start.py` reads (it reads this much at once, so that
/// the C library maps the buffer apart from the heap and gives it back whole).
pub const PYTHON_COMPILED_MAX_BYTES: usize = 1 << 20;

/// How long the interpreter may take to compile the worker.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(30);

/// The user the compiling interpreter runs as, when the server runs as root: `nobody`.
const COMPILE_UID: u32 = 65534;

/// Compiles the python worker with the interpreter `python` (an absolute path), as `nobody`
/// when this process is root, into a sealed, read-only memfd of mode 0400: the interpreter's
/// magic number, then the marshalled code.
pub fn compile_python_worker(python: &Path) -> io::Result<OwnedFd> {
    let mut command = Command::new(python);
    command
        .args(["-I", "-S", "-c", PYTHON_COMPILE])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if hutch_sys::process::is_root() {
        use std::os::unix::process::CommandExt;
        // std drops the supplementary groups too when root sets a user id.
        command.uid(COMPILE_UID).gid(COMPILE_UID);
    }
    let mut child = command.spawn()?;
    let stdin = child.stdin.take();
    let writer =
        std::thread::spawn(move || stdin.map(|mut s| s.write_all(PYTHON_WORKER.as_bytes())));
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            s.take(PYTHON_COMPILED_MAX_BYTES as u64 + 1)
                .read_to_end(&mut out)?;
        }
        Ok(out)
    });
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut err = String::new();
        if let Some(s) = stderr {
            let _ = s.take(4096).read_to_string(&mut err);
        }
        err
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > COMPILE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not compile the worker within {COMPILE_TIMEOUT:?}",
                    python.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let out = reader
        .join()
        .map_err(|_| io::Error::other("the reader of the compiled worker panicked"))??;
    let err = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(io::Error::other(format!(
            "{} compiling the worker: {status}: {}",
            python.display(),
            err.trim()
        )));
    }
    if out.len() > PYTHON_COMPILED_MAX_BYTES {
        return Err(io::Error::other(format!(
            "the compiled worker is larger than {PYTHON_COMPILED_MAX_BYTES} bytes"
        )));
    }
    if out.len() <= 4 {
        return Err(io::Error::other(format!(
            "{} wrote no compiled worker",
            python.display()
        )));
    }
    let fd = hutch_sys::fs::sealed_memfd(c"hutch-python-worker-compiled", &out)?;
    read_only(fd)
}

/// `fd` with mode 0400, through a read-only descriptor of its own.
fn read_only(fd: OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::from(fd);
    file.set_permissions(std::fs::Permissions::from_mode(0o400))?;
    let reopened =
        std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).map(OwnedFd::from)?;
    Ok(reopened)
}

/// The compiled worker a sandbox got from the server, and whether its interpreter refused it.
#[derive(Debug)]
pub(crate) struct CompiledPython {
    fd: OwnedFd,
    refused: AtomicBool,
}

impl CompiledPython {
    pub(crate) fn new(fd: OwnedFd) -> CompiledPython {
        CompiledPython {
            fd,
            refused: AtomicBool::new(false),
        }
    }

    /// The compiled code, unless a worker's interpreter refused it before.
    pub(crate) fn usable(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        (!self.refused.load(Ordering::Relaxed)).then(|| self.fd.as_fd())
    }

    /// A worker's interpreter refused it: later workers start from the source.
    pub(crate) fn refuse(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn system_python() -> Option<&'static Path> {
        let python = Path::new("/usr/bin/python3");
        python.exists().then_some(python)
    }

    #[test]
    fn the_compiled_worker_is_sealed_read_only_and_starts_with_the_magic_number() {
        let Some(python) = system_python() else {
            eprintln!("skipped: no /usr/bin/python3");
            return;
        };
        let fd = compile_python_worker(python).expect("compile");
        let mut file = std::fs::File::from(fd);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).expect("read");
        let magic = Command::new(python)
            .args([
                "-c",
                "import sys, importlib.util; sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER)",
            ])
            .output()
            .expect("magic")
            .stdout;
        assert_eq!(&bytes[..4], &magic[..]);
        assert!(bytes.len() > 10_000 && bytes.len() <= PYTHON_COMPILED_MAX_BYTES);
        assert!(file.write_all(b"x").is_err(), "a read-only descriptor");
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let mode = std::fs::metadata(&path).expect("stat");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o400
        );
        let reopened = std::fs::OpenOptions::new().write(true).open(&path);
        assert!(
            reopened.and_then(|mut f| f.write_all(b"x")).is_err(),
            "sealed against writes however it is opened"
        );
    }

    #[test]
    fn an_interpreter_that_fails_is_an_error() {
        let err = compile_python_worker(Path::new("/bin/false")).expect_err("fails");
        assert!(err.to_string().contains("/bin/false"), "{err}");
    }

    #[test]
    fn the_start_reads_all_of_the_largest_compiled_code() {
        assert!(PYTHON_START.contains(&format!(
            "1 << {}",
            PYTHON_COMPILED_MAX_BYTES.trailing_zeros()
        )));
        assert!(PYTHON_START.contains(&format!("_exit({WRONG_INTERPRETER_EXIT})")));
        assert!(
            !PYTHON_START.trim_end().contains('\n'),
            "one line: `ps` shows it"
        );
    }
}
