//! Pausing a sandbox: every process of its cgroup frozen (`cgroup.freeze` on v2, the v1
//! freezer otherwise) or thawed with all its state, and the memory a frozen sandbox can give
//! back reclaimed.
//!
//! The whole sandbox cgroup is frozen, agent included, through [`super::cgroups::Cgroups::freeze`],
//! so pausing follows whatever layout the sandbox cgroup has inside. Freezing an already
//! frozen sandbox (or thawing a thawed one) succeeds at once.

use std::fs;
use std::io;
use std::time::Duration;

use crate::{SandboxError, SandboxRecord};

use super::LinuxRuntime;

/// How long freezing or thawing may take before it is given up.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

impl LinuxRuntime {
    /// [`crate::Runtime::set_frozen`]: freezes or thaws every process of sandbox `record`.
    pub(super) async fn set_frozen_sandbox(
        &self,
        record: &SandboxRecord,
        frozen: bool,
    ) -> Result<(), SandboxError> {
        let runtime = self.clone();
        let record = record.clone();
        tokio::task::spawn_blocking(move || runtime.set_frozen_blocking(&record, frozen))
            .await
            .map_err(|err| SandboxError::Sys {
                call: "freeze task".to_owned(),
                source: io::Error::other(err.to_string()),
            })?
    }

    fn set_frozen_blocking(
        &self,
        record: &SandboxRecord,
        frozen: bool,
    ) -> Result<(), SandboxError> {
        let cgroup = self.inner.cgroups.existing(record.sandbox_id);
        if !self.inner.cgroups.present(&cgroup) {
            return Err(SandboxError::Gone(record.id));
        }
        let verb = if frozen { "freeze" } else { "thaw" };
        self.inner
            .cgroups
            .freeze(&cgroup, frozen, FREEZE_TIMEOUT)
            .map_err(|err| SandboxError::Sys {
                call: format!("{verb} sandbox {}", record.sandbox_id),
                source: io::Error::other(err.to_string()),
            })?;
        if frozen && let Some(dir) = &cgroup.v2_dir {
            reclaim(&dir.join("memory.reclaim"));
        }
        Ok(())
    }
}

/// Asks the kernel to reclaim the page cache a frozen sandbox holds (`memory.reclaim`, cgroup
/// v2 on Linux 5.19 and later), so that a paused session costs less than an idle one. Its
/// processes' own memory is left alone: without swap it cannot go anywhere. Best effort: the
/// file is missing on older kernels and the kernel may reclaim less than asked (`EAGAIN`).
fn reclaim(file: &std::path::Path) {
    if file.exists() {
        // The most it may take; the kernel stops when nothing more is reclaimable.
        if let Err(err) = fs::write(file, "1G") {
            tracing::trace!(path = %file.display(), error = %err, "memory.reclaim");
        }
    }
}
