//! The linux runtime: sandboxes made of namespaces, overlayfs and cgroups on this host.
//!
//! Building a sandbox ([`LinuxRuntime::build`]), step by step (see also [`crate::init`] for the
//! inside):
//!
//! 1. allocate its directories under `<data>/sandboxes/<id>/` (overlay upper and work dirs,
//!    the mount point of its root), owned by the host uid that root inside maps to;
//! 2. create its cgroups ([`cgroups`]);
//! 3. bind the agent's listening socket at `<data>/sockets/<id>.sock`, and write the
//!    [`InitConfig`] into a pipe;
//! 4. `clone3` a child into new user, pid, mount, network, ipc and uts namespaces, straight
//!    into its cgroup v2 directory; write its uid/gid maps (root inside = an unprivileged host
//!    uid), join its v1 cgroups, then release it;
//! 5. the child execs `hutch agent`, which builds the root file system and reports `built`.
//!
//! Such a built sandbox waits in a small warm pool. [`Runtime::create`] claims one: writes the
//! session's limits into its cgroups, sends the [`Claim`] (host name, environment) and waits for
//! the agent's `ok`, sent once it has locked itself down. A sandbox keeps its own id (cgroup v2
//! directories cannot be renamed); the [`SandboxRecord`] ties it to the session. Building takes 10–30 ms, mostly because the first move of a process into a
//! cgroup v1 hierarchy waits for an RCU grace period; claiming takes about a millisecond. With
//! an empty pool (or `warm_pool = 0`) `create` builds and claims in one go.
//!
//! Destroying kills the whole cgroup at once, waits for the agent to exit, removes the
//! cgroups and the socket, and moves the directory to `<data>/trash/`, which a background thread
//! empties (deleting is slow on some disks; renaming is not). Mounts need no cleanup: they live
//! only in the sandbox's mount namespace, which the kernel frees with its last process.
//!
//! A sandbox outlives the server process that started it (agents are not tied to the server's
//! life), so a restarted server can [`Runtime::adopt`] it again; anything it cannot account for
//! (pooled sandboxes included) is removed by [`Runtime::sweep`].

mod cgroups;
mod image;
mod quota;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hutch_api::Resources;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::init::{self, Claim, InitConfig, OverlayMount};
use crate::sys::{self, ChildFd};
use crate::{Runtime, SandboxError, SandboxRecord, SandboxSpec};

use cgroups::CgroupError;

/// Host uid (and gid) that uid 0 inside every sandbox maps to, by default. Sandboxes map
/// 65,536 ids from here; none of them is a host user.
pub const DEFAULT_UID_BASE: u32 = 1_000_000_000;
/// Number of ids mapped into each sandbox.
pub const UID_COUNT: u32 = 65_536;

/// Settings of the linux runtime.
#[derive(Debug, Clone)]
pub struct LinuxConfig {
    /// hutch's data directory; sandboxes live under `sandboxes/`, sockets under `sockets/`.
    pub data_dir: PathBuf,
    /// Host uid and gid that root inside a sandbox maps to.
    pub uid_base: u32,
    /// The `hutch` binary to run as the agent.
    pub agent_binary: PathBuf,
    /// How long a sandbox may take to report ready.
    pub start_timeout: Duration,
    /// How many built, unclaimed sandboxes to keep ready.
    pub warm_pool: usize,
    /// Disk quota in MiB of sessions that ask for none; `None`: no quota.
    pub disk_mb_default: Option<u64>,
    /// Largest disk quota in MiB a session may ask for.
    pub disk_mb_max: u64,
    /// Largest upload the file API of each sandbox accepts, in bytes; `None`: the agent's
    /// default.
    pub max_upload_bytes: Option<u64>,
}

