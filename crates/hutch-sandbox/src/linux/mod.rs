//! The linux runtime: sandboxes made of namespaces, overlayfs and cgroups on this host.
//!
//! Building a sandbox (`build.rs`), step by step (see also [`crate::init`] for the
//! inside):
//!
//! 1. allocate its directories under `<data>/sandboxes/<id>/` (the mount point of its root)
//!    and its disk, where the overlay upper and work dirs live (a subvolume of the data
//!    directory's disk pool, `quota.rs`), owned by the host uid that root inside maps to;
//! 2. create its cgroups ([`cgroups`]);
//! 3. bind the agent's listening socket at `<data>/sockets/<id>.sock`, and write the
//!    [`InitConfig`](crate::init::InitConfig) into a pipe;
//! 4. `clone3` a child into new user, pid, mount, network, ipc and uts namespaces, straight
//!    into its cgroup v2 directory; write its uid/gid maps (root inside = an unprivileged host
//!    uid), join its v1 cgroups, then release it;
//! 5. the child execs the agent ([`AgentProgram`]: the lean `hutch-agent`, or `hutch agent`),
//!    which builds the root file system and reports `built`.
//!
//! Such a built sandbox waits in a small warm pool (`pool.rs`). [`Runtime::create`] claims one
//! (`claim.rs`): writes the session's limits into its cgroups, sends the
//! [`Claim`](crate::init::Claim) (host name, environment) and waits for the agent's `ok`, sent
//! once it has locked itself down. A sandbox keeps its own id (cgroup v2 directories cannot be
//! renamed); the [`SandboxRecord`] ties it to the session. Building takes 10–30 ms, mostly
//! because the first move of a process into a cgroup v1 hierarchy waits for an RCU grace
//! period; claiming takes about a millisecond. With an empty pool (or `warm_pool = 0`) `create`
//! builds and claims in one go. A claimed sandbox's agent is watched (`watch.rs`) so that its
//! death on its own is reported.
//!
//! Destroying (`teardown.rs`) kills the whole cgroup at once, waits for the agent to exit, removes the
//! cgroups and the socket, and moves the directory to `<data>/trash/`, which a background thread
//! (`trash.rs`) empties (deleting is slow on some disks; renaming is not). Mounts need no cleanup: they live
//! only in the sandbox's mount namespace, which the kernel frees with its last process.
//!
//! A sandbox outlives the server process that started it (agents are not tied to the server's
//! life), so a restarted server can [`Runtime::adopt`] it again; anything it cannot account for
//! (pooled sandboxes included) is removed by [`Runtime::sweep`] (both in `recovery.rs`).

mod build;
mod cgroups;
mod claim;
mod disk_pool;
mod freeze;
mod ids;
mod image;
pub mod index_proxy;
mod keepers;
mod leases;
pub mod network;
mod pool;
mod quota;
mod recovery;
mod snapshot;
mod teardown;
mod trash;
mod usage;
mod watch;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::sys;
use crate::{
    AgentConnection, Deaths, Runtime, RuntimeData, SandboxError, SandboxRecord, SandboxSpec,
};

use cgroups::CgroupError;
pub use quota::DiskQuotas;
use trash::start_trash_thread;
use watch::Live;

/// First host uid (and gid) of the pool of sandbox id ranges, by default: its first range
/// owns the shared image layers, and each sandbox maps its 65,536 ids onto a range of its own
/// above it (see `ids.rs`); none of them is a host user.
pub const DEFAULT_UID_BASE: u32 = 1_000_000_000;
/// Number of ids mapped into each sandbox.
pub const UID_COUNT: u32 = 65_536;
/// Number of sandbox id ranges in the pool by default (at most this many sandboxes, pooled
/// ones included, at once): up to host id 1,000,000,000 + 8,193 × 65,536 − 1 ≈ 1.54e9.
pub const DEFAULT_UID_RANGES: u32 = 8_192;

