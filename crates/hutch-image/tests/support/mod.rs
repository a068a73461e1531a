//! What the image tests share: a real registry (Debian's `docker-registry`) on a loopback port,
//! a counting and throttling proxy in front of it, OCI image layouts built from real files
//! and pushed with `skopeo`, and a look at an image's tree through an overlay mounted in a user
//! namespace, as sandboxes mount theirs.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hutch_image::{Digest, ImageStore, UnpackOptions};
use hutch_sandbox::linux::{DEFAULT_UID_BASE, UID_COUNT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Unpacking options of the tests: the sandboxes' uid range, generous bounds.
pub fn unpack_options() -> UnpackOptions {
    UnpackOptions {
        uid_base: DEFAULT_UID_BASE,
        id_count: UID_COUNT,
        max_bytes: 1 << 34,
        max_entries: 1_000_000,
    }
}

/// A fresh store in a temporary directory.
pub fn store() -> (tempfile::TempDir, Arc<ImageStore>) {
    let dir = tempfile::Builder::new()
        .prefix("hutch-image-store-")
        .tempdir_in(scratch())
        .expect("tempdir");
    let store = ImageStore::open(&dir.path().join("store"), unpack_options()).expect("store opens");
    (dir, store)
}

/// A directory for test data (fixtures are cached here between runs). It is under `/tmp`, not
/// `target/`: the user namespaces that mount layers map root to the sandbox uid range, which
/// must be able to walk down to the store, whatever the permissions of the checkout's parents.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join("hutch-image-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod scratch");
    dir
}

/// A free loopback port.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `docker-registry` serving from its own temporary storage on a loopback port.
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with("")
    }

    /// A registry whose configuration ends with `extra` (YAML, such as an `auth:` section).
    pub fn start_with(extra: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("hutch-registry-")
            .tempdir_in(scratch())
            .expect("tempdir");
        let storage = dir.path().join("storage");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{extra}",
                storage.display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry starts (scripts/deps.sh installs it)");
        let registry = Registry {
            addr,
            storage,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Pushes the OCI layout `layout` (tag `tag`) as `repository:tag`, with its index if it
    /// has one.
    pub fn push(&self, layout: &Path, repository: &str) {
        let source = format!("oci:{}:latest", layout.display());
        let target = format!("docker://{}/{repository}", self.addr);
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
            &source,
            &target,
        ]));
    }

    /// The file holding blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(command: &mut Command) -> String {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A loopback proxy in front of a registry that counts blob requests by digest and can
