//! The server's clock: the wall time read once, at the first use, advanced from then on by
//! the monotonic clock.
//!
//! Session expiry is compared against this clock, so a jump of the system clock while the
//! server runs (`date -s`, an NTP step, a VM restored from a snapshot) neither expires
//! sessions early nor keeps them late: a session's time passes as real time does. The times
//! the API reports are the wall time of the server's start plus the time elapsed since; a
//! server started after a jump reads the new wall time (expiries stored before it then count
//! against the new time).

use std::sync::OnceLock;
use std::time::Instant;

use time::OffsetDateTime;

/// The wall time (unix ms) and the monotonic instant it was read at.
static ANCHOR: OnceLock<(i64, Instant)> = OnceLock::new();

/// The current time in unix milliseconds, immune to jumps of the system clock.
pub(crate) fn now_ms() -> i64 {
    let (wall_ms, at) = ANCHOR.get_or_init(|| (wall_ms(), Instant::now()));
    let elapsed = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
    wall_ms.saturating_add(elapsed)
}

/// The system's wall time in unix milliseconds.
fn wall_ms() -> i64 {
    let ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_starts_at_the_wall_time_and_moves_with_real_time() {
        let before = wall_ms();
        let now = now_ms();
        // The anchor may have been read earlier in this process, never later than now.
        assert!(now <= wall_ms() + 1, "ahead of the wall clock");
        assert!(now + 60_000 >= before, "far behind the wall clock");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(now_ms() >= now + 20, "did not advance with real time");
    }
}
