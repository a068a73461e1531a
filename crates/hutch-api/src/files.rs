//! Files: listing, reading and writing the files of a session's sandbox.
//!
//! Every path is a path inside the sandbox: absolute, or relative to `/workspace`. Modes are
//! octal strings (`"0644"`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed by listings).
    Symlink,
    /// Anything else: a device node, a FIFO, a socket.
    Other,
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    /// Absolute path inside the sandbox.
    #[schema(example = "/workspace/data.csv")]
    pub path: String,
    /// Last component of the path.
    pub name: String,
    /// Kind of file.
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, octal.
    #[schema(example = "0644")]
    pub mode: String,
    /// Owner's user id inside the sandbox.
    pub uid: u32,
    /// Owner's group id inside the sandbox.
    pub gid: u32,
    /// Last modification.
    #[serde(with = "time::serde::rfc3339")]
    pub modified_at: OffsetDateTime,
    /// Target of a symbolic link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// `GET /v1/sessions/{id}/files`: the entries below a directory, depth first, sorted by
/// name within each directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileList {
    /// The listed directory.
    pub path: String,
    /// Its entries (not the directory itself), down to the requested depth.
    pub entries: Vec<FileInfo>,
    /// Whether the listing was cut at its maximum number of entries.
    pub truncated: bool,
}

/// `POST /v1/sessions/{id}/files/mkdir`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"path": "/workspace/out/plots", "parents": true, "mode": "0755"}))]
pub struct MkdirRequest {
    /// Directory to create.
    pub path: String,
    /// Create missing parents too, and succeed when the directory already exists (the
    /// default); false: the parent must exist (404) and the directory must not (409).
    pub parents: Option<bool>,
    /// Permission bits, octal; default `0755`.
    pub mode: Option<String>,
}

/// `POST /v1/sessions/{id}/files/move`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"from": "/workspace/a.txt", "to": "/workspace/b.txt", "overwrite": false}))]
pub struct MoveRequest {
    /// What to move.
    pub from: String,
    /// Where to.
    pub to: String,
    /// Replace an existing `to` (not a non-empty directory); default false (409 if it exists).
    pub overwrite: Option<bool>,
    /// Create missing parent directories of `to`; default true (false: 404 when missing).
    pub parents: Option<bool>,
}

/// The result of one uploaded file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadResult {
    /// Where the file was (or was to be) written.
    pub path: String,
    /// Bytes written (0 when it failed).
    pub size: u64,
    /// Why it failed; absent when it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ErrorDetail>,
}

/// `PUT …/files/content`, `POST …/files`, `PUT …/files/archive`: what was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadResults {
    /// One result per file, in request order; for an archive, one for the directory it was
    /// extracted into, with the bytes of file data written.
    pub files: Vec<UploadResult>,
    /// For an archive: how many entries it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

/// Raw bytes as a request or response body (a file, a tar stream, standard input): described
/// as a binary string, so that clients pass bytes or a file, not a list of numbers.
#[derive(Debug, Clone, Copy)]
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}
