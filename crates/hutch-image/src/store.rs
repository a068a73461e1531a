//! The image store on disk: content-addressed unpacked layers, image records, leases that keep
//! what sandboxes use from being collected, and a size-bounded LRU collector.
//!
//! Layout under the store's root:
//!
//! ```text
//! layers/sha256/<diff id hex>/root/        the unpacked layer, an overlay lower directory
//! layers/sha256/<diff id hex>/layer.json   its LayerRecord
//! images/<sha256 of the name>.json         one ImageRecord per image name
//! tmp/                                     downloads and unpacks in progress
//! ```
//!
//! A layer is unpacked into `tmp/` and renamed into `layers/` only once complete and verified
//! against its diff id, so a pull that dies midway leaves nothing half-visible, and `tmp/` is
//! emptied when the store opens. The same layer is unpacked once even when many callers ask at
//! the same moment: [`ImageStore::ensure_layer`] runs one fetch per diff id at a time and
//! the others wait for it and find the layer there.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::digest::Digest;
use crate::record::{ImageRecord, LayerRecord, now};
use crate::reference::ImageRef;
use crate::unpack::{UnpackError, UnpackOptions, unpack_layer};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A record on disk does not parse.
    #[error("image store record {path} is corrupt: {source}")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// No image of this name is stored.
    #[error("image {0} is not in the store")]
    NotFound(String),
    /// The image is used by a sandbox.
    #[error("image {0} is in use")]
    InUse(String),
    /// The layer could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The unpacked layer's content is not what the image config says it is.
    #[error("layer content digest {actual} does not match the image's diff id {expected}")]
    DiffIdMismatch {
        /// The diff id the image config names.
        expected: Digest,
        /// The digest of what was unpacked.
        actual: Digest,
    },
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Names of the images removed to get under the size bound.
    pub images: Vec<String>,
    /// Diff ids of the layers removed.
    pub layers: Vec<Digest>,
    /// Bytes freed on disk.
    pub freed_bytes: u64,
}

/// Counts of what is in use (by leases) or pinned (by pulls in progress).
#[derive(Default)]
struct InUse {
    images: HashMap<String, usize>,
    layers: HashMap<Digest, usize>,
}

