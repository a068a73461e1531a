//! One-shot commands: start, feed stdin, capture output, enforce the timeout, kill the tree.
//!
//! Each command gets a cgroup of its own inside the sandbox's delegated cgroup (or, on hosts
//! without cgroup v2, a process group of its own). When the command's first process exits, or
//! its timeout passes, everything left in that cgroup is killed at once: a command never leaves
//! processes behind, whatever it forked or however it detached. The same kill happens when the
//! request is dropped half-way (the client went away): a command never outlives its request.
//!
//! Memory: a command holds at most its request (bounded by the agent's body limit) and
//! [`COMMAND_OUTPUT_MAX_BYTES`] per output stream, plus the response built from them.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hutch_api::limits::{
    COMMAND_ARG_MAX_BYTES, COMMAND_ARGV_MAX_ENTRIES, COMMAND_MAX_BYTES, COMMAND_OUTPUT_MAX_BYTES,
    COMMAND_STDIN_MAX_BYTES, COMMAND_TIMEOUT_DEFAULT_SECS, COMMAND_TIMEOUT_MAX_SECS,
    PATH_MAX_BYTES,
};
use hutch_api::{CommandRequest, CommandResult};
use hutch_sandbox::process::{ProcessSpec, SpawnError, find_program};
use hutch_sys::{fs, process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::Agent;
use crate::error::AgentError;
use crate::oom::OomMark;

/// How long output may keep flowing after the command's processes are gone (a pipe held by
/// something that escaped the kill) before the agent answers with what it has.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A validated command, ready to spawn.
pub(crate) struct Plan {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) stdin: Option<Vec<u8>>,
}

