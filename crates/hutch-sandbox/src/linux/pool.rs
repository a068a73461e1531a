//! The warm pool: sandboxes built ahead of sessions, so that a create only has to claim one.
//!
//! It keeps `warm_pool` sandboxes of the `default` image, and `warm_pool_per_image` of each of
//! the `warm_pool_images` OCI images most recently asked for (by image key). An image enters
//! the pool when a session is created from it; when more images than that are in it, the
//! least recently used one leaves, and its sandboxes are torn down; so does an image whose
//! sandboxes fail to build. A pooled OCI sandbox keeps the image's hold (the server's lease),
//! so its layers stay on disk.
//!
//! When the server gives sessions a network, it also keeps the network's `warm_pool`
//! sandboxes of the `default` image wired ahead (a veth and an address each), so that a
//! networked session only has to activate its rules on claim. Networked sessions on OCI
//! images take an OCI sandbox and are wired when claimed.

use std::os::fd::AsRawFd;
use std::time::Duration;

use hutch_api::Resources;
use uuid::Uuid;

use super::build::Embryo;
use super::{LinuxRuntime, lock};
use crate::{OciImage, SandboxImage, sys};

/// The pooled sandboxes, per image.
#[derive(Default)]
pub(super) struct Pool {
    /// Built sandboxes of the `default` image.
    default: Vec<Embryo>,
    /// Sandboxes of `default` being built.
    default_building: usize,
    /// Built sandboxes of the `default` image, wired for the network ahead of their session.
    wired: Vec<Embryo>,
    /// Wired sandboxes being built.
    wired_building: usize,
    /// OCI images, least recently used first.
    images: Vec<ImagePool>,
}

/// The pooled sandboxes of one OCI image.
struct ImagePool {
    /// The image, with its hold.
    image: OciImage,
    /// Built sandboxes ready to claim.
    ready: Vec<Embryo>,
    /// Sandboxes being built.
    building: usize,
}

impl Pool {
    fn position(&self, key: &str) -> Option<usize> {
        self.images.iter().position(|pool| pool.image.key == key)
    }

    /// Every built sandbox, taken out of the pool.
    fn take_all(&mut self) -> Vec<Embryo> {
        let mut all = std::mem::take(&mut self.default);
        all.append(&mut self.wired);
        for pool in &mut self.images {
            all.append(&mut pool.ready);
        }
        all
    }
}

impl LinuxRuntime {
    /// Starts keeping the pool full. Call once the server has swept the leftovers of earlier
    /// runs. Needs a tokio runtime.
    pub fn start_pool(&self) {
        let config = &self.inner.config;
        if config.warm_pool == 0
            && self.wired_target() == 0
            && (config.warm_pool_per_image == 0 || config.warm_pool_images == 0)
        {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move { runtime.fill_pool().await });
    }

    /// How many wired sandboxes of `default` to keep (none when sessions get no network).
    fn wired_target(&self) -> usize {
        match &self.inner.config.network {
            Some(network) if self.inner.network.is_some() => network.warm_pool,
            _ => 0,
        }
    }

    /// Builds a sandbox for the pool, wiring it for the network when `wired`.
    fn build_pooled(
        &self,
        id: Uuid,
        image: &SandboxImage,
        wired: bool,
    ) -> Result<Embryo, crate::SandboxError> {
        // The default disk bound is built here, off the create path.
        let resources = Resources {
            disk_mb: self.inner.config.disk_mb_default,
            ..Resources::default()
        };
        let mut embryo = self.build(id, &resources, image)?;
        if wired && let Some(network) = &self.inner.network {
            embryo.wired = Some(network.prewire(id, embryo.spawned.pid, &self.sandbox_dir(id))?);
        }
        Ok(embryo)
    }

