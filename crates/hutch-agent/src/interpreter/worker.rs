//! One worker process of a context: started confined (own cgroup `ctx-N`, own process group),
//! fed cells on fd 3, read on fd 1, 2 and 4 by one task that turns everything into [`Event`]s.
//!
//! The reading task never stops reading: output past the per-execution cap is read and
//! dropped, so a worker that prints gigabytes never blocks on a full pipe. On `done` it first
//! drains fd 1 and 2 without blocking, so all output the cell produced precedes the `Done`
//! event. The worker's exit comes from the agent's reaper (exit code or signal), never from a
//! message.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use hutch_api::limits::{
    INTERPRETER_CHUNK_MAX_BYTES, INTERPRETER_FRAME_MAX_BYTES, INTERPRETER_MESSAGES_MAX_BYTES,
    INTERPRETER_OUTPUT_MAX_BYTES,
};
use hutch_sandbox::process::{ProcessSpec, SpawnError, find_program};
use hutch_sys::process;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use super::compiled::{CompiledPython, PYTHON_START, WRONG_INTERPRETER_EXIT};
use super::source::{self, WORKER_SOURCE_PATH, WorkerSource};
use crate::Agent;
use crate::commands::CommandCgroup;
use crate::reaper::Exit;

/// How long a new worker may take to report `ready` (awake time).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the reading task reports.
#[derive(Debug)]
pub(crate) enum Event {
    /// Text from fd 1 (at most one chunk).
    Stdout(String),
    /// Text from fd 2.
    Stderr(String),
    /// Output of the execution went past the cap; this many bytes were kept.
    Truncated(usize),
    /// A `result`, `artifact` or `error` message.
    Message(serde_json::Value),
    /// The worker's `ready`.
    Ready {
        /// The kernel it runs.
        kernel: String,
    },
    /// The cell finished.
    Done {
        /// The execution it ends (the `id` of its `execute`).
        id: Option<u64>,
        /// `ok`, `error` or `interrupted`.
        status: String,
        /// Its execution count.
        count: Option<u64>,
        /// The kernel the worker runs from now on, when the cell switched it (an `auto`
        /// python worker that met IPython syntax).
        kernel: Option<String>,
    },
    /// The worker process ended; nothing follows.
    Exited(Exit),
}

/// What interrupts or kills a worker, shareable while an execution holds the worker itself.
pub(crate) struct WorkerHandle {
    /// The worker's pid, also its process group.
    pub(crate) pid: i32,
    cgroup: Option<CommandCgroup>,
}

impl WorkerHandle {
    /// SIGINT to the worker's process group.
    pub(crate) fn interrupt(&self) {
        // The group is the worker's own (setsid).
        let _ = process::kill_group(self.pid, libc::SIGINT);
    }

    /// Kills the worker and everything it started.
    pub(crate) fn kill(&self) {
        match &self.cgroup {
            Some(cgroup) => cgroup.kill(),
            None => {
                let _ = process::kill_group(self.pid, libc::SIGKILL);
            }
        }
    }

