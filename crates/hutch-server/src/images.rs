//! The server's images: the OCI layer store under `<data>/images-oci`, the puller that fills
//! it, the tenants' snapshot names, and the typed errors the API answers with.
//!
//! [`Images::resolve`] is what session creation calls: it turns the `image` a client names
//! into an [`ImageLease`] (pulling the image when the store lacks it), so the image's layers
//! stay on disk while the session uses them. A name is first looked up among the caller's
//! snapshots, then read as an OCI reference (`python:3.11` is
//! `docker.io/library/python:3.11`).
//!
//! Snapshots live in the same store under a reserved registry,
//! `snapshots.hutch.internal/t<hash of the tenant>/<name>:latest`, which no client can name
//! directly: references to that registry are refused, so a tenant reaches only its own
//! snapshots, by their short name. The tenant of each hash is kept beside the store (in
//! `snapshot-tenants/`) so that admin listings can show it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use hutch_image::{
    Digest, ImageLease, ImageRecord, ImageRef, ImageStore, ImportError, ProgressFn, PullError,
    Puller, ReferenceError, RegistryConfig, StoreError, UnpackOptions,
};

/// Directory of the image store inside the data directory (`images/` holds the `default`
/// image).
pub const IMAGES_DIR: &str = "images-oci";
/// The registry name snapshots are stored under; never reachable from a client's reference.
pub const SNAPSHOT_REGISTRY: &str = "snapshots.hutch.internal";
/// Directory, beside the store's own, that maps snapshot tenant hashes back to tenants.
const SNAPSHOT_TENANTS_DIR: &str = "snapshot-tenants";
/// Name prefix of the snapshots forks are made from.
pub const FORK_PREFIX: &str = "fork-";
/// Seconds a fork's snapshot is kept at least, while its sessions are being created.
const FORK_GRACE_SECS: u64 = 60;
/// Longest snapshot name.
pub const SNAPSHOT_NAME_MAX: usize = 128;
/// Default bound on the snapshots one tenant keeps (`--tenant-max-snapshots`); forks' own
/// snapshots do not count.
pub const DEFAULT_TENANT_MAX_SNAPSHOTS: usize = 100;
/// Default bound on the layers kept on disk (`--image-cache-gb`), in bytes.
pub const DEFAULT_IMAGE_CACHE_BYTES: u64 = 20 << 30;
/// Default bound on an imported archive (`--image-import-max-mb`), in bytes.
pub const DEFAULT_IMPORT_MAX_BYTES: u64 = 4 << 30;
/// Most bytes of file content one layer may unpack to.
const LAYER_MAX_BYTES: u64 = 64 << 30;
/// Most entries one layer may hold.
const LAYER_MAX_ENTRIES: u64 = 2_000_000;

/// Who may import and delete images (anyone may pull, within the allowed registries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageManagers {
    /// Only admin tokens (the default): images are shared by every tenant.
    #[default]
    Admins,
    /// Every tenant.
    Tenants,
}

/// How the server keeps and fetches images.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Registries: allow-list, mirrors, plain-HTTP registries and credentials.
    pub registries: RegistryConfig,
    /// Bytes of unpacked layers kept before the least recently used unused images go.
    pub cache_bytes: u64,
    /// Largest archive `POST /v1/images/import` accepts, in bytes.
    pub import_max_bytes: u64,
    /// Who may import and delete images.
    pub managers: ImageManagers,
    /// Host uid (and gid) root inside a sandbox maps to: layer files are owned from there.
    pub uid_base: u32,
    /// How many ids a sandbox maps.
    pub id_count: u32,
    /// Most snapshots one tenant keeps (those forks are made from do not count).
    pub tenant_max_snapshots: usize,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            registries: RegistryConfig::default(),
            cache_bytes: DEFAULT_IMAGE_CACHE_BYTES,
            import_max_bytes: DEFAULT_IMPORT_MAX_BYTES,
            managers: ImageManagers::Admins,
            uid_base: hutch_sandbox::linux::DEFAULT_UID_BASE,
            id_count: hutch_sandbox::linux::UID_COUNT,
            tenant_max_snapshots: DEFAULT_TENANT_MAX_SNAPSHOTS,
        }
    }
}