/// The program every sandbox runs as its agent (PID 1 of the sandbox), with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProgram {
    /// The executable, opened once when the runtime starts.
    pub path: PathBuf,
    /// Its argument vector, `argv[0]` included.
    pub argv: Vec<CString>,
}

impl AgentProgram {
    /// The agent role of the `hutch` executable at `path`: `hutch agent`.
    pub fn hutch(path: PathBuf) -> AgentProgram {
        AgentProgram {
            path,
            argv: vec![c"hutch".to_owned(), c"agent".to_owned()],
        }
    }

    /// The lean agent executable at `path` (`hutch-agent`, which holds only the agent).
    pub fn lean(path: PathBuf) -> AgentProgram {
        AgentProgram {
            path,
            argv: vec![c"hutch-agent".to_owned()],
        }
    }
}

/// Settings of the linux runtime.
#[derive(Debug, Clone)]
pub struct LinuxConfig {
    /// hutch's data directory; sandboxes live under `sandboxes/`, sockets under `sockets/`.
    pub data_dir: PathBuf,
    /// First host uid and gid of the id pool: the range from here owns the shared image
    /// layers; sandboxes get the ranges above it.
    pub uid_base: u32,
    /// How many sandbox id ranges (of [`UID_COUNT`] ids each) the pool holds above its first.
    pub uid_ranges: u32,
    /// The program every sandbox runs as its agent.
    pub agent: AgentProgram,
    /// How long a sandbox may take to report ready.
    pub start_timeout: Duration,
    /// How many built, unclaimed sandboxes of the `default` image to keep ready.
    pub warm_pool: usize,
    /// How many built, unclaimed sandboxes to keep ready for each recently used OCI image.
    pub warm_pool_per_image: usize,
    /// How many OCI images (the most recently used) the warm pool keeps sandboxes for.
    pub warm_pool_images: usize,
    /// Disk quota in MiB of sessions that ask for none (built into the warm pool's sandboxes);
    /// `None`: no quota.
    pub disk_mb_default: Option<u64>,
    /// Largest disk quota in MiB a session may ask for.
    pub disk_mb_max: u64,
    /// How disk quotas are made (a subvolume of one shared file system, by default).
    pub disk_quotas: DiskQuotas,
    /// MiB that must stay free on the data directory's file system: below it, sessions'
    /// disks in the shared pool take no more writes (see `disk_pool.rs`).
    pub disk_floor_mb: u64,
    /// Largest upload the file API of each sandbox accepts, in bytes; `None`: the agent's
    /// default.
    pub max_upload_bytes: Option<u64>,
    /// Sandbox networking; `None`: every sandbox has only `lo`.
    pub network: Option<network::NetworkConfig>,
    /// The operator's package indexes (pip's, npm's), reachable from every sandbox through
    /// its proxy.
    pub package_indexes: Vec<index_proxy::PackageIndex>,
    /// System calls added to the seccomp allow list of every sandbox (checked with
    /// [`crate::check_seccomp_allow`]).
    pub seccomp_allow: Vec<String>,
    /// Compiles the python worker ahead, once, for the `default` image's interpreter (given
    /// its host path): the sandboxes of that image then start python workers from it (see
    /// [`crate::init::PYTHON_COMPILED_FD`]). `None`, or a failure: from their source.
    pub python_compiler: Option<PythonCompiler>,
}

/// Compiles the python worker for the interpreter at a host path, into a sealed, read-only
/// file (`hutch_agent::compile_python_worker`).
pub type PythonCompiler = fn(&Path) -> std::io::Result<OwnedFd>;

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
            uid_ranges: DEFAULT_UID_RANGES,
            agent: AgentProgram::hutch(exe),
            start_timeout: Duration::from_secs(10),
            warm_pool: 4,
            warm_pool_per_image: 2,
            warm_pool_images: 4,
            disk_mb_default: Some(hutch_api::limits::DISK_MB_DEFAULT),
            disk_mb_max: hutch_api::limits::DISK_MB_RANGE.1,
            disk_quotas: DiskQuotas::default(),
            disk_floor_mb: DISK_FLOOR_MB,
            max_upload_bytes: None,
            network: None,
            package_indexes: Vec::new(),
            seccomp_allow: Vec::new(),
            python_compiler: None,
        })
    }
}