/// slow what it sends back.
pub struct Proxy {
    pub addr: String,
    blob_requests: Arc<Mutex<HashMap<String, u64>>>,
    bytes_sent: Arc<AtomicU64>,
    throttled: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let proxy = Proxy {
            addr,
            blob_requests: Arc::default(),
            bytes_sent: Arc::default(),
            throttled: Arc::default(),
        };
        let upstream = upstream.to_owned();
        let requests = Arc::clone(&proxy.blob_requests);
        let sent = Arc::clone(&proxy.bytes_sent);
        let throttled = Arc::clone(&proxy.throttled);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let requests = Arc::clone(&requests);
                let sent = Arc::clone(&sent);
                let throttled = Arc::clone(&throttled);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async move {
                        let mut buffer = vec![0u8; 16 * 1024];
                        let mut carry = String::new();
                        loop {
                            let n = match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            carry.push_str(&String::from_utf8_lossy(&buffer[..n]));
                            count_blob_requests(&mut carry, &requests);
                            if server_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            let n = match server_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if throttled.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if client_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
        proxy
    }

    /// How many times each blob was requested, by digest.
    pub fn blob_requests(&self) -> HashMap<String, u64> {
        self.blob_requests.lock().expect("lock").clone()
    }

    /// Bytes sent back to clients so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    /// Sends responses at roughly 800 KiB/s while set.
    pub fn throttle(&self, on: bool) {
        self.throttled.store(on, Ordering::Relaxed);
    }
}

/// Counts complete `GET /v2/…/blobs/sha256:…` request lines in `carry`, keeping the tail.
fn count_blob_requests(carry: &mut String, requests: &Mutex<HashMap<String, u64>>) {
    while let Some(end) = carry.find("\r\n") {
        let line: String = carry.drain(..end + 2).collect();
        if let Some(rest) = line.strip_prefix("GET /v2/")
            && let Some(at) = rest.find("/blobs/")
        {
            let digest = rest[at + "/blobs/".len()..]
                .split([' ', '?'])
                .next()
                .unwrap_or_default()
                .to_owned();
            *requests.lock().expect("lock").entry(digest).or_default() += 1;
        }
    }
}

/// One entry of a layer being built.
pub enum Entry {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32),
    /// A file owned by the given uid and gid.
    Owned(&'static str, &'static [u8], u32, u64),
    /// A file with pax xattrs.
    WithXattrs(
        &'static str,
        &'static [u8],
        Vec<(&'static str, &'static [u8])>,
    ),
    Symlink(String, String),
    HardLink(&'static str, &'static str),
    CharDevice(&'static str, u32, u32),
    /// Any name at all, written as is into the header (hostile layers).
    RawFile(&'static [u8], &'static [u8]),
    /// A hard link with any names.
    RawHardLink(&'static [u8], &'static [u8]),
}

/// An uncompressed layer tarball holding `entries`, in order.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(name, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, name, &[][..])
                    .expect("dir");
            }
            Entry::File(name, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, name, &data[..])
                    .expect("file");
            }
            Entry::Owned(name, data, uid, gid) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o640);
                header.set_uid(u64::from(*uid));
                header.set_gid(*gid);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, name, *data).expect("file");
            }
            Entry::WithXattrs(name, data, xattrs) => {
                let records: Vec<(String, &[u8])> = xattrs
                    .iter()
                    .map(|(key, value)| (format!("SCHILY.xattr.{key}"), *value))
                    .collect();
                append_pax(&mut builder, &records);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, name, *data).expect("file");
            }
            Entry::Symlink(name, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, name, target)
                    .expect("symlink");
            }
            Entry::HardLink(name, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                builder
                    .append_link(&mut header, name, target)
                    .expect("hard link");
            }
            Entry::CharDevice(name, major, minor) => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_mode(0o666);
                header.set_size(0);
                header.set_device_major(*major).expect("major");
                header.set_device_minor(*minor).expect("minor");
                builder
                    .append_data(&mut header, name, &[][..])
                    .expect("device");
            }
            Entry::RawFile(name, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                raw_name(&mut header, name, None);
                builder.append(&header, *data).expect("raw file");
            }
            Entry::RawHardLink(name, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                raw_name(&mut header, name, Some(target));
                builder.append(&header, &[][..]).expect("raw link");
            }
        }
    }
    builder.into_inner().expect("tar")
}

fn raw_name(header: &mut tar::Header, name: &[u8], link: Option<&[u8]>) {
    let gnu = header.as_gnu_mut().expect("gnu header");
    gnu.name = [0; 100];
    gnu.name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        gnu.linkname = [0; 100];
        gnu.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_cksum();
}

fn append_pax(builder: &mut tar::Builder<Vec<u8>>, records: &[(String, &[u8])]) {
    let mut data = Vec::new();
    for (key, value) in records {
        let body_len = key.len() + value.len() + 3;
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_path("PaxHeaders/x").expect("pax header name");
    header.set_cksum();
    builder.append(&header, &data[..]).expect("pax header");
}

/// Settings of an image being built.
#[derive(Default)]
pub struct ImageSpec {
    pub env: Vec<&'static str>,
    pub working_dir: Option<&'static str>,
    pub user: Option<&'static str>,
    pub cmd: Option<Vec<&'static str>>,
    /// Wrap the manifest in an index with an arm64 decoy beside it.
    pub multi_platform: bool,
}

/// A layer blob placed in a layout's `blobs/sha256/`.
pub struct LayerBlob {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Digest of the gzipped blob.
    pub digest: Digest,
    /// Size of the gzipped blob.
    pub size: u64,
}

/// Writes `bytes` into the layout's blob directory under their digest.
fn put_blob(blobs: &Path, bytes: &[u8]) -> (Digest, u64) {
    let digest = Digest::of(bytes);
    std::fs::write(blobs.join(digest.hex()), bytes).expect("blob");
    (digest, bytes.len() as u64)
}

/// Gzips the layer tar `tar` into the layout's blob directory.
fn gzip_layer(blobs: &Path, tar: &[u8]) -> LayerBlob {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).expect("gzip");
    let (digest, size) = put_blob(blobs, &gz.finish().expect("gzip"));
    LayerBlob {
        diff_id: Digest::of(tar),
        digest,
        size,
    }
}

