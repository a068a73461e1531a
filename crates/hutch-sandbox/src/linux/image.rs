//! The `default` image: a read-only view of the host's system directories and a filtered `/etc`.
//!
//! The image is a skeleton root directory built by the server into its data directory: the
//! top-level directories of a Linux system, symlinks mirroring the host's merged-`/usr` links,
//! and an `/etc` holding only an allowlist of host files (no shadow, gshadow, ssh keys, private
//! TLS keys or machine id) plus a generated `passwd`, `group` and `hosts` that name no host user.
//! Each of the host's system directories (`/usr`, and `/bin`, `/lib`… where they are real
//! directories) is a separate overlay layer at sandbox start, so writes to them land in the
//! session's own upper directory and never reach the host.
//!
//! The skeleton is owned by the sandbox root's host uid, so that root inside may copy up and
//! change what it finds there. It is rebuilt at every server start into a directory named
//! after its content, so a running sandbox's lower layer never changes under it.
//!
//! Each sandbox's directory holds a mark naming the skeleton it is built on ([`mark_in_use`]);
//! once the server has adopted the sandboxes of earlier runs and swept the rest, skeletons no
//! remaining sandbox names are removed ([`remove_unused`]).

use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// Host directories offered read-only (through an overlay) when they are real directories,
/// or mirrored as the same symlink when they are links (merged `/usr`).
pub(crate) const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Empty directories of the skeleton and their modes.
const SKELETON_DIRS: &[(&str, u32)] = &[
    ("etc", 0o755),
    ("proc", 0o555),
    ("dev", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/lib", 0o755),
    ("var/cache", 0o755),
    ("var/log", 0o755),
    ("home", 0o755),
    ("root", 0o700),
    ("workspace", 0o755),
    ("opt", 0o755),
    ("mnt", 0o755),
    ("srv", 0o755),
];

/// Host `/etc` entries copied into the image. Anything not named here stays on the host.
const ETC_ALLOWLIST: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "bindresvport.blacklist",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "default",
    "environment",
    "fonts",
    "gai.conf",
    "host.conf",
    "inputrc",
    "issue",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "locale.gen",
    "localtime",
    "login.defs",
    "magic",
    "magic.mime",
    "matplotlibrc",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "python3.11",
    "rpc",
    "services",
    "shells",
    "skel",
    "ssl",
    "terminfo",
    "timezone",
    "xattr.conf",
];

/// Paths under the allowlisted entries that are never copied.
const ETC_DENYLIST: &[&str] = &["ssl/private"];