struct Inner {
    config: LinuxConfig,
    /// Built sandboxes ready to claim, per image.
    pool: Mutex<pool::Pool>,
    /// Ids of pooled sandboxes and of those being built for the pool.
    pool_ids: Mutex<HashSet<Uuid>>,
    /// Wakes the pool filler.
    pool_wanted: tokio::sync::Notify,
    /// Set at shutdown: sandboxes built for the pool from then on are torn down, not pooled.
    closing: std::sync::atomic::AtomicBool,
    /// Directories to delete, handed to the trash thread.
    trash: std::sync::mpsc::Sender<PathBuf>,
    /// Where sandboxes' writable layers get their quota.
    disks: quota::Disks,
    cgroups: cgroups::Cgroups,
    /// Each sandbox's own range of host ids.
    ids: ids::IdRanges,
    /// This runtime's name on the data directory, and which sandboxes it keeps.
    keeper: keepers::Keeper,
    image: image::DefaultImage,
    /// hutch's layers above and below every OCI image's.
    oci_layers: image::OciLayers,
    /// The agent binary, opened once (descriptor numbered above the child's targets).
    agent_exe: OwnedFd,
    /// The agent's argument vector.
    agent_argv: Vec<CString>,
    /// The python worker compiled for the `default` image's interpreter, when it could be.
    python_compiled: Option<OwnedFd>,
    live: Mutex<HashMap<Uuid, Arc<Live>>>,
    /// Sandbox networking, when the server gives sandboxes any.
    network: Option<network::Network>,
    /// Package index proxies, when the operator names an index.
    index_proxies: Option<index_proxy::IndexProxies>,
    /// Where deaths are reported: the sender of the latest [`Runtime::deaths`].
    died: Mutex<mpsc::UnboundedSender<Uuid>>,
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

/// The python worker compiled with `compile` for `image`'s interpreter; `None` (logged) when
/// the image has no `python3` of the host's or it cannot compile.
fn compile_python_worker(compile: PythonCompiler, image: &image::DefaultImage) -> Option<OwnedFd> {
    let Some(python) = image.python() else {
        tracing::info!("the default image has no python3: python workers start from their source");
        return None;
    };
    match compile(&python) {
        Ok(fd) => {
            tracing::info!(python = %python.display(), "python worker compiled ahead for the default image");
            Some(fd)
        }
        Err(error) => {
            tracing::warn!(python = %python.display(), %error, "cannot compile the python worker ahead: python workers start from their source");
            None
        }
    }
}

/// Default of [`LinuxConfig::disk_floor_mb`]: half the server's default disk reserve.
pub const DISK_FLOOR_MB: u64 = 512;

/// Longest unix socket path (`sun_path` is 108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 107;

impl LinuxRuntime {
    /// Prepares the host: checks the data directory, builds the `default` image and hutch's
    /// cgroup parents.
    pub fn new(config: LinuxConfig) -> Result<LinuxRuntime, SandboxError> {
        let data = &config.data_dir;
        for dir in [
            data.clone(),
            data.join("sandboxes"),
            data.join("sockets"),
            data.join("images"),
            data.join("trash"),
            data.join("leases"),
            data.join("sessions"),
        ] {
            fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        }
        // The sandbox's root user reaches its layers through these; nothing in them is listable.
        for dir in [data.clone(), data.join("sandboxes"), data.join("images")] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
                .map_err(io("chmod", &dir))?;
        }
        // A torn-down sandbox's files wait in `trash/` while its id range may serve another.
        for dir in [
            data.join("sockets"),
            data.join("trash"),
            data.join("leases"),
            data.join("sessions"),
        ] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io("chmod", &dir))?;
        }
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
        let ids = ids::IdRanges::new(data, config.uid_base, config.uid_ranges)?;
        let keeper = keepers::Keeper::start(data)?;
        check_idmap(&data.join("images"))?;
        let cgroups = cgroups::Cgroups::detect(&instance)?;
        let image = image::build_default(&data.join("images"), config.uid_base)
            .map_err(io("build image in", &data.join("images")))?;
        let oci_layers = image::build_oci_layers(&data.join("images"), config.uid_base)
            .map_err(io("build image layers in", &data.join("images")))?;
        let exe =
            sys::open(&config.agent.path, libc::O_PATH).map_err(io("open", &config.agent.path))?;
        let agent_exe =
            sys::dup_above(exe.as_raw_fd(), 100).map_err(sys_err("dup agent binary"))?;
        let agent_argv = config.agent.argv.clone();
        let python_compiled = config
            .python_compiler
            .and_then(|compile| compile_python_worker(compile, &image));
        tracing::info!(
            data_dir = %data.display(),
            cgroup_limits = ?cgroups.limits_via(),
            image = %image.skeleton.display(),
            "linux runtime ready"
        );
        let network = config
            .network
            .clone()
            .map(|net| network::Network::start(net, &instance, data))
            .transpose()?;
        let index_proxies = index_proxy::IndexProxies::new(config.package_indexes.clone());
        // Nothing is watched before the server asks for deaths: this first receiver can go.
        let (died, _) = mpsc::unbounded_channel();
        let trash = start_trash_thread(data.join("trash"))?;
        let disks = quota::Disks::start(data, config.disk_quotas, config.disk_floor_mb);
        let inner = Inner {
            config,
            pool: Mutex::new(pool::Pool::default()),
            pool_ids: Mutex::new(HashSet::new()),
            pool_wanted: tokio::sync::Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            trash,
            disks,
            cgroups,
            ids,
            keeper,
            image,
            oci_layers,
            agent_exe,
            agent_argv,
            python_compiled,
            live: Mutex::new(HashMap::new()),
            network,
            index_proxies,
            died: Mutex::new(died),
        };
        let runtime = LinuxRuntime {
            inner: Arc::new(inner),
        };
        runtime.reserve_found_ranges()?;
        Ok(runtime)
    }

    /// Marks the id ranges of the sandboxes an earlier server process left in `sandboxes/`
    /// (by their directory's owner) as held, until adoption keeps them or the sweep tears them
    /// down: no new sandbox gets a range a live one may still run in.
    fn reserve_found_ranges(&self) -> Result<(), SandboxError> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.inner.config.data_dir.join("sandboxes");
        for entry in fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
            let Ok(id) = Uuid::parse_str(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if !self.inner.ids.reserve(id, meta.uid()) {
                tracing::warn!(sandbox = %id, owner = meta.uid(), "a sandbox directory's owner starts no free id range of this server");
            }
        }
        Ok(())
    }

    /// The directory of sandbox `id`.
    fn sandbox_dir(&self, id: Uuid) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("sandboxes")
            .join(id.to_string())
    }

    /// The link `<data>/sessions/<session>` to the agent socket of the session's sandbox: how
    /// every server process on this data directory reaches a session's agent.
    fn session_link(&self, session: Uuid) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("sessions")
            .join(session.to_string())
    }

    /// Links session `session` to sandbox `sandbox_id`'s agent socket (replacing any link).
    fn link_session(&self, session: Uuid, sandbox_id: Uuid) -> Result<(), SandboxError> {
        let link = self.session_link(session);
        let tmp = link.with_extension(format!("new-{}", Uuid::new_v4().simple()));
        let target = Path::new("../sockets").join(format!("{sandbox_id}.sock"));
        std::os::unix::fs::symlink(&target, &tmp)
            .and_then(|()| fs::rename(&tmp, &link))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io("link", &link)(e)
            })
    }

    /// The sandbox session `session` is linked to, by any server process on this data
    /// directory.
    fn linked_sandbox(&self, session: Uuid) -> Option<Uuid> {
        linked_sandbox(&self.session_link(session))
    }

    /// Removes session `session`'s link if it leads to sandbox `sandbox_id`.
    fn unlink_session(&self, session: Uuid, sandbox_id: Uuid) {
        if self.linked_sandbox(session) == Some(sandbox_id) {
            let _ = fs::remove_file(self.session_link(session));
        }
    }

    /// Removes the links whose sandbox is gone, and half-made ones (left by a crash); returns
    /// how many.
    fn reconcile_session_links(&self) -> usize {
        let dir = self.inner.config.data_dir.join("sessions");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let gone = match linked_sandbox(&path) {
                Some(sandbox) => {
                    !self.sandbox_dir(sandbox).exists() && !self.socket_path(sandbox).exists()
                }
                None => true,
            };
            if gone && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The sandbox of session `id`: the one this process watches, else the one any server
    /// process on this data directory linked it to.
    fn sandbox_of(&self, id: Uuid) -> Result<Uuid, SandboxError> {
        let watched = lock(&self.inner.live).get(&id).map(|live| live.sandbox_id);
        watched
            .or_else(|| self.linked_sandbox(id))
            .ok_or(SandboxError::Gone(id))
    }

    /// The agent socket of sandbox `id`.
    fn socket_path(&self, id: Uuid) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("sockets")
            .join(format!("{id}.sock"))
    }
}