impl Plan {
    /// The program and its arguments, `argv[0]` first.
    pub(crate) fn argv(&self) -> Vec<String> {
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(self.program.clone());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// Checks a command request against the limits and resolves its environment.
pub(crate) fn validate(agent: &Agent, req: CommandRequest) -> Result<Plan, AgentError> {
    let from_command_string = req.command.is_some();
    let (program, args) = match (req.command, req.argv) {
        (Some(_), Some(_)) => {
            return Err(AgentError::invalid(
                "command",
                "give either command or argv, not both",
            ));
        }
        (None, None) => {
            return Err(AgentError::invalid(
                "command",
                "command or argv is required",
            ));
        }
        (Some(command), None) => {
            if command.len() > COMMAND_ARG_MAX_BYTES {
                return Err(AgentError::invalid(
                    "command",
                    format!(
                        "command is longer than {COMMAND_ARG_MAX_BYTES} bytes, Linux's bound on one argument; give a longer script as a file"
                    ),
                ));
            }
            if !std::path::Path::new("/bin/sh").exists() {
                return Err(AgentError::invalid(
                    "command",
                    format!(
                        "image {} has no /bin/sh to run a command string; give argv to run a program directly",
                        agent.image.name
                    ),
                ));
            }
            ("/bin/sh".to_owned(), vec!["-c".to_owned(), command])
        }
        (None, Some(mut argv)) => {
            if argv.is_empty() {
                return Err(AgentError::invalid("argv", "argv must name a program"));
            }
            if argv.len() > COMMAND_ARGV_MAX_ENTRIES
                || argv.iter().map(String::len).sum::<usize>() > COMMAND_MAX_BYTES
                || argv.iter().any(|a| a.len() > COMMAND_ARG_MAX_BYTES)
            {
                return Err(AgentError::invalid(
                    "argv",
                    format!(
                        "argv is over {COMMAND_ARGV_MAX_ENTRIES} entries or {COMMAND_MAX_BYTES} bytes, or an entry is over {COMMAND_ARG_MAX_BYTES} bytes (Linux's bound on one argument)"
                    ),
                ));
            }
            let program = argv.remove(0);
            (program, argv)
        }
    };
    if program.is_empty() || program.contains('\0') || args.iter().any(|a| a.contains('\0')) {
        let (field, message) = if from_command_string {
            ("command", "command may not contain NUL")
        } else {
            ("argv", "arguments may not be empty programs or contain NUL")
        };
        return Err(AgentError::invalid(field, message));
    }
    let cwd = req.cwd.unwrap_or_else(|| agent.image.cwd.clone());
    if !cwd.starts_with('/') || cwd.len() > PATH_MAX_BYTES || cwd.contains('\0') {
        return Err(AgentError::invalid("cwd", "cwd must be an absolute path"));
    }
    let timeout = req.timeout.unwrap_or(COMMAND_TIMEOUT_DEFAULT_SECS);
    if !(timeout > 0.0 && timeout <= COMMAND_TIMEOUT_MAX_SECS) {
        return Err(AgentError::invalid(
            "timeout",
            format!("timeout must be in (0, {COMMAND_TIMEOUT_MAX_SECS}] seconds"),
        ));
    }
    let extra = req.env.unwrap_or_default();
    hutch_api::env::check("env", &extra)?;
    let mut env: std::collections::BTreeMap<String, String> = agent.base_env.clone();
    env.extend(extra);
    let stdin = req.stdin.map(String::into_bytes);
    if stdin
        .as_ref()
        .is_some_and(|s| s.len() > COMMAND_STDIN_MAX_BYTES)
    {
        return Err(AgentError::invalid(
            "stdin",
            format!("stdin is larger than {COMMAND_STDIN_MAX_BYTES} bytes"),
        ));
    }
    Ok(Plan {
        program,
        args,
        cwd,
        env: env.into_iter().collect(),
        timeout: Duration::from_secs_f64(timeout),
        stdin,
    })
}

/// A command's (or an interpreter context's) cgroup, removed when dropped.
pub(crate) struct CommandCgroup {
    /// The sandbox's cgroup directory (the parent; a duplicate, so that a removal retried
    /// off-thread outlives nothing it needs).
    dir: OwnedFd,
    name: CString,
    /// The cgroup's own directory, which its first process starts in.
    own: OwnedFd,
}

impl CommandCgroup {
    fn create(dir: &OwnedFd, id: u64) -> Result<CommandCgroup, AgentError> {
        CommandCgroup::create_named(dir, &format!("cmd-{id}")).map_err(|source| {
            AgentError::Cgroup {
                op: "create",
                source,
            }
        })
    }

    /// Makes the child cgroup `name` of the sandbox's cgroup directory `dir`.
    pub(crate) fn create_named(dir: &OwnedFd, name: &str) -> io::Result<CommandCgroup> {
        let name = CString::new(name).map_err(io::Error::other)?;
        let dir = dir.try_clone()?;
        fs::mkdirat(dir.as_fd(), &name, 0o755)?;
        let own = match fs::openat_nofollow(dir.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY)
        {
            Ok(own) => own,
            Err(err) => {
                let _ = fs::unlinkat(dir.as_fd(), &name, libc::AT_REMOVEDIR);
                return Err(err);
            }
        };
        Ok(CommandCgroup { dir, name, own })
    }

    /// The cgroup's own directory, for starting a process in it.
    pub(crate) fn own(&self) -> BorrowedFd<'_> {
        self.own.as_fd()
    }

    /// Writes `value` to the cgroup's control file `file` (`memory.max`, …).
    pub(crate) fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = CString::new(file).map_err(io::Error::other)?;
        let fd = fs::openat_nofollow(self.own.as_fd(), &path, libc::O_WRONLY)?;
        io::Write::write_all(&mut std::fs::File::from(fd), value.as_bytes())
    }

    /// Kills every process in the cgroup.
    pub(crate) fn kill(&self) {
        if self.write("cgroup.kill", "1").is_ok() {
            return;
        }
        // Kernels before 5.14 have no cgroup.kill: kill the members one by one until none is
        // left (new ones can only be forked by members, which are being killed).
        for _ in 0..100 {
            let pids = self.members();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = process::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Pids in the command's cgroup.
    fn members(&self) -> Vec<i32> {
        use std::io::Read;
        let Ok(fd) = fs::openat_nofollow(self.own.as_fd(), c"cgroup.procs", libc::O_RDONLY) else {
            return Vec::new();
        };
        let mut text = String::new();
        let _ = std::fs::File::from(fd).read_to_string(&mut text);
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    fn try_remove(dir: BorrowedFd<'_>, name: &CStr) -> bool {
        fs::unlinkat(dir, name, libc::AT_REMOVEDIR).is_ok()
    }
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        // A cgroup is busy until its last killed member is gone; retry briefly off-thread.
        if CommandCgroup::try_remove(self.dir.as_fd(), &self.name) {
            return;
        }
        let Ok(dir) = self.dir.try_clone() else {
            return;
        };
        let name = self.name.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                std::thread::sleep(Duration::from_millis(10));
                if CommandCgroup::try_remove(dir.as_fd(), &name) {
                    return;
                }
            }
        });
    }
}

