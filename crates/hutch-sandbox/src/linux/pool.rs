//! The warm pool: sandboxes built ahead of sessions, so that a create only has to claim one.

use std::os::fd::AsRawFd;
use std::time::Duration;

use hutch_api::Resources;
use uuid::Uuid;

use super::build::Embryo;
use super::{LinuxRuntime, lock};
use crate::sys;

impl LinuxRuntime {
    /// Starts keeping `warm_pool` built sandboxes ready. Call once the server has swept the
    /// leftovers of earlier runs. Needs a tokio runtime.
    pub fn start_pool(&self) {
        if self.pool_targets() == (0, 0) {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move { runtime.fill_pool().await });
    }

    /// How many pooled sandboxes of each kind to keep: plain, and wired for the network.
    fn pool_targets(&self) -> (usize, usize) {
        let wired = match &self.inner.config.network {
            Some(network) => network.warm_pool,
            None => 0,
        };
        (self.inner.config.warm_pool, wired)
    }

    /// Builds a sandbox for the pool, wiring it for the network when `wired`.
    fn build_pooled(&self, id: Uuid, wired: bool) -> Result<Embryo, crate::SandboxError> {
        let mut embryo = self.build(id, &Resources::default())?;
        if wired && let Some(network) = &self.inner.network {
            embryo.wired = Some(network.prewire(id, embryo.spawned.pid, &self.sandbox_dir(id))?);
        }
        Ok(embryo)
    }

    /// Keeps the pool at its targets until shutdown.
    async fn fill_pool(self) {
        let (plain, wired) = self.pool_targets();
        let target = plain + wired;
        while !self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
            let wanted = target.saturating_sub(lock(&self.inner.pool_ids).len());
            let wired_now = lock(&self.inner.wired_ids).len();
            let builds: Vec<_> = (0..wanted)
                .map(|n| {
                    let id = Uuid::now_v7();
                    lock(&self.inner.pool_ids).insert(id);
                    let wire = wired_now + n < wired;
                    if wire {
                        lock(&self.inner.wired_ids).insert(id);
                    }
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || (id, this.build_pooled(id, wire)))
                })
                .collect();
            let mut failed = false;
            for build in builds {
                match build.await {
                    Ok((_, Ok(embryo))) => lock(&self.inner.pool).push(embryo),
                    // Shutting down: drain_pool takes it from the pool like any other.
                    Ok((id, Err(e))) => {
                        tracing::error!(error = %e, "building a sandbox for the warm pool failed");
                        lock(&self.inner.pool_ids).remove(&id);
                        lock(&self.inner.wired_ids).remove(&id);
                        let this = self.clone();
                        let _ = tokio::task::spawn_blocking(move || this.teardown(id)).await;
                        failed = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pool build task failed");
                        failed = true;
                    }
                }
            }
            if failed {
                // Do not spin on a host that cannot build sandboxes; creates report the error.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if lock(&self.inner.pool_ids).len() >= target {
                self.inner.pool_wanted.notified().await;
            }
        }
    }

    /// Takes a pooled sandbox: one wired for the network when `wired`, a plain one otherwise.
    pub(super) fn take_pooled(&self, wired: bool) -> Option<Embryo> {
        let mut pool = lock(&self.inner.pool);
        let index = pool.iter().rposition(|e| e.wired.is_some() == wired)?;
        let embryo = pool.swap_remove(index);
        lock(&self.inner.wired_ids).remove(&embryo.id);
        Some(embryo)
    }

    /// Destroys the pooled sandboxes, and those still being built for the pool once they are.
    pub(super) async fn drain_pool(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.pool_wanted.notify_one();
        let deadline = tokio::time::Instant::now() + self.inner.config.start_timeout;
        loop {
            let embryos: Vec<Embryo> = std::mem::take(&mut *lock(&self.inner.pool));
            for embryo in embryos {
                let _ = sys::pidfd_send_signal(embryo.spawned.pidfd.as_raw_fd(), libc::SIGKILL);
                let this = self.clone();
                let id = embryo.id;
                let _ = tokio::task::spawn_blocking(move || this.teardown(id)).await;
                sys::reap(embryo.spawned.pid);
                lock(&self.inner.pool_ids).remove(&id);
                lock(&self.inner.wired_ids).remove(&id);
            }
            if lock(&self.inner.pool_ids).is_empty() || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
