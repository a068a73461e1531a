//! Claiming a built sandbox for a session: its limits, its [`Claim`] and the agent's `ok`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;

use uuid::Uuid;

use super::build::{Embryo, read_status_line};
use super::keepers::LocalHold;
use super::{LinuxRuntime, lock, sys_err};
use crate::init::Claim;
use crate::sys;
use crate::{SandboxError, SandboxImage, SandboxRecord, SandboxSpec};

impl LinuxRuntime {
    /// [`crate::Runtime::create`]: claims a pooled sandbox, or builds one, for `spec`.
    pub(super) async fn create_sandbox(
        &self,
        spec: &SandboxSpec,
    ) -> Result<SandboxRecord, SandboxError> {
        if wants_network(spec) && self.inner.network.is_none() {
            return Err(super::no_network());
        }
        let config = &self.inner.config;
        let disk_mb = spec.resources.disk_mb.or(config.disk_mb_default);
        if let Some(mb) = disk_mb
            && mb > config.disk_mb_max
        {
            return Err(SandboxError::InvalidSpec(format!(
                "resources.diskMb must be at most {} on this server, got {mb}",
                config.disk_mb_max
            )));
        }
        // Pooled sandboxes have the default quota: a session with another is built for it.
        let pooled = if disk_mb == config.disk_mb_default {
            self.take_pooled(&spec.image, wants_network(spec))
        } else {
            None
        };
        let this = self.clone();
        let mut spec_owned = spec.clone();
        spec_owned.resources.disk_mb = disk_mb;
        let claimed = tokio::task::spawn_blocking(move || {
            let embryo = match pooled {
                Some(embryo) => embryo,
                None => {
                    let sandbox_id = Uuid::now_v7();
                    this.build(sandbox_id, &spec_owned.resources, &spec_owned.image)
                        .inspect_err(|_| {
                            let _ = this.teardown(sandbox_id);
                        })?
                }
            };
            let pool_id = embryo.id;
            let claimed = this.claim(embryo, &spec_owned);
            lock(&this.inner.pool_ids).remove(&pool_id);
            claimed
        })
        .await
        .map_err(|e| SandboxError::Sys {
            call: "create task".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (spawned, record, hold) = claimed?;
        #[cfg(debug_assertions)]
        stall_if_armed(record.sandbox_id).await;
        // Every server on this data directory reaches the session's agent through this link.
        if let Err(e) = self.link_session(record.id, record.sandbox_id) {
            let _ = sys::pidfd_send_signal(spawned.pidfd.as_raw_fd(), libc::SIGKILL);
            drop(hold);
            self.destroy_sandbox(&record).await?;
            return Err(e);
        }
        self.watch(&record, spawned.pid, spawned.pidfd, hold)?;
        Ok(record)
    }

    /// Hands a built sandbox to session `spec.id` (blocking).
    fn claim(
        &self,
        embryo: Embryo,
        spec: &SandboxSpec,
    ) -> Result<(sys::Spawned, SandboxRecord, LocalHold), SandboxError> {
        let inner = &self.inner;
        let id = spec.id;
        let result = (|| {
            // Held by this process's parts of the sandbox (its watcher, its resolver).
            let hold = inner.keeper.hold(embryo.id)?;
            inner
                .cgroups
                .set_limits(&inner.cgroups.existing(embryo.id), &spec.resources)?;
            let dir = self.sandbox_dir(embryo.id);
            let nameserver = match (&inner.network, &spec.network, embryo.wired) {
                (Some(network), Some(policy), Some(slot)) if wants_network(spec) => Some(
                    network
                        .activate(embryo.id, slot, &dir, policy, &hold)?
                        .gateway,
                ),
                (Some(network), Some(policy), None) if wants_network(spec) => Some(
                    network
                        .attach(embryo.id, embryo.spawned.pid, &dir, policy, &hold)?
                        .gateway,
                ),
                _ => None,
            };
            let (working_dir, user) = match &spec.image {
                SandboxImage::Default => (None, None),
                SandboxImage::Oci(image) => (image.working_dir.clone(), image.user.clone()),
            };
            let mut env = session_env(spec);
            if let Some(proxies) = &inner.index_proxies {
                for (name, value) in proxies.env() {
                    env.entry(name).or_insert(value);
                }
            }
            let claim = Claim {
                hostname: spec.hostname.clone(),
                env,
                max_upload_bytes: inner.config.max_upload_bytes,
                memory_mb: Some(spec.resources.memory_mb),
                nameserver,
                image: Some(spec.image.name().to_owned()),
                working_dir,
                user,
            };
            let mut json =
                serde_json::to_vec(&claim).map_err(|e| SandboxError::InvalidSpec(e.to_string()))?;
            json.push(b'\n');
            fs::File::from(embryo.claim)
                .write_all(&json)
                .map_err(sys_err("send claim"))?;
            match read_status_line(&embryo.status, inner.config.start_timeout) {
                Ok(line) if line == "ok" => match &inner.index_proxies {
                    Some(proxies) => proxies.start(embryo.id, embryo.spawned.pid),
                    None => Ok(()),
                },
                Ok(line) => Err(SandboxError::Start {
                    id,
                    reason: line.trim_start_matches("error: ").to_owned(),
                }),
                Err(reason) => Err(SandboxError::Start { id, reason }),
            }?;
            Ok(hold)
        })();
        let recorded =
            result.and_then(|hold| Ok((super::record(id, embryo.id, embryo.spawned.pid)?, hold)));
        match recorded {
            Ok((record, hold)) => Ok((embryo.spawned, record, hold)),
            Err(e) => {
                let _ = sys::pidfd_send_signal(embryo.spawned.pidfd.as_raw_fd(), libc::SIGKILL);
                let _ = self.teardown(embryo.id);
                sys::wait_blocking(embryo.spawned.pid);
                Err(e)
            }
        }
    }
}

/// Test builds only (absent from release builds): when the file that
/// `HUTCH_TEST_STALL_CREATE` names exists and is empty, the next create writes its sandbox's
/// id into it and stalls for good, its sandbox claimed but its session neither linked nor
/// recorded: how the tests kill a server in the middle of a create.
#[cfg(debug_assertions)]
async fn stall_if_armed(sandbox: Uuid) {
    let Some(path) = std::env::var_os("HUTCH_TEST_STALL_CREATE") else {
        return;
    };
    if fs::metadata(&path).is_ok_and(|meta| meta.len() == 0)
        && fs::write(&path, sandbox.to_string()).is_ok()
    {
        tracing::warn!(%sandbox, "HUTCH_TEST_STALL_CREATE: this create stalls for good");
        std::future::pending::<()>().await;
    }
}

/// Whether `spec` asks for any network beyond `lo`.
fn wants_network(spec: &SandboxSpec) -> bool {
    spec.network
        .as_ref()
        .is_some_and(|p| p.egress != hutch_api::Egress::None)
}

/// The environment of the session's processes: the image's `Env`, the session's `env` on top.
fn session_env(spec: &SandboxSpec) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let SandboxImage::Oci(image) = &spec.image {
        for pair in &image.env {
            let (key, value) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
            if !key.is_empty() {
                env.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    env.extend(spec.env.clone());
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OciImage;

    #[test]
    fn the_session_env_goes_on_top_of_the_image_env() {
        let spec = SandboxSpec {
            id: Uuid::nil(),
            hostname: "h".into(),
            image: SandboxImage::Oci(OciImage {
                key: "k".into(),
                name: "img".into(),
                layers: Vec::new(),
                env: vec!["PATH=/bin".into(), "A=image".into(), "EMPTY=".into()],
                working_dir: None,
                user: None,
                hold: None,
                warm: true,
            }),
            resources: hutch_api::Resources::default(),
            env: BTreeMap::from([("A".to_owned(), "session".to_owned())]),
            network: None,
        };
        let env = session_env(&spec);
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["A"], "session");
        assert_eq!(env["EMPTY"], "");
    }
}
