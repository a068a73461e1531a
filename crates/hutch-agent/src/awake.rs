//! The awake clock: monotonic time that stops while the session is paused, the clock every
//! command, process and execution timeout is measured on.
//!
//! A paused session's processes are frozen, the agent with them, but the kernel's monotonic
//! clock runs on; a timeout measured on it would fire at once on resume for all the time the
//! session spent paused. So the control plane tells the agent, just before it freezes the
//! sandbox, that a pause begins (`POST /pause`), and, just after it thaws it, that it ended
//! (`POST /resume`). Between the two the awake clock stands still, and a timer that the thaw
//! wakes before `/resume` arrives waits for it. Only the agent's timers follow this clock;
//! time inside the session (`date`, `sleep`) is the kernel's.
//!
//! The control plane's `/pause` and `/resume` routes shadow these two paths, so a client
//! cannot reach them through the session proxy.

use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Where the clock stands: the time spent paused so far, and since when it is paused.
#[derive(Debug, Clone, Copy, Default)]
struct Pauses {
    /// Time spent paused in earlier pauses.
    total: Duration,
    /// Start of the current pause, if one is under way.
    since: Option<Instant>,
}

impl Pauses {
    /// The awake time at the monotonic instant `at`, as an [`Instant`] shifted back by the
    /// time spent paused.
    fn awake_at(&self, at: Instant) -> Instant {
        let stood = self.total
            + self
                .since
                .map_or(Duration::ZERO, |s| at.saturating_duration_since(s));
        at.checked_sub(stood).unwrap_or(at)
    }
}

static CLOCK: LazyLock<watch::Sender<Pauses>> =
    LazyLock::new(|| watch::Sender::new(Pauses::default()));

/// The awake clock's current time (comparable only with other awake times).
pub(crate) fn now() -> Instant {
    CLOCK.borrow().awake_at(Instant::now())
}

/// Stops the clock: a pause begins. A second call during the same pause changes nothing.
pub(crate) fn pause() {
    CLOCK.send_modify(|p| {
        if p.since.is_none() {
            p.since = Some(Instant::now());
        }
    });
}

/// Starts the clock again; returns how long it stood (zero if it was not paused).
pub(crate) fn resume() -> Duration {
    let mut stood = Duration::ZERO;
    CLOCK.send_modify(|p| {
        if let Some(since) = p.since.take() {
            stood = since.elapsed();
            p.total += stood;
        }
    });
    stood
}

/// Completes once the awake clock reaches `deadline` (an awake time from [`now`]).
pub(crate) async fn sleep_until(deadline: Instant) {
    let mut changes = CLOCK.subscribe();
    loop {
        let (paused, left) = {
            let pauses = *changes.borrow_and_update();
            let left = deadline.saturating_duration_since(pauses.awake_at(Instant::now()));
            (pauses.since.is_some(), left)
        };
        if !paused && left.is_zero() {
            return;
        }
        if paused {
            // Wait for the resume; the sender lives in a static, so this cannot fail.
            let _ = changes.changed().await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            _ = changes.changed() => {}
        }
    }
}

/// Completes after `duration` of awake time.
pub(crate) async fn sleep(duration: Duration) {
    sleep_until(now() + duration).await;
}

/// Runs `future` for at most `duration` of awake time; `Err(())` when it ran out.
pub(crate) async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, ()> {
    tokio::select! {
        out = future => Ok(out),
        () = sleep(duration) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_stands_still_while_paused() {
        let at = Instant::now();
        let pauses = Pauses {
            total: Duration::from_secs(3),
            since: Some(at),
        };
        let later = at + Duration::from_secs(10);
        // 3 s of earlier pauses and the 10 s of this one do not count.
        assert_eq!(pauses.awake_at(later), at - Duration::from_secs(3));
        let resumed = Pauses {
            total: Duration::from_secs(13),
            since: None,
        };
        assert_eq!(
            resumed.awake_at(later + Duration::from_secs(1)),
            at - Duration::from_secs(2)
        );
    }
}
