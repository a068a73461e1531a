//! Processes of the session: streamed and background commands that outlive their request.
//!
//! A process is started like a one-shot command (its own cgroup, its own session and process
//! group, the same validation: see [`crate::commands`]) but is registered in the session's
//! [`Processes`] table, and its output goes into a bounded ring of numbered chunks
//! ([`PROCESS_OUTPUT_BUFFER_BYTES`]) instead of a response. Any number of readers attach to
//! the ring with a cursor; a reader that comes back with the number of the next chunk it wants
//! gets everything from there, or a `truncated` event saying exactly what was dropped.
//!
//! Back-pressure: a chunk is dropped from the ring only once every attached reader is past it.
//! While a reader is attached and behind, the process's pipe fills and its writes block, as
//! they would on a terminal; with nobody attached the ring keeps the newest output and the
//! process never blocks.
//!
//! The tree dies with its leader: when the first process exits, its timeout passes, or it is
//! deleted, everything in its cgroup is killed, as for one-shot commands. Its exit and ring are
//! then kept, up to [`PROCESSES_FINISHED_KEPT`] finished processes, oldest evicted first.

pub(crate) mod pty;
pub(crate) mod routes;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use hutch_api::limits::{
    PROCESS_OUTPUT_BUFFER_BYTES, PROCESSES_FINISHED_KEPT, PROCESSES_RUNNING_MAX,
};
use hutch_api::{ProcessEvent, ProcessInfo, ProcessStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::Agent;
use crate::commands::{self, CommandCgroup, Plan, Started};
use crate::error::AgentError;
use crate::reaper::Exit;

/// Size of one read from a process's pipe, and so the largest chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// Most chunks a reader takes from the ring at once.
const READ_BATCH: usize = 16;

/// The session's processes.
pub(crate) struct Processes {
    table: Mutex<BTreeMap<u64, Arc<Managed>>>,
    running: Arc<tokio::sync::Semaphore>,
    next_id: AtomicU64,
}

impl Default for Processes {
    fn default() -> Self {
        Processes {
            table: Mutex::new(BTreeMap::new()),
            running: Arc::new(tokio::sync::Semaphore::new(PROCESSES_RUNNING_MAX)),
            next_id: AtomicU64::new(1),
        }
    }
}

impl Processes {
    /// The process with this pid (the newest, should a finished one share it).
    pub(crate) fn get(&self, pid: i32) -> Result<Arc<Managed>, AgentError> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .values()
            .rev()
            .find(|p| p.pid == pid)
            .cloned()
            .ok_or(AgentError::ProcessNotFound(pid))
    }

    /// Every process, oldest first.
    pub(crate) fn list(&self) -> Vec<ProcessInfo> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.values().map(|p| p.info()).collect()
    }

    fn insert(&self, process: Arc<Managed>) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        // A finished process whose pid was reused would make `{pid}` ambiguous: it goes.
        table.retain(|_, p| p.pid != process.pid || !p.finished());
        table.insert(process.id, process);
    }

    fn finished(&self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let finished: Vec<u64> = table
            .values()
            .filter(|p| p.finished())
            .map(|p| p.id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(PROCESSES_FINISHED_KEPT))
        {
            table.remove(id);
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
struct Ended {
    exit: Exit,
    duration_ms: u64,
    timed_out: bool,
    oom_killed: bool,
}

/// Most chunks a ring holds, whatever their size: a process writing a byte at a time makes a
/// chunk of each, and each costs about 100 bytes of bookkeeping beside its data, so a ring of
/// 1 MiB of such chunks would hold 100 MiB. This bounds it near 2.6 MiB.
const RING_CHUNKS_MAX: usize = 16 * 1024;

/// One chunk of output.
struct Chunk {
    seq: u64,
    stderr: bool,
    data: Bytes,
}

/// The ring of output and the state readers wait on.
#[derive(Default)]
struct Ring {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    next_seq: u64,
    /// Attached readers: id → the next sequence number each still needs.
    readers: HashMap<u64, u64>,
    next_reader: u64,
    /// Set once the output is complete and the whole tree is gone.
    ended: Option<Ended>,
}

impl Ring {
    fn first_seq(&self) -> u64 {
        self.chunks.front().map_or(self.next_seq, |c| c.seq)
    }
}

/// A process of the session.
pub(crate) struct Managed {
    /// Unique within the session.
    pub(crate) id: u64,
    /// Pid inside the sandbox; also its process group.
    pub(crate) pid: i32,
    argv: Vec<String>,
    started_at: String,
    ring: Mutex<Ring>,
    /// Bumped on new output and on the end.
    changed: watch::Sender<u64>,
    /// Bumped when a reader moves on or leaves (room may have been made).
    consumed: watch::Sender<u64>,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    cgroup: Option<CommandCgroup>,
}

impl Managed {
    fn finished(&self) -> bool {
        self.lock().ended.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its state as the API reports it.
    pub(crate) fn info(&self) -> ProcessInfo {
        let ring = self.lock();
        let (exit_code, signal) = ring.ended.map_or((None, None), |e| split_exit(e.exit));
        ProcessInfo {
            process_id: self.id,
            pid: self.pid,
            command: self.argv.clone(),
            status: if ring.ended.is_some() {
                ProcessStatus::Exited
            } else {
                ProcessStatus::Running
            },
            exit_code,
            signal,
            timed_out: ring.ended.is_some_and(|e| e.timed_out),
            oom_killed: ring.ended.is_some_and(|e| e.oom_killed),
            started_at: self.started_at.clone(),
            duration_ms: ring.ended.map(|e| e.duration_ms),
            next_seq: ring.next_seq,
            first_seq: ring.first_seq(),
        }
    }

    /// Kills the process and everything it started.
    pub(crate) fn kill(&self) {
        commands::kill_tree(self.cgroup.as_ref(), self.pid);
    }

    /// Sends `signal` to the process's whole process group.
    pub(crate) fn signal(&self, signal: i32) -> Result<(), AgentError> {
        if self.finished() {
            return Err(AgentError::Exited(self.pid));
        }
        // The group is the process's own (setsid).
        match hutch_sys::process::kill_group(self.pid, signal) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(AgentError::Exited(self.pid)),
            Err(e) => Err(AgentError::Runtime(e)),
        }
    }

    /// Writes to the process's standard input, then closes it if `eof`.
    pub(crate) async fn write_stdin(&self, data: &[u8], eof: bool) -> Result<(), AgentError> {
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            if data.is_empty() && eof {
                return Ok(());
            }
            return Err(AgentError::StdinClosed(self.pid));
        };
        if !data.is_empty() {
            match tokio::time::timeout(STDIN_WRITE_TIMEOUT, pipe.write_all(data)).await {
                Ok(Ok(())) => {}
                // The reader is gone: nothing will ever read more.
                Ok(Err(_)) => {
                    *stdin = None;
                    return Err(AgentError::StdinClosed(self.pid));
                }
                Err(_) => return Err(AgentError::StdinBlocked(self.pid)),
            }
        }
        if eof {
            *stdin = None;
        }
        Ok(())
    }

    /// The sequence number its next chunk of output will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Attaches a reader that starts at sequence number `from`.
    pub(crate) fn subscribe(self: &Arc<Self>, from: u64) -> Reader {
        let mut ring = self.lock();
        let id = ring.next_reader;
        ring.next_reader += 1;
        ring.readers.insert(id, from);
        drop(ring);
        Reader {
            process: Arc::clone(self),
            id,
            cursor: from,
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// Appends a chunk, waiting while the ring is full of output an attached reader still
    /// needs.
    async fn push(&self, stderr: bool, data: Bytes) {
        loop {
            let mut consumed = self.consumed.subscribe();
            {
                let mut ring = self.lock();
                while ring.bytes + data.len() > PROCESS_OUTPUT_BUFFER_BYTES
                    || ring.chunks.len() >= RING_CHUNKS_MAX
                {
                    let Some(front) = ring.chunks.front().map(|c| c.seq) else {
                        break;
                    };
                    if ring.readers.values().any(|&cursor| cursor <= front) {
                        break;
                    }
                    if let Some(chunk) = ring.chunks.pop_front() {
                        ring.bytes -= chunk.data.len();
                    }
                }
                let room = ring.bytes + data.len() <= PROCESS_OUTPUT_BUFFER_BYTES
                    && ring.chunks.len() < RING_CHUNKS_MAX;
                if room || ring.chunks.is_empty() {
                    let seq = ring.next_seq;
                    ring.next_seq += 1;
                    ring.bytes += data.len();
                    ring.chunks.push_back(Chunk { seq, stderr, data });
                    drop(ring);
                    self.changed.send_modify(|v| *v += 1);
                    return;
                }
            }
            if consumed.changed().await.is_err() {
                return;
            }
        }
    }
}

/// How long one write to standard input may wait for the process to read.
const STDIN_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `(exitCode, signal)` as the API reports them.
fn split_exit(exit: Exit) -> (Option<i32>, Option<i32>) {
    match exit {
        Exit::Code(c) => (Some(c), None),
        Exit::Signal(s) => (None, Some(s)),
    }
}

/// One frame of a stream: an event, or a chunk of output still as bytes.
#[derive(Debug)]
pub(crate) enum Frame {
    /// Any event but output.
    Event(ProcessEvent),
    /// A chunk of output.
    Output { seq: u64, stderr: bool, data: Bytes },
}

impl Frame {
    /// The frame as the JSON of its [`ProcessEvent`].
    pub(crate) fn to_json(&self) -> String {
        match self {
            Frame::Event(event) => serde_json::to_string(event).unwrap_or_default(),
            Frame::Output { seq, stderr, data } => {
                hutch_api::processes::output_event_json(*stderr, *seq, data)
            }
        }
    }
}

/// An attached reader of a process's output.
pub(crate) struct Reader {
    process: Arc<Managed>,
    id: u64,
    cursor: u64,
    pending: VecDeque<Frame>,
    done: bool,
}

impl Reader {
    /// The next frame; `None` after `exit`.
    pub(crate) async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let mut changed = self.process.changed.subscribe();
            let mut batch = Vec::new();
            {
                let mut ring = self.process.lock();
                let first = ring.first_seq();
                if self.cursor < first {
                    self.pending
                        .push_back(Frame::Event(ProcessEvent::Truncated {
                            from: self.cursor,
                            first_available: first,
                        }));
                    self.cursor = first;
                }
                let skip = (self.cursor - first) as usize;
                for chunk in ring.chunks.iter().skip(skip).take(READ_BATCH) {
                    batch.push((chunk.seq, chunk.stderr, chunk.data.clone()));
                    self.cursor = chunk.seq + 1;
                }
                ring.readers.insert(self.id, self.cursor);
                if batch.is_empty()
                    && let Some(ended) = ring.ended
                    && self.cursor >= ring.next_seq
                {
                    let (exit_code, signal) = split_exit(ended.exit);
                    self.pending.push_back(Frame::Event(ProcessEvent::Exit {
                        exit_code,
                        signal,
                        duration_ms: ended.duration_ms,
                        timed_out: ended.timed_out,
                        oom_killed: ended.oom_killed,
                    }));
                    self.done = true;
                }
            }
            if !batch.is_empty() {
                self.process.consumed.send_modify(|v| *v += 1);
            }
            for (seq, stderr, data) in batch {
                self.pending.push_back(Frame::Output { seq, stderr, data });
            }
            if self.pending.is_empty() && !self.done && changed.changed().await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.process.lock().readers.remove(&self.id);
        self.process.consumed.send_modify(|v| *v += 1);
    }
}

/// How a process's standard input starts.
pub(crate) enum Stdin {
    /// `/dev/null`.
    Null,
    /// A pipe the client writes to later, kept open until it closes it.
    Open,
}

/// Starts a process of the session and returns it with a reader attached from its first
/// chunk (so that nothing is dropped before the caller reads).
pub(crate) fn start(
    agent: &Arc<Agent>,
    plan: Plan,
    timeout: Option<Duration>,
    stdin: Stdin,
) -> Result<(Arc<Managed>, Reader), AgentError> {
    let Ok(permit) = Arc::clone(&agent.processes.running).try_acquire_owned() else {
        return Err(AgentError::Busy {
            limit: PROCESSES_RUNNING_MAX,
        });
    };
    let initial = plan.stdin.clone();
    let (stdin_r, stdin_w) = match (&initial, stdin) {
        (None, Stdin::Null) => (commands::open_dev_null()?, None),
        _ => {
            let (r, w) = commands::pipe_pair()?;
            (r, Some(w))
        }
    };
    let (stdout_r, stdout_w) = commands::pipe_pair()?;
    let (stderr_r, stderr_w) = commands::pipe_pair()?;
    let Started {
        pid,
        exited,
        cgroup,
        started,
        oom,
    } = commands::start(
        agent,
        &plan,
        [stdin_r.as_fd(), stdout_w.as_fd(), stderr_w.as_fd()],
        Default::default(),
    )?;
    drop((stdin_r, stdout_w, stderr_w));
    // From here on the tree is killed if anything fails.
    let guard = KillOnDrop {
        cgroup: cgroup.as_ref(),
        pid,
    };
    let stdin_w = stdin_w
        .map(pipe::Sender::from_owned_fd)
        .transpose()
        .map_err(AgentError::Runtime)?;
    let stdout = pipe::Receiver::from_owned_fd(stdout_r).map_err(AgentError::Runtime)?;
    let stderr = pipe::Receiver::from_owned_fd(stderr_r).map_err(AgentError::Runtime)?;
    std::mem::forget(guard);
    let (stdin_w, initial_writer) = match (stdin_w, initial) {
        (Some(mut w), Some(data)) => (
            None,
            Some(tokio::spawn(async move {
                let _ = w.write_all(&data).await;
            })),
        ),
        (w, _) => (w, None),
    };
    let process = Arc::new(Managed {
        id: agent.processes.next_id.fetch_add(1, Ordering::Relaxed),
        pid,
        argv: plan.argv(),
        started_at: now_rfc3339(),
        ring: Mutex::new(Ring::default()),
        changed: watch::channel(0).0,
        consumed: watch::channel(0).0,
        stdin: tokio::sync::Mutex::new(stdin_w),
        cgroup,
    });
    let reader = process.subscribe(0);
    agent.processes.insert(Arc::clone(&process));
    let out_task = tokio::spawn(pump(Arc::clone(&process), stdout, false));
    let err_task = tokio::spawn(pump(Arc::clone(&process), stderr, true));
    let agent = Arc::clone(agent);
    let watched = Arc::clone(&process);
    tokio::spawn(async move {
        let process = watched;
        let mut exited = exited;
        let first = match timeout {
            Some(timeout) => tokio::select! {
                exit = &mut exited => Some(exit),
                () = crate::awake::sleep(timeout) => None,
            },
            None => Some((&mut exited).await),
        };
        let timed_out = first.is_none();
        // The tree dies with its leader, or all of it at the timeout.
        process.kill();
        let exit = match first {
            Some(exit) => exit,
            None => exited.await,
        }
        .unwrap_or(Exit::Signal(libc::SIGKILL));
        let duration_ms = started.elapsed().as_millis() as u64;
        if let Some(task) = initial_writer {
            task.abort();
        }
        let (mut out_task, mut err_task) = (out_task, err_task);
        let _ = tokio::time::timeout(commands::DRAIN_GRACE, async {
            let _ = (&mut out_task).await;
            let _ = (&mut err_task).await;
        })
        .await;
        out_task.abort();
        err_task.abort();
        *process.stdin.lock().await = None;
        // Its place is free before anyone can see it ended.
        drop(permit);
        process.lock().ended = Some(Ended {
            exit,
            duration_ms,
            timed_out,
            oom_killed: !timed_out && agent.oom.killed(oom, exit),
        });
        process.changed.send_modify(|v| *v += 1);
        agent.processes.finished();
    });
    Ok((process, reader))
}

/// Kills a just-started tree when setting it up fails half-way.
struct KillOnDrop<'a> {
    cgroup: Option<&'a CommandCgroup>,
    pid: i32,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        commands::kill_tree(self.cgroup, self.pid);
    }
}

