//! A one-line progress bar on standard error for transfers (`hutch cp`), drawn only when
//! standard error is a terminal, at most ten times a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 30;

/// The progress of one transfer.
#[derive(Debug)]
pub(crate) struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
    visible: bool,
}

impl Progress {
    /// A transfer of `total` bytes (when known), named `label`; drawn when `enabled` and
    /// standard error is a terminal.
    pub(crate) fn new(label: String, total: Option<u64>, enabled: bool) -> Progress {
        Progress {
            label,
            total,
            done: 0,
            started: Instant::now(),
            drawn: None,
            visible: enabled && std::io::stderr().is_terminal(),
        }
    }

    /// Counts `bytes` more as transferred.
    pub(crate) fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.visible && self.drawn.is_none_or(|at| at.elapsed() >= REDRAW) {
            self.draw();
        }
    }

    /// Bytes transferred so far.
    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    /// Draws the final state and ends the line.
    pub(crate) fn finish(&mut self) {
        if self.visible {
            self.draw();
            eprintln!();
            self.visible = false;
        }
    }

    fn draw(&mut self) {
        self.drawn = Some(Instant::now());
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = format!("{}/s", human_bytes((self.done as f64 / seconds) as u64));
        let line = match self.total {
            Some(total) if total > 0 => {
                let fraction = (self.done as f64 / total as f64).min(1.0);
                let filled = (fraction * BAR_WIDTH as f64) as usize;
                format!(
                    "{} [{}{}] {:>3}% {} / {} {rate}",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(BAR_WIDTH - filled),
                    (fraction * 100.0) as u32,
                    human_bytes(self.done),
                    human_bytes(total),
                )
            }
            _ => format!("{} {} {rate}", self.label, human_bytes(self.done)),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

/// `bytes` in B, KiB, MiB or GiB.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_are_told_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100.0 MiB");
    }
}
