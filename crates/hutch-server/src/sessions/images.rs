//! The image of each session: what the `image` a client names resolves to, and the lease every
//! session on an OCI image holds on it for its whole life (taken at create, taken again when a
//! restarted server adopts the session, released when its sandbox is destroyed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hutch_image::ImageLease;
use hutch_sandbox::{OciImage, SandboxImage};
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::store::StoredSession;
use crate::validate::DEFAULT_IMAGE;

/// The image leases of live sessions, by session id.
#[derive(Default)]
pub(super) struct Leases(Mutex<HashMap<Uuid, Arc<ImageLease>>>);

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<ImageLease>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `lease` until session `id` is released.
    pub(super) fn hold(&self, id: Uuid, lease: Arc<ImageLease>) {
        self.lock().insert(id, lease);
    }

    /// The record of session `id`'s image, as its lease holds it.
    pub(super) fn record(&self, id: Uuid) -> Option<hutch_image::ImageRecord> {
        self.lock().get(&id).map(|lease| lease.record().clone())
    }

    /// Lets go of session `id`'s image (its layers may be collected once nothing else holds
    /// them).
    pub(super) fn release(&self, id: Uuid) {
        self.lock().remove(&id);
    }
}

/// What a sandbox on the leased image mounts and runs. The sandbox keeps the lease while it
/// waits in the warm pool.
fn sandbox_image(lease: &Arc<ImageLease>) -> SandboxImage {
    let record = lease.record();
    SandboxImage::Oci(OciImage {
        key: record.id.to_string(),
        name: record.name.clone(),
        layers: lease.lower_dirs(),
        env: record.config.env.clone(),
        working_dir: record.config.working_dir.clone(),
        user: record.config.user.clone(),
        hold: Some(Arc::clone(lease) as Arc<dyn std::any::Any + Send + Sync>),
        // A fork's snapshot serves the fork's own creates, all at once: sandboxes kept ready
        // for it would never be used, and would keep it on disk.
        warm: !crate::images::display_name(&record.name).starts_with(crate::images::FORK_PREFIX),
    })
}

impl Sessions {
    /// Resolves the `image` of a session of `tenant`: `default`, or an OCI image or snapshot
    /// taken from the image store, pulled first when the store lacks it (the pull is part of
    /// the create), with the lease that keeps its layers.
    pub(super) async fn resolve_image(
        &self,
        tenant: &str,
        image: &str,
    ) -> Result<(SandboxImage, Option<Arc<ImageLease>>), SessionError> {
        if image == DEFAULT_IMAGE {
            return Ok((SandboxImage::Default, None));
        }
        let images = self.images.as_ref().ok_or_else(|| {
            SessionError::Image(crate::images::ImageError::NotFound {
                image: image.to_owned(),
                answer: Some("this server keeps no OCI images".to_owned()),
            })
        })?;
        let lease = Arc::new(images.resolve(tenant, image).await?);
        Ok((sandbox_image(&lease), Some(lease)))
    }

    /// Tears down the warm pool's sandboxes of the OCI image `key` (its config digest), so
    /// that only sessions still hold it (before the image is deleted).
    pub(crate) async fn forget_image(&self, key: &str) {
        self.runtime.forget_image(key).await;
    }

    /// After a restart: takes the lease of an adopted session's image again, so that its
    /// layers stay while it runs. A failure is logged (the session keeps running on layers
    /// nothing then protects from collection).
    pub(super) async fn retake_image(&self, row: &StoredSession) {
        if row.image == DEFAULT_IMAGE {
            return;
        }
        match self.resolve_image(&row.tenant, &row.image).await {
            Ok((_, Some(lease))) => self.leases.hold(row.id, lease),
            Ok((_, None)) => {}
            Err(err) => {
                tracing::warn!(session = %row.id, image = %row.image, error = %crate::error::chain(&err), "the image of an adopted session could not be leased again");
            }
        }
    }
}
