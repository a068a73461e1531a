//! The HTTP surface of images (see "OCI images" in docs/architecture.md).
//!
//! | route | handler |
//! |---|---|
//! | `GET /v1/images` | [`list_images`] |
//! | `POST /v1/images/pull` | [`pull_image`]: NDJSON progress, then the image |
//! | `POST /v1/images/import?name` | [`import_image`]: the body is the archive |
//! | `GET /v1/images/{name}` | [`get_image`] |
//! | `DELETE /v1/images/{name}` | [`delete_image`] |
//! | `POST /v1/sessions/{id}/snapshot` | [`snapshot_session`] |
//! | `POST /v1/sessions/{id}/fork` | [`fork_session`] |
//!
//! An image's name holds `/` and `:`: it may be sent percent-encoded as one path segment
//! (`/v1/images/docker.io%2Flibrary%2Fpython%3A3.11`) or written out
//! (`/v1/images/docker.io/library/python:3.11`); both reach the same image.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt;
use hutch_api::images::FORK_MAX_COUNT;
use hutch_api::{
    CreateSessionRequest, ErrorBody, ForkRequest, ForkResult, Image, ImageConfig, ImageDetail,
    ImageLayer, ImageList, ImportResult, LayerState, PullEvent, PullRequest, ResourcesRequest,
    SnapshotRequest,
};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ImageName, Json, Query, SessionId};
use crate::images::{FORK_PREFIX, ImageView};
use crate::openapi::{
    BadRequest, Capacity, Conflict, DiskFull, ImageForbidden, ImageImportFailed, ImageNotFound,
    Internal, PayloadTooLarge, RateLimited, SessionNotFound, Unauthorized,
};
use crate::validate;

/// Most bytes of a refused import read (and dropped) before the refusal is sent.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// Bytes a layer's download advances before another progress line is sent.
const PROGRESS_STEP_BYTES: u64 = 1 << 20;

/// The image routes (authenticated by the caller's layers).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/images", get(list_images))
        .route("/v1/images/pull", post(pull_image))
        .route(
            "/v1/images/import",
            // The archive streams to disk; its bound is `--image-import-max-mb`.
            post(import_image).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/images/{*name}", get(get_image).delete(delete_image))
        .route("/v1/sessions/{id}/snapshot", post(snapshot_session))
        .route("/v1/sessions/{id}/fork", post(fork_session))
}