/// The image store. Share it as an `Arc`.
pub struct ImageStore {
    root: PathBuf,
    unpack: UnpackOptions,
    /// One lock per layer being fetched, so a layer is fetched once at a time.
    fetching: Mutex<HashMap<Digest, Weak<tokio::sync::Mutex<()>>>>,
    in_use: Mutex<InUse>,
    /// Serialises record writes, removals and collections.
    records: Mutex<()>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` and empties its `tmp/`.
    pub fn open(root: &Path, unpack: UnpackOptions) -> Result<Arc<ImageStore>, StoreError> {
        let store = ImageStore {
            root: root.to_owned(),
            unpack,
            fetching: Mutex::default(),
            in_use: Mutex::default(),
            records: Mutex::default(),
        };
        let tmp = store.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_at("empty", &tmp))?;
        }
        for dir in [
            tmp,
            store.root.join("layers/sha256"),
            store.root.join("images"),
        ] {
            fs::create_dir_all(&dir).map_err(io_at("create", &dir))?;
        }
        Ok(Arc::new(store))
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The unpacking options of this store.
    pub fn unpack_options(&self) -> &UnpackOptions {
        &self.unpack
    }

    /// The directory an unpacked layer lives in (its tree is `root/` inside).
    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// The unpacked tree of a layer: an overlay lower directory.
    pub fn layer_root(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join("root")
    }

    /// The record of a stored layer, or `None` when the store does not hold it.
    pub fn layer(&self, diff_id: &Digest) -> Result<Option<LayerRecord>, StoreError> {
        read_json(&self.layer_dir(diff_id).join("layer.json"))
    }

    /// Makes sure the layer `diff_id` is stored, running `fetch` to get it when it is not.
    /// Concurrent callers for the same layer wait for the one fetch in flight, then find the
    /// layer stored; if that fetch failed, the next waiter tries again.
    pub async fn ensure_layer<F, Fut, E>(
        &self,
        diff_id: &Digest,
        fetch: F,
    ) -> Result<LayerRecord, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LayerRecord, E>>,
        E: From<StoreError>,
    {
        let lock = {
            let mut fetching = lock(&self.fetching);
            fetching.retain(|_, weak| weak.strong_count() > 0);
            match fetching.get(diff_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    fetching.insert(diff_id.clone(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        let _fetching = lock.lock().await;
        if let Some(record) = self.layer(diff_id)? {
            return Ok(record);
        }
        fetch().await
    }

    /// A fresh directory under `tmp/`, removed when dropped unless committed.
    pub(crate) fn staging(&self) -> Result<Staging, StoreError> {
        let name = format!("{:016x}", rand::random::<u64>());
        let path = self.root.join("tmp").join(name);
        fs::create_dir(&path).map_err(io_at("create", &path))?;
        Ok(Staging { path: Some(path) })
    }

    /// Unpacks a layer read from `reader` (blocking), checks it is `diff_id`, and moves it into
    /// the store. Nothing is visible under `layers/` unless all of that succeeded.
    pub(crate) fn unpack_into_store(
        &self,
        diff_id: &Digest,
        reader: impl Read,
    ) -> Result<LayerRecord, StoreError> {
        let staging = self.staging()?;
        let tree = staging.path().join("root");
        fs::create_dir(&tree).map_err(io_at("create", &tree))?;
        let root_id = rustix::fs::Uid::from_raw(self.unpack.uid_base);
        let root_gid = rustix::fs::Gid::from_raw(self.unpack.uid_base);
        rustix::fs::chown(&tree, Some(root_id), Some(root_gid)).map_err(|e| StoreError::Io {
            op: "chown",
            path: tree.clone(),
            source: e.into(),
        })?;
        let report = unpack_layer(reader, &tree, &self.unpack)?;
        if &report.diff_id != diff_id {
            return Err(StoreError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual: report.diff_id,
            });
        }
        let record = LayerRecord {
            diff_id: diff_id.clone(),
            disk_bytes: report.disk_bytes,
            skipped: report.skipped,
        };
        write_json(&staging.path().join("layer.json"), &record)?;
        let target = self.layer_dir(diff_id);
        staging.commit(&target)?;
        Ok(record)
    }

    /// Stores a layer whose tree `fill` writes into the directory it is given (which does
    /// not exist yet), under `diff_id`; `fill` answers the bytes the tree takes on disk.
    /// Nothing is visible under `layers/` unless `fill` succeeds. For layers made from no tar
    /// stream (snapshots of sessions) `diff_id` names the content rather than hashes it.
    pub fn add_layer<E: From<StoreError>>(
        &self,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> Result<u64, E>,
    ) -> Result<LayerRecord, E> {
        let staging = self.staging()?;
        let disk_bytes = fill(&staging.path().join("root"))?;
        let record = LayerRecord {
            diff_id: diff_id.clone(),
            disk_bytes,
            skipped: Vec::new(),
        };
        write_json(&staging.path().join("layer.json"), &record)?;
        staging.commit(&self.layer_dir(diff_id))?;
        Ok(record)
    }

    /// Stores (or replaces) the record of an image.
    pub fn put_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let _records = lock(&self.records);
        self.write_record(record)
    }

    fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.name);
        let staging = self.root.join("tmp").join(format!(
            "{}.json",
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("record")
        ));
        write_json(&staging, record)?;
        fs::rename(&staging, &path).map_err(io_at("rename", &path))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", Digest::of(name.as_bytes()).hex()))
    }

    /// The record of the image `name`.
    pub fn image(&self, name: &ImageRef) -> Result<ImageRecord, StoreError> {
        let name = name.to_string();
        read_json(&self.record_path(&name))?.ok_or(StoreError::NotFound(name))
    }

    /// Every stored image, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at("list", &dir))? {
            let path = entry.map_err(io_at("list", &dir))?.path();
            if path.extension().is_some_and(|ext| ext == "json")
                && let Some(record) = read_json::<ImageRecord>(&path)?
            {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Bytes on disk of the layers of `record`.
    pub fn image_size(&self, record: &ImageRecord) -> Result<u64, StoreError> {
        let mut total = 0;
        let mut seen = HashSet::new();
        for layer in &record.layers {
            if seen.insert(&layer.diff_id)
                && let Some(stored) = self.layer(&layer.diff_id)?
            {
                total += stored.disk_bytes;
            }
        }
        Ok(total)
    }

    /// Takes the image `name` for a sandbox: its layers stay until the lease is dropped, and
    /// its last use is now.
    pub fn acquire(self: &Arc<Self>, name: &ImageRef) -> Result<ImageLease, StoreError> {
        let _records = lock(&self.records);
        let mut record = self.image(name)?;
        for layer in &record.layers {
            if self.layer(&layer.diff_id)?.is_none() {
                return Err(StoreError::NotFound(format!(
                    "{} (layer {} is missing)",
                    record.name, layer.diff_id
                )));
            }
        }
        record.last_used = now();
        self.write_record(&record)?;
        let mut in_use = lock(&self.in_use);
        *in_use.images.entry(record.name.clone()).or_default() += 1;
        for layer in &record.layers {
            *in_use.layers.entry(layer.diff_id.clone()).or_default() += 1;
        }
        drop(in_use);
        Ok(ImageLease {
            store: Arc::clone(self),
            record,
        })
    }

    /// Keeps `layers` from being collected until the pin is dropped (a pull, an import or a
    /// snapshot holds one while it assembles an image).
    pub fn pin(self: &Arc<Self>, layers: &[Digest]) -> LayerPin {
        let mut in_use = lock(&self.in_use);
        for layer in layers {
            *in_use.layers.entry(layer.clone()).or_default() += 1;
        }
        LayerPin {
            store: Arc::clone(self),
            layers: layers.to_vec(),
        }
    }

    /// How many leases hold the image `name`.
    pub fn users(&self, name: &ImageRef) -> usize {
        lock(&self.in_use)
            .images
            .get(&name.to_string())
            .copied()
            .unwrap_or(0)
    }

    fn release(&self, image: Option<&str>, layers: &[Digest]) {
        let mut in_use = lock(&self.in_use);
        if let Some(image) = image
            && let Some(count) = in_use.images.get_mut(image)
        {
            *count -= 1;
            if *count == 0 {
                in_use.images.remove(image);
            }
        }
        for layer in layers {
            if let Some(count) = in_use.layers.get_mut(layer) {
                *count -= 1;
                if *count == 0 {
                    in_use.layers.remove(layer);
                }
            }
        }
    }

    /// Removes the image `name` (its layers go at the next collection if nothing else uses
    /// them). Refused while a lease holds it.
    pub fn remove_image(&self, name: &ImageRef) -> Result<ImageRecord, StoreError> {
        let _records = lock(&self.records);
        let record = self.image(name)?;
        if lock(&self.in_use).images.contains_key(&record.name) {
            return Err(StoreError::InUse(record.name));
        }
        let path = self.record_path(&record.name);
        fs::remove_file(&path).map_err(io_at("remove", &path))?;
        Ok(record)
    }

    /// Removes layers no image names and nothing uses, then, while the layers take more than
    /// `max_bytes`, the least recently used images nothing uses and the layers only they named.
    pub fn collect(&self, max_bytes: u64) -> Result<GcReport, StoreError> {
        self.collect_keeping(max_bytes, |_| false)
    }

    /// As [`ImageStore::collect`], but never removes an image for which `keep` is true (nor,
    /// so, its layers): the size bound is met with the other images only.
    pub fn collect_keeping(
        &self,
        max_bytes: u64,
        keep: impl Fn(&ImageRecord) -> bool,
    ) -> Result<GcReport, StoreError> {
        let _records = lock(&self.records);
        let mut report = GcReport::default();
        let mut images = self.images()?;
        images.sort_by_key(|record| record.last_used);
        let layers = self.stored_layers()?;
        let mut total: u64 = layers.values().sum();
        loop {
            let named: HashSet<&Digest> = images
                .iter()
                .flat_map(|image| image.layers.iter().map(|layer| &layer.diff_id))
                .collect();
            for (diff_id, bytes) in &layers {
                if named.contains(diff_id)
                    || report.layers.contains(diff_id)
                    || self.layer_busy(diff_id)
                {
                    continue;
                }
                let dir = self.layer_dir(diff_id);
                self.discard(&dir)?;
                report.layers.push(diff_id.clone());
                report.freed_bytes += bytes;
                total = total.saturating_sub(*bytes);
            }
            if total <= max_bytes {
                return Ok(report);
            }
            let in_use = lock(&self.in_use);
            let Some(victim) = images
                .iter()
                .position(|image| !in_use.images.contains_key(&image.name) && !keep(image))
            else {
                return Ok(report);
            };
            drop(in_use);
            let record = images.remove(victim);
            let path = self.record_path(&record.name);
            fs::remove_file(&path).map_err(io_at("remove", &path))?;
            report.images.push(record.name);
        }
    }

    /// Whether a lease or pin holds the layer, or a fetch of it is in flight.
    fn layer_busy(&self, diff_id: &Digest) -> bool {
        lock(&self.in_use).layers.contains_key(diff_id)
            || lock(&self.fetching)
                .get(diff_id)
                .is_some_and(|weak| weak.strong_count() > 0)
    }

    /// Every stored layer and its bytes on disk.
    fn stored_layers(&self) -> Result<HashMap<Digest, u64>, StoreError> {
        let dir = self.root.join("layers/sha256");
        let mut layers = HashMap::new();
        for entry in fs::read_dir(&dir).map_err(io_at("list", &dir))? {
            let entry = entry.map_err(io_at("list", &dir))?;
            let Some(diff_id) = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::from_hex(hex).ok())
            else {
                continue;
            };
            let bytes = self.layer(&diff_id)?.map_or(0, |record| record.disk_bytes);
            layers.insert(diff_id, bytes);
        }
        Ok(layers)
    }

    /// Moves `dir` out of sight into `tmp/`, then deletes it.
    fn discard(&self, dir: &Path) -> Result<(), StoreError> {
        let doomed = self
            .root
            .join("tmp")
            .join(format!("gc-{:016x}", rand::random::<u64>()));
        fs::rename(dir, &doomed).map_err(io_at("move", dir))?;
        fs::remove_dir_all(&doomed).map_err(io_at("remove", &doomed))
    }
}

/// An image held for a sandbox: its layers are not collected and it is not removed while the
/// lease lives.
pub struct ImageLease {
    store: Arc<ImageStore>,
    record: ImageRecord,
}

impl ImageLease {
    /// The image's record.
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }

    /// The layers' trees as overlay lower directories, top-most first (overlayfs' order).
    pub fn lower_dirs(&self) -> Vec<PathBuf> {
        self.record
            .layers
            .iter()
            .rev()
            .map(|layer| self.store.layer_root(&layer.diff_id))
            .collect()
    }
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        let layers: Vec<Digest> = self
            .record
            .layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect();
        self.store.release(Some(&self.record.name), &layers);
    }
}

/// Layers kept from collection while an image is being assembled.
pub struct LayerPin {
    store: Arc<ImageStore>,
    layers: Vec<Digest>,
}

impl Drop for LayerPin {
    fn drop(&mut self) {
        self.store.release(None, &self.layers);
    }
}

/// A directory under `tmp/` that is removed unless committed by a rename.
pub(crate) struct Staging {
    path: Option<PathBuf>,
}

impl Staging {
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("/nonexistent"))
    }

    /// Renames the directory to `target`; if `target` appeared meanwhile, keeps that one.
    fn commit(mut self, target: &Path) -> Result<(), StoreError> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        match fs::rename(&path, target) {
            Ok(()) => Ok(()),
            Err(e) if target.exists() => {
                tracing::debug!(error = %e, target = %target.display(), "layer stored meanwhile");
                let _ = fs::remove_dir_all(&path);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(StoreError::Io {
                    op: "rename",
                    path: target.to_owned(),
                    source: e,
                })
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { op, path, source }
}

/// Reads a JSON record; `None` when the file does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io {
            op: "read",
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Writes a JSON record to `path` and syncs it.
fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let mut file = fs::File::create(path).map_err(io_at("create", path))?;
    file.write_all(&bytes).map_err(io_at("write", path))?;
    file.sync_all().map_err(io_at("sync", path))
}