impl LinuxConfig {
    /// Defaults for `data_dir`, running this very executable as the agent.
    pub fn new(data_dir: PathBuf) -> Result<LinuxConfig, SandboxError> {
        let exe = std::env::current_exe().map_err(|source| SandboxError::Io {
            op: "find",
            path: "/proc/self/exe".into(),
            source,
        })?;
        Ok(LinuxConfig {
            data_dir,
            uid_base: DEFAULT_UID_BASE,
            agent_binary: exe,
            start_timeout: Duration::from_secs(10),
            warm_pool: 4,
            disk_mb_default: None,
            disk_mb_max: hutch_api::limits::DISK_MB_RANGE.1,
            max_upload_bytes: None,
        })
    }
}

/// One running sandbox this server process watches.
struct Live {
    sandbox_id: Uuid,
    pidfd: Arc<OwnedFd>,
    /// Turns true once the agent has exited.
    exited: watch::Receiver<bool>,
    /// Set while `destroy` runs, so the exit it causes is not reported as a death.
    destroying: std::sync::atomic::AtomicBool,
}

/// A built sandbox that no session has claimed yet.
struct Embryo {
    id: Uuid,
    spawned: sys::Spawned,
    claim: OwnedFd,
    status: OwnedFd,
}

struct Inner {
    config: LinuxConfig,
    /// Built sandboxes ready to claim.
    pool: Mutex<Vec<Embryo>>,
    /// Ids of pooled sandboxes and of those being built for the pool.
    pool_ids: Mutex<HashSet<Uuid>>,
    /// Wakes the pool filler.
    pool_wanted: tokio::sync::Notify,
    /// Set at shutdown: sandboxes built for the pool from then on are torn down, not pooled.
    closing: std::sync::atomic::AtomicBool,
    /// Directories to delete, handed to the trash thread.
    trash: std::sync::mpsc::Sender<PathBuf>,
    cgroups: cgroups::Cgroups,
    image: image::DefaultImage,
    /// The agent binary, opened once (descriptor numbered above the child's targets).
    agent_exe: OwnedFd,
    live: Mutex<HashMap<Uuid, Arc<Live>>>,
    died: mpsc::UnboundedSender<Uuid>,
}