    /// Runs a helper program (a package installer) inside the worker's cgroup: `(exit code,
    /// output)`, or `None` when it could not be started or passed `timeout` (then killed).
    pub(crate) async fn run_helper(
        &self,
        agent: &Agent,
        argv: &[String],
        cwd: &str,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<(i32, String), String> {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        let program =
            find_program(&argv[0], path).ok_or_else(|| format!("{} is not installed", argv[0]))?;
        let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let (out_r, out_w) = hutch_sys::pipe::pipe().map_err(|e| e.to_string())?;
        let spec = ProcessSpec {
            program: &program,
            argv,
            env,
            cwd: std::path::Path::new(cwd),
            stdio: [null.as_fd(), out_w.as_fd(), out_w.as_fd()],
            cgroup: self.cgroup.as_ref().map(CommandCgroup::own),
            user: agent.image.user_ids().map_err(|e| e.to_string())?,
        };
        let (process, exited) = agent
            .reaper
            .spawn(&spec, Default::default())
            .map_err(|e| e.to_string())?;
        drop(out_w);
        let mut rx = pipe::Receiver::from_owned_fd(out_r).map_err(|e| e.to_string())?;
        let read = async {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if out.len() < 64 * 1024 {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            let exit = exited.await.unwrap_or(Exit::Signal(libc::SIGKILL));
            (exit.code(), String::from_utf8_lossy(&out).into_owned())
        };
        match crate::awake::timeout(timeout, read).await {
            Ok(done) => Ok(done),
            Err(_) => {
                // The helper leads its own group.
                let _ = process::kill_group(process.pid, libc::SIGKILL);
                Err(format!("timed out after {} s", timeout.as_secs()))
            }
        }
    }
}

/// A running worker.
pub(crate) struct Worker {
    /// Interrupt and kill.
    pub(crate) handle: Arc<WorkerHandle>,
    /// The kernel it reported.
    pub(crate) kernel: String,
    control: pipe::Sender,
    /// Everything the reading task reports.
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    /// Whether the process has ended (an `Exited` event was taken).
    pub(crate) exited: bool,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.exited {
            self.handle.kill();
        }
    }
}

/// How to start a worker.
pub(crate) struct WorkerSpec<'a> {
    pub(crate) cgroup_name: String,
    pub(crate) language: &'a str,
    pub(crate) kernel: &'a str,
    pub(crate) cwd: &'a str,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) memory_mb: Option<u64>,
}

/// Exit code of a python worker whose IPython kernel failed to start (not for want of
/// IPython), before `ready`; its stderr says why (`_KERNEL_FAILED` in python_worker.py).
const KERNEL_FAILED_EXIT: i32 = 75;

/// Why a worker did not start.
enum StartError {
    /// Its IPython failed to start, for this reason.
    Kernel(String),
    /// Started from the compiled code, its interpreter found it made for another.
    WrongInterpreter,
    /// Anything else, for people.
    Other(String),
}

impl StartError {
    fn into_message(self) -> String {
        match self {
            StartError::Kernel(message) | StartError::Other(message) => message,
            StartError::WrongInterpreter => {
                "python3 cannot run the worker compiled for the image's interpreter".to_owned()
            }
        }
    }
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError::Other(message)
    }
}

impl Worker {
    /// Starts a worker and waits for its `ready`. A python worker whose IPython fails to
    /// start (out of memory, most often) is started again as plain Python, a fresh process
    /// that tells the reason at its first execution.
    pub(crate) async fn start(agent: &Agent, mut spec: WorkerSpec<'_>) -> Result<Worker, String> {
        match Self::start_compiled_or_not(agent, &spec).await {
            Ok(worker) => Ok(worker),
            Err(StartError::Kernel(reason)) => {
                tracing::info!(context = %spec.cgroup_name, %reason, "IPython did not start; the context runs plain Python");
                spec.kernel = "python";
                spec.env.push((
                    "HUTCH_NOTICE".into(),
                    format!("hutch: {reason}; this context runs plain Python\n"),
                ));
                Self::start_compiled_or_not(agent, &spec)
                    .await
                    .map_err(StartError::into_message)
            }
            Err(err) => Err(err.into_message()),
        }
    }

    /// A python worker starts from the code the server compiled for the image's interpreter
    /// when the sandbox has it (see `compiled.rs`); once an interpreter refuses it, this and
    /// every later worker start from the source.
    async fn start_compiled_or_not(
        agent: &Agent,
        spec: &WorkerSpec<'_>,
    ) -> Result<Worker, StartError> {
        let compiled = agent.python_compiled.as_ref();
        if spec.language == "python"
            && let Some(code) = compiled.and_then(CompiledPython::usable)
        {
            match Self::start_once(agent, spec, Some(code)).await {
                Err(StartError::WrongInterpreter) => {
                    compiled.map(CompiledPython::refuse);
                    tracing::info!(
                        context = %spec.cgroup_name,
                        "python3 is not the interpreter the server compiled the worker for; python workers start from their source"
                    );
                }
                started => return started,
            }
        }
        Self::start_once(agent, spec, None).await
    }

