//! Offline imports: an OCI image layout tarball (`skopeo copy … oci-archive:`) or a
//! `docker save` archive (`docker-archive:`), read as a stream.
//!
//! The archive is first spread into a staging directory under the store's `tmp/` (only
//! directories and regular files are created; symlinks between archive members, as old
//! `docker save` writes for shared layers, are followed in memory and must stay inside the
//! archive). Every blob named by digest is checked against it, every layer's content against
//! the config's diff id, and the layers the store lacks are unpacked into it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::digest::{Digest, HashingReader};
use crate::record::{ImageRecord, LayerRecord, LayerRef, OciConfig, now};
use crate::reference::ImageRef;
use crate::store::{ImageStore, StoreError};

/// Media types of an index (OCI) or manifest list (Docker).
const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Most names (tags) one image of a `docker save` archive may carry.
const MAX_NAMES: usize = 64;
/// Annotations that name an image in an OCI layout, most specific first.
const NAME_ANNOTATIONS: &[&str] = &[
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];
/// Symlinks followed in a row before giving up.
const MAX_LINK_HOPS: usize = 8;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive is neither an OCI layout nor a `docker save` archive, or is malformed.
    #[error("not an importable image archive: {0}")]
    Invalid(String),
    /// The archive is larger than allowed.
    #[error("the archive is larger than {0} bytes")]
    TooLarge(u64),
    /// A blob's content does not match its digest.
    #[error("blob {expected} in the archive has digest {actual}")]
    DigestMismatch {
        /// The digest the archive names.
        expected: Digest,
        /// The digest of its content.
        actual: Digest,
    },
    /// No name was given and the archive names no image.
    #[error("the archive names no image: give a name to import it under")]
    NoName,
    /// The store failed (a layer refused while unpacking, disk error…).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ImportError {
    /// The stable API error code of this failure.
    pub fn code(&self) -> &'static str {
        match self {
            ImportError::TooLarge(_) => "payload_too_large",
            ImportError::Store(StoreError::Io { .. }) => "internal",
            _ => "image_import_failed",
        }
    }
}

/// Imports every image in the archive read from `reader` (at most `max_bytes` of it). `name`,
/// when given, names the image (the archive must then hold exactly one); without it, each
/// image takes every name the archive gives it (each tag of a `docker save`), one record each.
pub async fn import_archive(
    store: &Arc<ImageStore>,
    reader: impl Read + Send + 'static,
    name: Option<ImageRef>,
    max_bytes: u64,
) -> Result<Vec<ImageRecord>, ImportError> {
    let staging = store.staging()?;
    let dir = staging.path().to_owned();
    let (archive, staging) = tokio::task::spawn_blocking(move || {
        Archive::extract(reader, &dir, max_bytes).map(|archive| (archive, staging))
    })
    .await
    .map_err(|e| ImportError::Invalid(format!("extraction task failed: {e}")))??;
    let images = if archive.exists("index.json") {
        archive.oci_images()?
    } else if archive.exists("manifest.json") {
        archive.docker_images()?
    } else {
        return Err(ImportError::Invalid(
            "neither index.json (OCI layout) nor manifest.json (docker save) found".to_owned(),
        ));
    };
    if images.is_empty() {
        return Err(ImportError::Invalid(
            "the archive holds no image".to_owned(),
        ));
    }
    if name.is_some() && images.len() > 1 {
        return Err(ImportError::Invalid(format!(
            "the archive holds {} images; a name applies to one",
            images.len()
        )));
    }
    let archive = Arc::new(archive);
    let mut records = Vec::new();
    for image in images {
        let names: Vec<String> = match &name {
            Some(name) => vec![name.to_string()],
            None if image.names.is_empty() => return Err(ImportError::NoName),
            None => image.names.iter().map(ToString::to_string).collect(),
        };
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        let _pin = store.pin(&diff_ids);
        for layer in &image.layers {
            let file = image.layer_files[&layer.blob].clone();
            let archive = Arc::clone(&archive);
            let store_for_unpack = Arc::clone(store);
            let diff_id = layer.diff_id.clone();
            store
                .ensure_layer(&layer.diff_id, || async move {
                    tokio::task::spawn_blocking(move || -> Result<LayerRecord, ImportError> {
                        let path = archive.path(&file)?;
                        let blob = fs::File::open(&path).map_err(|source| StoreError::Io {
                            op: "open",
                            path: path.clone(),
                            source,
                        })?;
                        Ok(store_for_unpack
                            .unpack_into_store(&diff_id, io::BufReader::new(blob))?)
                    })
                    .await
                    .map_err(|e| ImportError::Invalid(format!("unpacking task failed: {e}")))?
                })
                .await?;
        }
        let stored_at = now();
        // Every name the archive gives the image (each tag of a `docker save`) names it.
        for name in names {
            let record = ImageRecord {
                name,
                id: image.id.clone(),
                manifest_digest: image.manifest_digest.clone(),
                layers: image.layers.clone(),
                config: image.config.run_config(),
                created: image.config.created.clone(),
                stored_at,
                last_used: stored_at,
            };
            store.put_image(&record)?;
            records.push(record);
        }
    }
    drop(staging);
    Ok(records)
}