/// Writes the config and manifest of an image of `layers`; returns the manifest's digest and
/// size.
fn write_image(
    blobs: &Path,
    layers: &[LayerBlob],
    spec: &ImageSpec,
    architecture: &str,
) -> (Digest, u64) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": l.digest.to_string(), "size": l.size})
        })
        .collect();
    let config = serde_json::json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": architecture, "os": "linux",
        "config": {"Env": spec.env, "WorkingDir": spec.working_dir.unwrap_or(""),
                   "User": spec.user.unwrap_or(""), "Cmd": spec.cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put_blob(blobs, &serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config_size},
        "layers": descriptors,
    });
    put_blob(blobs, &serde_json::to_vec(&manifest).expect("json"))
}

/// Writes an OCI image layout (tag `latest`) of `layers` (uncompressed tars, gzipped here)
/// into `dir`, which must not exist. Returns the layers' blob digests.
pub fn write_layout(dir: &Path, layers: &[Vec<u8>], spec: &ImageSpec) -> Vec<Digest> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dirs");
    let layers: Vec<LayerBlob> = layers.iter().map(|tar| gzip_layer(&blobs, tar)).collect();
    write_layout_of_blobs(dir, &layers, spec);
    layers.into_iter().map(|l| l.digest).collect()
}

/// Writes an OCI image layout (tag `latest`) of layer blobs already in `dir/blobs/sha256`.
pub fn write_layout_of_blobs(dir: &Path, layers: &[LayerBlob], spec: &ImageSpec) {
    let blobs = dir.join("blobs/sha256");
    let (manifest, manifest_size) = write_image(&blobs, layers, spec, "amd64");
    let top = if spec.multi_platform {
        let decoy = gzip_layer(
            &blobs,
            &layer(&[Entry::File(
                "arm64".to_owned(),
                b"wrong platform\n".to_vec(),
                0o644,
            )]),
        );
        let (decoy, decoy_size) = write_image(&blobs, &[decoy], spec, "arm64");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": decoy.to_string(), "size": decoy_size,
                 "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": manifest.to_string(), "size": manifest_size,
                 "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        });
        let (digest, size) = put_blob(&blobs, &serde_json::to_vec(&index).expect("json"));
        serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": digest.to_string(), "size": size,
                           "annotations": {"org.opencontainers.image.ref.name": "latest"}})
    } else {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest.to_string(), "size": manifest_size,
                           "annotations": {"org.opencontainers.image.ref.name": "latest"}})
    };
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [top]}))
            .expect("json"),
    )
    .expect("index");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
}

/// The sha256 of a file, by `sha256sum` (fast in debug builds too).
fn file_digest(path: &Path) -> Digest {
    let output = run(Command::new("sha256sum").arg(path));
    Digest::from_hex(output.split_whitespace().next().unwrap_or_default()).expect("sha256sum")
}

