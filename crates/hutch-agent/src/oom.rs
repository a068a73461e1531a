//! Telling when the kernel's out-of-memory killer acted in the session.
//!
//! The runtime hands the agent a read-only descriptor of the session's OOM counters (the
//! memory cgroup's `memory.events` on cgroup v2, `memory.oom_control` on v1, which is not even
//! visible inside the sandbox); its `oom_kill` line counts the processes the OOM killer killed.
//! A command or worker that died of `SIGKILL` (or whose shell reports 137) while that count
//! went up was killed for memory: its result says so and names the session's `memoryMb`. The
//! count is the session's, so a kill is attributed to whatever died of `SIGKILL` while it
//! rose; two processes dying of `SIGKILL` at the same moment, one of them for memory, would
//! both be reported.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use crate::reaper::Exit;

/// The session's OOM counters.
pub(crate) struct OomCounter {
    file: Option<File>,
    memory_mb: Option<u64>,
}

/// The OOM kill count when something started (`None`: not known).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OomMark(Option<u64>);

impl OomCounter {
    /// Reads the counters from `file` (read-only); `memory_mb` is the session's limit.
    pub(crate) fn new(file: Option<OwnedFd>, memory_mb: Option<u64>) -> OomCounter {
        OomCounter {
            file: file.map(File::from),
            memory_mb,
        }
    }

    /// The count now, to compare with when something ends.
    pub(crate) fn mark(&self) -> OomMark {
        OomMark(self.kills())
    }

    /// Whether something that started at `mark` and ended with `exit` was killed by the OOM
    /// killer: it died of `SIGKILL` (or its shell reports 137) and the count went up.
    pub(crate) fn killed(&self, mark: OomMark, exit: Exit) -> bool {
        let sigkill = matches!(exit, Exit::Signal(libc::SIGKILL) | Exit::Code(137));
        sigkill
            && match (mark.0, self.kills()) {
                (Some(before), Some(now)) => now > before,
                _ => false,
            }
    }

    /// What ran out: `the session's memory limit (memoryMb 64)`.
    pub(crate) fn limit(&self) -> String {
        match self.memory_mb {
            Some(mb) => format!("the session's memory limit (memoryMb {mb})"),
            None => "the session's memory limit".to_owned(),
        }
    }

    /// The note added to a killed command's stderr.
    pub(crate) fn note(&self) -> String {
        format!(
            "[hutch: killed by the kernel's out-of-memory killer: {} was reached]",
            self.limit()
        )
    }

    fn kills(&self) -> Option<u64> {
        let file = self.file.as_ref()?;
        let mut buf = [0u8; 512];
        // Reading at offset 0 makes the kernel write the counters afresh.
        let n = file.read_at(&mut buf, 0).ok()?;
        oom_kills(std::str::from_utf8(&buf[..n]).ok()?)
    }
}

/// The `oom_kill` count of a `memory.events` or `memory.oom_control` text.
fn oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_from_either_cgroup_version() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 3\noom_group_kill 0\n";
        assert_eq!(oom_kills(v2), Some(3));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(oom_kills(v1), Some(7));
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn only_a_sigkill_while_the_count_rose_is_an_oom_kill() {
        let dir = std::env::temp_dir().join(format!("hutch-oom-{}", std::process::id()));
        std::fs::write(&dir, "oom_kill 1\n").unwrap();
        let counter = OomCounter::new(Some(File::open(&dir).unwrap().into()), Some(64));
        let mark = counter.mark();
        assert!(
            !counter.killed(mark, Exit::Signal(libc::SIGKILL)),
            "no new kill"
        );
        std::fs::write(&dir, "oom_kill 2\n").unwrap();
        assert!(counter.killed(mark, Exit::Signal(libc::SIGKILL)));
        assert!(counter.killed(mark, Exit::Code(137)), "a shell's report");
        assert!(
            !counter.killed(mark, Exit::Code(1)),
            "it died of something else"
        );
        assert!(!counter.killed(mark, Exit::Signal(libc::SIGSEGV)));
        assert!(counter.note().contains("memoryMb 64"), "{}", counter.note());
        std::fs::remove_file(&dir).unwrap();
        let none = OomCounter::new(None, None);
        assert!(!none.killed(none.mark(), Exit::Signal(libc::SIGKILL)));
    }
}