/// Files the image generates instead of copying.
const GENERATED_ETC: &[(&str, &str)] = &[
    (
        "passwd",
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    (
        "group",
        "root:x:0:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n",
    ),
    (
        "hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    ("resolv.conf", "# no network in this sandbox\n"),
];

/// Prefix of the skeletons' directory names: `default-<content hash>`.
const SKELETON_PREFIX: &str = "default-";

/// Directories hutch's top layer gives every OCI image: the mount points of the sandbox's own
/// file systems and the default working directory.
const OCI_TOP_DIRS: &[(&str, u32)] = &[
    ("proc", 0o555),
    ("dev", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("workspace", 0o755),
];

/// What hutch's bottom layer gives an OCI image that lacks it: a root user, its home, and the
/// name files a sandbox without network still reads.
const OCI_BASE_DIRS: &[(&str, u32)] = &[("etc", 0o755), ("root", 0o700)];

/// Prefix of the OCI helper layers' directory names: `oci-<content hash>`.
const OCI_LAYERS_PREFIX: &str = "oci-";

/// Prefix of a skeleton being built: `.staging-<server pid>`.
const STAGING_PREFIX: &str = ".staging-";

/// File in a sandbox's directory naming the skeleton its root file system is built on.
const SKELETON_MARK: &str = "image";

/// The built `default` image.
#[derive(Debug, Clone)]
pub(crate) struct DefaultImage {
    /// Skeleton root: the lowest layer of the sandbox's `/`.
    pub(crate) skeleton: PathBuf,
    /// Host system directories that get their own overlay, e.g. `/usr`.
    pub(crate) overlay_dirs: Vec<PathBuf>,
}

/// hutch's own layers around an OCI image's (in `<data>/images/oci-<hash>/`).
#[derive(Debug, Clone)]
pub(crate) struct OciLayers {
    /// Above the image: the mount points and `/workspace`, so that every image has them.
    pub(crate) top: PathBuf,
    /// Below the image: `/etc/passwd`, `/etc/group`, `/etc/hosts`, `/etc/resolv.conf` and
    /// `/root`, seen only where the image has none of its own.
    pub(crate) base: PathBuf,
}

impl OciLayers {
    /// The directory holding both layers, named after their content.
    pub(crate) fn dir(&self) -> &Path {
        self.top.parent().unwrap_or(&self.top)
    }
}

/// FNV-1a: the same value for the same input in every build, unlike std's default hasher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl DefaultImage {
    /// The host path of the `python3` a sandbox of this image runs by default: the first on
    /// [`crate::process::DEFAULT_PATH`] that is one of the host files the image shows.
    pub(crate) fn python(&self) -> Option<PathBuf> {
        let found = crate::process::find_program("python3", crate::process::DEFAULT_PATH)?;
        let real = fs::canonicalize(found).ok()?;
        self.overlay_dirs
            .iter()
            .any(|dir| real.starts_with(dir))
            .then_some(real)
    }
}

/// Builds (or reuses) the `default` image under `images_dir`, owned by `owner`.
pub(crate) fn build_default(images_dir: &Path, owner: u32) -> io::Result<DefaultImage> {
    fs::create_dir_all(images_dir)?;
    let staging = images_dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir(&staging)?;
    let mut hasher = StableHasher::default();
    let mut overlay_dirs = Vec::new();

    for (dir, mode) in SKELETON_DIRS {
        let path = staging.join(dir);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
        (dir, mode).hash(&mut hasher);
    }
    for name in SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host)?;
            std::os::unix::fs::symlink(&target, staging.join(name))?;
            (name, &target).hash(&mut hasher);
        } else if meta.is_dir() {
            fs::create_dir(staging.join(name))?;
            fs::set_permissions(
                staging.join(name),
                fs::Permissions::from_mode(meta.mode() & 0o7777),
            )?;
            overlay_dirs.push(host);
            (name, "dir").hash(&mut hasher);
        }
    }
    let etc = staging.join("etc");
    for entry in ETC_ALLOWLIST {
        copy_tree(
            &Path::new("/etc").join(entry),
            &etc.join(entry),
            Path::new(entry),
            &mut hasher,
        )?;
    }
    for (name, content) in GENERATED_ETC {
        fs::write(etc.join(name), content)?;
        fs::set_permissions(etc.join(name), fs::Permissions::from_mode(0o644))?;
        (name, content).hash(&mut hasher);
    }
    std::os::unix::fs::symlink("../proc/self/mounts", etc.join("mtab"))?;
    chown_tree(&staging, owner)?;
    // Lets the sandbox's root user (another uid on the host) traverse to its layers.
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))?;

    let skeleton = images_dir.join(format!("{SKELETON_PREFIX}{:016x}", hasher.finish()));
    if skeleton.exists() {
        fs::remove_dir_all(&staging)?;
    } else {
        fs::rename(&staging, &skeleton)?;
    }
    Ok(DefaultImage {
        skeleton,
        overlay_dirs,
    })
}