/// A Debian bookworm image with `python3`, built from Debian's packages by `mmdebstrap`
/// (minbase) as one layer. Slow the first time (minutes: it downloads the packages), cached
/// under `target/` after that.
pub fn debian_python_layout() -> PathBuf {
    cached_layout("debian-python3-v1", |dir| {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout dirs");
        let tar = dir.join("rootfs.tar");
        run(Command::new("mmdebstrap")
            .args([
                "--quiet",
                "--variant=minbase",
                "--include=python3",
                "--mode=root",
            ])
            .args(["bookworm"])
            .arg(&tar)
            .arg("http://deb.debian.org/debian"));
        let diff_id = file_digest(&tar);
        run(Command::new("gzip").args(["-1", "-n"]).arg(&tar));
        let gz = dir.join("rootfs.tar.gz");
        let digest = file_digest(&gz);
        let size = std::fs::metadata(&gz).expect("layer").len();
        std::fs::rename(&gz, blobs.join(digest.hex())).expect("place layer");
        write_layout_of_blobs(
            dir,
            &[LayerBlob {
                diff_id,
                digest,
                size,
            }],
            &ImageSpec {
                env: vec!["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
                cmd: Some(vec!["python3"]),
                ..ImageSpec::default()
            },
        );
    })
}

/// A cached OCI layout under the scratch directory: built by `build` once, reused by later runs
/// (and by other checkouts on the machine).
pub fn cached_layout(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let root = scratch().join("image-fixtures");
    let dir = root.join(name);
    if dir.join("index.json").exists() {
        return dir;
    }
    std::fs::create_dir_all(&root).expect("fixtures dir");
    // Unique to this call, not only to this process: the tests of one binary run on threads,
    // and two of them may build the same fixture at once (one must not delete the other's).
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let build_no = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let building = root.join(format!("{name}.building-{}-{build_no}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    build(&building);
    if std::fs::rename(&building, &dir).is_err() {
        // Another test built it meanwhile.
        let _ = std::fs::remove_dir_all(&building);
    }
    dir
}

/// `/bin` holding the host's static busybox and a link to it for each of `applets`.
fn busybox_entries(applets: &[&str]) -> Vec<Entry> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::File("bin/busybox".to_owned(), busybox, 0o755),
    ];
    for applet in applets {
        entries.push(Entry::Symlink(
            format!("bin/{applet}"),
            "busybox".to_owned(),
        ));
    }
    entries
}

/// A static busybox image built from the host's `busybox-static`, behind an index that also
/// offers an arm64 variant.
pub fn busybox_layout() -> PathBuf {
    cached_layout("busybox-v1", |dir| {
        let mut entries = busybox_entries(&["sh", "ls", "cat", "echo", "true", "id", "stat"]);
        entries.extend([
            Entry::Dir("etc", 0o755),
            Entry::File(
                "etc/passwd".to_owned(),
                b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
                0o644,
            ),
            Entry::Dir("root", 0o700),
            Entry::Dir("tmp", 0o1777),
        ]);
        write_layout(
            dir,
            &[layer(&entries)],
            &ImageSpec {
                env: vec!["PATH=/bin"],
                working_dir: Some("/root"),
                cmd: Some(vec!["/bin/sh"]),
                multi_platform: true,
                ..ImageSpec::default()
            },
        );
    })
}

/// `/usr/local/bin/hello`, a C program linked by `musl-gcc` that prints `hello from musl as
/// <uid>`, and musl's loader as `/lib/ld-musl-x86_64.so.1`.
fn musl_program_entries() -> Vec<Entry> {
    let work = tempfile::Builder::new()
        .prefix("hutch-musl-")
        .tempdir_in(scratch())
        .expect("tempdir");
    let source = work.path().join("hello.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) {\n  printf(\"hello from musl as %d\\n\", (int)getuid());\n  return 0;\n}\n",
    )
    .expect("source");
    let program = work.path().join("hello");
    run(Command::new("musl-gcc")
        .args(["-Os", "-s", "-o"])
        .arg(&program)
        .arg(&source));
    let loader = std::fs::read("/usr/lib/x86_64-linux-musl/libc.so")
        .expect("musl is installed (scripts/deps.sh installs musl-tools)");
    vec![
        Entry::Dir("lib", 0o755),
        Entry::File("lib/ld-musl-x86_64.so.1".to_owned(), loader, 0o755),
        Entry::Dir("usr", 0o755),
        Entry::Dir("usr/local", 0o755),
        Entry::Dir("usr/local/bin", 0o755),
        Entry::File(
            "usr/local/bin/hello".to_owned(),
            std::fs::read(&program).expect("program"),
            0o755,
        ),
    ]
}

/// An image of nothing but the musl program of [`musl_layout`]: no shell, no `/etc`.
pub fn no_shell_layout() -> PathBuf {
    cached_layout("musl-no-shell-v1", |dir| {
        write_layout(
            dir,
            &[layer(&musl_program_entries())],
            &ImageSpec {
                env: vec!["PATH=/usr/local/bin"],
                ..ImageSpec::default()
            },
        );
    })
}

/// An image of `count` layers: the bottom one a static busybox, layer `i` adding `/layers/<i>`.
pub fn many_layers_layout(count: usize) -> PathBuf {
    cached_layout(&format!("many-layers-{count}-v1"), |dir| {
        let layers: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut entries = if i == 0 {
                    busybox_entries(&["sh", "cat", "ls", "wc"])
                } else {
                    Vec::new()
                };
                entries.push(Entry::Dir("layers", 0o755));
                entries.push(Entry::File(
                    format!("layers/{i}"),
                    format!("layer {i}\n").into_bytes(),
                    0o644,
                ));
                layer(&entries)
            })
            .collect();
        write_layout(
            dir,
            &layers,
            &ImageSpec {
                env: vec!["PATH=/bin"],
                ..ImageSpec::default()
            },
        );
    })
}

