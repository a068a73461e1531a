//! One execution: wait for the context's turn, (re)start its worker, install `libraries`, run
//! the cell, turn the worker's events into frames, enforce the timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hutch_api::interpreter::DEFAULT_CONTEXT_ID;
use hutch_api::limits::{
    INTERPRETER_CODE_MAX_BYTES, INTERPRETER_HISTORY_OUTPUT_MAX_BYTES,
    INTERPRETER_HISTORY_RESULTS_MAX_BYTES, INTERPRETER_LIBRARIES_MAX,
    INTERPRETER_LIBRARY_MAX_BYTES, INTERPRETER_QUEUE_MAX,
};
use hutch_api::{ExecuteRequest, Frame, HistoryEntry};
use tokio::sync::mpsc;

use super::history::json_len;
use super::worker::{Event, signal_name};
use super::{Context, validate_timeout};
use crate::Agent;
use crate::error::AgentError;
use crate::reaper::Exit;

/// How long a worker may take to honour SIGINT after a timeout before its cgroup is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// How long the exit of a killed worker may take to be reported.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Checks an execution request (the context is looked up later).
pub(crate) fn validate_execute(req: &ExecuteRequest) -> Result<(), AgentError> {
    if req.code.len() > INTERPRETER_CODE_MAX_BYTES {
        return Err(AgentError::invalid(
            "code",
            format!("code is longer than {INTERPRETER_CODE_MAX_BYTES} bytes"),
        ));
    }
    if let Some(t) = req.timeout {
        validate_timeout("timeout", t)?;
    }
    if let Some(envs) = &req.envs {
        hutch_api::env::check("envs", envs)?;
    }
    if let Some(libs) = &req.libraries {
        if libs.len() > INTERPRETER_LIBRARIES_MAX {
            return Err(AgentError::invalid(
                "libraries",
                format!("at most {INTERPRETER_LIBRARIES_MAX} libraries"),
            ));
        }
        for lib in libs {
            let ok = !lib.is_empty()
                && lib.len() <= INTERPRETER_LIBRARY_MAX_BYTES
                && !lib.starts_with('-')
                && lib
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-[]<>=!~,@/:+ ".contains(c));
            if !ok {
                return Err(AgentError::invalid(
                    "libraries",
                    format!("invalid library name {lib:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn error_frame(name: &str, value: impl Into<String>) -> Frame {
    Frame::Error {
        name: name.to_owned(),
        value: value.into(),
        traceback: String::new(),
    }
}

/// Sends frames to the client while it listens; once it is gone, frames are dropped and the
/// execution goes on.
struct Sink {
    tx: mpsc::Sender<Frame>,
    open: bool,
}

impl Sink {
    async fn send(&mut self, frame: Frame) {
        if self.open && self.tx.send(frame).await.is_err() {
            self.open = false;
        }
    }
}

/// Runs one execution to its end, sending its frames into `tx` (the request was validated).
/// It ends without a `control` frame only when the context is unknown, full or cannot start
/// (one `ContextError` frame).
pub(crate) async fn execute(agent: Arc<Agent>, req: ExecuteRequest, tx: mpsc::Sender<Frame>) {
    let mut sink = Sink { tx, open: true };
    let id = req
        .context_id
        .clone()
        .unwrap_or_else(|| DEFAULT_CONTEXT_ID.to_owned());
    let Some(ctx) = agent.interpreters.get(&id) else {
        sink.send(error_frame(
            "ContextError",
            format!("context not found: {id}"),
        ))
        .await;
        return;
    };
    if ctx.waiting.fetch_add(1, Ordering::SeqCst) >= INTERPRETER_QUEUE_MAX {
        ctx.waiting.fetch_sub(1, Ordering::SeqCst);
        sink.send(error_frame(
            "ContextError",
            format!(
                "context {id} already has {INTERPRETER_QUEUE_MAX} executions waiting; retry later"
            ),
        ))
        .await;
        return;
    }
    let mut slot = ctx.slot.lock().await;
    // From here on its worker holds the state of code that ran (a pause keeps it).
    ctx.used.store(true, Ordering::SeqCst);
    ctx.waiting.fetch_sub(1, Ordering::SeqCst);
    if agent.interpreters.get(&id).is_none() {
        sink.send(error_frame(
            "ContextError",
            format!("context not found: {id}"),
        ))
        .await;
        return;
    }
    let started_at = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    if let Err(e) = ctx.ensure_worker(&agent, &mut slot).await {
        sink.send(error_frame("ContextError", e)).await;
        return;
    }
    let mut record = Record::new(&req.code, started_at);
    ctx.interrupted.store(false, Ordering::SeqCst);
    ctx.killed.store(false, Ordering::SeqCst);
    ctx.running.store(true, Ordering::SeqCst);
    let timeout = Duration::from_secs_f64(req.timeout.unwrap_or(ctx.config.timeout));
    let outcome = match super::libraries::install(&agent, &ctx, &slot, &req, timeout).await {
        Err(message) => {
            let frame = error_frame("LibraryInstallError", message);
            record.error(&frame);
            sink.send(frame).await;
            Outcome::completed(None)
        }
        Ok(installed) => {
            let cell = Cell {
                req: &req,
                timeout,
                installed,
            };
            run_cell(&agent, &ctx, &mut slot, cell, &mut sink, &mut record).await
        }
    };
    ctx.running.store(false, Ordering::SeqCst);
    let duration_ms = started.elapsed().as_millis() as u64;
    record.finish(&agent, &ctx, &outcome, duration_ms);
    sink.send(Frame::Control {
        text: outcome.text.to_owned(),
        execution_count: outcome.count,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        duration_ms,
    })
    .await;
}

/// How an execution ended.
struct Outcome {
    text: &'static str,
    count: Option<u64>,
    exit_code: Option<i32>,
    signal: Option<i32>,
}

impl Outcome {
    fn completed(count: Option<u64>) -> Outcome {
        Outcome {
            text: "completed",
            count,
            exit_code: None,
            signal: None,
        }
    }

    fn with(text: &'static str) -> Outcome {
        Outcome {
            text,
            count: None,
            exit_code: None,
            signal: None,
        }
    }
}

/// The history entry being built: output, error and results each kept up to a bound.
struct Record {
    code: String,
    started_at: time::OffsetDateTime,
    stdout: String,
    stderr: String,
    error: Option<Frame>,
    results: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The JSON bytes of `results`.
    results_bytes: usize,
    results_omitted: u64,
}

impl Record {
    fn new(code: &str, started_at: time::OffsetDateTime) -> Record {
        Record {
            code: code.to_owned(),
            started_at,
            stdout: String::new(),
            stderr: String::new(),
            error: None,
            results: Vec::new(),
            results_bytes: 0,
            results_omitted: 0,
        }
    }

    /// Keeps the error frame, its texts cut to the output bound.
    fn error(&mut self, frame: &Frame) {
        let mut frame = frame.clone();
        if let Frame::Error {
            value, traceback, ..
        } = &mut frame
        {
            for text in [value, traceback] {
                if text.len() > INTERPRETER_HISTORY_OUTPUT_MAX_BYTES {
                    let mut kept = String::new();
                    Record::push(&mut kept, text);
                    *text = kept;
                }
            }
        }
        self.error = Some(frame);
    }

    /// Keeps a result bundle while the entry's results stay within their bound.
    fn result(&mut self, data: &serde_json::Map<String, serde_json::Value>) {
        let size = json_len(data);
        if self.results_bytes + size > INTERPRETER_HISTORY_RESULTS_MAX_BYTES {
            self.results_omitted += 1;
            return;
        }
        self.results_bytes += size;
        self.results.push(data.clone());
    }

    fn push(into: &mut String, text: &str) {
        let room = INTERPRETER_HISTORY_OUTPUT_MAX_BYTES.saturating_sub(into.len());
        if room == 0 {
            return;
        }
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        into.push_str(&text[..end]);
    }

    fn finish(self, agent: &Agent, ctx: &Context, outcome: &Outcome, duration_ms: u64) {
        agent.interpreters.record(
            ctx,
            HistoryEntry {
                execution_count: outcome.count,
                code: self.code,
                status: outcome.text.to_owned(),
                started_at: self.started_at,
                duration_ms,
                stdout: self.stdout,
                stderr: self.stderr,
                error: self.error,
                results: self.results,
                results_omitted: self.results_omitted,
            },
        );
    }
}

/// Where a timed-out execution is.
enum Phase {
    Running,
    /// SIGINT sent; the worker has until then to report `done`.
    Interrupting(Instant),
    /// The cgroup was killed; its exit should arrive by then.
    Killed(Instant),
}

/// What one cell runs with.
struct Cell<'a> {
    req: &'a ExecuteRequest,
    timeout: Duration,
    /// Libraries were just installed for it.
    installed: bool,
}

async fn run_cell(
    agent: &Agent,
    ctx: &Context,
    slot: &mut Option<super::worker::Worker>,
    Cell {
        req,
        timeout,
        installed,
    }: Cell<'_>,
    sink: &mut Sink,
    record: &mut Record,
) -> Outcome {
    let Some(worker) = slot.as_mut() else {
        return Outcome::with("crashed");
    };
    let exec_id = next_exec_id();
    let msg = serde_json::json!({
        "type": "execute",
        "id": exec_id,
        "code": req.code,
        "envs": req.envs.clone().unwrap_or_default(),
        "installed": installed,
    });
    let oom = agent.oom.mark();
    // A write to a worker that just died fails; its exit event still arrives below.
    let _ = worker.send(&msg).await;
    let deadline = crate::awake::now() + timeout;
    let mut phase = Phase::Running;
    let mut timed_out = false;
    let mut timeout_error_sent = false;
    let mut seq = 0u64;
    let language = ctx.config.language.clone();
    let timeout_error = || {
        error_frame(
            "TimeoutError",
            format!("execution timed out after {} s", fmt_secs(timeout)),
        )
    };
    let mut gone = false;
    let (outcome, gone) = loop {
        let wake = match phase {
            Phase::Running => deadline,
            Phase::Interrupting(t) | Phase::Killed(t) => t,
        };
        let event = tokio::select! {
            event = worker.events.recv() => event,
            () = crate::awake::sleep_until(wake) => {
                match phase {
                    Phase::Running => {
                        timed_out = true;
                        worker.handle.interrupt();
                        phase = Phase::Interrupting(crate::awake::now() + INTERRUPT_GRACE);
                    }
                    Phase::Interrupting(_) => {
                        worker.handle.kill();
                        phase = Phase::Killed(crate::awake::now() + KILL_GRACE);
                    }
                    Phase::Killed(_) => {
                        if !timeout_error_sent {
                            sink.send(timeout_error()).await;
                        }
                        gone = true;
                        break (Outcome::with("timeout"), gone);
                    }
                }
                continue;
            }
        };
        match event {
            Some(Event::Stdout(text)) => {
                Record::push(&mut record.stdout, &text);
                sink.send(Frame::Stdout { text, seq }).await;
                seq += 1;
            }
            Some(Event::Stderr(text)) => {
                Record::push(&mut record.stderr, &text);
                sink.send(Frame::Stderr { text, seq }).await;
                seq += 1;
            }
            Some(Event::Truncated(kept)) => {
                let text = format!("[hutch: output truncated after {kept} bytes]");
                sink.send(Frame::Stderr { text, seq }).await;
                seq += 1;
            }
            // Code in the cell can write to the worker's control descriptor too: what names
            // another execution is not this one's.
            Some(Event::Message(msg))
                if msg.get("id").is_some_and(|id| id.as_u64() != Some(exec_id)) => {}
            Some(Event::Done { id, .. }) if id != Some(exec_id) => {}
            Some(Event::Message(msg)) => {
                let Some(mut frame) = to_frame(msg) else {
                    continue;
                };
                if let Frame::Error { name, .. } = &frame
                    && timed_out
                    && name == "KeyboardInterrupt"
                {
                    frame = timeout_error();
                    timeout_error_sent = true;
                }
                match &frame {
                    Frame::Error { .. } => record.error(&frame),
                    Frame::Result { data, .. } => record.result(data),
                    _ => {}
                }
                sink.send(frame).await;
            }
            Some(Event::Ready { .. }) => {}
            Some(Event::Done {
                id: _,
                status,
                count,
                kernel,
            }) => {
                if let Some(kernel) = kernel {
                    ctx.set_kernel(&kernel);
                    worker.kernel = kernel;
                }
                if timed_out {
                    if !timeout_error_sent {
                        sink.send(timeout_error()).await;
                    }
                    break (
                        Outcome {
                            count,
                            ..Outcome::with("timeout")
                        },
                        gone,
                    );
                }
                if status == "interrupted" {
                    break (
                        Outcome {
                            count,
                            ..Outcome::with("interrupted")
                        },
                        gone,
                    );
                }
                break (Outcome::completed(count), gone);
            }
            Some(Event::Exited(exit)) => {
                worker.exited = true;
                gone = true;
                if timed_out {
                    if !timeout_error_sent {
                        sink.send(timeout_error()).await;
                    }
                    break (Outcome::with("timeout"), gone);
                }
                if ctx.killed.load(Ordering::SeqCst) {
                    let frame = error_frame(
                        "ContextError",
                        "the context was restarted or deleted during the execution",
                    );
                    record.error(&frame);
                    sink.send(frame).await;
                    break (
                        Outcome {
                            signal: Some(libc::SIGKILL),
                            ..Outcome::with("crashed")
                        },
                        gone,
                    );
                }
                let outcome = match exit {
                    Exit::Code(code) => Outcome {
                        exit_code: Some(code),
                        ..Outcome::with("exited")
                    },
                    Exit::Signal(sig) => {
                        let frame = if agent.oom.killed(oom, exit) {
                            error_frame(
                                "OutOfMemory",
                                format!(
                                    "the {language} worker was killed by the kernel's \
                                     out-of-memory killer: {} was reached; the context's state \
                                     is lost and its next execution starts a fresh worker",
                                    agent.oom.limit()
                                ),
                            )
                        } else {
                            error_frame(
                                "WorkerCrashed",
                                format!(
                                    "the {language} worker was killed by signal {sig} ({})",
                                    signal_name(sig)
                                ),
                            )
                        };
                        record.error(&frame);
                        sink.send(frame).await;
                        Outcome {
                            signal: Some(sig),
                            ..Outcome::with("crashed")
                        }
                    }
                };
                break (outcome, gone);
            }
            None => {
                worker.exited = true;
                gone = true;
                let frame = error_frame(
                    "WorkerCrashed",
                    format!("the {language} worker stopped responding"),
                );
                sink.send(frame).await;
                break (Outcome::with("crashed"), gone);
            }
        }
    };
    if gone {
        ctx.worker_gone(slot);
    }
    outcome
}

fn next_exec_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `5` or `0.5`.
fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// A worker message as a client frame (its `id` dropped).
fn to_frame(msg: serde_json::Value) -> Option<Frame> {
    let str_of = |k: &str| {
        msg.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    match msg.get("type").and_then(|t| t.as_str())? {
        "result" | "display" => Some(Frame::Result {
            data: msg.get("data").and_then(|d| d.as_object()).cloned()?,
            execution_count: msg.get("executionCount").and_then(|c| c.as_u64()),
        }),
        "artifact" => Some(Frame::Artifact {
            name: str_of("name"),
            mime_type: str_of("mimeType"),
            data: str_of("data"),
        }),
        "error" => Some(Frame::Error {
            name: str_of("name"),
            value: str_of("value"),
            traceback: str_of("traceback"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interpreter::worker::describe_exit;

    #[test]
    fn library_names_are_checked() {
        let req = |libs: &[&str]| ExecuteRequest {
            libraries: Some(libs.iter().map(|s| s.to_string()).collect()),
            ..ExecuteRequest::default()
        };
        assert!(validate_execute(&req(&["numpy", "pandas>=2", "requests[socks]"])).is_ok());
        assert!(validate_execute(&req(&["--index-url=http://evil"])).is_err());
        assert!(validate_execute(&req(&["a;rm -rf /"])).is_err());
    }

    #[test]
    fn worker_messages_become_frames() {
        let f = to_frame(
            serde_json::json!({"type": "error", "id": 3, "name": "NameError", "value": "x", "traceback": "tb"}),
        );
        assert_eq!(
            f,
            Some(Frame::Error {
                name: "NameError".into(),
                value: "x".into(),
                traceback: "tb".into()
            })
        );
        assert_eq!(to_frame(serde_json::json!({"type": "bogus"})), None);
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(
            describe_exit(Exit::Signal(libc::SIGSEGV)),
            "signal 11 (SIGSEGV)"
        );
        assert_eq!(fmt_secs(Duration::from_secs(5)), "5");
    }
}
