//! Snapshots of live sessions: the session side (which session, and the copy of its writable
//! root layer). Turning the copy into an image is [`crate::images::Images`]' part.

use std::path::Path;

use hutch_api::SessionStatus;
use hutch_sandbox::SnapshotReport;
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::auth::Caller;
use crate::store::StoredSession;
use crate::validate::DEFAULT_IMAGE;

impl Sessions {
    /// The session `id` to snapshot: one the caller may see, `RUNNING`, and created from an
    /// OCI image or a snapshot (a `default` session's lower layers are this host's own
    /// directories, which no image can hold).
    pub(crate) async fn snapshot_source(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<StoredSession, SessionError> {
        // A request inside the session: it wakes one paused for idleness (one paused by
        // request answers 409 `session_paused`).
        self.reachable(caller, id).await?;
        let row = self.visible(caller, id).await?;
        if row.status != SessionStatus::Running {
            return Err(SessionError::Conflict(format!(
                "session {id} is {}, not RUNNING",
                row.status.as_str()
            )));
        }
        if row.image == DEFAULT_IMAGE {
            return Err(SessionError::Conflict(format!(
                "session {id} runs the `default` image, a view of the host's own files that \
                 cannot be snapshotted; create the session from an OCI image to snapshot it"
            )));
        }
        Ok(row)
    }

    /// The record of the image session `id` runs on, as its lease holds it (`None` for
    /// `default` sessions).
    pub(crate) fn image_record(&self, id: Uuid) -> Option<hutch_image::ImageRecord> {
        self.leases.record(id)
    }

    /// Copies the writable root layer of the session `row` into the new directory `into`,
    /// with its processes frozen meanwhile.
    pub(crate) async fn copy_root_layer(
        &self,
        row: &StoredSession,
        into: &Path,
    ) -> Result<SnapshotReport, SessionError> {
        let record = row.record.as_ref().ok_or_else(|| {
            SessionError::Conflict(format!("session {} has no sandbox yet", row.id))
        })?;
        // The snapshot thaws the sandbox when done: no pause may come in between.
        let _turn = self.turns.take(row.id).await;
        if self.store.get(row.id).await?.map(|r| r.status) != Some(SessionStatus::Running) {
            return Err(SessionError::Conflict(format!(
                "session {} is no longer RUNNING",
                row.id
            )));
        }
        Ok(self.runtime.snapshot(record, into).await?)
    }
}