#[async_trait]
impl Runtime for LinuxRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        self.create_sandbox(spec).await
    }

    async fn destroy(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        self.destroy_sandbox(record).await
    }

    async fn adopt(&self, record: &SandboxRecord) -> Result<bool, SandboxError> {
        self.adopt_sandbox(record).await
    }

    async fn sweep(&self, known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError> {
        self.sweep_unknown(known).await
    }

    fn process_id(&self) -> Option<String> {
        Some(self.inner.keeper.id().to_string())
    }

    fn dead_processes(&self) -> Vec<String> {
        self.inner
            .keeper
            .dead_others()
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    fn reaches(&self, record: &SandboxRecord) -> bool {
        // Its directory is on this data directory: a process sharing it made the sandbox.
        self.sandbox_dir(record.sandbox_id).exists()
    }

    async fn set_network(
        &self,
        record: &SandboxRecord,
        policy: &hutch_api::NetworkPolicy,
    ) -> Result<(), SandboxError> {
        let network = self.inner.network.as_ref().ok_or_else(no_network)?;
        network.update(
            record.sandbox_id,
            &self.sandbox_dir(record.sandbox_id),
            policy,
        )
    }

    fn network_counters(&self) -> HashMap<Uuid, network::NetworkCounters> {
        let Some(network) = &self.inner.network else {
            return HashMap::new();
        };
        let by_sandbox = network.counters();
        lock(&self.inner.live)
            .iter()
            .filter_map(|(session, live)| by_sandbox.get(&live.sandbox_id).map(|c| (*session, *c)))
            .collect()
    }

    async fn set_deadline(&self, id: Uuid, deadline: SystemTime) -> Result<(), SandboxError> {
        let sandbox_id = self.sandbox_of(id)?;
        let dir = self.sandbox_dir(sandbox_id);
        crate::deadline::write(&dir, deadline).map_err(|source| SandboxError::Io {
            op: "set the deadline in",
            path: dir,
            source,
        })
    }

    async fn forget_image(&self, key: &str) {
        self.forget_pooled_image(key).await;
    }

    fn can_pause(&self) -> bool {
        true
    }

    async fn set_frozen(&self, record: &SandboxRecord, frozen: bool) -> Result<(), SandboxError> {
        self.set_frozen_sandbox(record, frozen).await
    }

    fn stats(&self, record: &SandboxRecord) -> Result<hutch_api::SessionStats, SandboxError> {
        self.sandbox_stats(record)
    }

    fn all_stats(&self) -> HashMap<Uuid, hutch_api::SessionStats> {
        self.every_sandbox_stats()
    }

    fn deaths(&self) -> Deaths {
        let (died, deaths) = mpsc::unbounded_channel();
        *lock(&self.inner.died) = died;
        deaths
    }

    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError> {
        let sandbox_id = self.sandbox_of(id)?;
        let path = self.socket_path(sandbox_id);
        match UnixStream::connect(&path).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SandboxError::Gone(id)),
            Err(e) => Err(io("connect", &path)(e)),
        }
    }

    async fn snapshot(
        &self,
        record: &SandboxRecord,
        into: &Path,
    ) -> Result<crate::SnapshotReport, SandboxError> {
        self.snapshot_root(record, into).await
    }
}

