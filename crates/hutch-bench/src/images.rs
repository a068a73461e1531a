//! Images: the first pull and unpack of an image from a registry on this machine, through the
//! API, beside `skopeo copy` + `umoci unpack` of the same image in the same run.
//!
//! The registry is Debian's `docker-registry` on a loopback port, filled with `skopeo` from an
//! OCI layout on disk. Each hutch iteration deletes the image first (its layers go with it), so
//! every pull fetches, verifies and unpacks every layer; each peer iteration copies the image
//! into a fresh OCI layout and unpacks it into a fresh bundle.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hutch_client::HutchClient;

use crate::{BenchError, Samples};

/// A `docker-registry` on a loopback port, stopped (its storage removed) when dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    dir: PathBuf,
}

impl Registry {
    /// Starts a registry with its storage under `scratch`.
    pub fn start(scratch: &Path) -> Result<Registry, BenchError> {
        let failed = |what: String| BenchError::Server(format!("registry: {what}"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed(e.to_string()))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir = scratch.join(format!("hutch-bench-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )
        .map_err(|e| failed(e.to_string()))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "starting docker-registry (scripts/deps.sh installs it): {e}"
                ))
            })?;
        let registry = Registry { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            if Instant::now() > deadline {
                return Err(failed("did not start".to_owned()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// Pushes the OCI layout `layout` (tag `latest`) as `repository` (`name:tag`).
    pub fn push(&self, layout: &Path, repository: &str) -> Result<(), BenchError> {
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:latest", layout.display()),
            &format!("docker://{}/{repository}", self.addr),
        ]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the pull scenario measured.
pub struct PullReport {
    /// `POST /v1/images/pull` of an image the server does not hold, until the image is stored.
    pub hutch: Samples,
    /// `skopeo copy` then `umoci unpack`; `None` when they are not installed.
    pub peer: Option<Samples>,
    /// Bytes the image's unpacked layers take in hutch's store.
    pub size_bytes: u64,
    /// Its layers.
    pub layers: u64,
}

/// Pulls `reference` `iterations` times through `client`, deleting it before each pull, then
/// copies `peer_reference` (the same image, named as the registry serves it) and unpacks it as
/// many times with skopeo and umoci under `scratch`.
pub async fn pull_vs_skopeo_umoci(
    client: &HutchClient,
    reference: &str,
    peer_reference: &str,
    iterations: usize,
    scratch: &Path,
) -> Result<PullReport, BenchError> {
    let mut hutch = Samples::new();
    let mut size_bytes = 0;
    let mut layers = 0;
    for _ in 0..iterations {
        // A missing image is fine: the first iteration starts from an empty store.
        let _ = client.delete_image(reference).await;
        let start = Instant::now();
        let image = client
            .pull_image(reference, |_| {})
            .await
            .map_err(|source| BenchError::Api {
                step: "pull the image",
                source,
            })?;
        hutch.push(start.elapsed());
        size_bytes = image.size_bytes;
        layers = image.layers;
    }
    let reference = peer_reference.to_owned();
    let scratch = scratch.to_owned();
    let peer = tokio::task::spawn_blocking(move || skopeo_umoci(&reference, iterations, &scratch))
        .await
        .map_err(|e| BenchError::Server(format!("peer task: {e}")))??;
    Ok(PullReport {
        hutch,
        peer,
        size_bytes,
        layers,
    })
}

/// `skopeo copy docker://… oci:…` then `umoci unpack` into a fresh bundle, timed together.
fn skopeo_umoci(
    reference: &str,
    iterations: usize,
    scratch: &Path,
) -> Result<Option<Samples>, BenchError> {
    let installed = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !installed("skopeo") || !installed("umoci") {
        return Ok(None);
    }
    let mut samples = Samples::new();
    for i in 0..iterations {
        let work = scratch.join(format!("hutch-bench-umoci-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)
            .map_err(|e| BenchError::Server(format!("peer work dir: {e}")))?;
        let layout = work.join("layout");
        let bundle = work.join("bundle");
        let start = Instant::now();
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:latest", layout.display()),
        ]))?;
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&bundle))?;
        samples.push(start.elapsed());
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(Some(samples))
}

/// Runs a command, failing with its output when it fails.
fn run(command: &mut Command) -> Result<(), BenchError> {
    let output = command
        .output()
        .map_err(|e| BenchError::Server(format!("{command:?}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BenchError::Server(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Disk used by many sessions of one image.
pub struct DiskReport {
    /// Sessions created.
    pub sessions: usize,
    /// Bytes of the image store's layers with every session running (one copy, shared).
    pub layer_bytes: u64,
    /// Bytes of the sessions' own directories (their writable layers), all together.
    pub session_bytes: u64,
}

/// Creates `count` sessions of `image`, measures the disk under `data_dir` (layers and the
/// sessions' own directories, by `du`), and deletes them.
pub async fn disk_of_sessions(
    client: &HutchClient,
    image: &str,
    count: usize,
    data_dir: &Path,
) -> Result<DiskReport, BenchError> {
    let mut ids = Vec::new();
    let request = hutch_api::CreateSessionRequest {
        image: Some(image.to_owned()),
        ..Default::default()
    };
    let mut failure = None;
    for _ in 0..count {
        match client.create_session(&request).await {
            Ok(session) => ids.push(session.session_id),
            Err(source) => {
                failure = Some(BenchError::Api {
                    step: "create a session of the image",
                    source,
                });
                break;
            }
        }
    }
    let layer_bytes = du(&data_dir.join("images-oci/layers"));
    let session_bytes = du(&data_dir.join("sandboxes"));
    for id in ids {
        let _ = client.delete_session(id).await;
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(DiskReport {
        sessions: count,
        layer_bytes,
        session_bytes,
    })
}

/// Bytes on disk under `path` (`du -sb`, hard links once), or 0.
fn du(path: &Path) -> u64 {
    Command::new("du")
        .arg("-sb")
        .arg(path)
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Timings of a snapshot and of forks of a session holding much new data.
pub struct SnapshotReport {
    /// MiB of new files the session held.
    pub mib: u64,
    /// `POST /v1/sessions/{id}/snapshot`.
    pub snapshot: Duration,
    /// `POST /v1/sessions/{id}/fork` of `forks` sessions (a snapshot of its own, then the
    /// creates).
    pub fork: Duration,
    /// `forks` sessions created at once from the snapshot image.
    pub create_from_snapshot: Duration,
    /// How many sessions each fork made.
    pub forks: u32,
}

/// Fills a session of `image` with `mib` MiB of new files, then times its snapshot, a fork of
/// `forks` sessions, and `forks` creates at once from the snapshot; deletes all it made.
pub async fn snapshot_and_fork(
    client: &HutchClient,
    image: &str,
    mib: u64,
    forks: u32,
) -> Result<SnapshotReport, BenchError> {
    let api = |step: &'static str| move |source| BenchError::Api { step, source };
    let source = client
        .create_session(&hutch_api::CreateSessionRequest {
            image: Some(image.to_owned()),
            resources: Some(hutch_api::ResourcesRequest {
                memory_mb: Some(1024),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(api("create the source session"))?;
    let id = source.session_id;
    let fill = format!(
        "mkdir -p /root/data && for i in $(seq 1 {}); do head -c 67108864 /dev/urandom > /root/data/part-$i; done",
        mib.div_ceil(64)
    );
    let filled = client
        .run_command(
            id,
            &hutch_api::CommandRequest {
                command: Some(fill),
                timeout: Some(600.0),
                ..Default::default()
            },
        )
        .await
        .map_err(api("write the session's files"))?;
    if filled.exit_code != 0 {
        return Err(BenchError::Server(format!(
            "writing the files failed: {}",
            filled.stderr
        )));
    }
    let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let start = Instant::now();
    client
        .snapshot_session(id, &name)
        .await
        .map_err(api("snapshot"))?;
    let snapshot = start.elapsed();
    let start = Instant::now();
    let forked = client
        .fork_session(
            id,
            &hutch_api::ForkRequest {
                count: Some(forks),
                ttl: None,
            },
        )
        .await
        .map_err(api("fork"))?;
    let fork = start.elapsed();
    let request = hutch_api::CreateSessionRequest {
        image: Some(name.clone()),
        ..Default::default()
    };
    let start = Instant::now();
    let created =
        futures_util::future::join_all((0..forks).map(|_| client.create_session(&request))).await;
    let create_from_snapshot = start.elapsed();
    let mut made: Vec<uuid::Uuid> = forked.sessions.iter().map(|s| s.session_id).collect();
    let mut failure = None;
    for result in created {
        match result {
            Ok(session) => made.push(session.session_id),
            Err(source) => failure = Some(api("create from the snapshot")(source)),
        }
    }
    made.push(id);
    for id in made {
        let _ = client.delete_session(id).await;
    }
    let _ = client.delete_image(&name).await;
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(SnapshotReport {
        mib: mib.div_ceil(64) * 64,
        snapshot,
        fork,
        create_from_snapshot,
        forks,
    })
}