/// Why an image operation failed; [`crate::ApiError`] maps each to its API code.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The name is neither a snapshot name nor a valid OCI reference (`invalid_request`).
    #[error("invalid image name {name:?}: {source}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is not a reference.
        #[source]
        source: ReferenceError,
    },
    /// No such image, here or in its registry (`image_not_found`).
    #[error("image {image} not found{}", answer.as_deref().map(|a| format!(": {a}")).unwrap_or_default())]
    NotFound {
        /// The image's name.
        image: String,
        /// The registry's answer, when it was asked.
        answer: Option<String>,
    },
    /// The image's registry is not allowed (`forbidden`).
    #[error("registry {0} is not on the list of allowed registries")]
    RegistryNotAllowed(String),
    /// The pull failed (`image_pull_failed`).
    #[error("pulling {image} failed: {answer}")]
    PullFailed {
        /// The image's name.
        image: String,
        /// The registry's answer, or what was wrong with what it sent.
        answer: String,
    },
    /// The archive cannot be imported (`image_import_failed`).
    #[error("{0}")]
    ImportFailed(String),
    /// The archive is larger than allowed (`payload_too_large`).
    #[error("the archive is larger than {0} bytes")]
    TooLarge(u64),
    /// The tenant has a snapshot of this name already, or one being made (`conflict`).
    #[error("a snapshot named {0} exists already; delete it first or pick another name")]
    NameTaken(String),
    /// The tenant keeps its most snapshots (`quota_exceeded`).
    #[error("the tenant keeps its maximum of {limit} snapshots; delete one first")]
    TooManySnapshots {
        /// The limit.
        limit: usize,
        /// Snapshots the tenant keeps or is making now.
        used: usize,
    },
    /// Sessions use the image (`conflict`).
    #[error("image {0} is used by a session; delete its sessions first")]
    InUse(String),
    /// The caller may not do this (`forbidden`).
    #[error("only admin tokens may {0} images on this server")]
    AdminOnly(&'static str),
    /// The store failed (`internal`).
    #[error("the image store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ImageError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(image) => ImageError::NotFound {
                image,
                answer: None,
            },
            StoreError::InUse(image) => ImageError::InUse(image),
            other => ImageError::Store(other),
        }
    }
}

impl ImageError {
    /// The error of a failed pull of `image`.
    fn from_pull(image: &ImageRef, err: PullError) -> Self {
        let answer = err.to_string();
        match err {
            PullError::NotAllowed(registry) => ImageError::RegistryNotAllowed(registry),
            PullError::NotFound { reference, message } => ImageError::NotFound {
                image: reference,
                answer: Some(message),
            },
            PullError::Registry { reference, message }
            | PullError::Invalid { reference, message } => ImageError::PullFailed {
                image: reference,
                answer: message,
            },
            PullError::Store(store @ (StoreError::Io { .. } | StoreError::Corrupt { .. })) => {
                ImageError::Store(store)
            }
            PullError::DigestMismatch { .. } | PullError::Store(_) => ImageError::PullFailed {
                image: image.to_string(),
                answer,
            },
        }
    }
}

impl From<ImportError> for ImageError {
    fn from(err: ImportError) -> Self {
        match err {
            ImportError::TooLarge(limit) => ImageError::TooLarge(limit),
            ImportError::Store(store @ (StoreError::Io { .. } | StoreError::Corrupt { .. })) => {
                ImageError::Store(store)
            }
            other => ImageError::ImportFailed(other.to_string()),
        }
    }
}

/// An image as the API shows it: its record, the name the caller knows it by, whose snapshot
/// it is, its size on disk, and how many sessions use it.
#[derive(Debug, Clone)]
pub struct ImageView {
    /// The name to use in requests: a canonical reference, or a snapshot's short name.
    pub name: String,
    /// The tenant owning it, for snapshots.
    pub tenant: Option<String>,
    /// What the store keeps about it.
    pub record: ImageRecord,
    /// Bytes its layers take on disk (layers shared with other images count in each).
    pub size_bytes: u64,
    /// Sessions using it now.
    pub sessions: usize,
}