/// Lists the images the caller may use.
///
/// Every image pulled or imported on this server (they are shared by all tenants), and the
/// caller's snapshots; an admin token sees every tenant's snapshots.
#[utoipa::path(
    get,
    path = "/v1/images",
    operation_id = "listImages",
    tag = "images",
    responses(
        (status = 200, description = "The images, by name", body = ImageList),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_images(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ImageList>, ApiError> {
    let images = blocking(&state, move |images| {
        images.list(&caller.tenant, caller.admin)
    })
    .await?;
    Ok(Json(ImageList {
        images: images.iter().map(image).collect(),
    }))
}

/// Shows an image: its layers and run settings.
///
/// The name is percent-encoded in one segment or written out with its slashes; short forms
/// (`python:3.11`) are normalised. Another tenant's snapshot answers 404.
#[utoipa::path(
    get,
    path = "/v1/images/{name}",
    operation_id = "getImage",
    tag = "images",
    params(("name" = String, Path, description = "The image's name: a reference or a \
        snapshot's name, percent-encoded or written out.")),
    responses(
        (status = 200, description = "The image", body = ImageDetail),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = ImageNotFound),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_image(
    State(state): State<AppState>,
    caller: Caller,
    ImageName(name): ImageName,
) -> Result<Json<ImageDetail>, ApiError> {
    let view = blocking(&state, move |images| images.get(&caller.tenant, &name)).await?;
    Ok(Json(detail(&view)))
}

/// Deletes an image.
///
/// A shared image needs an admin token unless the server lets tenants manage images; a
/// snapshot is deleted by its tenant. Refused with 409 while a session uses it. Its layers go
/// at once when no other image names them.
#[utoipa::path(
    delete,
    path = "/v1/images/{name}",
    operation_id = "deleteImage",
    tag = "images",
    params(("name" = String, Path, description = "The image's name: a reference or a \
        snapshot's name, percent-encoded or written out.")),
    responses(
        (status = 200, description = "The image as it was", body = Image),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = ImageForbidden),
        (status = 404, response = ImageNotFound),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_image(
    State(state): State<AppState>,
    caller: Caller,
    ImageName(name): ImageName,
) -> Result<Json<Image>, ApiError> {
    let (tenant, lookup) = (caller.tenant.clone(), name.clone());
    let view = blocking(&state, move |images| images.get(&tenant, &lookup)).await?;
    if view.tenant.is_none() {
        state
            .images
            .check_manager(caller.admin, "delete")
            .map_err(ApiError::from)?;
    }
    // Ready sandboxes of the warm pool hold the image too: they go first, so that only
    // sessions keep it.
    state
        .sessions
        .forget_image(&view.record.id.to_string())
        .await;
    let view = blocking(&state, move |images| {
        images.remove(&caller.tenant, caller.admin, &name)
    })
    .await?;
    Ok(Json(image(&view)))
}

/// Pulls an image from its registry.
///
/// Fetches only the layers the server lacks, and refreshes what a tag points to. The answer
/// is NDJSON (`application/x-ndjson`), one `PullEvent` a line: `progress` lines (bytes done
/// and total per layer), then one `image` line with the image stored, or one `error` line
/// carrying the error a failed request would answer with (`image_not_found`,
/// `image_pull_failed` with the registry's answer, `forbidden` for a registry not allowed).
/// The pull goes on if the client goes away. Use it to warm the cache before creating
/// sessions: a create that has to pull counts the pull in its own time.
#[utoipa::path(
    post,
    path = "/v1/images/pull",
    operation_id = "pullImage",
    tag = "images",
    request_body = PullRequest,
    responses(
        (status = 200, description = "Progress, then the image or the error, as NDJSON",
            content_type = "application/x-ndjson", body = PullEvent),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = ImageForbidden),
        (status = 404, response = ImageNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pull_image(
    State(state): State<AppState>,
    _caller: Caller,
    Json(req): Json<PullRequest>,
) -> Result<Response, ApiError> {
    if req.reference.is_empty() || req.reference.len() > hutch_image::reference::MAX_REFERENCE_LEN {
        return Err(ApiError::invalid(
            "reference",
            format!(
                "reference must be 1 to {} characters",
                hutch_image::reference::MAX_REFERENCE_LEN
            ),
        ));
    }
    // A malformed reference or a registry not allowed is answered before the stream starts.
    state
        .images
        .check_pullable(&req.reference)
        .map_err(|err| match err {
            crate::images::ImageError::InvalidName { source, .. } => {
                ApiError::invalid("reference", source.to_string())
            }
            other => other.into(),
        })?;
    state.disk_reserve.check("pulling an image")?;
    let (events, lines) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
    let images = Arc::clone(&state.images);
    tokio::spawn(async move {
        let throttle = Mutex::new(std::collections::HashMap::<String, (LayerState, u64)>::new());
        let progress = |p: &hutch_image::PullProgress| {
            let status = layer_state(p.status);
            let layer = p.layer.to_string();
            let mut seen = throttle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = match seen.get(&layer) {
                Some((last, done)) => {
                    *last != status || p.done >= done.saturating_add(PROGRESS_STEP_BYTES)
                }
                None => true,
            };
            if due {
                seen.insert(layer.clone(), (status, p.done));
                let _ = events.send(PullEvent::Progress {
                    layer,
                    status,
                    done: p.done,
                    total: p.total,
                });
            }
        };
        let last = match images.pull(&req.reference, &progress).await {
            Ok(view) => PullEvent::Image {
                image: image(&view),
            },
            Err(err) => {
                let err = ApiError::from(err);
                if err.code().status() >= 500 {
                    tracing::error!(error = %crate::error::chain(&err), "pull failed");
                }
                let ErrorBody { error } = err.body();
                PullEvent::Error { error }
            }
        };
        let _ = events.send(last);
    });
    let lines = ndjson_lines(lines);
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// One JSON line per event received, until the sender is gone.
fn ndjson_lines(
    mut events: tokio::sync::mpsc::UnboundedReceiver<PullEvent>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::convert::Infallible>> {
    use futures_util::StreamExt;
    futures_util::stream::poll_fn(move |cx| events.poll_recv(cx)).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok(line)
    })
}

/// Query of `POST /v1/images/import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    /// The name to store the image under (the archive must hold one image).
    name: Option<String>,
}

/// Imports an image archive.
///
/// The body is an OCI image layout tarball (`skopeo copy … oci-archive:`) or a `docker save`
/// archive, streamed to disk (at most `--image-import-max-mb`); every blob is checked against
/// its digest. Images are stored under `name` when given, else under the names the archive
/// holds: every tag of a `docker save` (at most 64 an image), each listed in the answer.
/// Needs an admin token unless the server lets tenants manage images.
#[utoipa::path(
    post,
    path = "/v1/images/import",
    operation_id = "importImage",
    tag = "images",
    params(("name" = Option<String>, Query, description = "The name to store the image \
        under; the archive must then hold exactly one image.")),
    request_body(content = inline(hutch_api::files::Binary),
        content_type = "application/octet-stream",
        description = "The archive, a tar file (any content type is read as it)."),
    responses(
        (status = 200, description = "The images stored", body = ImportResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = ImageForbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = ImageImportFailed),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 507, response = DiskFull),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn import_image(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportResult>, ApiError> {
    let limit = state.images.config().import_max_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let refusal = match state.images.check_manager(caller.admin, "import") {
        Err(err) => Some(ApiError::from(err)),
        Ok(()) if declared.is_some_and(|length| length > limit) => {
            Some(ApiError::PayloadTooLarge {
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            })
        }
        // Sessions that ask for `default` get the built-in image, whatever is stored.
        Ok(()) if query.name.as_deref() == Some(validate::DEFAULT_IMAGE) => {
            Some(ApiError::invalid(
                "name",
                "\"default\" names the built-in image; import under another name",
            ))
        }
        Ok(()) => state
            .disk_reserve
            .check("importing an image")
            .err()
            .map(ApiError::from),
    };
    if let Some(refusal) = refusal {
        drain(body).await;
        return Err(refusal);
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let views = state
        .images
        .import(caller.admin, reader, query.name.as_deref())
        .await?;
    Ok(Json(ImportResult {
        images: views.iter().map(image).collect(),
    }))
}

/// Reads and drops up to [`DRAIN_MAX_BYTES`] of a refused body, so that the client, still
/// sending, reads the answer instead of a reset connection.
async fn drain(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read: u64 = 0;
    while read < DRAIN_MAX_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => return,
        }
    }
}

/// Runs a store operation (file system work) off the async threads.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&crate::images::Images) -> Result<T, crate::images::ImageError> + Send + 'static,
) -> Result<T, ApiError> {
    let images = Arc::clone(&state.images);
    tokio::task::spawn_blocking(move || work(&images))
        .await
        .map_err(|err| ApiError::Internal(Box::new(err)))?
        .map_err(ApiError::from)
}

/// The API's state of a pulled layer.
fn layer_state(status: hutch_image::LayerStatus) -> LayerState {
    match status {
        hutch_image::LayerStatus::Cached => LayerState::Cached,
        hutch_image::LayerStatus::Downloading => LayerState::Downloading,
        hutch_image::LayerStatus::Unpacking => LayerState::Unpacking,
        hutch_image::LayerStatus::Done => LayerState::Done,
    }
}

/// Seconds since the epoch as a time.
fn time_of(secs: u64) -> OffsetDateTime {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// An image as the API lists it.
pub(crate) fn image(view: &ImageView) -> Image {
    let record = &view.record;
    Image {
        name: view.name.clone(),
        tenant: view.tenant.clone(),
        snapshot: view.tenant.is_some(),
        digest: record.id.to_string(),
        manifest_digest: record.manifest_digest.as_ref().map(ToString::to_string),
        size_bytes: view.size_bytes,
        layers: u64::try_from(record.layers.len()).unwrap_or(u64::MAX),
        created: record.created.clone(),
        stored_at: time_of(record.stored_at),
        last_used: time_of(record.last_used),
        sessions: u64::try_from(view.sessions).unwrap_or(u64::MAX),
    }
}

/// An image with its layers and run settings.
fn detail(view: &ImageView) -> ImageDetail {
    let record = &view.record;
    ImageDetail {
        image: image(view),
        layer_digests: record
            .layers
            .iter()
            .map(|layer| ImageLayer {
                diff_id: layer.diff_id.to_string(),
                blob: layer.blob.to_string(),
                blob_size: layer.blob_size,
            })
            .collect(),
        config: ImageConfig {
            env: record.config.env.clone(),
            working_dir: record.config.working_dir.clone(),
            user: record.config.user.clone(),
            entrypoint: record.config.entrypoint.clone(),
            cmd: record.config.cmd.clone(),
        },
    }
}

/// Snapshots a running session.
///
/// Turns the session's files (its writable layer, on top of its image) into a new image named
/// `name`, owned by the session's tenant and usable as `image` by later sessions. The
/// session's processes are frozen while the layer is copied, so no file is torn, and run on
/// afterwards. Sessions of the `default` image cannot be snapshotted (409).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/snapshot",
    operation_id = "snapshotSession",
    tag = "images",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = SnapshotRequest,
    responses(
        (status = 200, description = "The snapshot", body = Image),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn snapshot_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Json(req): Json<SnapshotRequest>,
) -> Result<Json<Image>, ApiError> {
    if !crate::images::valid_snapshot_name(&req.name) || req.name.starts_with(FORK_PREFIX) {
        return Err(ApiError::invalid(
            "name",
            format!(
                "invalid snapshot name {:?}: 1 to {} lower-case letters, digits, '.', '_' and \
                 '-', starting and ending with a letter or digit, other than `default` and \
                 not starting with `{FORK_PREFIX}` (the server's names for forks)",
                req.name,
                crate::images::SNAPSHOT_NAME_MAX
            ),
        ));
    }
    state.disk_reserve.check("taking a snapshot")?;
    let row = state.sessions.snapshot_source(&caller, id).await?;
    let view = take_snapshot(&state, &row, &req.name).await?;
    Ok(Json(image(&view)))
}

/// Snapshots the session `row` as its tenant's image `name`.
async fn take_snapshot(
    state: &AppState,
    row: &crate::store::StoredSession,
    name: &str,
) -> Result<ImageView, ApiError> {
    let base_record = state.sessions.image_record(row.id);
    let (tenant, name, base) = (row.tenant.clone(), name.to_owned(), row.image.clone());
    let plan = blocking(state, move |images| {
        images.plan_snapshot(&tenant, &name, &base, base_record)
    })
    .await?;
    let report = state
        .sessions
        .copy_root_layer(row, &plan.layer_dir())
        .await?;
    tracing::info!(
        session = %row.id,
        bytes = report.bytes,
        entries = report.entries,
        frozen_ms = u64::try_from(report.frozen.as_millis()).unwrap_or(u64::MAX),
        "copied a session's layer"
    );
    blocking(state, move |images| {
        images.commit_snapshot(plan, report.bytes)
    })
    .await
}

/// Forks a running session.
///
/// Snapshots the session (its files, not its processes) and creates `count` new sessions
/// from that snapshot at once, with the source session's resources, environment and
/// metadata. Either every new session is created or none is (those made are deleted again).
/// The snapshot (`fork-…`) is removed by the server once no session uses it. Sessions of the
/// `default` image cannot be forked (409).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/fork",
    operation_id = "forkSession",
    tag = "images",
    params(("id" = uuid::Uuid, Path, description = "The session id.")),
    request_body = ForkRequest,
    responses(
        (status = 200, description = "The new sessions", body = ForkResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 503, response = Capacity),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn fork_session(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Json(req): Json<ForkRequest>,
) -> Result<Json<ForkResult>, ApiError> {
    let count = req.count.unwrap_or(1);
    if !(1..=FORK_MAX_COUNT).contains(&count) {
        return Err(ApiError::invalid(
            "count",
            format!("count must be between 1 and {FORK_MAX_COUNT}, got {count}"),
        ));
    }
    state.disk_reserve.check("forking a session")?;
    let row = state.sessions.snapshot_source(&caller, id).await?;
    let name = format!("{FORK_PREFIX}{}", uuid::Uuid::new_v4().simple());
    // The new sessions belong to the source session's tenant, who owns the snapshot.
    let owner = Caller {
        tenant: row.tenant.clone(),
        admin: caller.admin,
    };
    let request = CreateSessionRequest {
        ttl: req.ttl,
        image: Some(name.clone()),
        metadata: Some(row.metadata.clone()),
        resources: Some(ResourcesRequest {
            cpus: Some(row.resources.cpus),
            memory_mb: Some(row.resources.memory_mb),
            pids: Some(row.resources.pids),
            disk_mb: row.resources.disk_mb,
        }),
        env: (!row.env.is_empty()).then(|| row.env.clone()),
        context_syncs: None,
        network: Some(row.network.clone()),
        auto_pause: row.auto_pause,
    };
    // A request refused (a bad ttl) freezes and copies nothing.
    validate::create(request.clone())?;
    take_snapshot(&state, &row, &name).await?;
    let mut creates = Vec::new();
    for _ in 0..count {
        let new = validate::create(request.clone())?;
        creates.push(state.sessions.create(&owner, new));
    }
    let results = futures_util::future::join_all(creates).await;
    let mut sessions = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok(session) => sessions.push(session),
            Err(err) => failure = failure.or(Some(err)),
        }
    }
    if let Some(err) = failure {
        for session in &sessions {
            if let Err(undo) = state
                .sessions
                .delete(&owner, session.session_id, false)
                .await
            {
                tracing::warn!(session = %session.session_id, error = %crate::error::chain(&undo), "deleting a fork after another failed");
            }
        }
        return Err(err.into());
    }
    Ok(Json(ForkResult {
        snapshot: name,
        sessions,
    }))
}
