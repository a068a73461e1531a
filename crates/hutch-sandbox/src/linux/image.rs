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

/// The built `default` image.
#[derive(Debug, Clone)]
pub(crate) struct DefaultImage {
    /// Skeleton root: the lowest layer of the sandbox's `/`.
    pub(crate) skeleton: PathBuf,
    /// Host system directories that get their own overlay, e.g. `/usr`.
    pub(crate) overlay_dirs: Vec<PathBuf>,
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

/// Builds (or reuses) the `default` image under `images_dir`, owned by `owner`.
pub(crate) fn build_default(images_dir: &Path, owner: u32) -> io::Result<DefaultImage> {
    fs::create_dir_all(images_dir)?;
    let staging = images_dir.join(format!(".staging-{}", std::process::id()));
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

    let skeleton = images_dir.join(format!("default-{:016x}", hasher.finish()));
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