/// What the linux runtime keeps in a [`SandboxRecord`] beside the ids.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinuxData {
    /// Host pid of the sandbox's agent (PID 1 inside).
    agent_pid: i32,
}

/// The record of a claimed sandbox whose agent runs as host pid `agent_pid`.
fn record(id: Uuid, sandbox_id: Uuid, agent_pid: i32) -> Result<SandboxRecord, SandboxError> {
    Ok(SandboxRecord {
        id,
        sandbox_id,
        runtime: RuntimeData::encode(&LinuxData { agent_pid })?,
    })
}

/// The host pid of the agent of the sandbox `record` names.
fn agent_pid(record: &SandboxRecord) -> Result<i32, SandboxError> {
    Ok(record.runtime.decode::<LinuxData>()?.agent_pid)
}

/// A record naming only the sandbox, enough for [`Runtime::destroy`] (which finds the rest by
/// the sandbox id).
fn bare_record(id: Uuid, sandbox_id: Uuid) -> SandboxRecord {
    SandboxRecord {
        id,
        sandbox_id,
        runtime: RuntimeData::default(),
    }
}

/// The sandbox whose agent socket the session link at `link` leads to.
fn linked_sandbox(link: &Path) -> Option<Uuid> {
    let target = fs::read_link(link).ok()?;
    let name = target.file_name()?.to_str()?;
    Uuid::parse_str(name.strip_suffix(".sock")?).ok()
}

