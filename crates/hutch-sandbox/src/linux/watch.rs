//! Watching a claimed sandbox's agent: reaping it when it exits, stopping this process's parts
//! of the sandbox (its resolver, its package index proxy) and releasing its local lock, and
//! reporting a death that no `destroy` of this process caused.
//!
//! Another server process on the data directory may destroy the sandbox: its processes are
//! killed, this watcher sees the agent exit and stops what this process runs for it, and the
//! destroying process, waiting for the local lock, then frees its slots.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use uuid::Uuid;

use super::keepers::LocalHold;
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
    /// Watches the sandbox's agent, host pid `pid`, until it exits: reaps it, stops this
    /// process's parts of the sandbox, releases `hold` and reports it as died unless being
    /// destroyed by this process.
    pub(super) fn watch(
        &self,
        record: &SandboxRecord,
        pid: i32,
        pidfd: OwnedFd,
        hold: LocalHold,
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
            if !sys::reap(pid) {
                // Exited, but held by a tracer: reaped once it is handed back.
                tokio::task::spawn_blocking(move || sys::wait_blocking(pid));
            }
            runtime.stop_local(watched.sandbox_id);
            {
                let mut live = lock(&runtime.inner.live);
                if live.get(&id).is_some_and(|l| Arc::ptr_eq(l, &watched)) {
                    live.remove(&id);
                }
            }
            drop(hold);
            let _ = tx.send(true);
            if !watched.destroying.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::warn!(session = %id, pid, "sandbox agent exited on its own");
                let _ = lock(&runtime.inner.died).send(id);
            }
        });
        lock(&self.inner.live).insert(id, live.clone());
        Ok(live)
    }

    /// Stops what this process runs for sandbox `sandbox_id` outside it (its resolver, its
    /// package index proxy); its slots stay held until its teardown.
    pub(super) fn stop_local(&self, sandbox_id: Uuid) {
        if let Some(network) = &self.inner.network {
            network.stop_local(sandbox_id);
        }
        if let Some(proxies) = &self.inner.index_proxies {
            proxies.stop(sandbox_id);
        }
    }
}

/// A pidfd shared between the watcher and `Live`.
struct ArcFd(Arc<OwnedFd>);

impl AsRawFd for ArcFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
