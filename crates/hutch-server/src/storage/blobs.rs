//! Where the content of storage contexts is kept: [`BlobStore`], with a local directory as
//! the default backend ([`LocalBlobs`]).
//!
//! A blob is one version of one context: a tar stream written once and never changed. A new
//! version is written under a temporary name, flushed to disk, and only then given its final
//! name; the store's row then points at it (see `Store::commit_version`). So a crash leaves at
//! worst a temporary file or an unreferenced blob, both swept at the next start, and never a
//! row pointing at half a blob.
//!
//! The trait is synchronous: the control plane calls it from blocking threads, where the tar
//! stream is checked and rewritten. The object-storage backend (`super::s3::S3Blobs`)
//! implements it the same way: a multipart upload completed in [`BlobWriter::commit`].

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

/// A blob being written; dropped without [`BlobWriter::commit`], it leaves nothing.
pub(crate) trait BlobWriter: Write + Send {
    /// Makes the blob durable and returns its name.
    fn commit(self: Box<Self>) -> io::Result<String>;
}

/// Storage of context versions.
pub(crate) trait BlobStore: Send + Sync + 'static {
    /// Starts writing a new blob of `context`.
    fn create(&self, context: Uuid) -> io::Result<Box<dyn BlobWriter>>;
    /// Opens a committed blob for reading; `NotFound` if it was removed.
    fn open(&self, context: Uuid, blob: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Removes every blob of `context` but `keep` (and blobs still being written).
    fn retain(&self, context: Uuid, keep: Option<&str>) -> io::Result<()>;
    /// Removes leftovers: temporary files, and blobs of contexts not in `live` or not
    /// their context's current blob (`live` maps context → current blob).
    fn sweep(&self, live: &[(Uuid, Option<String>)]) -> io::Result<usize>;
    /// Whether the store answers (for start-up and health checks); cheap and bounded.
    fn check(&self) -> io::Result<()>;
}

/// Prefix of blobs being written.
const TEMP_PREFIX: &str = ".tmp-";
/// Suffix of committed blobs.
pub(crate) const BLOB_SUFFIX: &str = ".tar";

/// How old a leftover must be before a sweep that shares its store with other servers may
/// remove it: another server may be writing it now, or have completed it and be about to
/// record it.
pub(crate) const SWEEP_GRACE: Duration = Duration::from_secs(15 * 60);

/// Blobs as files: `{root}/{context}/{blob}.tar`, root-only.
#[derive(Debug, Clone)]
pub(crate) struct LocalBlobs {
    root: PathBuf,
    /// Leftovers younger than this are spared by [`BlobStore::sweep`] (set when other servers
    /// share the directory: replicas on one data directory).
    spare_recent: Option<Duration>,
}

impl LocalBlobs {
    /// Blobs under `root`, created (mode 0700) if missing.
    pub(crate) fn open(root: &Path) -> io::Result<LocalBlobs> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(LocalBlobs {
            root: root.to_owned(),
            spare_recent: None,
        })
    }

    /// The same blobs, whose sweep spares leftovers modified within `grace`: for a directory
    /// that other servers (replicas) write to as well.
    pub(crate) fn sparing_recent(mut self, grace: Duration) -> LocalBlobs {
        self.spare_recent = Some(grace);
        self
    }

    /// Whether the sweep leaves `path` alone: it was modified within the grace (or cannot
    /// be read, which a concurrent remove explains).
    fn is_recent(&self, path: &Path) -> bool {
        let Some(grace) = self.spare_recent else {
            return false;
        };
        fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .map_or(true, |modified| {
                modified.elapsed().map_or(true, |age| age < grace)
            })
    }

    fn dir(&self, context: Uuid) -> PathBuf {
        self.root.join(context.to_string())
    }
}

/// A blob being written to a temporary file in its context's directory.
struct LocalWriter {
    file: Option<File>,
    temp: PathBuf,
    dir: PathBuf,
    name: String,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("blob already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> io::Result<String> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        file.sync_all()?;
        drop(file);
        let target = self.dir.join(format!("{}{BLOB_SUFFIX}", self.name));
        fs::rename(&self.temp, &target)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(self.name.clone())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Whether `name` can only be a blob name this store made (a UUID).
pub(crate) fn valid_blob_name(name: &str) -> bool {
    Uuid::parse_str(name).is_ok()
}

impl BlobStore for LocalBlobs {
    fn create(&self, context: Uuid) -> io::Result<Box<dyn BlobWriter>> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = self.dir(context);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let name = Uuid::now_v7().to_string();
        let temp = dir.join(format!("{TEMP_PREFIX}{name}"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            temp,
            dir,
            name,
        }))
    }