    /// Takes a pooled sandbox of `image`, if one is ready (for `default`, one wired for the
    /// network when `wired`), and counts the image as just used: an OCI image not in the pool
    /// yet enters it (the least recently used one leaving when the pool holds too many), so
    /// that its next sessions find sandboxes ready, unless it is not [`OciImage::warm`].
    pub(super) fn take_pooled(&self, image: &SandboxImage, wired: bool) -> Option<Embryo> {
        let config = &self.inner.config;
        let mut evicted = Vec::new();
        let taken = {
            let mut pool = lock(&self.inner.pool);
            match image {
                SandboxImage::Default if wired => pool.wired.pop(),
                SandboxImage::Default => pool.default.pop(),
                SandboxImage::Oci(image)
                    if !image.warm
                        || config.warm_pool_per_image == 0
                        || config.warm_pool_images == 0 =>
                {
                    None
                }
                SandboxImage::Oci(image) => {
                    let mut entry = match pool.position(&image.key) {
                        Some(at) => pool.images.remove(at),
                        None => ImagePool {
                            image: image.clone(),
                            ready: Vec::new(),
                            building: 0,
                        },
                    };
                    let taken = entry.ready.pop();
                    pool.images.push(entry);
                    while pool.images.len() > config.warm_pool_images {
                        let old = pool.images.remove(0);
                        tracing::debug!(image = %old.image.name, "image leaves the warm pool");
                        evicted.extend(old.ready);
                    }
                    taken
                }
            }
        };
        self.inner.pool_wanted.notify_one();
        if !evicted.is_empty() {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                for embryo in evicted {
                    this.discard(embryo);
                }
            });
        }
        taken
    }

    /// Drops the image `key` from the pool, tearing its pooled sandboxes down (and so letting
    /// go of their hold on it).
    pub(super) async fn forget_pooled_image(&self, key: &str) {
        let removed = {
            let mut pool = lock(&self.inner.pool);
            pool.position(key).map(|at| pool.images.remove(at))
        };
        if let Some(removed) = removed {
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for embryo in removed.ready {
                    this.discard(embryo);
                }
            })
            .await;
        }
    }

    /// Kills and removes a built sandbox nobody will claim (blocking).
    fn discard(&self, embryo: Embryo) {
        let _ = sys::pidfd_send_signal(embryo.spawned.pidfd.as_raw_fd(), libc::SIGKILL);
        let _ = self.teardown(embryo.id);
        sys::wait_blocking(embryo.spawned.pid);
        lock(&self.inner.pool_ids).remove(&embryo.id);
    }

    /// The builds the pool lacks, each counted as building from now on.
    fn wanted_builds(&self) -> Vec<(Uuid, SandboxImage, bool)> {
        let config = &self.inner.config;
        let wired_target = self.wired_target();
        let mut pool = lock(&self.inner.pool);
        let mut wanted = Vec::new();
        let missing = config
            .warm_pool
            .saturating_sub(pool.default.len() + pool.default_building);
        pool.default_building += missing;
        wanted.extend((0..missing).map(|_| (SandboxImage::Default, false)));
        let missing = wired_target.saturating_sub(pool.wired.len() + pool.wired_building);
        pool.wired_building += missing;
        wanted.extend((0..missing).map(|_| (SandboxImage::Default, true)));
        for entry in &mut pool.images {
            let missing = config
                .warm_pool_per_image
                .saturating_sub(entry.ready.len() + entry.building);
            entry.building += missing;
            wanted.extend((0..missing).map(|_| (SandboxImage::Oci(entry.image.clone()), false)));
        }
        drop(pool);
        let mut ids = lock(&self.inner.pool_ids);
        wanted
            .into_iter()
            .map(|(image, wired)| {
                let id = Uuid::now_v7();
                ids.insert(id);
                (id, image, wired)
            })
            .collect()
    }

    /// Puts a finished build into the pool; gives it back when its image has left the pool.
    fn pool_built(
        &self,
        image: &SandboxImage,
        wired: bool,
        embryo: Option<Embryo>,
    ) -> Option<Embryo> {
        let mut pool = lock(&self.inner.pool);
        match image {
            SandboxImage::Default if wired => {
                pool.wired_building -= 1;
                pool.wired.extend(embryo);
                None
            }
            SandboxImage::Default => {
                pool.default_building -= 1;
                pool.default.extend(embryo);
                None
            }
            SandboxImage::Oci(image) => match pool.position(&image.key) {
                Some(at) => {
                    let entry = &mut pool.images[at];
                    entry.building -= 1;
                    entry.ready.extend(embryo);
                    None
                }
                None => embryo,
            },
        }
    }

    /// Keeps the pool full until shutdown.
    async fn fill_pool(self) {
        while !self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
            let builds: Vec<_> = self
                .wanted_builds()
                .into_iter()
                .map(|(id, image, wired)| {
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let built = this.build_pooled(id, &image, wired);
                        (id, image, wired, built)
                    })
                })
                .collect();
            let mut failed = false;
            let idle = builds.is_empty();
            for build in builds {
                match build.await {
                    Ok((_, image, wired, Ok(embryo))) => {
                        // Shutting down: drain_pool takes it from the pool like any other.
                        if let Some(unwanted) = self.pool_built(&image, wired, Some(embryo)) {
                            let this = self.clone();
                            let _ =
                                tokio::task::spawn_blocking(move || this.discard(unwanted)).await;
                        }
                    }
                    Ok((id, image, wired, Err(e))) => {
                        tracing::error!(error = %e, image = image.name(), "building a sandbox for the warm pool failed");
                        self.pool_built(&image, wired, None);
                        lock(&self.inner.pool_ids).remove(&id);
                        let this = self.clone();
                        let _ = tokio::task::spawn_blocking(move || this.teardown(id)).await;
                        // An OCI image that cannot be built leaves the pool until a session
                        // asks for it again, rather than failing every second.
                        if let SandboxImage::Oci(image) = &image {
                            self.forget_pooled_image(&image.key).await;
                        }
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
            if idle {
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
            let embryos: Vec<Embryo> = lock(&self.inner.pool).take_all();
            for embryo in embryos {
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.discard(embryo)).await;
            }
            if lock(&self.inner.pool_ids).is_empty() || tokio::time::Instant::now() >= deadline {
                lock(&self.inner.pool).images.clear();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