/// What a client's image name resolved to.
enum Named {
    /// One of the caller's snapshots.
    Snapshot(ImageRef),
    /// An OCI reference.
    Reference(ImageRef),
}

impl Named {
    fn store_ref(&self) -> &ImageRef {
        match self {
            Named::Snapshot(r) | Named::Reference(r) => r,
        }
    }
}

/// The server's images: the store, the puller, snapshot names and the cache bound.
pub struct Images {
    store: Arc<ImageStore>,
    puller: Puller,
    config: ImagesConfig,
    tenants_dir: PathBuf,
    /// Names of the snapshots being made, by tenant hash: a name is taken, and counts
    /// against the tenant's quota, from its plan on.
    in_flight: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("root", &self.store.root())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Images {
    /// Opens (creating) the image store at `root` and the puller over it.
    pub fn open(root: &Path, config: ImagesConfig) -> Result<Images, ImageError> {
        let store = ImageStore::open(
            root,
            UnpackOptions {
                uid_base: config.uid_base,
                id_count: config.id_count,
                max_bytes: LAYER_MAX_BYTES,
                max_entries: LAYER_MAX_ENTRIES,
            },
        )
        .map_err(ImageError::Store)?;
        let tenants_dir = root.join(SNAPSHOT_TENANTS_DIR);
        std::fs::create_dir_all(&tenants_dir).map_err(|source| {
            ImageError::Store(StoreError::Io {
                op: "create",
                path: tenants_dir.clone(),
                source,
            })
        })?;
        let puller = Puller::new(Arc::clone(&store), config.registries.clone());
        Ok(Images {
            store,
            puller,
            config,
            tenants_dir,
            in_flight: Arc::default(),
        })
    }

    /// The layer store.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// The configuration the images were opened with.
    pub fn config(&self) -> &ImagesConfig {
        &self.config
    }

    /// Takes the image `name` for a session of `tenant`: the tenant's snapshot of that name,
    /// else the stored image of that reference, else the image pulled now. The lease keeps
    /// its layers on disk until dropped.
    pub async fn resolve(&self, tenant: &str, name: &str) -> Result<ImageLease, ImageError> {
        let named = self.name(tenant, name)?;
        match self.store.acquire(named.store_ref()) {
            Ok(lease) => return Ok(lease),
            Err(StoreError::NotFound(_)) => {}
            Err(err) => return Err(err.into()),
        }
        let Named::Reference(reference) = named else {
            return Err(ImageError::NotFound {
                image: name.to_owned(),
                answer: None,
            });
        };
        self.puller
            .pull(&reference, &|_| {})
            .await
            .map_err(|err| ImageError::from_pull(&reference, err))?;
        Ok(self.store.acquire(&reference)?)
    }

    /// Pulls `reference` from its registry (only the layers the store lacks), reporting each
    /// layer's progress, and records it under its canonical name.
    pub async fn pull(
        &self,
        reference: &str,
        progress: &ProgressFn<'_>,
    ) -> Result<ImageView, ImageError> {
        let reference = parse_reference(reference)?;
        let record = self
            .puller
            .pull(&reference, progress)
            .await
            .map_err(|err| ImageError::from_pull(&reference, err))?;
        self.view(record, None)
    }

    /// Checks that `reference` is a reference whose registry may be pulled from.
    pub fn check_pullable(&self, reference: &str) -> Result<(), ImageError> {
        let reference = parse_reference(reference)?;
        if self.config.registries.allows(reference.registry()) {
            Ok(())
        } else {
            Err(ImageError::RegistryNotAllowed(
                reference.registry().to_owned(),
            ))
        }
    }

    /// Imports the images of an OCI layout or `docker save` archive read from `reader` (at
    /// most [`ImagesConfig::import_max_bytes`]), under `name` when given.
    pub async fn import(
        &self,
        admin: bool,
        reader: impl std::io::Read + Send + 'static,
        name: Option<&str>,
    ) -> Result<Vec<ImageView>, ImageError> {
        self.check_manager(admin, "import")?;
        let name = name.map(parse_reference).transpose()?;
        let records =
            hutch_image::import_archive(&self.store, reader, name, self.config.import_max_bytes)
                .await?;
        records
            .into_iter()
            .map(|record| self.view(record, None))
            .collect()
    }

    /// The images `tenant` sees (every pulled or imported image, and its own snapshots; an
    /// admin sees every tenant's snapshots), by name.
    pub fn list(&self, tenant: &str, admin: bool) -> Result<Vec<ImageView>, ImageError> {
        let own = tenant_hash(tenant);
        let mut views = Vec::new();
        for record in self.store.images()? {
            let owner = snapshot_owner(&record.name);
            let tenant = match owner {
                None => None,
                Some(hash) if hash == own => Some(tenant.to_owned()),
                Some(hash) if admin => Some(self.tenant_of(&hash)),
                Some(_) => continue,
            };
            views.push(self.view(record, tenant)?);
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    /// The image `name` as `tenant` sees it (another tenant's snapshot is not found).
    pub fn get(&self, tenant: &str, name: &str) -> Result<ImageView, ImageError> {
        let named = self.name(tenant, name)?;
        let record = self.store.image(named.store_ref())?;
        let owner = matches!(named, Named::Snapshot(_)).then(|| tenant.to_owned());
        self.view(record, owner)
    }

    /// Removes the image `name` (a snapshot of the caller's, or a shared image, which needs
    /// an admin token unless tenants manage images), then collects what no image needs.
    pub fn remove(&self, tenant: &str, admin: bool, name: &str) -> Result<ImageView, ImageError> {
        let named = self.name(tenant, name)?;
        if matches!(named, Named::Reference(_)) {
            self.check_manager(admin, "delete")?;
        }
        let owner = matches!(named, Named::Snapshot(_)).then(|| tenant.to_owned());
        let users = self.store.users(named.store_ref());
        if users > 0 {
            return Err(ImageError::InUse(name.to_owned()));
        }
        let record = self.store.remove_image(named.store_ref())?;
        let view = ImageView {
            name: display_name(&record.name),
            tenant: owner,
            size_bytes: self.store.image_size(&record)?,
            record,
            sessions: users,
        };
        self.collect()?;
        Ok(view)
    }

    /// Removes unused layers, then the least recently used unused images while the layers
    /// take more than the cache bound. Snapshots are never collected, only deleted.
    pub fn collect(&self) -> Result<hutch_image::GcReport, ImageError> {
        self.forget_unused_forks()?;
        let report = self
            .store
            .collect_keeping(self.config.cache_bytes, |record| {
                snapshot_owner(&record.name).is_some()
            })?;
        if !report.layers.is_empty() || !report.images.is_empty() {
            tracing::info!(
                images = report.images.len(),
                layers = report.layers.len(),
                freed_bytes = report.freed_bytes,
                "image cache collected"
            );
        }
        Ok(report)
    }

    /// Removes the snapshots forks were made from (`fork-…`) once no session uses them, a
    /// minute after they were made (so that the forks being created have taken them).
    fn forget_unused_forks(&self) -> Result<(), ImageError> {
        let now = unix_now();
        for record in self.store.images()? {
            let fork = snapshot_owner(&record.name).is_some()
                && display_name(&record.name).starts_with(FORK_PREFIX);
            if !fork || record.stored_at.saturating_add(FORK_GRACE_SECS) > now {
                continue;
            }
            let Ok(reference) = ImageRef::parse(&record.name) else {
                continue;
            };
            if self.store.users(&reference) == 0 {
                match self.store.remove_image(&reference) {
                    Ok(_) | Err(StoreError::InUse(_) | StoreError::NotFound(_)) => {}
                    Err(err) => return Err(ImageError::Store(err)),
                }
            }
        }
        Ok(())
    }

    /// Starts `tenant`'s snapshot `name` of a session running the image `base`: checks the
    /// name is free and the tenant below its quota (counting the snapshots being made), finds
    /// the base image, and makes the directory the session's writable layer is to be copied
    /// into ([`SnapshotPlan::layer_dir`]). The name stays taken until the plan is dropped.
    ///
    /// `base_record` is the record the session's lease holds, when known: the exact layers it
    /// runs on, even if its name now points at newer ones.
    pub fn plan_snapshot(
        &self,
        tenant: &str,
        name: &str,
        base: &str,
        base_record: Option<ImageRecord>,
    ) -> Result<SnapshotPlan, ImageError> {
        let target = self.record_tenant(tenant, name)?;
        let slot = self.reserve_snapshot(tenant, name, &target)?;
        let base = match base_record {
            Some(record) => record,
            None => self.store.image(self.name(tenant, base)?.store_ref())?,
        };
        let pin = self.store.pin(
            &base
                .layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect::<Vec<_>>(),
        );
        let dir = self
            .store
            .root()
            .join("tmp")
            .join(format!("snapshot-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).map_err(|source| {
            ImageError::Store(StoreError::Io {
                op: "create",
                path: dir.clone(),
                source,
            })
        })?;
        Ok(SnapshotPlan {
            target,
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            base,
            dir,
            _pin: pin,
            _slot: slot,
        })
    }

    /// Takes the name `name` (stored as `target`) for a snapshot of `tenant`'s being made,
    /// after checking it is free and that the tenant keeps fewer snapshots than its quota.
    /// Forks' snapshots are not counted and not refused: they go by themselves.
    fn reserve_snapshot(
        &self,
        tenant: &str,
        name: &str,
        target: &ImageRef,
    ) -> Result<SnapshotSlot, ImageError> {
        let owner = tenant_hash(tenant);
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let making = in_flight.entry(owner.clone()).or_default();
        if making.iter().any(|n| n == name) || self.store.image(target).is_ok() {
            return Err(ImageError::NameTaken(name.to_owned()));
        }
        if !name.starts_with(FORK_PREFIX) {
            let stored = self
                .store
                .images()?
                .iter()
                .filter(|record| {
                    snapshot_owner(&record.name).as_deref() == Some(owner.as_str())
                        && !display_name(&record.name).starts_with(FORK_PREFIX)
                })
                .count();
            let used = stored
                + making
                    .iter()
                    .filter(|n| !n.starts_with(FORK_PREFIX))
                    .count();
            if used >= self.config.tenant_max_snapshots {
                return Err(ImageError::TooManySnapshots {
                    limit: self.config.tenant_max_snapshots,
                    used,
                });
            }
        }
        making.push(name.to_owned());
        Ok(SnapshotSlot {
            in_flight: Arc::clone(&self.in_flight),
            owner,
            name: name.to_owned(),
        })
    }

    /// Stores the copied layer of `plan` as a new top layer over its base image's, and the
    /// snapshot image, owned by the plan's tenant. `bytes` is what the copy holds.
    pub fn commit_snapshot(&self, plan: SnapshotPlan, bytes: u64) -> Result<ImageView, ImageError> {
        let diff_id = Digest::of(format!("hutch snapshot {}", uuid::Uuid::new_v4()).as_bytes());
        let _pin = self.store.pin(std::slice::from_ref(&diff_id));
        let copied = plan.layer_dir();
        self.store.add_layer(&diff_id, |root| {
            std::fs::rename(&copied, root).map_err(|source| StoreError::Io {
                op: "move",
                path: copied.clone(),
                source,
            })?;
            Ok::<_, ImageError>(bytes)
        })?;
        let mut layers = plan.base.layers.clone();
        layers.push(hutch_image::LayerRef {
            diff_id: diff_id.clone(),
            blob: diff_id.clone(),
            blob_size: bytes,
        });
        let now = unix_now();
        let id = Digest::of(format!("{} {}", plan.base.id, diff_id).as_bytes());
        let record = ImageRecord {
            name: plan.target.to_string(),
            id,
            manifest_digest: None,
            layers,
            config: plan.base.config.clone(),
            created: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .ok(),
            stored_at: now,
            last_used: now,
        };
        self.store.put_image(&record)?;
        tracing::info!(tenant = %plan.tenant, snapshot = %plan.name, bytes, "snapshot stored");
        self.view(record, Some(plan.tenant.clone()))
    }

    /// The store reference of `tenant`'s snapshot `name`, after checking the name; records
    /// which tenant the hash stands for.
    fn record_tenant(&self, tenant: &str, name: &str) -> Result<ImageRef, ImageError> {
        let reference = snapshot_ref(tenant, name)?;
        let path = self.tenants_dir.join(tenant_hash(tenant));
        if !path.exists() {
            std::fs::write(&path, tenant).map_err(|source| {
                ImageError::Store(StoreError::Io {
                    op: "write",
                    path,
                    source,
                })
            })?;
        }
        Ok(reference)
    }

    /// Which image a client's `name` means for `tenant`.
    fn name(&self, tenant: &str, name: &str) -> Result<Named, ImageError> {
        if valid_snapshot_name(name) {
            let snapshot = snapshot_ref(tenant, name)?;
            if self.store.image(&snapshot).is_ok() {
                return Ok(Named::Snapshot(snapshot));
            }
        }
        parse_reference(name).map(Named::Reference)
    }

    /// Whether a caller (`admin` or not) may import and delete shared images; `what` names the
    /// operation in the error.
    pub fn check_manager(&self, admin: bool, what: &'static str) -> Result<(), ImageError> {
        if admin || self.config.managers == ImageManagers::Tenants {
            Ok(())
        } else {
            Err(ImageError::AdminOnly(what))
        }
    }

    fn view(&self, record: ImageRecord, tenant: Option<String>) -> Result<ImageView, ImageError> {
        let store_ref = ImageRef::parse(&record.name).ok();
        Ok(ImageView {
            name: display_name(&record.name),
            tenant,
            size_bytes: self.store.image_size(&record)?,
            sessions: store_ref.map_or(0, |r| self.store.users(&r)),
            record,
        })
    }

    /// The tenant a snapshot hash stands for, or the hash when its file is missing.
    fn tenant_of(&self, hash: &str) -> String {
        std::fs::read_to_string(self.tenants_dir.join(hash)).unwrap_or_else(|_| hash.to_owned())
    }
}

/// A snapshot being made: where the session's layer is copied, and what it goes on top of.
/// Dropping it removes the copy unless [`Images::commit_snapshot`] took it.
pub struct SnapshotPlan {
    target: ImageRef,
    name: String,
    tenant: String,
    base: ImageRecord,
    dir: PathBuf,
    _pin: hutch_image::LayerPin,
    _slot: SnapshotSlot,
}

/// A snapshot's name, taken while the snapshot is made; given back when dropped.
struct SnapshotSlot {
    in_flight: Arc<Mutex<HashMap<String, Vec<String>>>>,
    owner: String,
    name: String,
}

impl Drop for SnapshotSlot {
    fn drop(&mut self) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(making) = in_flight.get_mut(&self.owner) {
            making.retain(|n| n != &self.name);
            if making.is_empty() {
                in_flight.remove(&self.owner);
            }
        }
    }
}

impl std::fmt::Debug for SnapshotPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotPlan")
            .field("target", &self.target)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SnapshotPlan {
    /// The directory (not yet existing) the session's writable layer is copied into.
    pub fn layer_dir(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for SnapshotPlan {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %err, "removing a snapshot's copy");
        }
    }
}

/// Seconds since the epoch, now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Reads a client's OCI reference, refusing the snapshot registry.
fn parse_reference(name: &str) -> Result<ImageRef, ImageError> {
    let reference = ImageRef::parse(name).map_err(|source| ImageError::InvalidName {
        name: name.to_owned(),
        source,
    })?;
    if reference.registry() == SNAPSHOT_REGISTRY {
        return Err(ImageError::NotFound {
            image: name.to_owned(),
            answer: None,
        });
    }
    Ok(reference)
}

/// Whether `name` can be a snapshot's name: 1 to 128 lower-case letters, digits, `.`, `_`
/// and `-`, starting and ending with a letter or digit, and not `default` (which sessions
/// take for the built-in image).
pub fn valid_snapshot_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= SNAPSHOT_NAME_MAX
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && !name.contains("..")
        && name != crate::validate::DEFAULT_IMAGE
}

