//! Pulling images from registries that speak the OCI distribution API.
//!
//! A pull resolves the reference to one image manifest (an index or manifest list resolves to
//! linux on this machine's architecture), fetches the config, then each layer the store does
//! not hold: the blob streams to a file under the store's `tmp/` while its sha256 is computed,
//! a wrong digest is refused and the file removed, and the verified blob is unpacked and moved
//! into the store (see [`crate::store`]). Layers are fetched at most once at a time per diff
//! id, whoever asks.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use crate::digest::{Digest, Hasher};
use crate::record::{ImageRecord, LayerRecord, LayerRef, OciConfig, now};
use crate::reference::ImageRef;
use crate::registry::RegistryConfig;
use crate::store::{ImageStore, StoreError};

/// Most layers an image may have.
pub const MAX_LAYERS: usize = 256;
/// Largest image config accepted, in bytes.
const MAX_CONFIG_BYTES: i64 = 8 * 1024 * 1024;
/// Layers fetched at once by one pull.
const CONCURRENT_LAYERS: usize = 3;

/// Why a pull failed. [`PullError::code`] gives the stable API error code.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry is not on the allow-list.
    #[error("registry {0} is not on the list of allowed registries")]
    NotAllowed(String),
    /// The registry has no such image (or no variant for this platform).
    #[error("image {reference} not found: {message}")]
    NotFound {
        /// The reference pulled.
        reference: String,
        /// The registry's answer.
        message: String,
    },
    /// The registry refused or failed, or could not be reached.
    #[error("pulling {reference} failed: {message}")]
    Registry {
        /// The reference pulled.
        reference: String,
        /// The registry's answer, or the transport error.
        message: String,
    },
    /// A blob's content does not match its digest.
    #[error("blob {expected} of {reference} has digest {actual}: refused")]
    DigestMismatch {
        /// The reference pulled.
        reference: String,
        /// The digest the manifest names.
        expected: Digest,
        /// The digest of what the registry sent.
        actual: Digest,
    },
    /// The manifest or config is not a usable image.
    #[error("image {reference} is not usable: {message}")]
    Invalid {
        /// The reference pulled.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed (layer refused while unpacking, disk error…).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PullError {
    /// The stable API error code of this failure.
    pub fn code(&self) -> &'static str {
        match self {
            PullError::NotAllowed(_) => "image_not_allowed",
            PullError::NotFound { .. } => "image_not_found",
            PullError::Store(StoreError::Io { .. }) => "internal",
            _ => "image_pull_failed",
        }
    }
}

/// Progress of one layer of a pull, for the API to stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullProgress {
    /// The layer's blob digest.
    pub layer: Digest,
    /// What is happening to it.
    pub status: LayerStatus,
    /// Bytes downloaded so far.
    pub done: u64,
    /// The blob's size.
    pub total: u64,
}

/// What is happening to a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LayerStatus {
    /// The store already holds it.
    Cached,
    /// Its blob is downloading.
    Downloading,
    /// Its blob is verified and being unpacked.
    Unpacking,
    /// It is in the store.
    Done,
}

/// A callback receiving pull progress.
pub type ProgressFn<'a> = dyn Fn(&PullProgress) + Send + Sync + 'a;

/// Pulls images into an [`ImageStore`].
pub struct Puller {
    client: oci_client::Client,
    registries: RegistryConfig,
    store: Arc<ImageStore>,
}

