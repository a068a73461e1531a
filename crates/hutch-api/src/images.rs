//! Images: OCI images pulled from registries or imported from archives, shared by every
//! tenant, and snapshots of sessions, owned by one.
//!
//! An image is named by its canonical reference (`docker.io/library/python:3.11`; short forms
//! such as `python:3.11` are accepted and normalised as Docker does) or, for a snapshot, by
//! its short name (`my-env`), which only its tenant sees.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// An image as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The name to use as `image`: a canonical reference, or a snapshot's short name.
    pub name: String,
    /// For snapshots, the tenant owning it; absent for shared images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Whether this is a snapshot of a session.
    pub snapshot: bool,
    /// Digest of the image's config, which identifies its content.
    pub digest: String,
    /// Digest of the manifest it was pulled by, when it came from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Bytes its unpacked layers take on disk (a layer shared with another image counts in
    /// both).
    pub size_bytes: u64,
    /// Number of layers.
    pub layers: u64,
    /// When the image was built, as its config says (RFC 3339), if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// When this server stored it.
    #[serde(with = "time::serde::rfc3339")]
    pub stored_at: OffsetDateTime,
    /// When a session last used it (or when it was stored).
    #[serde(with = "time::serde::rfc3339")]
    pub last_used: OffsetDateTime,
    /// Holds on it now: sessions using it, and ready sandboxes the warm pool keeps for it.
    /// While it is above 0 (pool sandboxes aside), the image cannot be deleted.
    pub sessions: u64,
}

/// `GET /v1/images/{name}`: an image with its layers and run settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageDetail {
    /// The image as listed.
    #[serde(flatten)]
    pub image: Image,
    /// Its layers, bottom first.
    pub layer_digests: Vec<ImageLayer>,
    /// Its run settings.
    pub config: ImageConfig,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageLayer {
    /// Digest of the uncompressed content; names the layer on disk.
    pub diff_id: String,
    /// Digest of the blob as pulled or imported.
    pub blob: String,
    /// Size of that blob in bytes.
    pub blob_size: u64,
}

/// The run settings of an image. Sessions take `env`, `workingDir` and `user`; `entrypoint`
/// and `cmd` are shown only (the session's agent is its first process).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// The working directory, if the image names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The user, if the image names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The entrypoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The command, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
}

/// `GET /v1/images`: every image the caller sees, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageList {
    /// The images: every pulled or imported image, and the caller's snapshots (an admin
    /// token sees every tenant's).
    pub images: Vec<Image>,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"reference": "python:3.11"}))]
pub struct PullRequest {
    /// The image to pull: `python:3.11`, `docker.io/library/python:3.11-slim`,
    /// `localhost:5000/team/tool:1.2`, `…@sha256:…`.
    #[schema(min_length = 1, max_length = 1024)]
    pub reference: String,
}

/// What is happening to one layer of a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum LayerState {
    /// The server already holds it.
    Cached,
    /// Its blob is downloading.
    Downloading,
    /// Its blob is verified and being unpacked.
    Unpacking,
    /// It is stored.
    Done,
}

/// One line of `POST /v1/images/pull`'s NDJSON answer: progress lines, then one `image` or
/// `error` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PullEvent {
    /// Progress of one layer.
    Progress {
        /// The layer's blob digest.
        layer: String,
        /// What is happening to it.
        status: LayerState,
        /// Bytes downloaded so far.
        done: u64,
        /// The blob's size.
        total: u64,
    },
    /// The pull is done: the image as stored.
    Image {
        /// The image.
        image: Image,
    },
    /// The pull failed.
    Error {
        /// The error, as an error response would carry it.
        error: crate::error::ErrorDetail,
    },
}

/// `POST /v1/images/import`: the images the archive held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportResult {
    /// The images stored.
    pub images: Vec<Image>,
}

/// `POST /v1/sessions/{id}/snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "my-env"}))]
pub struct SnapshotRequest {
    /// The snapshot's name, unique among the tenant's snapshots: 1 to 128 lower-case letters,
    /// digits, `.`, `_` and `-`, starting and ending with a letter or digit; not `default`,
    /// and not starting with `fork-` (the server's names for the snapshots forks are made from).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
    )]
    pub name: String,
}

/// Most sessions one `POST /v1/sessions/{id}/fork` creates.
pub const FORK_MAX_COUNT: u32 = 20;

/// `POST /v1/sessions/{id}/fork`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"count": 3, "ttl": 600}))]
pub struct ForkRequest {
    /// How many sessions to create, 1 to 20; default 1.
    #[schema(minimum = 1, maximum = 20)]
    pub count: Option<u32>,
    /// Time to live of each new session in seconds, 60 to 28800; default the server's.
    #[schema(minimum = 60, maximum = 28800)]
    pub ttl: Option<u64>,
}

/// `POST /v1/sessions/{id}/fork`: the new sessions and the snapshot they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkResult {
    /// The snapshot the new sessions were created from (`fork-…`; removed by the server once
    /// no session uses it).
    pub snapshot: String,
    /// The new sessions, `RUNNING`.
    pub sessions: Vec<crate::sessions::Session>,
}
