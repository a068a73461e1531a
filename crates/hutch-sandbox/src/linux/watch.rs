//! Watching a claimed sandbox's agent: reaping it when it exits, and reporting a death that no
//! `destroy` caused.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use uuid::Uuid;

use super::{LinuxRuntime, lock, sys_err};
use crate::sys;
use crate::{SandboxError, SandboxRecord};

/// One running sandbox this server process watches.
pub(super) struct Live {
    pub(super) sandbox_id: Uuid,
    pub(super) pidfd: Arc<OwnedFd>,
    /// Turns true once the agent has exited.
    pub(super) exited: watch::Receiver<bool>,
    /// Set while `destroy` runs, so the exit it causes is not reported as a death.
    pub(super) destroying: std::sync::atomic::AtomicBool,
}

impl LinuxRuntime {
    /// Watches the sandbox's agent, host pid `pid`, until it exits: reaps it and reports it as
    /// died unless being destroyed.
    pub(super) fn watch(
        &self,
        record: &SandboxRecord,
        pid: i32,
        pidfd: OwnedFd,
    ) -> Result<Arc<Live>, SandboxError> {
        let id = record.id;
        let pidfd = Arc::new(pidfd);
        let (tx, rx) = watch::channel(false);
        let live = Arc::new(Live {
            sandbox_id: record.sandbox_id,
            pidfd: pidfd.clone(),
            exited: rx,
            destroying: Default::default(),
        });
        // SAFETY: ArcFd keeps the pidfd open (it holds an Arc of the OwnedFd) and always
        // returns the same descriptor for as long as the AsyncFd lives.
        let async_fd =
            unsafe { AsyncFd::register_with_interest(ArcFd(pidfd), tokio::io::Interest::READABLE) }
                .map_err(|e| sys_err("watch pidfd")(e.into()))?;
        let runtime = self.clone();
        let watched = live.clone();
        tokio::spawn(async move {
            let _ = async_fd.readable().await;
            sys::reap(pid);
            let _ = tx.send(true);
            if !watched.destroying.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::warn!(session = %id, pid, "sandbox agent exited on its own");
                let _ = lock(&runtime.inner.died).send(id);
            }
        });
        lock(&self.inner.live).insert(id, live.clone());
        Ok(live)
    }
}

/// A pidfd shared between the watcher and `Live`.
struct ArcFd(Arc<OwnedFd>);

impl AsRawFd for ArcFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