/// Moves one output stream into the ring until it closes.
async fn pump(process: Arc<Managed>, mut stream: pipe::Receiver, stderr: bool) {
    // Never zeroed (`read_buf` fills spare capacity): a quiet process's buffer costs the
    // pages its reads filled, not 64 KiB.
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    loop {
        buf.clear();
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => process.push(stderr, Bytes::copy_from_slice(&buf)).await,
        }
    }
}

/// The current time, RFC 3339 UTC.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// When a process should be stopped: the request's timeout, or for a background process
/// without one, never (it lives as long as the session).
pub(crate) fn timeout_of(plan: &Plan, asked: Option<f64>, background: bool) -> Option<Duration> {
    if background && asked.is_none() {
        None
    } else {
        Some(plan.timeout)
    }
}

#[cfg(test)]
mod tests {
    use hutch_api::processes::base64;

    use super::*;

    fn managed() -> Arc<Managed> {
        Arc::new(Managed {
            id: 1,
            pid: 1,
            argv: vec![],
            started_at: String::new(),
            ring: Mutex::new(Ring::default()),
            changed: watch::channel(0).0,
            consumed: watch::channel(0).0,
            stdin: tokio::sync::Mutex::new(None),
            cgroup: None,
        })
    }

    fn end(p: &Managed) {
        p.lock().ended = Some(Ended {
            exit: Exit::Code(0),
            duration_ms: 1,
            timed_out: false,
            oom_killed: false,
        });
        p.changed.send_modify(|v| *v += 1);
    }