/// A musl image: a C program linked by `musl-gcc` against musl's own loader
/// (`/lib/ld-musl-x86_64.so.1`, no glibc anywhere), beside a static busybox. It runs as the
/// user `app` (1000:1000) in `/srv/app`, with `GREETING` and `PATH` in its `Env`.
pub fn musl_layout() -> PathBuf {
    cached_layout("musl-v1", |dir| {
        let mut entries = busybox_entries(&[
            "sh", "ls", "cat", "echo", "id", "pwd", "env", "stat", "true",
        ]);
        entries.extend(musl_program_entries());
        entries.extend([
            Entry::Dir("etc", 0o755),
            Entry::File(
                "etc/passwd".to_owned(),
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n".to_vec(),
                0o644,
            ),
            Entry::File(
                "etc/group".to_owned(),
                b"root:x:0:\napp:x:1000:\n".to_vec(),
                0o644,
            ),
            Entry::File(
                "etc/os-release".to_owned(),
                b"ID=hutch-musl-test\n".to_vec(),
                0o644,
            ),
            Entry::Dir("srv", 0o755),
            Entry::Dir("srv/app", 0o777),
            Entry::Dir("home", 0o755),
            Entry::Dir("home/app", 0o755),
        ]);
        write_layout(
            dir,
            &[layer(&entries)],
            &ImageSpec {
                env: vec!["PATH=/usr/local/bin:/bin", "GREETING=from-image"],
                working_dir: Some("/srv/app"),
                user: Some("app"),
                ..ImageSpec::default()
            },
        );
    })
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Mounts `lower_dirs` (top first) as a read-only overlay in a user namespace mapping root to
/// the sandbox uid range, with `userxattr` as sandboxes do, and runs `script` (sh, with `$R`
/// the merged root) in there. Returns its output.
pub fn in_overlay(lower_dirs: &[PathBuf], script: &str) -> String {
    let mount_point = tempfile::Builder::new()
        .prefix("hutch-overlay-")
        .tempdir_in(scratch())
        .expect("mount point");
    let lower: Vec<String> = lower_dirs.iter().map(|p| p.display().to_string()).collect();
    let lower = if lower.len() == 1 {
        // overlayfs wants two lower directories when there is no upper one.
        let empty = mount_point.path().join("empty");
        std::fs::create_dir(&empty).expect("empty lower");
        format!("{}:{}", lower[0], empty.display())
    } else {
        lower.join(":")
    };
    let merged = mount_point.path().join("merged");
    std::fs::create_dir(&merged).expect("merged");
    let full = format!(
        "mount -t overlay overlay -o ro,lowerdir={lower},userxattr {m} && R={m} && {script}",
        m = merged.display()
    );
    run(Command::new("python3")
        .arg("-c")
        .arg(USERNS_HELPER)
        .arg(DEFAULT_UID_BASE.to_string())
        .arg(UID_COUNT.to_string())
        .args(["sh", "-c", &full])
        .stdin(Stdio::null()))
}

/// The final tree of an image: one line per entry (`path type uid:gid mode [link target]`),
/// sorted, as root inside the sandbox sees it.
pub fn tree(lower_dirs: &[PathBuf]) -> Vec<String> {
    let output = in_overlay(
        lower_dirs,
        r#"cd "$R" && find . -mindepth 1 -printf '%P %y %U:%G %m %l\n'"#,
    );
    let mut lines: Vec<String> = output.lines().map(|l| l.trim_end().to_owned()).collect();
    lines.sort();
    lines
}

/// Forks a child into new user and mount namespaces, maps root to `argv[1]` (count `argv[2]`)
/// from outside, then runs the rest of argv as root inside.
const USERNS_HELPER: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
base, count, cmd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000 | 0x00020000) != 0:
        os._exit(101)
    os.write(ready_w, b"x")
    os.read(go_r, 1)
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
    os.execvp(cmd[0], cmd)
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write(f"0 {base} {count}")
os.write(go_w, b"x")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// Everything under `dir`, relative, sorted (to show that nothing else was written).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(
                path.strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string(),
            );
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Reads a whole file, for tests.
pub fn read(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    bytes
}
