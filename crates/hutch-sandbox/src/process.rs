//! Starting a process inside a sandbox, confined: straight into a cgroup, in a session of its
//! own, under the children's seccomp filter.
//!
//! The agent starts every user process through [`spawn`]. It uses `clone3` with
//! `CLONE_INTO_CGROUP`, so a command begins life inside its own cgroup: moving a process
//! between cgroups afterwards would cost a full RCU grace period (about 10 ms) on the first
//! move. Between `clone3` and `execve` the child makes raw system calls only, on memory
//! prepared before the clone. Where the limits are cgroup v1, the child also moves itself into
//! the sandbox's v1 `user/` cgroups (see [`start_in_cgroups`]) before anything else: it moves a
//! single thread (writing `0` to a `tasks` file), which takes no global lock.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;

/// Whether every process [`spawn`] starts runs under a shepherd (see [`crate::shepherd`]).
static SHEPHERDED: AtomicBool = AtomicBool::new(false);

/// Makes every process [`spawn`] starts from now on run under a shepherd: a child of the
/// caller that is a subreaper of the process's tree and kills the rest of that tree when the
/// process ends. Set once, by the agent in container mode (no cgroups to kill a tree with).
pub(crate) fn shepherd_every_process() {
    SHEPHERDED.store(true, Ordering::Relaxed);
}

/// Write-only descriptors of v1 `tasks` files every started process joins.
static START_IN: OnceLock<Vec<OwnedFd>> = OnceLock::new();

/// Makes every process [`spawn`] starts from now on move itself into the v1 cgroups whose
/// `tasks` files `tasks` are (opened write-only by the host). Set once, by the sandbox's init.
pub(crate) fn start_in_cgroups(tasks: Vec<OwnedFd>) {
    let _ = START_IN.set(tasks);
}

/// What to start.
#[derive(Debug)]
pub struct ProcessSpec<'a> {
    /// Absolute path of the program (resolve `PATH` with [`find_program`]).
    pub program: &'a Path,
    /// Arguments, `argv[0]` first.
    pub argv: &'a [String],
    /// The whole environment.
    pub env: &'a [(String, String)],
    /// Working directory.
    pub cwd: &'a Path,
    /// Becomes the child's descriptors 0, 1 and 2.
    pub stdio: [BorrowedFd<'a>; 3],
    /// A cgroup v2 directory to start in.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// The user and group to run as (`uid`, `gid`, inside the sandbox); root when absent.
    pub user: Option<(u32, u32)>,
}

/// How to start a process, beyond what it runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpawnOptions<'a> {
    /// Make descriptor 0 (a terminal) the controlling terminal of the process's new session
    /// (`TIOCSCTTY`), as a login shell on a terminal has it.
    pub controlling_terminal: bool,
    /// Descriptors the child gets as 3, 4, … (at most 8), e.g. a worker's control channel.
    pub extra_fds: &'a [BorrowedFd<'a>],
}

/// A started process.
#[derive(Debug)]
pub struct Process {
    /// Its pid (in the caller's pid namespace); it leads a session and process group of that
    /// id.
    pub pid: i32,
    /// The caller's child whose exit reports the process's: the process itself, or its
    /// shepherd (container mode), which exits with the process's status once it has killed
    /// what is left of the process's tree.
    pub waited: i32,
    /// A pidfd for `waited`.
    pub pidfd: OwnedFd,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// An argument, variable or path contains a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    /// The working directory cannot be entered.
    #[error("cannot enter working directory {cwd}: {source}")]
    Cwd {
        /// The directory.
        cwd: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program cannot be executed.
    #[error("cannot execute {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Becoming the requested user failed.
    #[error("cannot run as uid {uid} gid {gid}: {source}")]
    User {
        /// The user id.
        uid: u32,
        /// The group id.
        gid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating the process failed.
    #[error("cannot create process: {0}")]
    Clone(#[source] io::Error),
}

/// The extra seccomp filter for processes the agent starts (`clone3` → `ENOSYS`), compiled
/// once. The agent itself runs under the main filter only, because it needs `clone3` to start
/// processes straight into their cgroups.
pub struct ChildFilter {
    program: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for ChildFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChildFilter({} instructions)", self.program.len())
    }
}

impl ChildFilter {
    /// Compiles the filter.
    pub fn new() -> io::Result<ChildFilter> {
        let (_, no_clone3) = crate::seccomp::programs()?;
        Ok(ChildFilter {
            program: no_clone3
                .into_iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect(),
        })
    }
}

/// `PATH` of processes in a sandbox whose image or session sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds `name` on `path` (a `PATH` value) the way `execvp` would. Names with a `/` are taken
/// as they are.
pub fn find_program(name: &str, path: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        return Some(name.into());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            let Ok(c) = CString::new(candidate.as_os_str().as_bytes()) else {
                return false;
            };
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
        })
}