/// The linux runtime. Cheap to clone.
#[derive(Clone)]
pub struct LinuxRuntime {
    inner: Arc<Inner>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn sys_err(call: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let call = call.into();
    move |source| SandboxError::Sys { call, source }
}

impl From<CgroupError> for SandboxError {
    fn from(e: CgroupError) -> Self {
        match e {
            CgroupError::Io { op, path, source } => SandboxError::Io { op, path, source },
            other => SandboxError::Sys {
                call: "cgroups".into(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// Longest unix socket path (`sun_path` is 108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 107;

impl LinuxRuntime {
    /// Prepares the host: checks the data directory, builds the `default` image and hutch's
    /// cgroup parents. Returns the runtime and a receiver of the ids of sandboxes that died on
    /// their own (their agent exited without `destroy`).
    pub fn new(
        config: LinuxConfig,
    ) -> Result<(LinuxRuntime, mpsc::UnboundedReceiver<Uuid>), SandboxError> {
        let data = &config.data_dir;
        for dir in [
            data.clone(),
            data.join("sandboxes"),
            data.join("sockets"),
            data.join("images"),
            data.join("trash"),
        ] {
            fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        }
        // The sandbox's root user reaches its layers through these; nothing in them is listable.
        for dir in [data.clone(), data.join("sandboxes"), data.join("images")] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
                .map_err(io("chmod", &dir))?;
        }
        fs::set_permissions(data.join("sockets"), fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", &data.join("sockets")))?;
        check_reachable(data)?;
        let longest_socket = data.join("sockets").join(format!("{}.sock", Uuid::nil()));
        if longest_socket.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(SandboxError::InvalidSpec(format!(
                "data directory {} is too long for unix socket paths (at most {} bytes in all); choose a shorter one",
                data.display(),
                SOCKET_PATH_MAX
            )));
        }
        if data.display().to_string().contains([',', ':']) {
            return Err(SandboxError::InvalidSpec(format!(
                "data directory {} contains ',' or ':', which overlayfs options cannot carry",
                data.display()
            )));
        }
        let instance = instance_name(data);
        let cgroups = cgroups::Cgroups::detect(&instance, config.uid_base)?;
        let image = image::build_default(&data.join("images"), config.uid_base)
            .map_err(io("build image in", &data.join("images")))?;
        let exe = sys::open(&config.agent_binary, libc::O_PATH)
            .map_err(io("open", &config.agent_binary))?;
        let agent_exe =
            sys::dup_above(exe.as_raw_fd(), 100).map_err(sys_err("dup agent binary"))?;
        tracing::info!(
            data_dir = %data.display(),
            cgroup_limits = ?cgroups.limits_via(),
            image = %image.skeleton.display(),
            "linux runtime ready"
        );
        let (died, died_rx) = mpsc::unbounded_channel();
        let trash = start_trash_thread(data.join("trash"))?;
        let inner = Inner {
            config,
            pool: Mutex::new(Vec::new()),
            pool_ids: Mutex::new(HashSet::new()),
            pool_wanted: tokio::sync::Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            trash,
            cgroups,
            image,
            agent_exe,
            live: Mutex::new(HashMap::new()),
            died,
        };
        Ok((
            LinuxRuntime {
                inner: Arc::new(inner),
            },
            died_rx,
        ))
    }

    /// Starts keeping `warm_pool` built sandboxes ready. Call once the server has swept the
    /// leftovers of earlier runs. Needs a tokio runtime.
    pub fn start_pool(&self) {
        if self.inner.config.warm_pool == 0 {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move { runtime.fill_pool().await });
    }

    async fn fill_pool(self) {
        let target = self.inner.config.warm_pool;
        while !self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
            let wanted = target.saturating_sub(lock(&self.inner.pool_ids).len());
            let builds: Vec<_> = (0..wanted)
                .map(|_| {
                    let id = Uuid::now_v7();
                    lock(&self.inner.pool_ids).insert(id);
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || (id, this.build(id, &Resources::default())))
                })
                .collect();
            let mut failed = false;
            for build in builds {
                match build.await {
                    Ok((_, Ok(embryo))) => lock(&self.inner.pool).push(embryo),
                    // Shutting down: drain_pool takes it from the pool like any other.
                    Ok((id, Err(e))) => {
                        tracing::error!(error = %e, "building a sandbox for the warm pool failed");
                        lock(&self.inner.pool_ids).remove(&id);
                        let this = self.clone();
                        let _ = tokio::task::spawn_blocking(move || this.teardown(id)).await;
                        failed = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pool build task failed");
                        failed = true;
                    }
                }
            }
            if failed {
                // Do not spin on a host that cannot build sandboxes; creates report the error.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if lock(&self.inner.pool_ids).len() >= target {
                self.inner.pool_wanted.notified().await;
            }
        }
    }

    /// On orderly shutdown: destroys the pooled sandboxes and, when `destroy_sessions`, every
    /// live one too (otherwise they keep running for the next start to adopt). Removes this
    /// server's cgroup parents when nothing is left in them.
    pub async fn shutdown(&self, destroy_sessions: bool) {
        self.drain_pool().await;
        if destroy_sessions {
            let live: Vec<(Uuid, Uuid)> = lock(&self.inner.live)
                .iter()
                .map(|(id, l)| (*id, l.sandbox_id))
                .collect();
            for (id, sandbox_id) in live {
                if let Err(e) = self
                    .destroy(&SandboxRecord {
                        id,
                        sandbox_id,
                        agent_pid: 0,
                    })
                    .await
                {
                    tracing::warn!(session = %id, error = %e, "destroying a sandbox at shutdown failed");
                }
            }
        }
        self.inner.cgroups.remove_parents_if_empty();
    }

    /// Destroys the pooled sandboxes.
    /// Destroys the pooled sandboxes, and those still being built for the pool once they are.
    async fn drain_pool(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.pool_wanted.notify_one();
        let deadline = tokio::time::Instant::now() + self.inner.config.start_timeout;
        loop {
            let embryos: Vec<Embryo> = std::mem::take(&mut *lock(&self.inner.pool));
            for embryo in embryos {
                let _ = sys::pidfd_send_signal(embryo.spawned.pidfd.as_raw_fd(), libc::SIGKILL);
                let this = self.clone();
                let id = embryo.id;
                let _ = tokio::task::spawn_blocking(move || this.teardown(id)).await;
                sys::reap(embryo.spawned.pid);
                lock(&self.inner.pool_ids).remove(&id);
            }
            if lock(&self.inner.pool_ids).is_empty() || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn sandbox_dir(&self, id: Uuid) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("sandboxes")
            .join(id.to_string())
    }

    fn socket_path(&self, id: Uuid) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("sockets")
            .join(format!("{id}.sock"))
    }

    /// Builds the directories and init configuration of a sandbox.
    fn prepare(&self, id: Uuid, disk_mb: Option<u64>) -> Result<InitConfig, SandboxError> {
        let owner = self.inner.config.uid_base;
        let dir = self.sandbox_dir(id);
        let rootfs = dir.join("rootfs");
        // With a quota, the writable layers live on the session's own file system.
        let layers = match disk_mb {
            Some(mb) => {
                fs::create_dir_all(&dir).map_err(io("create", &dir))?;
                quota::create(&dir, mb, owner)?
            }
            None => dir.clone(),
        };
        let mut overlays = Vec::new();
        let mut layer = |name: &str, target: PathBuf, lower: PathBuf| -> Result<(), SandboxError> {
            let upper = layers.join("upper").join(name);
            let work = layers.join("work").join(name);
            for d in [&upper, &work] {
                fs::create_dir_all(d).map_err(io("create", d))?;
            }
            overlays.push(OverlayMount {
                target,
                lower: vec![lower],
                upper,
                work,
            });
            Ok(())
        };
        layer("root", "/".into(), self.inner.image.skeleton.clone())?;
        for host_dir in &self.inner.image.overlay_dirs {
            let name = host_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("dir")
                .to_owned();
            layer(&name, host_dir.clone(), host_dir.clone())?;
        }
        fs::create_dir_all(&rootfs).map_err(io("create", &rootfs))?;
        image::mark_in_use(&dir, &self.inner.image).map_err(io("mark the image in", &dir))?;
        for path in walk_dirs(&dir) {
            sys::lchown(&path, owner, owner).map_err(io("chown", &path))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", &dir))?;
        Ok(InitConfig {
            rootfs,
            overlays,
            has_cgroup_dir: false,
            tmpfs_mb: disk_mb,
        })
    }

    /// Builds sandbox `id` up to `built` (blocking: run off the async threads).
    fn build(&self, id: Uuid, resources: &Resources) -> Result<Embryo, SandboxError> {
        let inner = &self.inner;
        let mut config = self.prepare(id, resources.disk_mb)?;
        let cgroup = inner.cgroups.create(id, resources)?;
        config.has_cgroup_dir = cgroup.v2_fd.is_some();

        let socket = self.socket_path(id);
        let _ = fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(io("bind", &socket))?;

        let (config_r, config_w) = sys::pipe().map_err(sys_err("pipe"))?;
        let (status_r, status_w) = sys::pipe().map_err(sys_err("pipe"))?;
        let (go_r, go_w) = sys::pipe().map_err(sys_err("pipe"))?;
        let mut json =
            serde_json::to_vec(&config).map_err(|e| SandboxError::InvalidSpec(e.to_string()))?;
        json.push(b'\n');
        // The pipe buffer (64 KiB) holds the whole config, so this does not block.
        (&fs::File::from(config_w.try_clone().map_err(sys_err("dup"))?))
            .write_all(&json)
            .map_err(sys_err("write init config"))?;

        let high = |fd: &OwnedFd| sys::dup_above(fd.as_raw_fd(), 100).map_err(sys_err("dup"));
        let dev_null = sys::open(Path::new("/dev/null"), libc::O_RDWR)
            .map_err(io("open", Path::new("/dev/null")))?;
        // The agent's own warnings and errors; removed with the sandbox.
        let log_path = self.sandbox_dir(id).join("agent.log");
        let log: OwnedFd = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io("open", &log_path))?
            .into();
        let sources = [
            (high(&dev_null)?, 0),
            (high(&log)?, 1),
            (high(&log)?, 2),
            (high(&config_r)?, init::CONFIG_FD),
            (high(&status_w)?, init::STATUS_FD),
            (
                sys::dup_above(listener.as_raw_fd(), 100).map_err(sys_err("dup"))?,
                init::LISTENER_FD,
            ),
            (high(&go_r)?, init::GO_FD),
        ];
        let cgroup_src = cgroup.v2_fd.as_ref().map(high).transpose()?;
        let mut fds: Vec<ChildFd> = sources
            .iter()
            .map(|(fd, target)| ChildFd {
                source: fd.as_raw_fd(),
                target: *target,
            })
            .collect();
        if let Some(fd) = &cgroup_src {
            fds.push(ChildFd {
                source: fd.as_raw_fd(),
                target: init::CGROUP_FD,
            });
        }
        let argv: Vec<CString> = vec![c"hutch".to_owned(), c"agent".to_owned()];
        let flags = (libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS) as u64;
        let spawned = sys::spawn_into_namespaces(
            flags,
            cgroup.v2_fd.as_ref().map(|fd| fd.as_raw_fd()),
            inner.agent_exe.as_raw_fd(),
            &argv,
            &fds,
            init::GO_FD,
        )
        .map_err(sys_err("start sandbox"))?;
        drop((
            sources, cgroup_src, config_r, status_w, go_r, listener, dev_null, log,
        ));

        let release = || -> Result<(), SandboxError> {
            let base = inner.config.uid_base;
            let map = format!("0 {base} {UID_COUNT}\n");
            for file in ["uid_map", "gid_map"] {
                let path = PathBuf::from(format!("/proc/{}/{file}", spawned.pid));
                fs::write(&path, &map).map_err(io("write", &path))?;
            }
            inner.cgroups.attach_v1(&cgroup, spawned.pid)?;
            // The agent should outlive the code it runs when memory runs out; what it starts
            // gets a score of 0 again. Lowering a score needs CAP_SYS_RESOURCE, which some
            // hosts withhold even from root: then the OOM killer still picks the largest
            // process, which is not the agent.
            let path = PathBuf::from(format!("/proc/{}/oom_score_adj", spawned.pid));
            if let Err(e) = fs::write(&path, "-998") {
                tracing::debug!(error = %e, "cannot shield the agent from the OOM killer");
            }
            fs::File::from(go_w)
                .write_all(b"g")
                .map_err(sys_err("release sandbox"))?;
            match read_status_line(&status_r, inner.config.start_timeout) {
                Ok(line) if line == "built" => Ok(()),
                Ok(line) => Err(SandboxError::Start { id, reason: line }),
                Err(reason) => Err(SandboxError::Start { id, reason }),
            }
        };
        if let Err(e) = release() {
            let _ = sys::pidfd_send_signal(spawned.pidfd.as_raw_fd(), libc::SIGKILL);
            sys::wait_blocking(spawned.pid);
            return Err(e);
        }
        Ok(Embryo {
            id,
            spawned,
            claim: config_w,
            status: status_r,
        })
    }

    /// Hands a built sandbox to session `spec.id` (blocking).
    fn claim(
        &self,
        embryo: Embryo,
        spec: &SandboxSpec,
    ) -> Result<(sys::Spawned, SandboxRecord), SandboxError> {
        let inner = &self.inner;
        let id = spec.id;
        let result = (|| {
            inner
                .cgroups
                .set_limits(&inner.cgroups.existing(embryo.id), &spec.resources)?;
            let claim = Claim {
                hostname: spec.hostname.clone(),
                env: spec.env.clone(),
                max_upload_bytes: inner.config.max_upload_bytes,
            };
            let mut json =
                serde_json::to_vec(&claim).map_err(|e| SandboxError::InvalidSpec(e.to_string()))?;
            json.push(b'\n');
            fs::File::from(embryo.claim)
                .write_all(&json)
                .map_err(sys_err("send claim"))?;
            match read_status_line(&embryo.status, inner.config.start_timeout) {
                Ok(line) if line == "ok" => Ok(()),
                Ok(line) => Err(SandboxError::Start {
                    id,
                    reason: line.trim_start_matches("error: ").to_owned(),
                }),
                Err(reason) => Err(SandboxError::Start { id, reason }),
            }
        })();
        match result {
            Ok(()) => {
                let record = SandboxRecord {
                    id,
                    sandbox_id: embryo.id,
                    agent_pid: embryo.spawned.pid,
                };
                Ok((embryo.spawned, record))
            }
            Err(e) => {
                let _ = sys::pidfd_send_signal(embryo.spawned.pidfd.as_raw_fd(), libc::SIGKILL);
                let _ = self.teardown(embryo.id);
                sys::wait_blocking(embryo.spawned.pid);
                Err(e)
            }
        }
    }

    /// Watches `pid` until it exits: reaps it and reports it as died unless being destroyed.
    fn watch(&self, record: &SandboxRecord, pidfd: OwnedFd) -> Result<Arc<Live>, SandboxError> {
        let (id, pid) = (record.id, record.agent_pid);
        let pidfd = Arc::new(pidfd);
        let (tx, rx) = watch::channel(false);
        let live = Arc::new(Live {
            sandbox_id: record.sandbox_id,
            pidfd: pidfd.clone(),
            exited: rx,
            destroying: Default::default(),
        });
        // SAFETY: ArcFd keeps the pidfd open (it holds an Arc of the OwnedFd) and always
        // returns the same descriptor for as long as the AsyncFd lives.
        let async_fd =
            unsafe { AsyncFd::register_with_interest(ArcFd(pidfd), tokio::io::Interest::READABLE) }
                .map_err(|e| sys_err("watch pidfd")(e.into()))?;
        let runtime = self.clone();
        let watched = live.clone();
        tokio::spawn(async move {
            let _ = async_fd.readable().await;
            sys::reap(pid);
            let _ = tx.send(true);
            if !watched.destroying.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::warn!(session = %id, pid, "sandbox agent exited on its own");
                let _ = runtime.inner.died.send(id);
            }
        });
        lock(&self.inner.live).insert(id, live.clone());
        Ok(live)
    }

    /// Kills and removes everything of sandbox `id`, blocking (run off the async threads).
    fn teardown(&self, id: Uuid) -> Result<(), SandboxError> {
        let cgroup = self.inner.cgroups.existing(id);
        self.inner.cgroups.kill(&cgroup, Duration::from_secs(5))?;
        self.inner.cgroups.remove(&cgroup, Duration::from_secs(5))?;
        let socket = self.socket_path(id);
        match fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &socket)(e));
            }
            _ => {}
        }
        let dir = self.sandbox_dir(id);
        quota::release(&dir);
        let trashed = self
            .inner
            .config
            .data_dir
            .join("trash")
            .join(format!("{id}-{}", Uuid::now_v7().simple()));
        match fs::rename(&dir, &trashed) {
            Ok(()) => {
                let _ = self.inner.trash.send(trashed);
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &dir)(e));
            }
            Err(_) => {}
        }
        Ok(())
    }
}

