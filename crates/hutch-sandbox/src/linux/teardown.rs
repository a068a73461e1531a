//! Destroying sandboxes: one at a time, or all of them at shutdown.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use uuid::Uuid;

use super::{LinuxRuntime, bare_record, io, lock};
use crate::sys;
use crate::{Runtime, SandboxError, SandboxRecord};

/// How long a teardown waits for the server process that watched the sandbox to stop its parts
/// of it (its watcher sees the agent die, and stops its resolver, whose in-flight questions
/// may wait up to 3 s for their upstream).
const LOCAL_PARTS_TIMEOUT: Duration = Duration::from_secs(10);

impl LinuxRuntime {
    /// On orderly shutdown: destroys the pooled sandboxes and, when `destroy_sessions`, every
    /// live one too (otherwise they keep running for the next start to adopt). Removes this
    /// server's cgroup parents when nothing is left in them.
    pub async fn shutdown(&self, destroy_sessions: bool) {
        self.drain_pool().await;
        if destroy_sessions {
            let live: Vec<(Uuid, Uuid)> = lock(&self.inner.live)
                .iter()
                .map(|(id, l)| (*id, l.sandbox_id))
                .collect();
            for (id, sandbox_id) in live {
                if let Err(e) = self.destroy(&bare_record(id, sandbox_id)).await {
                    tracing::warn!(session = %id, error = %e, "destroying a sandbox at shutdown failed");
                }
            }
        }
        self.inner.cgroups.remove_parents_if_empty();
        self.inner.disks.close_if_unused();
    }

    /// [`crate::Runtime::destroy`]: kills the sandbox, tears it down and waits for its agent to
    /// exit.
    pub(super) async fn destroy_sandbox(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        let live = lock(&self.inner.live).get(&record.id).cloned();
        if let Some(live) = &live {
            live.destroying
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = sys::pidfd_send_signal(live.pidfd.as_raw_fd(), libc::SIGKILL);
        }
        let this = self.clone();
        let sandbox_id = record.sandbox_id;
        tokio::task::spawn_blocking(move || this.teardown(sandbox_id))
            .await
            .map_err(|e| SandboxError::Sys {
                call: "teardown task".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
        if let Some(live) = live {
            let mut exited = live.exited.clone();
            let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|e| *e)).await;
        }
        lock(&self.inner.live).remove(&record.id);
        self.unlink_session(record.id, record.sandbox_id);
        Ok(())
    }

    /// Kills and removes everything of sandbox `id`, blocking (run off the async threads).
    pub(super) fn teardown(&self, id: Uuid) -> Result<(), SandboxError> {
        let cgroup = self.inner.cgroups.existing(id);
        self.inner.cgroups.kill(&cgroup, Duration::from_secs(5))?;
        self.inner.cgroups.remove(&cgroup, Duration::from_secs(5))?;
        let socket = self.socket_path(id);
        match fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &socket)(e));
            }
            _ => {}
        }
        // Its processes are dead: this process's parts of it stop, and those another process
        // runs (when that one watched it) must stop before its address and range are freed.
        self.stop_local(id);
        if !self.inner.keeper.wait_released(id, LOCAL_PARTS_TIMEOUT) {
            return Err(SandboxError::Sys {
                call: "teardown".into(),
                source: std::io::Error::other(format!(
                    "another server process still runs parts of sandbox {id} after {LOCAL_PARTS_TIMEOUT:?}; its slots stay held"
                )),
            });
        }
        let dir = self.sandbox_dir(id);
        if let Some(network) = &self.inner.network {
            network.detach(id, &dir);
        }
        self.inner.disks.release(&dir, id);
        // The first id of its range, for a sandbox another process made.
        let owner = fs::symlink_metadata(&dir).ok().map(|meta| meta.uid());
        let trashed = self
            .inner
            .config
            .data_dir
            .join("trash")
            .join(format!("{id}-{}", Uuid::now_v7().simple()));
        match fs::rename(&dir, &trashed) {
            Ok(()) => {
                let _ = self.inner.trash.send(trashed);
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &dir)(e));
            }
            Err(_) => {}
        }
        // Its processes are gone and its files out of reach: the id range may serve another.
        self.inner.ids.release(id, owner);
        self.inner.keeper.forget(id);
        Ok(())
    }
}
