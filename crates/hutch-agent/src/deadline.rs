//! The end of a sandbox nobody destroys: once the deadline the runtime wrote (the session's
//! expiry plus a grace; see [`hutch_sandbox::deadline`]) has passed, the agent exits, and as
//! PID 1 it takes every process of the sandbox with it. A server that runs destroys its
//! sessions at expiry long before; this bounds the life of a sandbox whose server stopped and
//! did not come back.
//!
//! In container mode the deadline is fixed at start (`HUTCH_SESSION_DEADLINE`), and the agent
//! kills its commands' process groups before it exits; the pod's end takes the rest.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::Deadline;
use crate::reaper::Reaper;

/// The longest the deadline goes unread: a deadline moved earlier (by a restarted server that
/// adopted the sandbox, or a shorter TTL) is seen at most this late. Between reads the agent
/// sleeps until the deadline it read, so an idle sandbox's agent wakes twice a minute, not
/// every second.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How soon a deadline seen passed is read again, to confirm it.
const CONFIRM_INTERVAL: Duration = Duration::from_secs(1);

/// The deadline of a sandbox whose runtime never wrote one: the longest TTL a session may
/// have, plus this, from the moment the agent starts serving.
const UNSET_GRACE: Duration = Duration::from_secs(600);

/// The exit status of an agent that ended its sandbox at its deadline.
pub(crate) const DEADLINE_EXIT: i32 = 0;

/// Watches `deadline` in the background; exits the process once it has passed on two reads in
/// a row (one read could meet a rewrite half done), after killing every process group the
/// agent started (`reaper`).
pub(crate) fn watch(deadline: Deadline, reaper: Arc<Reaper>) {
    let unset =
        SystemTime::now() + Duration::from_secs(hutch_api::limits::TTL_MAX_SECS) + UNSET_GRACE;
    let read = move || match &deadline {
        Deadline::File(file) => Some(file.read().unwrap_or(unset)),
        Deadline::At(at) => Some(*at),
        Deadline::Never => None,
    };
    if read().is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut passed_before = false;
        let mut clock = DeadlineClock::default();
        let mut wait = CONFIRM_INTERVAL;
        loop {
            tokio::time::sleep(wait).await;
            let deadline = read().unwrap_or(unset);
            let left = clock.left(deadline, SystemTime::now(), Instant::now());
            let passed = left.is_zero();
            wait = left.clamp(CONFIRM_INTERVAL, MAX_CHECK_INTERVAL);
            if passed && passed_before {
                tracing::warn!(
                    ?deadline,
                    "the sandbox's deadline passed and no server renewed or destroyed it: ending the sandbox"
                );
                reaper.kill_groups();
                std::process::exit(DEADLINE_EXIT);
            }
            passed_before = passed;
        }
    });
}

/// Measures the time left to a wall-clock deadline on the monotonic clock: the wall clock is
/// read when a deadline is first seen, and from then on only real time counts, so a jump of
/// the system clock neither ends the sandbox early nor keeps it late.
#[derive(Debug, Default)]
struct DeadlineClock {
    /// The deadline last seen, and the monotonic instant it falls on.
    anchored: Option<(SystemTime, Instant)>,
}

impl DeadlineClock {
    /// The time left to `deadline` (zero once it has passed), the wall clock reading `wall` at
    /// the monotonic `now`.
    fn left(&mut self, deadline: SystemTime, wall: SystemTime, now: Instant) -> Duration {
        let at = match self.anchored {
            Some((seen, at)) if seen == deadline => at,
            _ => {
                let left = deadline.duration_since(wall).unwrap_or(Duration::ZERO);
                let at = now.checked_add(left).unwrap_or(now + FAR_AHEAD);
                self.anchored = Some((deadline, at));
                at
            }
        };
        at.saturating_duration_since(now)
    }

    /// Whether `deadline` has passed, the wall clock reading `wall` at the monotonic `now`.
    #[cfg(test)]
    fn passed(&mut self, deadline: SystemTime, wall: SystemTime, now: Instant) -> bool {
        self.left(deadline, wall, now).is_zero()
    }
}

/// Far enough to stand for "never" when a deadline cannot be placed on the monotonic clock.
const FAR_AHEAD: Duration = Duration::from_secs(100 * 365 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_jump_after_the_deadline_was_seen_changes_nothing() {
        let mut clock = DeadlineClock::default();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = Instant::now();
        let deadline = wall + Duration::from_secs(60);
        assert!(!clock.passed(deadline, wall, now));
        // Two hours ahead on the wall clock, one second of real time.
        let jumped = wall + Duration::from_secs(7_200);
        assert!(!clock.passed(deadline, jumped, now + Duration::from_secs(1)));
        // Real time reaches the deadline.
        assert!(clock.passed(deadline, jumped, now + Duration::from_secs(60)));
    }

    #[test]
    fn a_new_deadline_is_placed_from_the_wall_clock_of_the_moment() {
        let mut clock = DeadlineClock::default();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = Instant::now();
        assert!(
            clock.passed(wall - Duration::from_secs(1), wall, now),
            "already past"
        );
        let renewed = wall + Duration::from_secs(30);
        assert!(!clock.passed(renewed, wall, now + Duration::from_secs(1)));
        assert!(clock.passed(renewed, wall, now + Duration::from_secs(31)));
    }

    #[test]
    fn the_time_left_is_real_time_to_the_deadline() {
        let mut clock = DeadlineClock::default();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = Instant::now();
        let deadline = wall + Duration::from_secs(90);
        assert_eq!(clock.left(deadline, wall, now), Duration::from_secs(90));
        // The wall clock jumped, real time went on 10 s.
        let later = now + Duration::from_secs(10);
        assert_eq!(
            clock.left(deadline, wall + Duration::from_secs(3_600), later),
            Duration::from_secs(80)
        );
        assert_eq!(
            clock.left(deadline, wall, now + Duration::from_secs(95)),
            Duration::ZERO
        );
    }
}