/// A pidfd shared between the watcher and `Live`.
struct ArcFd(Arc<OwnedFd>);

impl AsRawFd for ArcFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

#[async_trait]
impl Runtime for LinuxRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        if spec.image != "default" {
            return Err(SandboxError::InvalidSpec(format!(
                "unknown image {:?}; available: default",
                spec.image
            )));
        }
        let config = &self.inner.config;
        let disk_mb = spec.resources.disk_mb.or(config.disk_mb_default);
        if let Some(mb) = disk_mb
            && mb > config.disk_mb_max
        {
            return Err(SandboxError::InvalidSpec(format!(
                "resources.diskMb must be at most {} on this server, got {mb}",
                config.disk_mb_max
            )));
        }
        // Pooled sandboxes have no quota: a session with one is built for it.
        let pooled = if disk_mb.is_none() {
            lock(&self.inner.pool).pop()
        } else {
            None
        };
        if pooled.is_some() {
            self.inner.pool_wanted.notify_one();
        }
        let this = self.clone();
        let mut spec_owned = spec.clone();
        spec_owned.resources.disk_mb = disk_mb;
        let claimed = tokio::task::spawn_blocking(move || {
            let embryo = match pooled {
                Some(embryo) => embryo,
                None => {
                    let sandbox_id = Uuid::now_v7();
                    this.build(sandbox_id, &spec_owned.resources)
                        .inspect_err(|_| {
                            let _ = this.teardown(sandbox_id);
                        })?
                }
            };
            let pool_id = embryo.id;
            let claimed = this.claim(embryo, &spec_owned);
            lock(&this.inner.pool_ids).remove(&pool_id);
            claimed
        })
        .await
        .map_err(|e| SandboxError::Sys {
            call: "create task".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (spawned, record) = claimed?;
        self.watch(&record, spawned.pidfd)?;
        Ok(record)
    }

    async fn destroy(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        let live = lock(&self.inner.live).get(&record.id).cloned();
        if let Some(live) = &live {
            live.destroying
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = sys::pidfd_send_signal(live.pidfd.as_raw_fd(), libc::SIGKILL);
        }
        let this = self.clone();
        let sandbox_id = record.sandbox_id;
        tokio::task::spawn_blocking(move || this.teardown(sandbox_id))
            .await
            .map_err(|e| SandboxError::Sys {
                call: "teardown task".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
        if let Some(live) = live {
            let mut exited = live.exited.clone();
            let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|e| *e)).await;
        }
        lock(&self.inner.live).remove(&record.id);
        Ok(())
    }

    async fn adopt(&self, record: &SandboxRecord) -> Result<bool, SandboxError> {
        // Pin the process first, then check it is the sandbox's: a pid reused after the check
        // could not slip in.
        let Ok(pidfd) = sys::pidfd_open(record.agent_pid) else {
            return Ok(false);
        };
        let cgroup = self.inner.cgroups.existing(record.sandbox_id);
        if !self.inner.cgroups.contains(&cgroup, record.agent_pid) {
            return Ok(false);
        }
        if UnixStream::connect(self.socket_path(record.sandbox_id))
            .await
            .is_err()
        {
            return Ok(false);
        }
        self.watch(record, pidfd)?;
        Ok(true)
    }

    async fn sweep(&self, known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError> {
        let mut found: HashSet<Uuid> = self.inner.cgroups.list().into_iter().collect();
        for sub in ["sandboxes", "sockets"] {
            let dir = self.inner.config.data_dir.join(sub);
            for entry in fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if let Ok(id) = Uuid::parse_str(name.trim_end_matches(".sock")) {
                    found.insert(id);
                }
            }
        }
        let mut keep = lock(&self.inner.pool_ids).clone();
        // Sandboxes this process watches, by sandbox id, with the session each belongs to.
        let live: HashMap<Uuid, Uuid> = lock(&self.inner.live)
            .iter()
            .map(|(session, live)| (live.sandbox_id, *session))
            .collect();
        keep.extend(
            live.iter()
                .filter(|(_, session)| known.contains(session))
                .map(|(sandbox, _)| *sandbox),
        );
        let mut swept = Vec::new();
        for sandbox_id in found.into_iter().filter(|id| !keep.contains(id)) {
            let id = live.get(&sandbox_id).copied().unwrap_or(sandbox_id);
            self.destroy(&SandboxRecord {
                id,
                sandbox_id,
                agent_pid: 0,
            })
            .await?;
            swept.push(sandbox_id);
        }
        // What is left in `sandboxes/` is live: the skeletons none of them uses can go.
        let data = &self.inner.config.data_dir;
        match image::remove_unused(
            &data.join("images"),
            &self.inner.image.skeleton,
            &data.join("sandboxes"),
        ) {
            Ok(removed) => {
                for dir in removed {
                    tracing::info!(image = %dir.display(), "removed an image no sandbox uses");
                }
            }
            Err(e) => tracing::warn!(error = %e, "removing unused images failed"),
        }
        Ok(swept)
    }

    async fn connect(&self, id: Uuid) -> Result<UnixStream, SandboxError> {
        let sandbox_id = lock(&self.inner.live)
            .get(&id)
            .map(|live| live.sandbox_id)
            .ok_or(SandboxError::Gone(id))?;
        let path = self.socket_path(sandbox_id);
        UnixStream::connect(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SandboxError::Gone(id)
            } else {
                io("connect", &path)(e)
            }
        })
    }
}

