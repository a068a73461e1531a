//! PID 1's duty: reap every child, and hand the exit status of the ones the agent started to
//! whoever waits for them.
//!
//! Processes are started through [`Reaper::spawn`], which registers the pid under the same
//! lock that the reaper holds while it calls `waitpid(-1)`. So a child's status can never be
//! collected before its waiter is registered, and the reaping of a child whose `exec` failed
//! never races the reaper. Orphans re-parented to PID 1 are reaped and dropped.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use hutch_sandbox::process::{ChildFilter, Process, ProcessSpec, SpawnError, SpawnOptions};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    fn from_status(status: libc::c_int) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// The exit code a shell would report: `128 + n` for signal `n`.
    pub(crate) fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// The registry of waited-for children.
pub(crate) struct Reaper {
    /// By the pid waited for (a process, or its shepherd): the process's own pid (the group
    /// to kill) and where its exit goes.
    waiting: Mutex<HashMap<i32, (i32, oneshot::Sender<Exit>)>>,
    filter: ChildFilter,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the reaping task.
    pub(crate) fn start() -> io::Result<Arc<Reaper>> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper {
            waiting: Mutex::new(HashMap::new()),
            filter: ChildFilter::new()?,
        });
        let task_reaper = reaper.clone();
        tokio::spawn(async move {
            // Orphans may have exited before the handler was installed.
            task_reaper.reap_all();
            while sigchld.recv().await.is_some() {
                task_reaper.reap_all();
            }
        });
        Ok(reaper)
    }

    /// Starts a confined process and returns it with a receiver of its exit.
    pub(crate) fn spawn(
        &self,
        spec: &ProcessSpec<'_>,
        options: SpawnOptions<'_>,
    ) -> Result<(Process, oneshot::Receiver<Exit>), SpawnError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let process = hutch_sandbox::process::spawn_with(spec, &self.filter, options)?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(process.waited, (process.pid, tx));
        Ok((process, rx))
    }

    /// Like [`Reaper::spawn`], with `extra[i]` as the child's descriptor `3 + i`.
    pub(crate) fn spawn_with_fds(
        &self,
        spec: &ProcessSpec<'_>,
        extra: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(Process, oneshot::Receiver<Exit>), SpawnError> {
        let options = SpawnOptions {
            extra_fds: extra,
            ..SpawnOptions::default()
        };
        self.spawn(spec, options)
    }

    /// Sends `SIGKILL` to the process group of every started process still running (each
    /// leads a group of its own): what the agent does before it exits on its own.
    pub(crate) fn kill_groups(&self) {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for (pid, _) in waiting.values() {
            let _ = hutch_sys::process::kill_group(*pid, libc::SIGKILL);
        }
    }

    /// On `SIGTERM` (a container being stopped), kills every process group the agent started
    /// and exits with status 0.
    pub(crate) fn end_on_terminate(self: &Arc<Self>) -> io::Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let reaper = self.clone();
        tokio::spawn(async move {
            if sigterm.recv().await.is_some() {
                tracing::warn!("told to stop (SIGTERM): ending every command");
                reaper.kill_groups();
                std::process::exit(0);
            }
        });
        Ok(())
    }

    fn reap_all(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some((pid, status)) = hutch_sys::process::reap_any() else {
                return;
            };
            if let Some((_, tx)) = waiting.remove(&pid) {
                let _ = tx.send(Exit::from_status(status));
            }
        }
    }
}