/// A process just started into a cgroup of its own.
pub(crate) struct Started {
    /// Its pid (also its process group and session: it called `setsid`).
    pub(crate) pid: i32,
    /// Its exit, from the reaper.
    pub(crate) exited: tokio::sync::oneshot::Receiver<crate::reaper::Exit>,
    /// Its cgroup (absent on hosts without cgroup v2).
    pub(crate) cgroup: Option<CommandCgroup>,
    /// When it started.
    pub(crate) started: Instant,
    /// The session's OOM kill count when it started.
    pub(crate) oom: OomMark,
}

/// Starts `plan` in a new cgroup with the given descriptors as its stdio.
pub(crate) fn start(
    agent: &Agent,
    plan: &Plan,
    stdio: [std::os::fd::BorrowedFd<'_>; 3],
    options: hutch_sandbox::process::SpawnOptions,
) -> Result<Started, AgentError> {
    let id = agent.next_command.fetch_add(1, Ordering::Relaxed);
    let cgroup = agent
        .cgroup_dir
        .as_ref()
        .map(|dir| CommandCgroup::create(dir, id))
        .transpose()?;
    let path = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    let program = find_program(&plan.program, path).ok_or_else(|| {
        AgentError::Spawn(SpawnError::Exec {
            program: plan.program.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "not found on PATH"),
        })
    })?;
    let argv = plan.argv();
    let spec = ProcessSpec {
        program: &program,
        argv: &argv,
        env: &plan.env,
        cwd: std::path::Path::new(&plan.cwd),
        stdio,
        cgroup: cgroup.as_ref().map(CommandCgroup::own),
        user: agent.image.user_ids()?,
    };
    let started = Instant::now();
    let oom = agent.oom.mark();
    let (process, exited) = agent.reaper.spawn(&spec, options)?;
    Ok(Started {
        pid: process.pid,
        exited,
        cgroup,
        started,
        oom,
    })
}

/// Runs a command to completion.
pub(crate) async fn run(agent: &Agent, req: CommandRequest) -> Result<CommandResult, AgentError> {
    let plan = validate(agent, req)?;
    let (stdin_r, stdin_w) = match &plan.stdin {
        Some(_) => {
            let (r, w) = pipe_pair()?;
            (r, Some(w))
        }
        None => (open_dev_null()?, None),
    };
    let (stdout_r, stdout_w) = pipe_pair()?;
    let (stderr_r, stderr_w) = pipe_pair()?;
    let Started {
        pid,
        exited,
        cgroup,
        started,
        oom,
    } = start(
        agent,
        &plan,
        [stdin_r.as_fd(), stdout_w.as_fd(), stderr_w.as_fd()],
        Default::default(),
    )?;
    drop((stdin_r, stdout_w, stderr_w));
    let mut killer = Killer {
        cgroup: cgroup.as_ref(),
        pgid: pid,
        done: false,
    };

    let stdin_task = match (stdin_w, plan.stdin) {
        (Some(w), Some(data)) => {
            let mut tx = pipe::Sender::from_owned_fd(w).map_err(AgentError::Runtime)?;
            Some(tokio::spawn(async move {
                // A command that exits without reading its input is not an error.
                let _ = tx.write_all(&data).await;
            }))
        }
        _ => None,
    };
    let stdout = Some(pipe::Receiver::from_owned_fd(stdout_r).map_err(AgentError::Runtime)?);
    let stderr = Some(pipe::Receiver::from_owned_fd(stderr_r).map_err(AgentError::Runtime)?);
    let (stdout_buf, stderr_buf) = (SharedCapture::default(), SharedCapture::default());
    let mut stdout_task = tokio::spawn(capture(stdout, stdout_buf.clone()));
    let mut stderr_task = tokio::spawn(capture(stderr, stderr_buf.clone()));

    let mut exited = exited;
    let first = tokio::select! {
        exit = &mut exited => Some(exit),
        () = crate::awake::sleep(plan.timeout) => None,
    };
    let timed_out = first.is_none();
    // Whatever the command left running (or everything, on timeout) dies now.
    killer.kill();
    let exit = match first {
        Some(exit) => exit,
        // The leader was killed above; its status arrives once the reaper sees it.
        None => exited.await,
    }
    // A lost status (the reaper never drops a waiter) reads as killed.
    .unwrap_or(crate::reaper::Exit::Signal(libc::SIGKILL));
    let duration_ms = started.elapsed().as_millis() as u64;
    if let Some(task) = stdin_task {
        task.abort();
    }
    // Pipes close once every process holding them is gone; wait a little for the last bytes,
    // then keep what arrived.
    let _ = tokio::time::timeout(DRAIN_GRACE, async {
        let _ = (&mut stdout_task).await;
        let _ = (&mut stderr_task).await;
    })
    .await;
    stdout_task.abort();
    stderr_task.abort();
    let (out, err) = (take(&stdout_buf), take(&stderr_buf));
    drop(killer);
    drop(cgroup);
    let oom_killed = !timed_out && agent.oom.killed(oom, exit);
    let truncated = out.truncated || err.truncated;
    let mut stderr = err.text();
    if oom_killed {
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        stderr.push_str(&agent.oom.note());
        stderr.push('\n');
    }
    Ok(CommandResult {
        exit_code: exit.code(),
        truncated,
        stdout: out.text(),
        stderr,
        duration_ms,
        timed_out,
        oom_killed,
    })
}

