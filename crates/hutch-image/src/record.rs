//! What the store keeps about an image and a layer, and the parts of an OCI image config
//! that hutch reads.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::unpack::Skipped;

/// The run settings of an image (from its OCI config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunConfig {
    /// `KEY=value` pairs every process starts with.
    pub env: Vec<String>,
    /// The working directory, if the image names one.
    pub working_dir: Option<String>,
    /// The user (`name`, `uid`, `uid:gid`…), if the image names one.
    pub user: Option<String>,
    /// The entrypoint; shown, never run (the agent is PID 1).
    pub entrypoint: Option<Vec<String>>,
    /// The command; shown, never run.
    pub cmd: Option<Vec<String>>,
}

/// One layer of an image, bottom first in [`ImageRecord::layers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRef {
    /// Digest of the uncompressed tar stream; names the layer in the store.
    pub diff_id: Digest,
    /// Digest of the blob as it was pulled or imported.
    pub blob: Digest,
    /// Size of that blob in bytes.
    pub blob_size: u64,
}

/// An image the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// Its name: a canonical reference (`docker.io/library/python:3.11`) or an import name.
    pub name: String,
    /// The digest of its config, which identifies the image's content.
    pub id: Digest,
    /// The digest of the manifest it was pulled by, when it came from a registry.
    pub manifest_digest: Option<Digest>,
    /// Its layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// Its run settings.
    pub config: RunConfig,
    /// When the image was built, as its config says (RFC 3339), if it says.
    pub created: Option<String>,
    /// When the store got it, in seconds since the epoch.
    pub stored_at: u64,
    /// When a sandbox last used it (or when it was stored), in seconds since the epoch.
    pub last_used: u64,
}

/// What the store keeps beside an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes the unpacked files take on disk.
    pub disk_bytes: u64,
    /// Entries left out while unpacking, and why.
    pub skipped: Vec<Skipped>,
}

/// An OCI image config, reduced to what hutch reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OciConfig {
    #[serde(default)]
    pub(crate) created: Option<String>,
    #[serde(default)]
    pub(crate) config: Option<OciRunConfig>,
    pub(crate) rootfs: OciRootfs,
}

/// The `config` object of an OCI image config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct OciRunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

/// The `rootfs` object of an OCI image config.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OciRootfs {
    pub(crate) diff_ids: Vec<Digest>,
}

impl OciConfig {
    /// The run settings, with empty strings read as absent.
    pub(crate) fn run_config(&self) -> RunConfig {
        let run = self.config.clone().unwrap_or_default();
        let present = |value: Option<String>| value.filter(|v| !v.is_empty());
        RunConfig {
            env: run.env.unwrap_or_default(),
            working_dir: present(run.working_dir),
            user: present(run.user),
            entrypoint: run.entrypoint,
            cmd: run.cmd,
        }
    }
}

/// Seconds since the epoch, now.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