    async fn drain(reader: &mut Reader) -> Vec<ProcessEvent> {
        let mut events = Vec::new();
        while let Some(frame) = reader.next().await {
            events.push(serde_json::from_str(&frame.to_json()).unwrap());
        }
        events
    }

    #[tokio::test]
    async fn without_readers_the_ring_keeps_the_newest_output() {
        let p = managed();
        let chunk = Bytes::from(vec![b'x'; CHUNK_BYTES]);
        let n = PROCESS_OUTPUT_BUFFER_BYTES / CHUNK_BYTES + 4;
        for _ in 0..n {
            p.push(false, chunk.clone()).await;
        }
        end(&p);
        let mut reader = p.subscribe(0);
        let events = drain(&mut reader).await;
        assert_eq!(
            events[0],
            ProcessEvent::Truncated {
                from: 0,
                first_available: 4
            }
        );
        assert!(matches!(events.last(), Some(ProcessEvent::Exit { .. })));
        assert_eq!(events.len(), 1 + (n - 4) + 1);
    }

    #[tokio::test]
    async fn a_ring_of_tiny_writes_holds_a_bounded_number_of_chunks() {
        let p = managed();
        for _ in 0..RING_CHUNKS_MAX + 100 {
            p.push(false, Bytes::from_static(b"x")).await;
        }
        let ring = p.lock();
        assert_eq!(ring.chunks.len(), RING_CHUNKS_MAX);
        assert_eq!(ring.chunks.front().map(|c| c.seq), Some(100));
    }