/// Builds (or reuses) hutch's layers around OCI images under `images_dir`, owned by `owner`.
pub(crate) fn build_oci_layers(images_dir: &Path, owner: u32) -> io::Result<OciLayers> {
    fs::create_dir_all(images_dir)?;
    let staging = images_dir.join(format!("{STAGING_PREFIX}oci-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let mut hasher = StableHasher::default();
    for (layer, dirs) in [("top", OCI_TOP_DIRS), ("base", OCI_BASE_DIRS)] {
        for (dir, mode) in dirs {
            let path = staging.join(layer).join(dir);
            fs::create_dir_all(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
            (layer, dir, mode).hash(&mut hasher);
        }
    }
    let etc = staging.join("base/etc");
    for (name, content) in GENERATED_ETC {
        fs::write(etc.join(name), content)?;
        fs::set_permissions(etc.join(name), fs::Permissions::from_mode(0o644))?;
        (name, content).hash(&mut hasher);
    }
    chown_tree(&staging, owner)?;
    for dir in [staging.clone(), staging.join("top"), staging.join("base")] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    let dir = images_dir.join(format!("{OCI_LAYERS_PREFIX}{:016x}", hasher.finish()));
    if dir.exists() {
        fs::remove_dir_all(&staging)?;
    } else {
        fs::rename(&staging, &dir)?;
    }
    Ok(OciLayers {
        top: dir.join("top"),
        base: dir.join("base"),
    })
}

/// Records in `sandbox_dir` that its sandbox is built on the image directory `built_on` (a
/// skeleton, or the OCI helper layers).
pub(crate) fn mark_in_use(sandbox_dir: &Path, built_on: &Path) -> io::Result<()> {
    let name = built_on.file_name().unwrap_or_default();
    fs::write(sandbox_dir.join(SKELETON_MARK), name.as_encoded_bytes())
}

/// Removes what no sandbox in `sandboxes_dir` uses from `images_dir`: the skeletons and OCI
/// helper layers other than those in `current` that no sandbox's mark names, and staging directories that earlier server
/// processes left behind. A sandbox without a mark (built before marks existed) could use any
/// skeleton, so while one exists no skeleton is removed. Returns the removed directories.
pub(crate) fn remove_unused(
    images_dir: &Path,
    current: &[&Path],
    sandboxes_dir: &Path,
) -> io::Result<Vec<PathBuf>> {
    let mut in_use = std::collections::HashSet::new();
    let mut unmarked = false;
    for entry in fs::read_dir(sandboxes_dir)? {
        let entry = entry?;
        match fs::read(entry.path().join(SKELETON_MARK)) {
            Ok(name) => {
                in_use.insert(String::from_utf8_lossy(&name).into_owned());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => unmarked = true,
            Err(e) => return Err(e),
        }
    }
    let own_staging = format!("{STAGING_PREFIX}{}", std::process::id());
    let mut removed = Vec::new();
    for entry in fs::read_dir(images_dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let unused = if name.starts_with(SKELETON_PREFIX) || name.starts_with(OCI_LAYERS_PREFIX) {
            !unmarked && !current.contains(&path.as_path()) && !in_use.contains(&name)
        } else {
            name.starts_with(STAGING_PREFIX) && name != own_staging
        };
        if unused {
            fs::remove_dir_all(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Copies `src` to `dst` keeping symlinks as links and modes, skipping what cannot be read
/// and anything on the deny list. `rel` is the path relative to `/etc`.
fn copy_tree(src: &Path, dst: &Path, rel: &Path, hasher: &mut StableHasher) -> io::Result<()> {
    if ETC_DENYLIST.iter().any(|d| rel == Path::new(d)) {
        return Ok(());
    }
    let Ok(meta) = fs::symlink_metadata(src) else {
        return Ok(());
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(src)?;
        std::os::unix::fs::symlink(&target, dst)?;
        (rel, &target).hash(hasher);
    } else if kind.is_dir() {
        fs::create_dir_all(dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        let mut entries: Vec<_> = fs::read_dir(src)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            copy_tree(&entry.path(), &dst.join(&name), &rel.join(&name), hasher)?;
        }
    } else if kind.is_file() {
        // Only world-readable files: anything the host keeps private stays private.
        if meta.mode() & 0o004 == 0 {
            return Ok(());
        }
        let Ok(data) = fs::read(src) else {
            return Ok(());
        };
        fs::write(dst, &data)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        (rel, &data).hash(hasher);
    }
    Ok(())
}

fn chown_tree(path: &Path, owner: u32) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), owner)?;
        }
    }
    // Chown strips set-uid bits; the skeleton has none worth keeping.
    sys::lchown(path, owner, owner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A data directory with the skeletons `images` and one sandbox directory per entry of
    /// `sandboxes`, marked with the skeleton it names (or unmarked for `None`).
    fn data_dir(images: &[&str], sandboxes: &[Option<&str>]) -> tempfile::TempDir {
        let data = tempfile::tempdir().unwrap();
        for name in images {
            fs::create_dir_all(data.path().join("images").join(name).join("etc")).unwrap();
        }
        fs::create_dir_all(data.path().join("sandboxes")).unwrap();
        for (i, skeleton) in sandboxes.iter().enumerate() {
            let dir = data.path().join("sandboxes").join(format!("sandbox-{i}"));
            fs::create_dir(&dir).unwrap();
            if let Some(skeleton) = skeleton {
                mark_in_use(&dir, &data.path().join("images").join(skeleton)).unwrap();
            }
        }
        data
    }

    fn images_left(data: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(data.join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn remove_unused_in(data: &Path, current: &str) -> Vec<PathBuf> {
        remove_unused(
            &data.join("images"),
            &[&data.join("images").join(current)],
            &data.join("sandboxes"),
        )
        .unwrap()
    }

    #[test]
    fn skeletons_no_sandbox_is_built_on_are_removed_and_the_others_kept() {
        let old = "default-00000000000000a1";
        let older = "default-00000000000000a2";
        let current = "default-00000000000000a3";
        let data = data_dir(
            &[old, older, current, ".staging-1", ".staging-4194305"],
            &[Some(old), Some(current)],
        );

        let removed = remove_unused_in(data.path(), current);

        assert_eq!(removed.len(), 3, "{removed:?}");
        assert_eq!(images_left(data.path()), [old, current]);
    }

    #[test]
    fn a_sandbox_without_a_mark_keeps_every_skeleton() {
        let old = "default-00000000000000b1";
        let current = "default-00000000000000b2";
        let data = data_dir(&[old, current], &[None]);

        assert!(remove_unused_in(data.path(), current).is_empty());
        assert_eq!(images_left(data.path()), [old, current]);
    }

    #[test]
    fn the_current_skeleton_stays_with_no_sandbox_at_all() {
        let old = "default-00000000000000c1";
        let current = "default-00000000000000c2";
        let data = data_dir(&[old, current], &[]);

        remove_unused_in(data.path(), current);

        assert_eq!(images_left(data.path()), [current]);
    }
}
