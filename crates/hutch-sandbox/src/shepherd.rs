//! The shepherd: a process-tree kill without cgroups (the agent in container mode).
//!
//! Without a cgroup per command, killing a command's process group misses a descendant that
//! made a session or group of its own (`setsid`, a daemon's double fork), and once its parent
//! is gone nothing tells whose it was. So in container mode every process the agent starts
//! runs under a shepherd: [`crate::process::spawn`] clones the shepherd, which makes a session
//! of its own, becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`), starts the process, and
//! re-executes the agent's own binary as `hutch-shepherd <pid>` (a fresh address space, not a
//! copy of the agent's). Orphans of the process's tree are re-parented to the shepherd, never
//! to the agent. [`run`] waits for the process, reaping orphans meanwhile; once it has ended
//! (by itself, or killed by the agent through its process group), the shepherd kills the rest
//! of the group and then, round after round, every child it has (`/proc/<pid>/task/<pid>/children`,
//! else a scan of `/proc`) until it has none, and exits with the process's own status: the
//! same code, or killed by the same signal.

use std::ffi::CStr;

/// `argv[0]` of a shepherd: `hutch` runs [`run`] when started so.
pub const ARGV0: &str = "hutch-shepherd";

/// [`ARGV0`] as a C string, for `execve`.
pub(crate) const ARGV0_C: &CStr = c"hutch-shepherd";

/// Most rounds of killing children before the shepherd gives up: each round reaps at least
/// one process, so only more processes than this outlive a shepherd.
const KILL_ROUNDS: usize = 100_000;

/// The pid a shepherd was started for, when this process is one (`hutch-shepherd <pid>`).
pub fn requested() -> Option<i32> {
    let mut args = std::env::args_os();
    if args.next()? != ARGV0 {
        return None;
    }
    let pid = args.next()?.to_str()?.parse().ok()?;
    args.next().is_none().then_some(pid)
}

/// Shepherds process `pid` (a child of this process): see the module's documentation.
pub fn run(pid: i32) -> ! {
    // SAFETY: prctl, sigaction and waitpid on this process's own state.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, ARGV0_C.as_ptr(), 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        for signal in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGPIPE,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let status = wait_for(pid);
    // The group first (what the agent's kill of the process would have reached), then every
    // orphan, including the ones that left the group.
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    for _ in 0..KILL_ROUNDS {
        let children = children();
        if children.is_empty() {
            break;
        }
        for child in &children {
            // SAFETY: as above; a child's pid is not reused before this process reaps it.
            unsafe { libc::kill(*child, libc::SIGKILL) };
        }
        if !reap_one() {
            break;
        }
    }
    exit_as(status.unwrap_or(0))
}

/// Waits for `pid`, reaping any other child on the way; its wait status, or `None` when this
/// process has no such child.
fn wait_for(pid: i32) -> Option<libc::c_int> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == pid {
            return Some(status);
        }
        if reaped < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Reaps one child, waiting for it; false when there is none.
fn reap_one() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped > 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// This process's children (its only thread's), living or not yet reaped.
fn children() -> Vec<i32> {
    // SAFETY: getpid has no preconditions.
    let own = unsafe { libc::getpid() };
    if let Ok(list) = std::fs::read_to_string(format!("/proc/{own}/task/{own}/children")) {
        return list
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    // Kernels without CONFIG_PROC_CHILDREN: every process whose parent is this one.
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(own))
        .collect()
}

/// The parent's pid, from `/proc/<pid>/stat` (the fourth field, after the name in parens).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Ends this process as `status` says the shepherded one ended: the same exit code, or the
/// same signal (without a core dump).
fn exit_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: setrlimit, signal, sigprocmask and kill on this process alone.
        unsafe {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal)
        }
    }
    // SAFETY: _exit ends the process.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

/// Writes `pid` in decimal, NUL-terminated, into `buffer`; a pointer to it. No allocation:
/// used between `clone3` and `execve`.
pub(crate) fn format_pid(pid: i32, buffer: &mut [u8; 12]) -> *const libc::c_char {
    let mut value = pid.unsigned_abs();
    let mut at = buffer.len() - 1;
    buffer[at] = 0;
    loop {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 || at == 0 {
            break;
        }
    }
    CStr::from_bytes_with_nul(&buffer[at..]).map_or(std::ptr::null(), CStr::as_ptr)
}

/// The shepherd that could not become `hutch-shepherd` (no `/proc`): waits for `pid`, reaping
/// orphans, and exits with its status, killing only its process group.
///
/// # Safety
/// Between `clone3` and `execve`: raw system calls only.
pub(crate) unsafe fn wait_without_exec(pid: i32) -> ! {
    // SAFETY: waitpid writes only into `status`; kill and _exit take integers.
    unsafe {
        loop {
            let mut status = 0;
            let reaped = libc::waitpid(-1, &mut status, 0);
            if reaped == pid || (reaped < 0 && *libc::__errno_location() != libc::EINTR) {
                libc::kill(-pid, libc::SIGKILL);
                if libc::WIFSIGNALED(status) {
                    libc::_exit(128 + libc::WTERMSIG(status))
                }
                libc::_exit(libc::WEXITSTATUS(status))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_written_in_decimal() {
        let mut buffer = [0u8; 12];
        for pid in [1, 7, 10, 4_194_304, i32::MAX] {
            // SAFETY: format_pid returns a pointer into `buffer`, NUL-terminated.
            let text = unsafe { CStr::from_ptr(format_pid(pid, &mut buffer)) };
            assert_eq!(text.to_str().unwrap(), pid.to_string());
        }
    }

    #[test]
    fn the_parent_is_read_past_a_name_with_parens_and_spaces() {
        let own = std::process::id() as i32;
        // SAFETY: getppid has no preconditions.
        assert_eq!(parent_of(own), Some(unsafe { libc::getppid() }));
    }
}