    #[tokio::test]
    async fn an_attached_reader_loses_nothing_however_much_is_written() {
        let p = managed();
        let mut reader = p.subscribe(0);
        let writer = {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                for i in 0..200u8 {
                    p.push(i % 2 == 1, Bytes::from(vec![i; CHUNK_BYTES])).await;
                }
                end(&p);
            })
        };
        let events = drain(&mut reader).await;
        writer.await.unwrap();
        assert_eq!(events.len(), 201);
        for (i, e) in events[..200].iter().enumerate() {
            match e {
                ProcessEvent::Stdout { seq, data } | ProcessEvent::Stderr { seq, data } => {
                    assert_eq!(*seq, i as u64);
                    assert_eq!(base64::decode(data).unwrap(), vec![i as u8; CHUNK_BYTES]);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn the_oldest_finished_processes_are_forgotten_first() {
        let processes = Processes::default();
        for id in 1..=(PROCESSES_FINISHED_KEPT as u64 + 5) {
            let p = Arc::new(Managed {
                id,
                pid: id as i32,
                ..Arc::try_unwrap(managed()).ok().unwrap()
            });
            end(&p);
            processes.insert(p);
        }
        let running = managed();
        processes.insert(Arc::new(Managed {
            id: 1000,
            pid: 1000,
            ..Arc::try_unwrap(running).ok().unwrap()
        }));
        processes.finished();
        let ids: Vec<u64> = processes.list().iter().map(|p| p.process_id).collect();
        let mut expected: Vec<u64> = (6..=(PROCESSES_FINISHED_KEPT as u64 + 5)).collect();
        expected.push(1000);
        assert_eq!(
            ids, expected,
            "the running one stays, the 5 oldest finished go"
        );
    }

    #[tokio::test]
    async fn a_reader_resumes_at_its_cursor() {
        let p = managed();
        for i in 0..5u8 {
            p.push(false, Bytes::from(vec![i])).await;
        }
        end(&p);
        let events = drain(&mut p.subscribe(3)).await;
        assert_eq!(
            events,
            vec![
                ProcessEvent::Stdout {
                    seq: 3,
                    data: base64::encode(&[3])
                },
                ProcessEvent::Stdout {
                    seq: 4,
                    data: base64::encode(&[4])
                },
                ProcessEvent::Exit {
                    exit_code: Some(0),
                    signal: None,
                    duration_ms: 1,
                    timed_out: false,
                    oom_killed: false
                },
            ]
        );
    }
}
