//! The executions a context keeps: at most its `historySize` of them, and, with every other
//! context of the session, at most [`INTERPRETER_HISTORY_SESSION_MAX_BYTES`].
//!
//! The agent holds histories in its own memory, which on a host with cgroup v1 is outside the
//! session's memory limit and on cgroup v2 inside the agent's small reserve, so their bytes are
//! bounded per session: each entry's stdout, stderr and error texts at 64 KiB, its result
//! bundles at 1 MiB (`resultsOmitted` counts the rest), and all entries together at 8 MiB, the
//! oldest going first (the recording context's own, then the other contexts').

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use hutch_api::limits::INTERPRETER_HISTORY_SESSION_MAX_BYTES;
use hutch_api::{Frame, HistoryEntry};

/// One context's kept executions, with what each weighs.
pub(super) struct History {
    entries: Mutex<VecDeque<(usize, HistoryEntry)>>,
    /// What the histories of all the session's contexts weigh together.
    session_bytes: Arc<AtomicUsize>,
}

impl History {
    /// An empty history counting its bytes into `session_bytes`.
    pub(super) fn new(session_bytes: Arc<AtomicUsize>) -> History {
        History {
            entries: Mutex::new(VecDeque::new()),
            session_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(usize, HistoryEntry)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `entry`, dropping the oldest past `size` entries, then, while the session's
    /// histories weigh more than their bound, its own oldest but `entry`. Returns whether the
    /// session is still over its bound (the caller then trims other contexts).
    pub(super) fn push(&self, entry: HistoryEntry, size: usize) -> bool {
        let mut entries = self.lock();
        let bytes = entry_bytes(&entry);
        entries.push_back((bytes, entry));
        self.session_bytes.fetch_add(bytes, Ordering::SeqCst);
        while entries.len() > size {
            self.pop(&mut entries);
        }
        while entries.len() > 1 && self.over() {
            self.pop(&mut entries);
        }
        self.over()
    }

    /// Drops its oldest entry if the session is over its bound; whether it dropped one.
    pub(super) fn trim_one(&self) -> bool {
        let mut entries = self.lock();
        if !self.over() || entries.is_empty() {
            return false;
        }
        self.pop(&mut entries);
        true
    }

    /// The newest `limit` entries (all without one), oldest first.
    pub(super) fn newest(&self, limit: Option<usize>) -> Vec<HistoryEntry> {
        let entries = self.lock();
        let skip = limit.map_or(0, |l| entries.len().saturating_sub(l));
        entries.iter().skip(skip).map(|(_, e)| e.clone()).collect()
    }

    fn over(&self) -> bool {
        self.session_bytes.load(Ordering::SeqCst) > INTERPRETER_HISTORY_SESSION_MAX_BYTES
    }

    fn pop(&self, entries: &mut VecDeque<(usize, HistoryEntry)>) {
        if let Some((bytes, _)) = entries.pop_front() {
            self.session_bytes.fetch_sub(bytes, Ordering::SeqCst);
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        let bytes: usize = self.lock().iter().map(|(b, _)| b).sum();
        self.session_bytes.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// What an entry weighs: its texts and its results' JSON.
fn entry_bytes(entry: &HistoryEntry) -> usize {
    let error = match &entry.error {
        Some(Frame::Error {
            name,
            value,
            traceback,
        }) => name.len() + value.len() + traceback.len(),
        _ => 0,
    };
    let results: usize = entry.results.iter().map(json_len).sum();
    entry.code.len() + entry.stdout.len() + entry.stderr.len() + error + results
}

/// The length of `value` as JSON, without building it.
pub(super) fn json_len(value: &serde_json::Map<String, serde_json::Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail, and a map of JSON values always serializes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stdout_bytes: usize) -> HistoryEntry {
        HistoryEntry {
            execution_count: Some(1),
            code: String::new(),
            status: "completed".to_owned(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            duration_ms: 0,
            stdout: "x".repeat(stdout_bytes),
            stderr: String::new(),
            error: None,
            results: Vec::new(),
            results_omitted: 0,
        }
    }

    #[test]
    fn a_history_keeps_its_size_and_the_session_its_bytes() {
        let session = Arc::new(AtomicUsize::new(0));
        let a = History::new(Arc::clone(&session));
        let b = History::new(Arc::clone(&session));
        for _ in 0..5 {
            assert!(!a.push(entry(10), 3));
        }
        assert_eq!(a.newest(None).len(), 3);
        assert_eq!(session.load(Ordering::SeqCst), 30);

        // 64 KiB entries: b keeps what fits in the session's bound beside a's 30 bytes.
        let big = 64 * 1024;
        for _ in 0..200 {
            b.push(entry(big), 1000);
        }
        let kept = b.newest(None).len();
        assert_eq!(kept, (INTERPRETER_HISTORY_SESSION_MAX_BYTES - 30) / big);
        assert!(session.load(Ordering::SeqCst) <= INTERPRETER_HISTORY_SESSION_MAX_BYTES);

        // An entry that leaves the session over its bound once b is down to it: the caller
        // trims the other histories, oldest first.
        let over = a.push(entry(INTERPRETER_HISTORY_SESSION_MAX_BYTES), 1000);
        assert!(over);
        while b.trim_one() {}
        assert!(b.newest(None).is_empty());
        drop(b);
        drop(a);
        assert_eq!(session.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn json_len_is_the_length_of_the_json() {
        let value = serde_json::json!({"text/plain": "é\"x", "image/png": "AAAA"});
        let serde_json::Value::Object(map) = value else {
            unreachable!("an object literal")
        };
        assert_eq!(
            json_len(&map),
            serde_json::to_string(&map).map(|s| s.len()).unwrap_or(0)
        );
    }
}
