//! Fuzz entry points of the interpreter workers' pipes: the control lines of fd 4 and the
//! output text of fd 1 and 2, however the reads cut them.

use tokio::sync::mpsc;

use super::worker::{ControlLine, ControlLines, Event, Output};

/// The lines the control pipe's `reads` make: `Some(line)` for a message, `None` for an
/// overlong line that was dropped.
pub fn control_lines(reads: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
    let mut lines = ControlLines::default();
    let mut out = Vec::new();
    for read in reads {
        lines.feed(read, |line| {
            out.push(match line {
                ControlLine::Message(msg) => Some(msg.to_vec()),
                ControlLine::Overlong => None,
            });
        });
    }
    out
}

/// What one execution's output events carry.
#[derive(Debug, Default)]
pub struct OutputEvents {
    /// The `stdout` chunks, in order.
    pub stdout: Vec<String>,
    /// The `stderr` chunks, in order.
    pub stderr: Vec<String>,
    /// The bytes kept, when the output was truncated.
    pub truncated: Option<usize>,
}

/// The events an execution's output `reads` (`true` for fd 2) turn into, its end included.
pub fn output_events(reads: &[(bool, &[u8])]) -> OutputEvents {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut output = Output::default();
    for (stderr, bytes) in reads {
        output.push(*stderr, bytes, &tx);
    }
    output.finish(&tx);
    drop(tx);
    let mut events = OutputEvents::default();
    while let Ok(event) = rx.try_recv() {
        match event {
            Event::Stdout(text) => events.stdout.push(text),
            Event::Stderr(text) => events.stderr.push(text),
            Event::Truncated(kept) => events.truncated = Some(kept),
            _ => {}
        }
    }
    events
}
