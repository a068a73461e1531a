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
        if self.inner.config.warm_pool == 0 {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move { runtime.fill_pool().await });
    }

    /// Keeps the pool at `warm_pool` sandboxes until shutdown.
    async fn fill_pool(self) {
        let target = self.inner.config.warm_pool;
        while !self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
            let wanted = target.saturating_sub(lock(&self.inner.pool_ids).len());
            let builds: Vec<_> = (0..wanted)
                .map(|_| {
                    let id = Uuid::now_v7();
                    lock(&self.inner.pool_ids).insert(id);
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || (id, this.build(id, &Resources::default())))
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
            }
            if lock(&self.inner.pool_ids).is_empty() || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