/// Kills a command's whole tree: its cgroup, or its process group. Dropped before it killed
/// (the request was cancelled, or failed after the spawn), it kills then.
pub(crate) struct Killer<'a> {
    pub(crate) cgroup: Option<&'a CommandCgroup>,
    pub(crate) pgid: i32,
    pub(crate) done: bool,
}

impl Drop for Killer<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
}

impl Killer<'_> {
    /// Kills the tree now.
    pub(crate) fn kill(&mut self) {
        self.done = true;
        kill_tree(self.cgroup, self.pgid);
    }
}

/// Kills everything in a command's cgroup, or without one its process group.
pub(crate) fn kill_tree(cgroup: Option<&CommandCgroup>, pgid: i32) {
    match cgroup {
        Some(cgroup) => cgroup.kill(),
        None => {
            // The group is the command's own (setsid).
            let _ = process::kill_group(pgid, libc::SIGKILL);
        }
    }
}

/// Output captured from one stream, cut at the limit.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn text(self) -> String {
        // Valid UTF-8 (the usual case) becomes the string without a copy.
        let mut text = String::from_utf8(self.bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if self.truncated {
            text.push_str(&format!(
                "\n[hutch: output truncated at {COMMAND_OUTPUT_MAX_BYTES} bytes]\n"
            ));
        }
        text
    }
}

/// Output captured so far, readable while the capture still runs.
type SharedCapture = std::sync::Arc<std::sync::Mutex<Captured>>;

fn take(shared: &SharedCapture) -> Captured {
    std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()))
}

async fn capture(stream: Option<pipe::Receiver>, into: SharedCapture) {
    let Some(mut stream) = stream else {
        return;
    };
    // Never zeroed (`read_buf` fills spare capacity): a command that prints little does not
    // pay for writing 64 KiB of zeros.
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut captured = into.lock().unwrap_or_else(|e| e.into_inner());
                let room = COMMAND_OUTPUT_MAX_BYTES - captured.bytes.len();
                if n > room {
                    captured.truncated = true;
                }
                // Past the limit keep reading, so the writer never blocks, but keep nothing.
                captured.bytes.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// A pipe, both ends close-on-exec: `(read, write)`.
pub(crate) fn pipe_pair() -> Result<(OwnedFd, OwnedFd), AgentError> {
    hutch_sys::pipe::pipe().map_err(AgentError::Runtime)
}

pub(crate) fn open_dev_null() -> Result<OwnedFd, AgentError> {
    std::fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(AgentError::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_text_keeps_utf8_and_replaces_invalid_bytes() {
        let valid = Captured {
            bytes: "héllo\n".as_bytes().to_vec(),
            truncated: false,
        };
        assert_eq!(valid.text(), "héllo\n");
        let invalid = Captured {
            bytes: vec![b'a', 0xff, b'b'],
            truncated: false,
        };
        assert_eq!(invalid.text(), "a\u{fffd}b");
    }

    #[test]
    fn truncated_output_is_marked() {
        let cut = Captured {
            bytes: b"abc".to_vec(),
            truncated: true,
        };
        let text = cut.text();
        assert!(
            text.starts_with("abc\n[hutch: output truncated at "),
            "{text}"
        );
    }

    #[tokio::test]
    async fn capture_keeps_at_most_the_limit_and_reads_to_the_end() {
        let (rx, tx) = pipe_pair().unwrap();
        let rx = pipe::Receiver::from_owned_fd(rx).unwrap();
        let mut tx = pipe::Sender::from_owned_fd(tx).unwrap();
        let shared = SharedCapture::default();
        let task = tokio::spawn(capture(Some(rx), shared.clone()));
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..(COMMAND_OUTPUT_MAX_BYTES / chunk.len() + 2) {
            tx.write_all(&chunk).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let captured = take(&shared);
        assert_eq!(captured.bytes.len(), COMMAND_OUTPUT_MAX_BYTES);
        assert!(captured.truncated);
    }
}