    async fn start_once(
        agent: &Agent,
        spec: &WorkerSpec<'_>,
        compiled: Option<BorrowedFd<'_>>,
    ) -> Result<Worker, StartError> {
        // The source comes from a sealed memfd at fd 5 (see `source`); python runs with `-S`
        // (the worker adds the site-packages directories itself, without the cost of the
        // `site` module's startup work), node keeps `/proc/self/fd/5` as the main module's
        // path instead of resolving it to the memfd's name. The python worker's start reads its
        // code from descriptor 6 (`source::PYTHON_CODE_FD`).
        // A python worker started from compiled code gets it as descriptor 5 and runs
        // `python3 -S -c <python_start.py>` (see `compiled.rs`).
        type Sources = (&'static WorkerSource, Option<&'static WorkerSource>);
        let (program, (source, code), argv): (&str, Sources, Vec<&str>) = match spec.language {
            "javascript" => (
                "node",
                (&source::NODE, None),
                vec!["node", "--preserve-symlinks-main", WORKER_SOURCE_PATH],
            ),
            "bash" => (
                "bash",
                (&source::BASH, None),
                vec!["bash", "--noprofile", "--norc", WORKER_SOURCE_PATH],
            ),
            _ if compiled.is_some() => (
                "python3",
                (&source::PYTHON, None),
                vec!["python3", "-S", "-c", PYTHON_START.trim_end()],
            ),
            _ => (
                "python3",
                (&source::PYTHON, Some(&source::PYTHON_CODE)),
                vec!["python3", "-S", WORKER_SOURCE_PATH],
            ),
        };
        let argv: Vec<String> = argv.into_iter().map(str::to_owned).collect();
        let load_error =
            |e: std::io::Error| format!("cannot load the {} worker: {e}", spec.language);
        let source = match compiled {
            Some(code) => code,
            None => source.file().map_err(load_error)?,
        };
        let code = code
            .map(WorkerSource::file)
            .transpose()
            .map_err(load_error)?;
        let mut env = spec.env.clone();
        if spec.language == "python" {
            env.push(("HUTCH_KERNEL".into(), spec.kernel.into()));
            env.push(("MPLBACKEND".into(), "Agg".into()));
            env.push(("PYTHONUNBUFFERED".into(), "1".into()));
            // Python 3.11 and later then skip working out the script's directory for
            // `sys.path[0]` (that of `/proc/self/fd/5`), whose two path buffers would leave
            // 28 KiB of every worker's stack in use for good. The worker puts "" first itself,
            // as `python3 -c` does, and takes both names out of the environment user code
            // sees; HUTCH_SAFE_PATH tells it the agent added PYTHONSAFEPATH (a value of the
            // user's own stays).
            if compiled.is_none() && !env.iter().any(|(k, _)| k == "PYTHONSAFEPATH") {
                env.push(("PYTHONSAFEPATH".into(), "1".into()));
                env.push(("HUTCH_SAFE_PATH".into(), "1".into()));
            }
        }
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        let program_path = find_program(program, path).ok_or_else(|| {
            format!(
                "cannot start the {} worker: image {} has no {program}",
                spec.language, agent.image.name
            )
        })?;
        let user = agent.image.user_ids().map_err(|e| e.to_string())?;
        let cgroup = match &agent.cgroup_dir {
            Some(dir) => Some(
                CommandCgroup::create_named(dir, &spec.cgroup_name)
                    .map_err(|e| format!("cannot create the context's cgroup: {e}"))?,
            ),
            None => None,
        };
        let mut use_rlimit = spec.memory_mb;
        if let (Some(mb), Some(cg)) = (spec.memory_mb, &cgroup)
            && cg
                .write("memory.max", &(mb * 1024 * 1024).to_string())
                .is_ok()
        {
            use_rlimit = None;
        }
        let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let (out_r, out_w) = hutch_sys::pipe::pipe().map_err(|e| e.to_string())?;
        let (err_r, err_w) = hutch_sys::pipe::pipe().map_err(|e| e.to_string())?;
        let (cin_r, cin_w) = hutch_sys::pipe::pipe().map_err(|e| e.to_string())?;
        let (cout_r, cout_w) = hutch_sys::pipe::pipe().map_err(|e| e.to_string())?;
        // Descriptors 3, 4, 5 and, for python, 6.
        let mut extra = vec![cin_r.as_fd(), cout_w.as_fd(), source];
        if let Some(code) = code {
            debug_assert_eq!(3 + extra.len() as i32, source::PYTHON_CODE_FD);
            extra.push(code);
        }
        let pspec = ProcessSpec {
            program: &program_path,
            argv: &argv,
            env: &env,
            cwd: std::path::Path::new(spec.cwd),
            stdio: [null.as_fd(), out_w.as_fd(), err_w.as_fd()],
            cgroup: cgroup.as_ref().map(CommandCgroup::own),
            user,
        };
        let spawned = agent.reaper.spawn_with_fds(&pspec, &extra);
        let (process, exited) = spawned.map_err(|e| match e {
            SpawnError::Cwd { cwd, source } => format!("cannot enter {cwd}: {source}"),
            e => format!("cannot start the {} worker: {e}", spec.language),
        })?;
        drop((out_w, err_w, cin_r, cout_w));
        if let Some(mb) = use_rlimit {
            // No memory controller: cap the worker's data segment instead (its children
            // inherit the limit, each on its own).
            let _ = process::limit_data(process.pid, mb * 1024 * 1024);
        }
        let handle = Arc::new(WorkerHandle {
            pid: process.pid,
            cgroup,
        });
        let control = pipe::Sender::from_owned_fd(cin_w).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Second descriptors of the output pipes, read directly when a message ends a cell.
        let now = |fd: &OwnedFd| {
            fd.try_clone()
                .map(std::fs::File::from)
                .map_err(|e| e.to_string())
        };
        let drains = (now(&out_r)?, now(&err_r)?);
        let readers = (
            pipe::Receiver::from_owned_fd(out_r).map_err(|e| e.to_string())?,
            pipe::Receiver::from_owned_fd(err_r).map_err(|e| e.to_string())?,
            pipe::Receiver::from_owned_fd(cout_r).map_err(|e| e.to_string())?,
        );
        tokio::spawn(read_loop(readers, drains, exited, tx));
        let mut worker = Worker {
            handle,
            kernel: spec.kernel.to_owned(),
            control,
            events: rx,
            exited: false,
        };
        let mut early = String::new();
        // On the awake clock: a pause while the worker starts (a resume restarts a stopped
        // `default` worker, and the next pause may come at once) does not count.
        let ready = crate::awake::timeout(READY_TIMEOUT, async {
            loop {
                match worker.events.recv().await {
                    Some(Event::Ready { kernel }) => return Ok(kernel),
                    Some(Event::Stdout(t) | Event::Stderr(t)) => {
                        if early.len() < 4096 {
                            early.push_str(&t);
                        }
                    }
                    Some(Event::Exited(exit)) => return Err(exit),
                    None => return Err(Exit::Signal(libc::SIGKILL)),
                    Some(_) => {}
                }
            }
        })
        .await;
        match ready {
            Ok(Ok(kernel)) => {
                worker.kernel = kernel;
                Ok(worker)
            }
            Ok(Err(Exit::Code(KERNEL_FAILED_EXIT))) if spec.kernel == "ipython" => {
                worker.exited = true;
                Err(StartError::Kernel(early.trim().to_owned()))
            }
            // Under a memory cgroup, IPython's start that does not fit is killed instead.
            Ok(Err(Exit::Signal(libc::SIGKILL))) if spec.kernel == "ipython" => {
                worker.exited = true;
                Err(StartError::Kernel(match spec.memory_mb {
                    Some(mb) => format!("IPython failed to start (killed: out of its {mb} MiB?)"),
                    None => "IPython failed to start (killed)".to_owned(),
                }))
            }
            Ok(Err(Exit::Code(WRONG_INTERPRETER_EXIT))) if compiled.is_some() => {
                worker.exited = true;
                Err(StartError::WrongInterpreter)
            }
            Ok(Err(exit)) => {
                worker.exited = true;
                Err(StartError::Other(format!(
                    "the {} worker exited before it was ready ({}): {}",
                    spec.language,
                    describe_exit(exit),
                    early.trim()
                )))
            }
            Err(_) => Err(StartError::Other(format!(
                "the {} worker was not ready within {} s",
                spec.language,
                READY_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Sends one control message (a line of JSON).
    pub(crate) async fn send(&mut self, msg: &serde_json::Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
        line.push(b'\n');
        self.control.write_all(&line).await
    }
}

/// `exit code 3` or `signal 11 (SIGSEGV)`.
pub(crate) fn describe_exit(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit code {c}"),
        Exit::Signal(s) => format!("signal {s} ({})", signal_name(s)),
    }
}

/// The usual name of a signal.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}

/// Output accounting of the execution in progress.
#[derive(Default)]
pub(super) struct Output {
    used: usize,
    truncated: bool,
    /// Bytes of results, artifacts and errors so far.
    messages: usize,
    messages_dropped: bool,
    pending_out: Vec<u8>,
    pending_err: Vec<u8>,
}

impl Output {
    /// Accounts and decodes `bytes` of fd 1 (or fd 2 when `stderr`), sending their text.
    pub(super) fn push(&mut self, stderr: bool, bytes: &[u8], tx: &mpsc::UnboundedSender<Event>) {
        let room = INTERPRETER_OUTPUT_MAX_BYTES.saturating_sub(self.used);
        let kept = bytes.len().min(room);
        if kept < bytes.len() {
            self.truncated = true;
        }
        self.used += kept;
        if kept == 0 {
            return;
        }
        let pending = if stderr {
            &mut self.pending_err
        } else {
            &mut self.pending_out
        };
        let text = decode(pending, &bytes[..kept]);
        send_text(stderr, text, tx);
    }

    /// End of an execution: what is left of a partial character, and the truncation marker.
    pub(super) fn finish(&mut self, tx: &mpsc::UnboundedSender<Event>) {
        for stderr in [false, true] {
            let pending = if stderr {
                std::mem::take(&mut self.pending_err)
            } else {
                std::mem::take(&mut self.pending_out)
            };
            if !pending.is_empty() {
                send_text(stderr, String::from_utf8_lossy(&pending).into_owned(), tx);
            }
        }
        if self.truncated {
            let _ = tx.send(Event::Truncated(self.used));
        }
        *self = Output::default();
    }
}

fn send_text(stderr: bool, text: String, tx: &mpsc::UnboundedSender<Event>) {
    for chunk in chunks(text) {
        let _ = tx.send(if stderr {
            Event::Stderr(chunk)
        } else {
            Event::Stdout(chunk)
        });
    }
}

/// Splits text into pieces of at most [`INTERPRETER_CHUNK_MAX_BYTES`], at character
/// boundaries.
fn chunks(text: String) -> Vec<String> {
    if text.len() <= INTERPRETER_CHUNK_MAX_BYTES {
        return if text.is_empty() { vec![] } else { vec![text] };
    }
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(INTERPRETER_CHUNK_MAX_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    out
}

/// Decodes `input` after the undecoded bytes in `pending`; an incomplete character at the
/// end stays in `pending` for the next read, invalid bytes become U+FFFD.
fn decode(pending: &mut Vec<u8>, input: &[u8]) -> String {
    pending.extend_from_slice(input);
    let mut out = String::with_capacity(pending.len());
    let mut at = 0;
    loop {
        match std::str::from_utf8(&pending[at..]) {
            Ok(s) => {
                out.push_str(s);
                at = pending.len();
                break;
            }
            Err(e) => {
                let valid = &pending[at..at + e.valid_up_to()];
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                at += e.valid_up_to();
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{fffd}');
                        at += n;
                    }
                    None => break,
                }
            }
        }
    }
    pending.drain(..at);
    out
}

/// Reads what is in a pipe now, without waiting.
fn drain_now(
    rx: &std::fs::File,
    stderr: bool,
    buf: &mut Vec<u8>,
    output: &mut Output,
    tx: &mpsc::UnboundedSender<Event>,
) {
    use std::io::Read;
    // A read of the pipe itself (it is non-blocking), not through tokio, whose readiness may
    // not have seen yet what the worker wrote just before the message that ends its cell.
    // Bounded, in case a writer keeps the pipe full forever: past the output bound nothing
    // is kept anyway.
    buf.clear();
    let limit = INTERPRETER_OUTPUT_MAX_BYTES as u64 + 1;
    let _ = rx.take(limit).read_to_end(buf);
    if !buf.is_empty() {
        output.push(stderr, buf, tx);
    }
    buf.clear();
}

/// One line of the worker's control pipe (fd 4).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ControlLine<'a> {
    /// A whole line without its newline: one JSON message.
    Message(&'a [u8]),
    /// A line longer than [`INTERPRETER_FRAME_MAX_BYTES`] ended; its bytes were dropped.
    Overlong,
}

/// Splits the control pipe's bytes into lines, however the reads cut them, holding at most
/// [`INTERPRETER_FRAME_MAX_BYTES`] of an unfinished line.
#[derive(Debug, Default)]
pub(super) struct ControlLines {
    line: Vec<u8>,
    overlong: bool,
}

impl ControlLines {
    /// Feeds the bytes of one read; `on` gets every line they finish.
    pub(super) fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(ControlLine<'_>)) {
        while let Some(pos) = bytes.iter().position(|b| *b == b'\n') {
            if self.overlong {
                self.overlong = false;
                on(ControlLine::Overlong);
            } else {
                self.line.extend_from_slice(&bytes[..pos]);
                let msg = std::mem::take(&mut self.line);
                on(ControlLine::Message(&msg));
            }
            bytes = &bytes[pos + 1..];
        }
        if !self.overlong {
            self.line.extend_from_slice(bytes);
            if self.line.len() > INTERPRETER_FRAME_MAX_BYTES {
                self.line = Vec::new();
                self.overlong = true;
            }
        }
    }
}

/// The worker's reading task: fd 1, fd 2, fd 4 and its exit, until it exits.
async fn read_loop(
    (out, err, ctrl): (pipe::Receiver, pipe::Receiver, pipe::Receiver),
    (out_now, err_now): (std::fs::File, std::fs::File),
    mut exited: oneshot::Receiver<Exit>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let (mut out, mut err, mut ctrl) = (out, err, ctrl);
    let mut output = Output::default();
    // Read into spare capacity (`read_buf`), never zeroed: the kernel backs a buffer's pages
    // only once a read fills them, so an idle worker's three buffers cost a page each, not
    // 64 KiB each. Each is empty when a read begins.
    let mut buf_out = Vec::with_capacity(INTERPRETER_CHUNK_MAX_BYTES);
    let mut buf_err = Vec::with_capacity(INTERPRETER_CHUNK_MAX_BYTES);
    let mut buf_ctrl = Vec::with_capacity(64 * 1024);
    let mut lines = ControlLines::default();
    let (mut out_open, mut err_open, mut ctrl_open) = (true, true, true);
    loop {
        tokio::select! {
            r = out.read_buf(&mut buf_out), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(_) => {
                    output.push(false, &buf_out, &tx);
                    buf_out.clear();
                }
            },
            r = err.read_buf(&mut buf_err), if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(_) => {
                    output.push(true, &buf_err, &tx);
                    buf_err.clear();
                }
            },
            r = ctrl.read_buf(&mut buf_ctrl), if ctrl_open => match r {
                Ok(0) | Err(_) => ctrl_open = false,
                Ok(_) => {
                    lines.feed(&buf_ctrl, |line| match line {
                        ControlLine::Message(msg) => {
                            let now = (&out_now, &err_now);
                            handle_message(msg, now, &mut buf_out, &mut output, &tx);
                        }
                        ControlLine::Overlong => {
                            let _ = tx.send(Event::Message(serde_json::json!({
                                "type": "error",
                                "name": "OutputTooLarge",
                                "value": format!("a result or artifact was larger than {INTERPRETER_FRAME_MAX_BYTES} bytes and was dropped"),
                                "traceback": "",
                            })));
                        }
                    });
                    buf_ctrl.clear();
                }
            },
            exit = &mut exited => {
                let exit = exit.unwrap_or(Exit::Signal(libc::SIGKILL));
                drain_now(&out_now, false, &mut buf_out, &mut output, &tx);
                drain_now(&err_now, true, &mut buf_err, &mut output, &tx);
                output.finish(&tx);
                let _ = tx.send(Event::Exited(exit));
                return;
            }
        }
    }
}

fn handle_message(
    raw: &[u8],
    (out, err): (&std::fs::File, &std::fs::File),
    buf: &mut Vec<u8>,
    output: &mut Output,
    tx: &mpsc::UnboundedSender<Event>,
) {
    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(raw) else {
        return;
    };
    match msg.get("type").and_then(|t| t.as_str()) {
        Some("ready") => {
            let kernel = msg
                .get("kernel")
                .and_then(|k| k.as_str())
                .unwrap_or("python")
                .to_owned();
            let _ = tx.send(Event::Ready { kernel });
        }
        Some("done") => {
            // Everything the cell wrote before `done` goes first.
            drain_now(out, false, buf, output, tx);
            drain_now(err, true, buf, output, tx);
            output.finish(tx);
            let status = msg
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("ok")
                .to_owned();
            let count = msg.get("executionCount").and_then(|c| c.as_u64());
            let kernel = msg
                .get("kernel")
                .and_then(|k| k.as_str())
                .map(str::to_owned);
            let _ = tx.send(Event::Done {
                id: msg.get("id").and_then(|i| i.as_u64()),
                status,
                count,
                kernel,
            });
        }
        Some("result" | "artifact" | "error" | "display") => {
            // Output printed before the message goes first.
            drain_now(out, false, buf, output, tx);
            drain_now(err, true, buf, output, tx);
            output.messages += raw.len();
            if output.messages <= INTERPRETER_MESSAGES_MAX_BYTES {
                let _ = tx.send(Event::Message(msg));
            } else if !output.messages_dropped {
                output.messages_dropped = true;
                let _ = tx.send(Event::Message(serde_json::json!({
                    "type": "error",
                    "name": "OutputTooLarge",
                    "value": format!("results and artifacts past {INTERPRETER_MESSAGES_MAX_BYTES} bytes were dropped"),
                    "traceback": "",
                })));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_keeps_split_characters_for_the_next_read() {
        let bytes = "aé€😀".as_bytes();
        let mut pending = Vec::new();
        let mut text = String::new();
        for b in bytes {
            text.push_str(&decode(&mut pending, std::slice::from_ref(b)));
        }
        assert_eq!(text, "aé€😀");
        assert!(pending.is_empty());
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        let mut pending = Vec::new();
        assert_eq!(decode(&mut pending, &[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(decode(&mut pending, &[0xe2, 0x82]), "");
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn chunks_split_at_character_boundaries() {
        let text = "é".repeat(INTERPRETER_CHUNK_MAX_BYTES);
        let parts = chunks(text.clone());
        assert!(parts.iter().all(|p| p.len() <= INTERPRETER_CHUNK_MAX_BYTES));
        assert_eq!(parts.concat(), text);
    }
}