    fn open(&self, context: Uuid, blob: &str) -> io::Result<Box<dyn Read + Send>> {
        if !valid_blob_name(blob) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{blob:?} is not a blob name"),
            ));
        }
        let file = File::open(self.dir(context).join(format!("{blob}{BLOB_SUFFIX}")))?;
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, file)))
    }

    fn retain(&self, context: Uuid, keep: Option<&str>) -> io::Result<()> {
        let dir = self.dir(context);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let keep = keep.map(|k| format!("{k}{BLOB_SUFFIX}"));
        let mut left = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) || Some(name.as_ref()) == keep.as_deref() {
                left += 1;
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        if left == 0 && keep.is_none() {
            // Another writer may be creating the directory again; that is fine either way.
            let _ = fs::remove_dir(&dir);
        }
        Ok(())
    }

    fn sweep(&self, live: &[(Uuid, Option<String>)]) -> io::Result<usize> {
        let keep: HashSet<(String, Option<String>)> = live
            .iter()
            .map(|(id, blob)| (id.to_string(), blob.clone()))
            .collect();
        let contexts: HashSet<String> = live.iter().map(|(id, _)| id.to_string()).collect();
        let mut removed = 0;
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?;
            let context = dir.file_name().to_string_lossy().into_owned();
            if !contexts.contains(&context) {
                if self.is_recent(&dir.path()) {
                    continue;
                }
                fs::remove_dir_all(dir.path())?;
                removed += 1;
                continue;
            }
            for entry in fs::read_dir(dir.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let blob = name.strip_suffix(BLOB_SUFFIX).map(str::to_owned);
                let current = blob.is_some() && keep.contains(&(context.clone(), blob));
                if !current && !self.is_recent(&entry.path()) {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn check(&self) -> io::Result<()> {
        if fs::metadata(&self.root)?.is_dir() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} is not a directory",
                self.root.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn a_blob_exists_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path()).unwrap();
        let context = Uuid::now_v7();
        let mut writer = blobs.create(context).unwrap();
        writer.write_all(b"version one").unwrap();
        let name = writer.commit().unwrap();
        let mut content = String::new();
        blobs
            .open(context, &name)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "version one");

        let mut abandoned = blobs.create(context).unwrap();
        abandoned.write_all(b"half").unwrap();
        drop(abandoned);
        let files = fs::read_dir(dir.path().join(context.to_string()))
            .unwrap()
            .count();
        assert_eq!(files, 1, "an abandoned write leaves nothing");
    }

    #[test]
    fn retain_and_sweep_remove_what_is_not_current() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path()).unwrap();
        let (a, gone) = (Uuid::now_v7(), Uuid::now_v7());
        let old = blobs.create(a).unwrap().commit().unwrap();
        let new = blobs.create(a).unwrap().commit().unwrap();
        blobs.create(gone).unwrap().commit().unwrap();
        // A reader holding the old version keeps reading it after it is removed.
        let mut reader = blobs.open(a, &old).unwrap();
        blobs.retain(a, Some(&new)).unwrap();
        assert!(blobs.open(a, &old).is_err());
        assert!(reader.read(&mut [0; 8]).is_ok());
        // A temporary file of a crashed writer, and a context that no longer exists.
        fs::write(dir.path().join(a.to_string()).join(".tmp-x"), b"torn").unwrap();
        let removed = blobs.sweep(&[(a, Some(new.clone()))]).unwrap();
        assert_eq!(removed, 2);
        assert!(blobs.open(a, &new).is_ok());
        assert!(!dir.path().join(gone.to_string()).exists());
    }

    #[test]
    fn a_shared_directorys_sweep_spares_what_another_server_may_be_writing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path())
            .unwrap()
            .sparing_recent(SWEEP_GRACE);
        let (a, fresh) = (Uuid::now_v7(), Uuid::now_v7());
        let current = blobs.create(a).unwrap().commit().unwrap();
        // Another server's upload in progress, and a context it created after the caller
        // listed the live ones.
        fs::write(dir.path().join(a.to_string()).join(".tmp-y"), b"half").unwrap();
        blobs.create(fresh).unwrap().commit().unwrap();
        assert_eq!(blobs.sweep(&[(a, Some(current.clone()))]).unwrap(), 0);
        assert!(dir.path().join(a.to_string()).join(".tmp-y").exists());
        assert!(dir.path().join(fresh.to_string()).exists());
        // Past the grace they are leftovers like any other.
        let old = SystemTime::now() - SWEEP_GRACE - Duration::from_secs(60);
        for path in [
            dir.path().join(a.to_string()).join(".tmp-y"),
            dir.path().join(fresh.to_string()),
        ] {
            fs::File::open(&path).unwrap().set_modified(old).unwrap();
        }
        assert_eq!(blobs.sweep(&[(a, Some(current.clone()))]).unwrap(), 2);
        assert!(blobs.open(a, &current).is_ok());
        assert!(!dir.path().join(fresh.to_string()).exists());
    }

    #[test]
    fn blob_names_cannot_name_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path()).unwrap();
        let err = blobs
            .open(Uuid::now_v7(), "../../etc/passwd")
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
