//! Images: list, show, pull with progress, import a streamed archive, delete, and snapshots of
//! sessions.
//!
//! Image names hold `/` and `:`; they are sent percent-encoded as one path segment.

use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hutch_api::{
    ErrorBody, ForkRequest, ForkResult, Image, ImageDetail, ImageList, ImportResult, PullEvent,
    PullRequest, SnapshotRequest,
};
use uuid::Uuid;

use crate::files::file_chunks;
use crate::processes::percent_encode;
use crate::{ClientError, HutchClient, error_from};

impl HutchClient {
    /// `GET /v1/images`.
    pub async fn list_images(&self) -> Result<ImageList, ClientError> {
        self.call(Method::GET, "/v1/images", None::<&()>).await
    }

    /// `GET /v1/images/{name}`.
    pub async fn get_image(&self, name: &str) -> Result<ImageDetail, ClientError> {
        let path = format!("/v1/images/{}", percent_encode(name));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `DELETE /v1/images/{name}`; returns the image as it was.
    pub async fn delete_image(&self, name: &str) -> Result<Image, ClientError> {
        let path = format!("/v1/images/{}", percent_encode(name));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// `POST /v1/sessions/{id}/snapshot`: the session's files as the image `name`.
    pub async fn snapshot_session(&self, id: Uuid, name: &str) -> Result<Image, ClientError> {
        let req = SnapshotRequest {
            name: name.to_owned(),
        };
        self.call(
            Method::POST,
            &format!("/v1/sessions/{id}/snapshot"),
            Some(&req),
        )
        .await
    }

    /// `POST /v1/sessions/{id}/fork`: new sessions from a snapshot of the session's files.
    pub async fn fork_session(
        &self,
        id: Uuid,
        req: &ForkRequest,
    ) -> Result<ForkResult, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{id}/fork"), Some(req))
            .await
    }

    /// `POST /v1/images/pull`: pulls `reference`, handing each progress line to `progress`,
    /// and answers the image stored. An `error` line comes back as [`ClientError::Api`].
    pub async fn pull_image(
        &self,
        reference: &str,
        mut progress: impl FnMut(&PullEvent),
    ) -> Result<Image, ClientError> {
        let path = "/v1/images/pull";
        let body = serde_json::to_vec(&PullRequest {
            reference: reference.to_owned(),
        })
        .map_err(ClientError::Encode)?;
        let response = self
            .open(Method::POST, path, Some(Bytes::from(body)), true)
            .await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| transport(path, e))?
                .to_bytes();
            return Err(error_from(status, &bytes));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport(path, e))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: PullEvent =
                    serde_json::from_slice(&line).map_err(|source| ClientError::Decode {
                        method: Method::POST,
                        path: path.to_owned(),
                        source,
                    })?;
                match event {
                    PullEvent::Image { image } => return Ok(image),
                    PullEvent::Error { error } => {
                        let status = StatusCode::from_u16(error.code.status())
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        return Err(ClientError::Api {
                            status,
                            body: ErrorBody { error },
                        });
                    }
                    progress_event => progress(&progress_event),
                }
            }
        }
        Err(ClientError::Protocol(
            "the pull's answer ended before its image or error line".to_owned(),
        ))
    }

    /// `POST /v1/images/import?name`: streams the archive at `file` (an OCI layout tarball or
    /// a `docker save` archive) to the server.
    pub async fn import_image(
        &self,
        file: &Path,
        name: Option<&str>,
    ) -> Result<ImportResult, ClientError> {
        let path = match name {
            Some(name) => format!("/v1/images/import?name={}", percent_encode(name)),
            None => "/v1/images/import".to_owned(),
        };
        let archive = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClientError::Protocol(format!("opening {}: {e}", file.display())))?;
        let length = archive
            .metadata()
            .await
            .map_err(|e| ClientError::Protocol(format!("reading {}: {e}", file.display())))?
            .len();
        self.send_stream(
            Method::POST,
            &path,
            file_chunks(archive).boxed(),
            Some(length),
        )
        .await
    }
}

/// A transport error of a request to `path`.
fn transport(path: &str, error: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    ClientError::Transport {
        method: Method::POST,
        path: path.to_owned(),
        source: Box::new(error),
    }
}
