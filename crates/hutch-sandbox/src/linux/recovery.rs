//! After a restart: adopting the sandboxes that outlived the server, and sweeping the rest.

use std::collections::{HashMap, HashSet};
use std::fs;

use tokio::net::UnixStream;
use uuid::Uuid;

use super::{LinuxRuntime, agent_pid, bare_record, image, io, lock};
use crate::sys;
use crate::{Runtime, SandboxError, SandboxRecord};

impl LinuxRuntime {
    /// [`crate::Runtime::adopt`]: watches a sandbox an earlier server process claimed, if it is
    /// still alive and reachable.
    pub(super) async fn adopt_sandbox(&self, record: &SandboxRecord) -> Result<bool, SandboxError> {
        // Pin the process first, then check it is the sandbox's: a pid reused after the check
        // could not slip in.
        let Ok(pid) = agent_pid(record) else {
            return Ok(false);
        };
        let Ok(pidfd) = sys::pidfd_open(pid) else {
            return Ok(false);
        };
        let cgroup = self.inner.cgroups.existing(record.sandbox_id);
        if !self.inner.cgroups.contains(&cgroup, pid) {
            return Ok(false);
        }
        if UnixStream::connect(self.socket_path(record.sandbox_id))
            .await
            .is_err()
        {
            return Ok(false);
        }
        // Fails while the process that watched it still runs parts of it (it is alive).
        let hold = self.inner.keeper.hold(record.sandbox_id)?;
        if let Some(network) = &self.inner.network
            && network.was_attached(&self.sandbox_dir(record.sandbox_id))
            && !network.adopt(
                record.sandbox_id,
                &self.sandbox_dir(record.sandbox_id),
                &hold,
            )?
        {
            return Ok(false);
        }
        // This runtime keeps it from now on (its builder may be dead).
        self.inner.keeper.keep(record.sandbox_id)?;
        self.link_session(record.id, record.sandbox_id)?;
        self.watch(record, pid, pidfd, hold)?;
        if let Some(proxies) = &self.inner.index_proxies
            && let Err(e) = proxies.start(record.sandbox_id, pid)
        {
            tracing::warn!(session = %record.id, error = %e, "restarting the package index proxy failed");
        }
        Ok(true)
    }

    /// [`crate::Runtime::sweep`]: destroys every sandbox on this host that is neither pooled nor
    /// the live sandbox of a `known` session, nor kept by a live server process on this data
    /// directory, this one included (its pool, its builds, its sessions). Safe while this
    /// process and others create sandboxes: what a live process builds is kept by it from
    /// before its first artifact exists.
    pub(super) async fn sweep_unknown(
        &self,
        known: &HashSet<Uuid>,
    ) -> Result<Vec<Uuid>, SandboxError> {
        let mut found: HashSet<Uuid> = self.inner.cgroups.list().into_iter().collect();
        found.extend(self.inner.disks.found());
        for sub in ["sandboxes", "sockets"] {
            let dir = self.inner.config.data_dir.join(sub);
            for entry in fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if let Ok(id) = Uuid::parse_str(name.trim_end_matches(".sock")) {
                    found.insert(id);
                }
            }
        }
        let mut keep = lock(&self.inner.pool_ids).clone();
        // Sandboxes this process watches, by sandbox id, with the session each belongs to.
        let live: HashMap<Uuid, Uuid> = lock(&self.inner.live)
            .iter()
            .map(|(session, live)| (live.sandbox_id, *session))
            .collect();
        keep.extend(
            live.iter()
                .filter(|(_, session)| known.contains(session))
                .map(|(sandbox, _)| *sandbox),
        );
        // Known sessions another process on this data directory linked (another replica's,
        // whose process may be dead while its sessions wait to be taken over).
        keep.extend(
            known
                .iter()
                .filter_map(|session| self.linked_sandbox(*session)),
        );
        let others: Vec<Uuid> = found
            .iter()
            .copied()
            .filter(|id| !keep.contains(id) && self.inner.keeper.kept_alive(*id))
            .collect();
        keep.extend(others);
        let mut swept = Vec::new();
        // A sandbox that cannot be destroyed now does not keep the others: the first failure
        // is returned once the rest is done, for the caller to sweep again later.
        let mut failed = None;
        for sandbox_id in found.into_iter().filter(|id| !keep.contains(id)) {
            let id = live.get(&sandbox_id).copied().unwrap_or(sandbox_id);
            match self.destroy(&bare_record(id, sandbox_id)).await {
                Ok(()) => swept.push(sandbox_id),
                Err(e) => {
                    tracing::warn!(sandbox = %sandbox_id, error = %e, "sweeping a left-over sandbox failed");
                    failed.get_or_insert(e);
                }
            }
        }
        if self.inner.network.is_some() {
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(network) = &this.inner.network {
                    // Read after the interfaces are listed: a sandbox wired since is kept
                    // by a live process (keeper files come before any artifact).
                    network.sweep(&keep, || this.inner.keeper.live_kept());
                }
            })
            .await;
        }
        // Slot files whose sandbox is gone (a crash between taking a slot and making the
        // sandbox's directory, or between removing it and freeing the slot).
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.reconcile_leases()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "removed left-over slot files"),
            Ok(Err(e)) => tracing::warn!(error = %e, "reconciling slot files failed"),
            Err(e) => tracing::warn!(error = %e, "reconciling slot files failed"),
        }
        // What is left in `sandboxes/` is live: the skeletons none of them uses can go, unless
        // another server on this data directory may be building on one this instant.
        if let Some(e) = failed {
            return Err(e);
        }
        let data = &self.inner.config.data_dir;
        if self.inner.keeper.others_alive() {
            return Ok(swept);
        }
        match image::remove_unused(
            &data.join("images"),
            &[&self.inner.image.skeleton, self.inner.oci_layers.dir()],
            &data.join("sandboxes"),
        ) {
            Ok(removed) => {
                for dir in removed {
                    tracing::info!(image = %dir.display(), "removed an image no sandbox uses");
                }
            }
            Err(e) => tracing::warn!(error = %e, "removing unused images failed"),
        }
        Ok(swept)
    }

    /// Removes the id range and address slot files a crash left (see `leases.rs`); returns
    /// how many.
    fn reconcile_leases(&self) -> Result<usize, SandboxError> {
        self.inner
            .keeper
            .reconcile(&self.inner.config.data_dir.join("sandboxes"));
        let mut removed = self.inner.ids.reconcile()? + self.reconcile_session_links();
        if let Some(network) = &self.inner.network {
            removed += network.reconcile()?;
        }
        Ok(removed)
    }
}