/// Reads one status line from the sandbox's init, waiting at most `timeout`.
fn read_status_line(status: &OwnedFd, timeout: Duration) -> Result<String, String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("the sandbox did not report within {timeout:?}"));
        }
        let mut pfd = libc::pollfd {
            fd: status.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!(
                "waiting for the sandbox: {}",
                std::io::Error::last_os_error()
            ));
        }
        if rc <= 0 {
            continue;
        }
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte into a local buffer from a descriptor we own.
        match unsafe { libc::read(status.as_raw_fd(), byte.as_mut_ptr().cast(), 1) } {
            1 if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            1 => line.push(byte[0]),
            0 if line.is_empty() => return Err("the sandbox exited before reporting".into()),
            0 => return Ok(String::from_utf8_lossy(&line).into_owned()),
            _ => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("reading the sandbox's status: {err}"));
                }
            }
        }
    }
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every critical section here
/// is a single insert, remove or take).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the thread that deletes trashed sandbox directories, after emptying what an earlier
/// run left in `trash`.
fn start_trash_thread(trash: PathBuf) -> Result<std::sync::mpsc::Sender<PathBuf>, SandboxError> {
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    for entry in fs::read_dir(&trash).map_err(io("list", &trash))?.flatten() {
        let _ = tx.send(entry.path());
    }
    std::thread::Builder::new()
        .name("hutch-trash".into())
        .spawn(move || {
            for dir in rx {
                if let Err(e) = fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a destroyed sandbox's directory");
                }
            }
        })
        .map_err(sys_err("start trash thread"))?;
    Ok(tx)
}

/// Fails when a sandbox's root user could not reach `dir` (an ancestor lacks `o+x`).
fn check_reachable(dir: &Path) -> Result<(), SandboxError> {
    let dir = fs::canonicalize(dir).map_err(io("resolve", dir))?;
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor).map_err(io("stat", ancestor))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(SandboxError::InvalidSpec(format!(
                "data directory {} is not reachable by sandbox users: {} has mode {:o} (needs o+x); choose another data directory",
                dir.display(),
                ancestor.display(),
                meta.permissions().mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// A short stable name for this data directory, naming its cgroup parent.
fn instance_name(data_dir: &Path) -> String {
    use std::hash::Hasher;
    let canonical = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let mut hasher = image::StableHasher::default();
    hasher.write(canonical.as_os_str().as_encoded_bytes());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// `dir` and every directory below it.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(entry.path());
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_name_is_stable_and_short() {
        let a = instance_name(Path::new("/nonexistent/a"));
        assert_eq!(a, instance_name(Path::new("/nonexistent/a")));
        assert_ne!(a, instance_name(Path::new("/nonexistent/b")));
        assert_eq!(a.len(), 12);
    }
}