fn c(s: &[u8], what: &'static str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Nul(what))
}

/// Failure report from child to parent: the stage and the errno.
const STAGE_CWD: u32 = 1;
const STAGE_EXEC: u32 = 2;
const STAGE_USER: u32 = 3;
const STAGE_CGROUP: u32 = 4;
/// Not a failure: the shepherd reports the pid of the process it started.
const STAGE_PID: u32 = 5;

/// Starts a process. The caller reaps it (it is a child of the calling process).
pub fn spawn(spec: &ProcessSpec<'_>, filter: &ChildFilter) -> Result<Process, SpawnError> {
    spawn_with(spec, filter, SpawnOptions::default())
}

/// Starts a process with options. The caller reaps it.
pub fn spawn_with(
    spec: &ProcessSpec<'_>,
    filter: &ChildFilter,
    options: SpawnOptions<'_>,
) -> Result<Process, SpawnError> {
    let extra = options.extra_fds;
    if extra.len() > 8 {
        return Err(SpawnError::Clone(io::Error::from_raw_os_error(
            libc::EINVAL,
        )));
    }
    let first_free = 3 + extra.len() as RawFd;
    let program = c(spec.program.as_os_str().as_bytes(), "program")?;
    let cwd = c(spec.cwd.as_os_str().as_bytes(), "cwd")?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| c(a.as_bytes(), "argument"))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| c(format!("{k}={v}").as_bytes(), "environment variable"))
        .collect::<Result<_, _>>()?;
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let fprog = libc::sock_fprog {
        len: filter.program.len() as u16,
        filter: filter.program.as_ptr().cast_mut(),
    };
    let (err_r, err_w) = sys::pipe().map_err(SpawnError::Clone)?;
    // The error pipe must survive the dup2s onto 3, 4, … too.
    let err_w = if extra.is_empty() {
        err_w
    } else {
        let high = sys::dup_above(err_w.as_raw_fd(), first_free).map_err(SpawnError::Clone)?;
        drop(err_w);
        high
    };
    let stdio: [RawFd; 3] = [
        spec.stdio[0].as_raw_fd(),
        spec.stdio[1].as_raw_fd(),
        spec.stdio[2].as_raw_fd(),
    ];
    // Sources must not be targets, or one dup2 could overwrite another's source.
    let high: Vec<OwnedFd> = stdio
        .iter()
        .map(|fd| sys::dup_above(*fd, first_free))
        .collect::<io::Result<_>>()
        .map_err(SpawnError::Clone)?;
    let extra_high: Vec<OwnedFd> = extra
        .iter()
        .map(|fd| sys::dup_above(fd.as_raw_fd(), first_free))
        .collect::<io::Result<_>>()
        .map_err(SpawnError::Clone)?;
    let extra_raw: Vec<RawFd> = extra_high.iter().map(|fd| fd.as_raw_fd()).collect();
    let high_raw: [RawFd; 3] = [
        high[0].as_raw_fd(),
        high[1].as_raw_fd(),
        high[2].as_raw_fd(),
    ];
    let join: Vec<RawFd> = START_IN
        .get()
        .map(|fds| fds.iter().map(AsRawFd::as_raw_fd).collect())
        .unwrap_or_default();
    let child = ChildPlan {
        join: &join,
        stdio: high_raw,
        extra: &extra_raw,
        err: err_w.as_raw_fd(),
        cwd: &cwd,
        program: &program,
        argv: &argv_ptrs,
        env: &env_ptrs,
        fprog: &fprog,
        controlling_terminal: options.controlling_terminal,
        user: spec.user,
    };
    let shepherded = SHEPHERDED.load(Ordering::Relaxed);

    let mut pidfd: RawFd = -1;
    let mut args = sys::CloneArgs {
        flags: libc::CLONE_PIDFD as u64
            | if spec.cgroup.is_some() {
                sys::CLONE_INTO_CGROUP
            } else {
                0
            },
        pidfd: (&mut pidfd as *mut RawFd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: spec.cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
        ..sys::CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args; without CLONE_VM the child gets a copy of this
    // address space and runs only `ChildPlan::run`, which never returns.
    let rc = unsafe { sys::clone3(&mut args) };
    if rc < 0 {
        return Err(SpawnError::Clone(sys::last_error("clone3")));
    }
    if rc == 0 {
        if shepherded {
            // SAFETY: we are the child of clone3; see ChildPlan::shepherd.
            unsafe { child.shepherd() }
        }
        // SAFETY: we are the child of clone3; see ChildPlan::run.
        unsafe { child.run() }
    }
    drop(err_w);
    drop(high);
    drop(extra_high);
    // SAFETY: the kernel stored a new pidfd owned by this process.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let waited = rc as i32;
    // Records of 8 bytes (stage, value): the shepherd's `STAGE_PID` first, then a failure
    // of the shepherd or of the process, if any. Success is the end of the pipe (close on
    // exec) with no failure.
    let mut report = [0u8; 16];
    let mut got = 0;
    let mut file = std::fs::File::from(err_r);
    while got < report.len() {
        match io::Read::read(&mut file, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let records: Vec<(u32, i32)> = report[..got - got % 8]
        .chunks_exact(8)
        .map(|r| {
            (
                u32::from_ne_bytes([r[0], r[1], r[2], r[3]]),
                i32::from_ne_bytes([r[4], r[5], r[6], r[7]]),
            )
        })
        .collect();
    let pid = records
        .iter()
        .find(|(stage, _)| *stage == STAGE_PID)
        .map_or(waited, |(_, pid)| *pid);
    let Some(&(stage, errno)) = records.iter().find(|(stage, _)| *stage != STAGE_PID) else {
        return Ok(Process { pid, waited, pidfd });
    };
    // The child (or its shepherd) failed before exec and exits: reap it here.
    sys::wait_blocking(waited);
    let source = io::Error::from_raw_os_error(errno);
    Err(if stage == STAGE_CWD {
        SpawnError::Cwd {
            cwd: spec.cwd.display().to_string(),
            source,
        }
    } else if stage == STAGE_CGROUP {
        SpawnError::Clone(source)
    } else if let (STAGE_USER, Some((uid, gid))) = (stage, spec.user) {
        SpawnError::User { uid, gid, source }
    } else {
        SpawnError::Exec {
            program: spec.program.display().to_string(),
            source,
        }
    })
}

/// Everything the child needs, prepared before `clone3`.
struct ChildPlan<'a> {
    /// v1 `tasks` files to write `0` to.
    join: &'a [RawFd],
    stdio: [RawFd; 3],
    /// Become descriptors 3, 4, ….
    extra: &'a [RawFd],
    err: RawFd,
    cwd: &'a CString,
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    fprog: &'a libc::sock_fprog,
    controlling_terminal: bool,
    user: Option<(u32, u32)>,
}

impl ChildPlan<'_> {
    /// The shepherd, between `clone3` and its own `execve`: a session of its own, subreaper
    /// of what it starts; starts the process (see [`ChildPlan::run`]), reports its pid, then
    /// becomes `hutch-shepherd <pid>` ([`crate::shepherd::run`]). Where that cannot be
    /// executed (no `/proc`), it waits for the process and exits with its status.
    ///
    /// # Safety
    /// Only in the child of `clone3` without `CLONE_VM`: raw system calls, no allocation.
    unsafe fn shepherd(&self) -> ! {
        // SAFETY: raw system calls on descriptors and memory this process owns, as the
        // function's contract requires.
        unsafe {
            let report = |stage: u32, value: i32| {
                let mut record = [0u8; 8];
                record[..4].copy_from_slice(&stage.to_ne_bytes());
                record[4..].copy_from_slice(&value.to_ne_bytes());
                libc::write(self.err, record.as_ptr().cast(), 8);
            };
            crate::sys::reset_signals_for_exec();
            libc::setsid();
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            let mut args = sys::CloneArgs {
                exit_signal: libc::SIGCHLD as u64,
                ..sys::CloneArgs::default()
            };
            let pid = sys::clone3(&mut args);
            if pid == 0 {
                self.run()
            }
            if pid < 0 {
                report(STAGE_CGROUP, *libc::__errno_location());
                libc::_exit(127)
            }
            let pid = pid as i32;
            report(STAGE_PID, pid);
            libc::close(self.err);
            // Nothing of the caller's crosses into the shepherd.
            libc::syscall(
                libc::SYS_close_range,
                0u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            let mut digits = [0u8; 12];
            let pid_arg = crate::shepherd::format_pid(pid, &mut digits);
            let argv = [crate::shepherd::ARGV0_C.as_ptr(), pid_arg, std::ptr::null()];
            let env = [std::ptr::null::<libc::c_char>()];
            libc::execve(c"/proc/self/exe".as_ptr(), argv.as_ptr(), env.as_ptr());
            crate::shepherd::wait_without_exec(pid)
        }
    }

    /// # Safety
    /// Only in the child of `clone3` without `CLONE_VM`: raw system calls, no allocation.
    unsafe fn run(&self) -> ! {
        // SAFETY: raw system calls on descriptors and memory this process owns, as the
        // function's contract requires.
        unsafe {
            let fail = |stage: u32| -> ! {
                let errno = *libc::__errno_location();
                let mut report = [0u8; 8];
                report[..4].copy_from_slice(&stage.to_ne_bytes());
                report[4..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(self.err, report.as_ptr().cast(), 8);
                libc::_exit(127)
            };
            for fd in self.join {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(STAGE_CGROUP);
                }
            }
            libc::setsid();
            for (target, source) in self.stdio.iter().enumerate() {
                libc::dup2(*source, target as RawFd);
            }
            for (i, source) in self.extra.iter().enumerate() {
                libc::dup2(*source, 3 + i as RawFd);
            }
            // A terminal on 0 becomes the controlling terminal of the session just made.
            if self.controlling_terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                fail(STAGE_EXEC);
            }
            // Nothing but 0, 1, 2 and the extra descriptors crosses exec (the error pipe
            // closes on success).
            libc::syscall(
                libc::SYS_close_range,
                3u32 + self.extra.len() as u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // The agent may be shielded from the OOM killer; what it runs is not.
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            // The image's user: its group alone, then the ids (which clears the capabilities).
            if let Some((uid, gid)) = self.user {
                let groups = [gid];
                if libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) != 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                    || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
                {
                    fail(STAGE_USER);
                }
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                fail(STAGE_CWD);
            }
            // Rust ignores SIGPIPE, tokio may block signals, and the server may have inherited
            // ignored ones: give the program the defaults.
            crate::sys::reset_signals_for_exec();
            if libc::syscall(
                libc::SYS_seccomp,
                1, /* SECCOMP_SET_MODE_FILTER */
                0,
                self.fprog as *const libc::sock_fprog,
            ) != 0
            {
                fail(STAGE_EXEC);
            }
            libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.env.as_ptr());
            fail(STAGE_EXEC)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path() {
        assert_eq!(
            find_program("sh", "/nonexistent:/bin"),
            Some("/bin/sh".into())
        );
        assert_eq!(find_program("./x", ""), Some("./x".into()));
        assert_eq!(
            find_program("surely-not-a-program-name", "/bin:/usr/bin"),
            None
        );
    }

    fn run(program: &str, argv: &[&str], cwd: &str) -> Result<i32, SpawnError> {
        let null = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&null);
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let spec = ProcessSpec {
            program: Path::new(program),
            argv: &argv,
            env: &[("PATH".into(), "/bin".into())],
            cwd: Path::new(cwd),
            stdio: [fd, fd, fd],
            cgroup: None,
            user: None,
        };
        let process = spawn(&spec, &ChildFilter::new().unwrap())?;
        let mut status = 0;
        // SAFETY: waiting for the child just started.
        unsafe { libc::waitpid(process.pid, &mut status, 0) };
        Ok(libc::WEXITSTATUS(status))
    }

    #[test]
    fn runs_and_reports_exit_code() {
        assert_eq!(run("/bin/sh", &["sh", "-c", "exit 7"], "/").unwrap(), 7);
    }

    #[test]
    fn children_run_under_a_seccomp_filter() {
        let code = run(
            "/bin/sh",
            &["sh", "-c", "grep -q '^Seccomp:.*2' /proc/self/status"],
            "/",
        )
        .unwrap();
        assert_eq!(code, 0, "the child runs under a seccomp filter");
    }

    #[test]
    fn bad_cwd_and_missing_program_are_reported() {
        assert!(matches!(
            run("/bin/true", &["true"], "/nonexistent-dir"),
            Err(SpawnError::Cwd { .. })
        ));
        assert!(matches!(
            run("/nonexistent-program", &["x"], "/"),
            Err(SpawnError::Exec { .. })
        ));
    }
}