/// An image found in an archive, its layers checked against their digests.
struct FoundImage {
    /// The names the archive gives it (none, one, or each tag of a `docker save`).
    names: Vec<ImageRef>,
    id: Digest,
    manifest_digest: Option<Digest>,
    config: OciConfig,
    layers: Vec<LayerRef>,
    /// The archive member holding each layer blob.
    layer_files: HashMap<Digest, String>,
}

/// An archive spread into a staging directory.
struct Archive {
    dir: PathBuf,
    /// Symlinks between members: name → target, both relative to the archive root.
    links: HashMap<String, String>,
}

impl Archive {
    fn extract(reader: impl Read, dir: &Path, max_bytes: u64) -> Result<Archive, ImportError> {
        let mut limited = reader.take(max_bytes.saturating_add(1));
        let mut links = HashMap::new();
        let result = Archive::extract_members(&mut limited, dir, &mut links);
        // Whatever went wrong, an archive cut at the limit is too large.
        let drained = io::copy(&mut limited, &mut io::sink());
        if limited.limit() == 0 {
            return Err(ImportError::TooLarge(max_bytes));
        }
        result?;
        drained.map_err(|e| ImportError::Invalid(e.to_string()))?;
        Ok(Archive {
            dir: dir.to_owned(),
            links,
        })
    }