/// The store reference of `tenant`'s snapshot `name`.
fn snapshot_ref(tenant: &str, name: &str) -> Result<ImageRef, ImageError> {
    let invalid = |source| ImageError::InvalidName {
        name: name.to_owned(),
        source,
    };
    if !valid_snapshot_name(name) {
        return Err(invalid(ReferenceError::Repository(name.to_owned())));
    }
    ImageRef::parse(&format!(
        "{SNAPSHOT_REGISTRY}/t{}/{name}:latest",
        tenant_hash(tenant)
    ))
    .map_err(invalid)
}

/// A short stable hash of a tenant, usable as a repository component.
fn tenant_hash(tenant: &str) -> String {
    Digest::of(tenant.as_bytes()).hex()[..32].to_owned()
}

/// The tenant hash of a snapshot's store name, or `None` for other images.
fn snapshot_owner(store_name: &str) -> Option<String> {
    let rest = store_name
        .strip_prefix(SNAPSHOT_REGISTRY)?
        .strip_prefix("/t")?;
    rest.split_once('/').map(|(hash, _)| hash.to_owned())
}

/// The name a client uses for a stored image: a snapshot's short name, or the canonical
/// reference.
pub(crate) fn display_name(store_name: &str) -> String {
    match snapshot_owner(store_name) {
        Some(_) => store_name
            .rsplit('/')
            .next()
            .map(|last| last.trim_end_matches(":latest").to_owned())
            .unwrap_or_default(),
        None => store_name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_short_and_plain() {
        for good in ["env", "py-311", "a.b_c", "x"] {
            assert!(valid_snapshot_name(good), "{good}");
        }
        for bad in [
            "",
            "Env",
            "-x",
            "x-",
            "a/b",
            "a:b",
            "a..b",
            "default",
            &"x".repeat(129),
        ] {
            assert!(!valid_snapshot_name(bad), "{bad}");
        }
    }

    #[test]
    fn snapshots_are_stored_per_tenant_and_shown_by_short_name() {
        let a = snapshot_ref("alice", "env").unwrap().to_string();
        let b = snapshot_ref("bob", "env").unwrap().to_string();
        assert_ne!(a, b);
        assert!(a.starts_with("snapshots.hutch.internal/t"));
        assert_eq!(display_name(&a), "env");
        assert_eq!(snapshot_owner(&a), Some(tenant_hash("alice")));
        assert_eq!(snapshot_owner("docker.io/library/python:3.11"), None);
        assert_eq!(
            display_name("docker.io/library/python:3.11"),
            "docker.io/library/python:3.11"
        );
    }

    /// A base image record with no layers, enough to plan a snapshot on.
    fn empty_base() -> ImageRecord {
        ImageRecord {
            name: "docker.io/library/base:1".to_owned(),
            id: Digest::of(b"base"),
            manifest_digest: None,
            layers: Vec::new(),
            config: hutch_image::RunConfig::default(),
            created: None,
            stored_at: 0,
            last_used: 0,
        }
    }

    #[test]
    fn snapshots_being_made_hold_their_name_and_count_against_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(
            dir.path(),
            ImagesConfig {
                tenant_max_snapshots: 1,
                ..ImagesConfig::default()
            },
        )
        .unwrap();
        let plan = |tenant: &str, name: &str| {
            images.plan_snapshot(tenant, name, "base:1", Some(empty_base()))
        };
        let first = plan("alice", "one").unwrap();
        assert!(matches!(
            plan("alice", "one"),
            Err(ImageError::NameTaken(_))
        ));
        assert!(matches!(
            plan("alice", "two"),
            Err(ImageError::TooManySnapshots { limit: 1, used: 1 })
        ));
        // Forks' snapshots and other tenants' are not held to alice's quota.
        let fork = plan("alice", "fork-0123").unwrap();
        let bobs = plan("bob", "one").unwrap();
        // A plan dropped (a copy that failed) gives its name and its place back.
        drop(first);
        let second = plan("alice", "two").unwrap();
        drop((fork, bobs, second));
        assert!(images.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn the_snapshot_registry_cannot_be_named() {
        let stored = snapshot_ref("alice", "env").unwrap().to_string();
        assert!(matches!(
            parse_reference(&stored),
            Err(ImageError::NotFound { .. })
        ));
        assert!(matches!(
            parse_reference("Not A Name"),
            Err(ImageError::InvalidName { .. })
        ));
    }
}
