//! Processes: signals, reaping, resource limits.

use std::io;

use rustix::process::{Pid, Resource, Rlimit, WaitOptions};
use rustix::process::{Signal, kill_process, kill_process_group, prlimit, wait};

/// A positive pid; anything else (0 and -1 mean "my group" and "everyone" to `kill`) is
/// refused.
fn pid(raw: i32) -> io::Result<Pid> {
    if raw <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Pid::from_raw(raw).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

fn signal(raw: i32) -> io::Result<Signal> {
    Signal::from_named_raw(raw).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Whether this process runs with the effective user id 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Sends `sig` (a named signal such as `libc::SIGTERM`) to process `pid`.
pub fn kill(pid_raw: i32, sig: i32) -> io::Result<()> {
    Ok(kill_process(pid(pid_raw)?, signal(sig)?)?)
}

/// Sends `sig` to every process of the process group `pgid` (`kill(-pgid, sig)`).
pub fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    Ok(kill_process_group(pid(pgid)?, signal(sig)?)?)
}

/// Collects one exited child without blocking (`waitpid(-1, WNOHANG)`): its pid and raw wait
/// status, or `None` when no child has exited (or there are no children).
pub fn reap_any() -> Option<(i32, i32)> {
    // `wait`, not `waitpid(None)`: the latter is `waitpid(0)`, children of this process group
    // only, and PID 1's children lead groups of their own.
    match wait(WaitOptions::NOHANG) {
        Ok(Some((pid, status))) => Some((pid.as_raw_nonzero().get(), status.as_raw())),
        _ => None,
    }
}

/// Caps the data segment (`RLIMIT_DATA`, soft and hard) of process `pid` at `bytes`.
pub fn limit_data(pid_raw: i32, bytes: u64) -> io::Result<()> {
    let limit = Rlimit {
        current: Some(bytes),
        maximum: Some(bytes),
    };
    prlimit(Some(pid(pid_raw)?), Resource::Data, limit)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// Held by every test that starts a child, since `reap_any` collects any child.
    static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sleep")
    }

    #[test]
    fn a_signal_to_a_process_group_reaches_its_leader() {
        let _children = CHILDREN.lock();
        let mut child = sleeper();
        kill_group(child.id() as i32, libc::SIGKILL).expect("kill group");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn signals_without_a_name_and_pids_that_are_not_positive_are_refused() {
        assert_eq!(
            kill(std::process::id() as i32, 0).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EINVAL))
        );
        assert!(kill_group(0, libc::SIGTERM).is_err());
        assert!(kill(-1, libc::SIGTERM).is_err());
    }

    #[test]
    fn a_data_limit_is_set_on_another_process() {
        let _children = CHILDREN.lock();
        let mut child = sleeper();
        limit_data(child.id() as i32, 512 << 20).expect("prlimit");
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("read limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max data size"))
            .expect("data line");
        assert!(line.contains("536870912"), "{line}");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn reaping_collects_an_exited_child_of_another_process_group_with_its_status() {
        let _children = CHILDREN.lock();
        // Collected by reap_any below, which is what is tested.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("sh")
            .args(["-c", "exit 3"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let want = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            match reap_any() {
                Some((pid, status)) if pid == want => break status,
                _ => {
                    assert!(std::time::Instant::now() < deadline, "child never reaped");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 3);
        assert_eq!(reap_any(), None);
    }
}