impl Puller {
    /// A puller for `store` reaching registries as `registries` says.
    pub fn new(store: Arc<ImageStore>, registries: RegistryConfig) -> Puller {
        // reqwest is built without a default TLS provider; ring is this crate's choice. An
        // error means a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut plain_http: Vec<String> = registries.plain_http.iter().cloned().collect();
        plain_http.extend(
            registries
                .mirrors
                .values()
                .filter(|mirror| mirror.plain_http)
                .map(|mirror| mirror.host.clone()),
        );
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http),
            platform_resolver: Some(Box::new(oci_client::client::current_platform_resolver)),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        Puller {
            client,
            registries,
            store,
        }
    }

    /// The store this puller fills.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Pulls `reference` (fetching only layers the store lacks) and records it under its
    /// canonical name.
    pub async fn pull(
        &self,
        reference: &ImageRef,
        progress: &ProgressFn<'_>,
    ) -> Result<ImageRecord, PullError> {
        let name = reference.to_string();
        if !self.registries.allows(reference.registry()) {
            return Err(PullError::NotAllowed(reference.registry().to_owned()));
        }
        let remote = self.remote(reference);
        let auth = self.auth(reference);
        let (manifest, manifest_digest) = self
            .client
            .pull_image_manifest(&remote, &auth)
            .await
            .map_err(|e| registry_error(&name, e))?;
        let invalid = |message: String| PullError::Invalid {
            reference: name.clone(),
            message,
        };
        let manifest_digest =
            Digest::parse(&manifest_digest).map_err(|e| invalid(e.to_string()))?;
        if manifest.layers.len() > MAX_LAYERS {
            return Err(invalid(format!("more than {MAX_LAYERS} layers")));
        }
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(invalid("config larger than 8 MiB".to_owned()));
        }
        let mut config_bytes = Vec::new();
        self.client
            .pull_blob(&remote, &manifest.config, &mut config_bytes)
            .await
            .map_err(|e| registry_error(&name, e))?;
        let id = Digest::of(&config_bytes);
        let config: OciConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(invalid(format!(
                "the manifest has {} layers, the config {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (descriptor, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let blob = Digest::parse(&descriptor.digest).map_err(|e| invalid(e.to_string()))?;
            layers.push(LayerRef {
                diff_id: diff_id.clone(),
                blob,
                blob_size: u64::try_from(descriptor.size).unwrap_or(0),
            });
        }
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let _pin = self.store.pin(&diff_ids);
        let mut fetches = Vec::with_capacity(layers.len());
        for (descriptor, layer) in manifest.layers.iter().zip(&layers) {
            fetches.push(self.fetch_layer(&remote, &name, descriptor, layer, progress));
        }
        futures_util::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<_>>()
            .await?;
        let stored_at = now();
        let record = ImageRecord {
            name,
            id,
            manifest_digest: Some(manifest_digest),
            layers,
            config: config.run_config(),
            created: config.created.clone(),
            stored_at,
            last_used: stored_at,
        };
        self.store.put_image(&record)?;
        Ok(record)
    }

    /// The reference oci-client fetches: the same repository, through a mirror if one is set.
    fn remote(&self, reference: &ImageRef) -> oci_client::Reference {
        let registry = reference.registry().to_owned();
        let repository = reference.repository().to_owned();
        let mut remote = match (reference.digest(), reference.tag()) {
            (Some(digest), _) => {
                oci_client::Reference::with_digest(registry, repository, digest.to_string())
            }
            (None, tag) => oci_client::Reference::with_tag(
                registry,
                repository,
                tag.unwrap_or(crate::reference::DEFAULT_TAG).to_owned(),
            ),
        };
        if let Some(mirror) = self.registries.mirrors.get(reference.registry()) {
            remote.set_mirror_registry(mirror.host.clone());
        }
        remote
    }

    /// Credentials for the host a reference is fetched from (its mirror's, if mirrored).
    fn auth(&self, reference: &ImageRef) -> RegistryAuth {
        let host = self
            .registries
            .mirrors
            .get(reference.registry())
            .map_or(reference.registry(), |mirror| mirror.host.as_str());
        match self.registries.credentials.get(host) {
            Some(credentials) => {
                RegistryAuth::Basic(credentials.username.clone(), credentials.password.clone())
            }
            None => RegistryAuth::Anonymous,
        }
    }

    async fn fetch_layer(
        &self,
        remote: &oci_client::Reference,
        name: &str,
        descriptor: &OciDescriptor,
        layer: &LayerRef,
        progress: &ProgressFn<'_>,
    ) -> Result<LayerRecord, PullError> {
        let report = |status, done| {
            progress(&PullProgress {
                layer: layer.blob.clone(),
                status,
                done,
                total: layer.blob_size,
            });
        };
        let mut fetched = false;
        let record = self
            .store
            .ensure_layer(&layer.diff_id, || async {
                fetched = true;
                self.download_and_unpack(remote, name, descriptor, layer, &report)
                    .await
            })
            .await?;
        if !fetched {
            report(LayerStatus::Cached, layer.blob_size);
        }
        Ok(record)
    }

    async fn download_and_unpack(
        &self,
        remote: &oci_client::Reference,
        name: &str,
        descriptor: &OciDescriptor,
        layer: &LayerRef,
        report: &(dyn Fn(LayerStatus, u64) + Send + Sync),
    ) -> Result<LayerRecord, PullError> {
        let staging = self.store.staging()?;
        let blob_path = staging.path().join("blob");
        let mut file = std::fs::File::create(&blob_path).map_err(|source| StoreError::Io {
            op: "create",
            path: blob_path.clone(),
            source,
        })?;
        let mut stream = self
            .client
            .pull_blob_stream(remote, descriptor)
            .await
            .map_err(|e| registry_error(name, e))?
            .stream;
        let mut hasher = Hasher::default();
        report(LayerStatus::Downloading, 0);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client checks the digest once the whole blob is in; the check below does
                // the same and names both digests.
                Err(_) if hasher.bytes() == layer.blob_size => break,
                Err(e) => {
                    return Err(PullError::Registry {
                        reference: name.to_owned(),
                        message: format!("downloading {}: {e}", layer.blob),
                    });
                }
            };
            hasher.update(&chunk);
            if hasher.bytes() > layer.blob_size {
                return Err(PullError::Invalid {
                    reference: name.to_owned(),
                    message: format!("blob {} is larger than its manifest says", layer.blob),
                });
            }
            file.write_all(&chunk).map_err(|source| StoreError::Io {
                op: "write",
                path: blob_path.clone(),
                source,
            })?;
            report(LayerStatus::Downloading, hasher.bytes());
        }
        let actual = hasher.finish();
        if actual != layer.blob {
            // Dropping `staging` removes the file.
            return Err(PullError::DigestMismatch {
                reference: name.to_owned(),
                expected: layer.blob.clone(),
                actual,
            });
        }
        file.sync_all().map_err(|source| StoreError::Io {
            op: "sync",
            path: blob_path.clone(),
            source,
        })?;
        drop(file);
        report(LayerStatus::Unpacking, layer.blob_size);
        let store = Arc::clone(&self.store);
        let diff_id = layer.diff_id.clone();
        let record = tokio::task::spawn_blocking(move || {
            let blob = std::fs::File::open(&blob_path).map_err(|source| StoreError::Io {
                op: "open",
                path: blob_path.clone(),
                source,
            })?;
            let record = store.unpack_into_store(&diff_id, std::io::BufReader::new(blob));
            drop(staging);
            record
        })
        .await
        .map_err(|e| PullError::Registry {
            reference: name.to_owned(),
            message: format!("unpacking task failed: {e}"),
        })??;
        report(LayerStatus::Done, layer.blob_size);
        Ok(record)
    }
}

/// Sorts an oci-client error into not found or a registry failure, keeping its answer.
fn registry_error(reference: &str, error: OciDistributionError) -> PullError {
    let not_found = match &error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    };
    let message = error.to_string();
    if not_found {
        PullError::NotFound {
            reference: reference.to_owned(),
            message,
        }
    } else {
        PullError::Registry {
            reference: reference.to_owned(),
            message,
        }
    }
}
