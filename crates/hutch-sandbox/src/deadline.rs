//! A sandbox's deadline: the time after which it ends itself, whether or not a server is
//! there to destroy it.
//!
//! The agent creates the file [`FILE`] in its sandbox's host directory before it leaves the
//! host's file system (it keeps a read-only descriptor; nothing inside the sandbox can reach
//! the file). The runtime writes the deadline into it when a session is created, when its TTL
//! is extended and when a restarted server adopts it (see `Runtime::set_deadline`): the
//! session's expiry plus a grace. The agent reads it at the deadline it read last and at least
//! every 30 s; once the deadline has passed the agent exits, and as PID 1 of its pid
//! namespace it takes every process of the sandbox with it. What is left on the host
//! (cgroups, directories) is swept at the next server start.
//!
//! The deadline is written as a fixed-width decimal count of milliseconds since the Unix
//! epoch and a newline, always at offset 0, so a rewrite never needs truncating.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file's name in the sandbox's host directory.
pub const FILE: &str = "deadline";

/// Bytes of one encoded deadline: 20 digits and a newline.
const ENCODED_BYTES: usize = 21;

/// The encoded form of `deadline`.
fn encode(deadline: SystemTime) -> [u8; ENCODED_BYTES] {
    let ms = deadline
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .min(u128::from(u64::MAX));
    let mut out = [0u8; ENCODED_BYTES];
    out.copy_from_slice(format!("{ms:020}\n").as_bytes());
    out
}

/// The deadline in `bytes`, or `None` when there is none (an empty file: not yet claimed) or
/// the bytes are not one.
fn decode(bytes: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let ms: u64 = text.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Writes `deadline` into the deadline file of the sandbox directory `dir` (by the runtime).
pub(crate) fn write(dir: &Path, deadline: SystemTime) -> io::Result<()> {
    let path = dir.join(FILE);
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    file.write_all_at(&encode(deadline), 0)
        .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
}

/// The sandbox's deadline file, open for reading (by the agent).
#[derive(Debug)]
pub struct DeadlineFile(File);

impl DeadlineFile {
    /// Creates (or opens) the deadline file in the sandbox directory `dir`, and keeps it open
    /// read-only and close-on-exec.
    pub(crate) fn create_in(dir: &Path) -> io::Result<DeadlineFile> {
        let path = dir.join(FILE);
        let failed =
            |e: io::Error| io::Error::new(e.kind(), format!("create {}: {e}", path.display()));
        OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(failed)?;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map(DeadlineFile)
            .map_err(failed)
    }

    /// The deadline written last; `None` while none has been written.
    pub fn read(&self) -> Option<SystemTime> {
        let mut buf = [0u8; ENCODED_BYTES];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        decode(&buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_reads_back_to_the_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let file = DeadlineFile::create_in(dir.path()).unwrap();
        assert_eq!(file.read(), None, "nothing written yet");

        let first = UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        write(dir.path(), first).unwrap();
        assert_eq!(file.read(), Some(first));

        // A rewrite replaces the whole value in place.
        let later = first + Duration::from_secs(3600);
        write(dir.path(), later).unwrap();
        assert_eq!(file.read(), Some(later));
        assert_eq!(
            std::fs::read(dir.path().join(FILE)).unwrap().len(),
            ENCODED_BYTES
        );
    }

    #[test]
    fn garbage_is_no_deadline() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"soon\n"), None);
        assert_eq!(decode(b"-5\n"), None);
        assert_eq!(
            decode(b"00000000000000001000\n"),
            Some(UNIX_EPOCH + Duration::from_secs(1))
        );
    }
}