/// The error for a network policy on a server that gives sandboxes no network.
fn no_network() -> SandboxError {
    SandboxError::InvalidSpec(
        "this server gives sessions no network (its operator has not enabled it)".into(),
    )
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every critical section here
/// is a single insert, remove or take).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails when the file system of `dir` cannot be idmapped (sandboxes see the shared layers
/// through idmapped mounts of it).
fn check_idmap(dir: &Path) -> Result<(), SandboxError> {
    let map = format!("0 {DEFAULT_UID_BASE} 1\n");
    let ns = hutch_sys::idmap::user_namespace(&map).map_err(sys_err("create a user namespace"))?;
    hutch_sys::idmap::idmapped_tree(dir, std::os::fd::AsFd::as_fd(&ns)).map_err(|e| {
        SandboxError::InvalidSpec(format!(
            "the data directory's file system cannot be idmapped ({e}), which sandboxes need to see the shared image layers in their own id range; put the data directory on ext4, xfs, btrfs or tmpfs"
        ))
    })?;
    Ok(())
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

/// The cgroups of the server whose data directory is `data_dir`: `hutch/<instance>/`
/// below the root of each cgroup hierarchy it uses (for tools that watch a server's sandboxes
/// come and go, such as `hutch bench soak`).
pub fn cgroup_parent(data_dir: &Path) -> PathBuf {
    Path::new("hutch").join(instance_name(data_dir))
}

/// A short stable name for this data directory, naming its cgroup parent.
fn instance_name(data_dir: &Path) -> String {
    use std::hash::Hasher;
    let canonical = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let mut hasher = image::StableHasher::default();
    hasher.write(canonical.as_os_str().as_encoded_bytes());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
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