    /// Writes the directories and regular files of the archive under `dir` and notes its
    /// links in `links`.
    fn extract_members(
        reader: impl Read,
        dir: &Path,
        links: &mut HashMap<String, String>,
    ) -> Result<(), ImportError> {
        {
            let mut tar = tar::Archive::new(reader);
            let entries = tar
                .entries()
                .map_err(|e| ImportError::Invalid(e.to_string()))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| ImportError::Invalid(e.to_string()))?;
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some(name) = normalise(&raw) else {
                    return Err(ImportError::Invalid(format!(
                        "member {raw:?} leaves the archive"
                    )));
                };
                if name.is_empty() {
                    continue;
                }
                let target = dir.join(&name);
                let io_error = |op: &'static str| {
                    let target = target.clone();
                    move |source| StoreError::Io {
                        op,
                        path: target,
                        source,
                    }
                };
                match entry.header().entry_type() {
                    tar::EntryType::Directory => {
                        fs::create_dir_all(&target).map_err(io_error("create"))?;
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        if let Some(parent) = target.parent() {
                            fs::create_dir_all(parent).map_err(io_error("create"))?;
                        }
                        let mut file = fs::File::create(&target).map_err(io_error("create"))?;
                        io::copy(&mut entry, &mut file).map_err(|e| {
                            if e.kind() == io::ErrorKind::UnexpectedEof {
                                ImportError::Invalid(e.to_string())
                            } else {
                                io_error("write")(e).into()
                            }
                        })?;
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        let link = entry
                            .link_name_bytes()
                            .map(|l| String::from_utf8_lossy(&l).into_owned())
                            .unwrap_or_default();
                        let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                            Path::new(&name)
                                .parent()
                                .map(|p| p.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        } else {
                            String::new()
                        };
                        let joined = if base.is_empty() {
                            link
                        } else {
                            format!("{base}/{link}")
                        };
                        links.insert(name, joined);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The file of member `name`, following links between members.
    fn path(&self, name: &str) -> Result<PathBuf, ImportError> {
        let mut name = normalise(name)
            .ok_or_else(|| ImportError::Invalid(format!("member {name:?} leaves the archive")))?;
        for _ in 0..MAX_LINK_HOPS {
            match self.links.get(&name) {
                Some(target) => {
                    name = normalise(target).ok_or_else(|| {
                        ImportError::Invalid(format!("link {name:?} leaves the archive"))
                    })?;
                }
                None => return Ok(self.dir.join(name)),
            }
        }
        Err(ImportError::Invalid(format!("too many links at {name:?}")))
    }

    fn exists(&self, name: &str) -> bool {
        self.path(name).is_ok_and(|path| path.is_file())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ImportError> {
        let path = self.path(name)?;
        fs::read(&path).map_err(|e| ImportError::Invalid(format!("reading {name}: {e}")))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, ImportError> {
        serde_json::from_slice(&self.read(name)?)
            .map_err(|e| ImportError::Invalid(format!("{name}: {e}")))
    }

    /// The digest of member `name`'s content.
    fn digest(&self, name: &str) -> Result<Digest, ImportError> {
        let path = self.path(name)?;
        let file = fs::File::open(&path)
            .map_err(|e| ImportError::Invalid(format!("reading {name}: {e}")))?;
        let (digest, _) = HashingReader::new(io::BufReader::new(file))
            .finish()
            .map_err(|e| ImportError::Invalid(format!("reading {name}: {e}")))?;
        Ok(digest)
    }

    /// Reads the blob `digest` of an OCI layout, checking its content.
    fn blob(&self, digest: &Digest) -> Result<Vec<u8>, ImportError> {
        let bytes = self.read(&blob_name(digest))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ImportError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn oci_images(&self) -> Result<Vec<FoundImage>, ImportError> {
        let index: OciIndex = self.read_json("index.json")?;
        let mut images = Vec::new();
        for entry in index.manifests {
            let mut descriptor = entry.clone();
            if INDEX_TYPES.contains(&descriptor.media_type.as_str()) {
                let nested: OciIndex = serde_json::from_slice(&self.blob(&descriptor.digest)?)
                    .map_err(|e| {
                        ImportError::Invalid(format!("index {}: {e}", descriptor.digest))
                    })?;
                let Some(chosen) = nested.manifests.into_iter().find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == host_architecture())
                }) else {
                    continue;
                };
                descriptor = chosen;
            }
            let manifest: OciManifest = serde_json::from_slice(&self.blob(&descriptor.digest)?)
                .map_err(|e| {
                    ImportError::Invalid(format!("manifest {}: {e}", descriptor.digest))
                })?;
            let config_bytes = self.blob(&manifest.config.digest)?;
            let name = NAME_ANNOTATIONS
                .iter()
                .find_map(|key| entry.annotations.get(*key))
                .and_then(|name| ImageRef::parse(name).ok())
                // A bare tag ("latest") is not a name.
                .filter(|_| {
                    NAME_ANNOTATIONS
                        .iter()
                        .find_map(|key| entry.annotations.get(*key))
                        .is_some_and(|n| n.contains('/') || n.contains(':'))
                });
            let blobs: Vec<(Digest, String)> = manifest
                .layers
                .iter()
                .map(|layer| (layer.digest.clone(), blob_name(&layer.digest)))
                .collect();
            images.push(self.found(
                name.into_iter().collect(),
                Some(descriptor.digest),
                &config_bytes,
                blobs,
            )?);
        }
        Ok(images)
    }

    fn docker_images(&self) -> Result<Vec<FoundImage>, ImportError> {
        let manifest: Vec<DockerManifest> = self.read_json("manifest.json")?;
        let mut images = Vec::new();
        for entry in manifest {
            let config_bytes = self.read(&entry.config)?;
            let mut names: Vec<ImageRef> = Vec::new();
            for tag in entry.repo_tags.iter().flatten() {
                if let Ok(name) = ImageRef::parse(tag)
                    && !names.contains(&name)
                {
                    names.push(name);
                }
            }
            if names.len() > MAX_NAMES {
                return Err(ImportError::Invalid(format!(
                    "an image has {} tags; at most {MAX_NAMES} are imported at once",
                    names.len()
                )));
            }
            let mut blobs = Vec::new();
            for layer in &entry.layers {
                blobs.push((self.digest(layer)?, layer.clone()));
            }
            images.push(self.found(names, None, &config_bytes, blobs)?);
        }
        Ok(images)
    }

    /// An image from its config and its layer blobs (digest and member), bottom first. Layer
    /// blobs named by digest are checked against it.
    fn found(
        &self,
        names: Vec<ImageRef>,
        manifest_digest: Option<Digest>,
        config_bytes: &[u8],
        blobs: Vec<(Digest, String)>,
    ) -> Result<FoundImage, ImportError> {
        let config: OciConfig = serde_json::from_slice(config_bytes)
            .map_err(|e| ImportError::Invalid(format!("image config: {e}")))?;
        if config.rootfs.diff_ids.len() != blobs.len() {
            return Err(ImportError::Invalid(format!(
                "{} layers but {} diff ids",
                blobs.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        if blobs.len() > crate::pull::MAX_LAYERS {
            return Err(ImportError::Invalid(format!(
                "more than {} layers",
                crate::pull::MAX_LAYERS
            )));
        }
        let mut layers = Vec::new();
        let mut layer_files = HashMap::new();
        for ((blob, file), diff_id) in blobs.into_iter().zip(&config.rootfs.diff_ids) {
            let actual = self.digest(&file)?;
            if actual != blob {
                return Err(ImportError::DigestMismatch {
                    expected: blob,
                    actual,
                });
            }
            let blob_size = self.path(&file)?.metadata().map_or(0, |m| m.len());
            layers.push(LayerRef {
                diff_id: diff_id.clone(),
                blob: blob.clone(),
                blob_size,
            });
            layer_files.insert(blob, file);
        }
        Ok(FoundImage {
            names,
            id: Digest::of(config_bytes),
            manifest_digest,
            config,
            layers,
            layer_files,
        })
    }
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// `./a//b/` is `a/b`; `None` for absolute names and names with `..`.
fn normalise(name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// This machine's architecture as OCI names it.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<OciPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
struct OciPlatform {
    os: String,
    architecture: String,
}

#[derive(Debug, Deserialize)]
struct OciIndex {
    manifests: Vec<OciDescriptor>,
}

#[derive(Debug, Deserialize)]
struct OciManifest {
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}
