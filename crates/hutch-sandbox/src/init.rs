//! The inside of a sandbox: what its first process does before it serves.
//!
//! `hutch agent` starts as PID 1 of new user, pid, mount, network, ipc and uts namespaces,
//! already in the sandbox's cgroups and running as root of its user namespace (see
//! [`crate::linux`]). [`enter`] then speaks a two-step protocol with the runtime, one JSON line
//! at a time on [`CONFIG_FD`] and one status line at a time on [`STATUS_FD`]:
//!
//! 1. read an [`InitConfig`], create the sandbox's [`crate::deadline`] file beside its root
//!    (kept open read-only) and build the root file system:
//!    make every mount private, so nothing below propagates to the host; mount the overlays of
//!    the image (root first, then each host system directory); mount a fresh `/proc` (masking
//!    kernel files as container runtimes do), a minimal `/dev` (null, zero, full, random,
//!    urandom, tty, a private devpts, shm) and a tmpfs `/tmp`; `pivot_root` into it and detach
//!    the old root. Report `built`.
//! 2. wait for a [`Claim`]: the sandbox now belongs to a session (until then it sits in the
//!    runtime's warm pool). Set the host name, bring `lo` up, enter a new cgroup namespace, drop
//!    every capability outside a small set, set `no_new_privs` and install the seccomp filter
//!    of [`crate::seccomp`]. Report `ok`; the agent then serves on [`LISTENER_FD`].
//!
//! Any failure is reported as `error: <what failed>` instead. Every process the agent starts
//! inherits the lock-down.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::deadline::DeadlineFile;
use crate::sys;

/// Descriptor the init configuration is read from (a pipe, closed after reading).
pub const CONFIG_FD: RawFd = 3;
/// Descriptor the sandbox reports readiness or its setup error on (a pipe).
pub const STATUS_FD: RawFd = 4;
/// Descriptor of the listening unix socket the agent serves on.
pub const LISTENER_FD: RawFd = 5;
/// Descriptor of the sandbox's delegated cgroup v2 directory, when the host has one.
pub const CGROUP_FD: RawFd = 6;
/// Descriptor the first process waits on before it execs (used only before `execve`).
pub(crate) const GO_FD: RawFd = 7;
/// Descriptor of the session's out-of-memory counters, opened read-only by the runtime: the
/// memory cgroup's `memory.events` (v2) or `memory.oom_control` (v1), whose `oom_kill` line
/// counts the processes the kernel's OOM killer killed in the sandbox.
pub const MEMORY_EVENTS_FD: RawFd = 8;
/// Descriptors of the `tasks` files of the sandbox's v1 `user/` cgroups (memory, pids, cpu),
/// opened write-only by the runtime where v1 holds the limits: every process the agent starts
/// moves itself into them (see [`crate::process`]).
pub const USER_CGROUP_TASKS_FDS: [RawFd; 3] = [9, 10, 11];
/// Descriptors of detached, idmapped copies of the host directories that hold shared layers
/// (see [`InitConfig::idmapped`]), made by the runtime.
pub const IDMAPPED_FDS: [RawFd; 4] = [12, 13, 14, 15];
/// Descriptor of the python worker compiled ahead for the image's interpreter (a sealed,
/// read-only memfd the server made; see `hutch_agent::compile_python_worker`).
pub const PYTHON_COMPILED_FD: RawFd = 16;

/// One overlay mount of the sandbox's root file system.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayMount {
    /// Where it goes inside the sandbox (`/`, `/usr`, …).
    pub target: PathBuf,
    /// Read-only lower directories on the host, topmost first.
    pub lower: Vec<PathBuf>,
    /// The session's writable upper directory on the host.
    pub upper: PathBuf,
    /// Overlayfs work directory on the host (same file system as `upper`).
    pub work: PathBuf,
}

/// Everything the sandbox's first process needs to build its root file system.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitConfig {
    /// Host directory the new root is assembled on.
    pub rootfs: PathBuf,
    /// Overlays, root first.
    pub overlays: Vec<OverlayMount>,
    /// Whether [`CGROUP_FD`] holds the sandbox's delegated cgroup v2 directory.
    pub has_cgroup_dir: bool,
    /// Whether [`MEMORY_EVENTS_FD`] holds the sandbox's out-of-memory counters.
    #[serde(default)]
    pub has_memory_events: bool,
    /// Size in MiB of the tmpfs that holds `/dev`, `/dev/shm` and `/tmp` at most; the share of
    /// the session's memory limit alone when absent (see [`tmpfs_size`]). Set with a disk
    /// quota.
    #[serde(default)]
    pub tmpfs_mb: Option<u64>,
    /// How many of [`USER_CGROUP_TASKS_FDS`] the runtime passed.
    #[serde(default)]
    pub user_cgroup_tasks: usize,
    /// System calls the operator adds to the seccomp allow list.
    #[serde(default)]
    pub seccomp_allow: Vec<String>,
    /// Host directories holding shared lower layers, each to be covered (before the overlays
    /// are mounted) by its idmapped copy from the matching [`IDMAPPED_FDS`] descriptor, which
    /// shows the layers' owners in this sandbox's own id range.
    #[serde(default)]
    pub idmapped: Vec<PathBuf>,
    /// Whether [`PYTHON_COMPILED_FD`] holds the python worker compiled ahead.
    #[serde(default)]
    pub has_python_compiled: bool,
}

/// Size in MiB of the one tmpfs that holds `/tmp`, `/dev/shm` and `/dev` for a session with
/// `memory_mb` of memory (and a disk quota of `disk_mb`): three quarters of the memory limit,
/// at most the disk quota. Its pages are memory charged to the writer's cgroup, so it stays
/// below the limit and a writer that fills it gets `ENOSPC`, with room left to run commands.
pub fn tmpfs_size(memory_mb: u64, disk_mb: Option<u64>) -> u64 {
    (memory_mb / 4 * 3).min(disk_mb.unwrap_or(u64::MAX)).max(1)
}

/// What makes a built sandbox a session's: sent when the runtime hands it out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Host name inside the sandbox.
    pub hostname: String,
    /// Environment of every process the agent starts.
    pub env: BTreeMap<String, String>,
    /// Largest upload the agent's file API accepts, in bytes (its default when absent).
    #[serde(default)]
    pub max_upload_bytes: Option<u64>,
    /// The session's memory limit in MiB, named when the OOM killer acts.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// The resolver of a networked sandbox: `/etc/resolv.conf` names it alone.
    #[serde(default)]
    pub nameserver: Option<std::net::Ipv4Addr>,
    /// The name of the image the sandbox runs, named when a program is missing from it.
    #[serde(default)]
    pub image: Option<String>,
    /// The default working directory (the image's `WorkingDir`); `/workspace` when absent.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The user commands and contexts run as (the image's `User`: `name`, `uid`,
    /// `name:group`, `uid:gid`); root when absent.
    #[serde(default)]
    pub user: Option<String>,
}

/// A sandbox set up and claimed, ready to serve once it says so.
#[derive(Debug)]
pub struct Sandboxed {
    ready: Ready,
    status: fs::File,
}

/// What the agent of a sandbox that is set up and claimed serves with.
#[derive(Debug)]
pub struct Ready {
    /// The listening unix socket.
    pub listener: OwnedFd,
    /// The delegated cgroup v2 directory, if any.
    pub cgroup_dir: Option<OwnedFd>,
    /// The session's out-of-memory counters (read-only), if any.
    pub memory_events: Option<OwnedFd>,
    /// The python worker compiled ahead for the image's interpreter (read-only), if any.
    pub python_compiled: Option<OwnedFd>,
    /// The session's part of the configuration.
    pub claim: Claim,
    /// The sandbox's deadline, as the runtime writes it.
    pub deadline: DeadlineFile,
}

impl Sandboxed {
    /// Tells the runtime the sandbox is ready; closes the status pipe.
    pub fn report_ready(mut self) -> Ready {
        let _ = self.status.write_all(b"ok\n");
        self.ready
    }
}

/// A setup step that failed, with the step named.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The process is not the first process of a fresh sandbox (run by hand, say): setting up
    /// would remount the host.
    #[error("not started by the hutch runtime as PID 1 of a new sandbox; refusing to set up")]
    NotInSandbox,
    /// The configuration could not be read or parsed.
    #[error("reading init config: {0}")]
    Config(String),
    /// A step of the setup failed.
    #[error("{step}: {source}")]
    Step {
        /// The step.
        step: &'static str,
        /// The OS error, which names the path or call.
        #[source]
        source: io::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> InitError {
    move |source| InitError::Step { step, source }
}

/// Reads the configuration and builds the sandbox around the calling process. A failure is
/// also reported to the server on [`STATUS_FD`].
///
/// Must run as PID 1 of the sandbox, single-threaded, before any runtime starts.
pub fn enter() -> Result<Sandboxed, InitError> {
    if !in_fresh_sandbox() {
        return Err(InitError::NotInSandbox);
    }
    // SAFETY: the runtime hands these descriptors to the sandbox's first process at these
    // numbers (see linux::LinuxRuntime); nothing else in this process owns them.
    let (config_fd, status, listener) = unsafe {
        (
            OwnedFd::from_raw_fd(CONFIG_FD),
            OwnedFd::from_raw_fd(STATUS_FD),
            OwnedFd::from_raw_fd(LISTENER_FD),
        )
    };
    let mut status = fs::File::from(status);
    match set_up(config_fd, listener, &mut status) {
        Ok(ready) => Ok(Sandboxed { ready, status }),
        Err(error) => {
            let _ = writeln!(status, "error: {error}");
            Err(error)
        }
    }
}

fn read_line<T: serde::de::DeserializeOwned>(
    reader: &mut impl BufRead,
    what: &str,
) -> Result<T, InitError> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(InitError::Config(format!(
            "the runtime closed the pipe before sending the {what}"
        ))),
        Ok(_) => serde_json::from_str(&line).map_err(|e| InitError::Config(format!("{what}: {e}"))),
        Err(e) => Err(InitError::Config(format!("{what}: {e}"))),
    }
}

fn set_up(
    config_fd: OwnedFd,
    listener: OwnedFd,
    status: &mut fs::File,
) -> Result<Ready, InitError> {
    let mut config_pipe = io::BufReader::new(fs::File::from(config_fd));
    let config: InitConfig = read_line(&mut config_pipe, "init config")?;
    let cgroup_dir = config.has_cgroup_dir.then(|| {
        // SAFETY: as above; present exactly when the config says so.
        unsafe { OwnedFd::from_raw_fd(CGROUP_FD) }
    });
    let memory_events = config.has_memory_events.then(|| {
        // SAFETY: as above; present exactly when the config says so.
        unsafe { OwnedFd::from_raw_fd(MEMORY_EVENTS_FD) }
    });
    let python_compiled = config.has_python_compiled.then(|| {
        // SAFETY: as above; present exactly when the config says so.
        unsafe { OwnedFd::from_raw_fd(PYTHON_COMPILED_FD) }
    });
    set_cloexec(&listener).map_err(step("close-on-exec"))?;
    for fd in cgroup_dir
        .iter()
        .chain(memory_events.iter())
        .chain(python_compiled.iter())
    {
        set_cloexec(fd).map_err(step("close-on-exec"))?;
    }
    let user_tasks: Vec<OwnedFd> = USER_CGROUP_TASKS_FDS
        .iter()
        .take(config.user_cgroup_tasks)
        // SAFETY: as above; the first `user_cgroup_tasks` are present.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    for fd in &user_tasks {
        set_cloexec(fd).map_err(step("close-on-exec"))?;
    }
    crate::process::start_in_cgroups(user_tasks);
    let idmapped: Vec<OwnedFd> = IDMAPPED_FDS
        .iter()
        .take(config.idmapped.len())
        // SAFETY: as above; one is present for each idmapped directory.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    // The sandbox's host directory holds the root's mount point: the deadline file goes
    // beside it, while the host's file system is still in reach.
    let sandbox_dir = config.rootfs.parent().unwrap_or(Path::new("/"));
    let deadline = DeadlineFile::create_in(sandbox_dir).map_err(step("deadline file"))?;
    // The mount namespace is made here, not at the clone: a copy of the host's mount table
    // that any file of this process still references stays in the kernel for the sandbox's
    // life, detached root or not. Made at the clone, the copy was what the loader mapped this
    // executable's libraries (and the deadline file) from: every sandbox then kept a copy of
    // every mount the host had when it started, other sandboxes' disks among them (about
    // 0.5 MiB a session at 2,800 sessions, growing with the count). Unshared now, after
    // everything that stays open was opened, nothing references the copy once the old root
    // is detached, and the kernel frees it.
    sys::unshare(libc::CLONE_NEWNS).map_err(step("new mount namespace"))?;
    build_root(&config, idmapped)?;
    // The cgroup namespace is rooted at the sandbox's cgroup, which the runtime then moves
    // this process out of into `agent/`: `user/`, where commands start, stays inside it.
    sys::unshare(libc::CLONE_NEWCGROUP).map_err(step("new cgroup namespace"))?;
    status.write_all(b"built\n").map_err(step("report built"))?;
    let claim: Claim = read_line(&mut config_pipe, "claim")?;
    if let Some(memory_mb) = claim.memory_mb {
        size_tmpfs(tmpfs_size(memory_mb, config.tmpfs_mb)).map_err(step("size /tmp"))?;
    }
    lock_down(&claim, &config.seccomp_allow)?;
    Ok(Ready {
        listener,
        cgroup_dir,
        memory_events,
        python_compiled,
        claim,
        deadline,
    })
}

/// PID 1 of its pid namespace, and in a user namespace that does not map host root.
fn in_fresh_sandbox() -> bool {
    // SAFETY: getpid has no arguments and cannot fail.
    let pid = unsafe { libc::getpid() };
    let uid_map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let maps_host_root = uid_map.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        matches!(fields.as_slice(), [_, "0", _])
    });
    pid == 1 && !uid_map.trim().is_empty() && !maps_host_root
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor this process owns.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(sys::last_error("fcntl FD_CLOEXEC"));
    }
    Ok(())
}

fn inside(rootfs: &Path, target: &Path) -> PathBuf {
    rootfs.join(target.strip_prefix("/").unwrap_or(target))
}

fn build_root(config: &InitConfig, idmapped: Vec<OwnedFd>) -> Result<(), InitError> {
    let root = &config.rootfs;
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(step("make mounts private"))?;

    // The shared layers' directories, seen in this sandbox's id range (the descriptors close
    // here; the mounts stay).
    for (tree, dir) in idmapped.into_iter().zip(&config.idmapped) {
        hutch_sys::idmap::attach(&tree, dir).map_err(step("attach idmapped layers"))?;
    }

    for overlay in &config.overlays {
        mount_overlay(&inside(root, &overlay.target), overlay).map_err(step("mount overlay"))?;
    }

    let proc_dir = root.join("proc");
    mount_scratch(root, &proc_dir, config.tmpfs_mb).map_err(step("mount /dev and /tmp"))?;
    sys::mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev | libc::MS_NOEXEC,
        None,
    )
    .map_err(step("mount /proc"))?;

    let dev = root.join("dev");
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        fs::File::create(&target).map_err(step("create device node"))?;
        sys::mount(
            Some(&format!("/dev/{node}")),
            &target,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(step("bind device node"))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(step("create /dev link"))?;
    }
    fs::create_dir(dev.join("pts")).map_err(step("mkdir /dev/pts"))?;
    sys::mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(step("mount /dev/pts"))?;

    // Mask kernel interfaces that say too much about the host, as container runtimes do.
    for masked in [
        "kcore",
        "keys",
        "timer_list",
        "sched_debug",
        "sysrq-trigger",
        "latency_stats",
    ] {
        let path = proc_dir.join(masked);
        if path.exists() {
            sys::mount(Some("/dev/null"), &path, None, libc::MS_BIND, None)
                .map_err(step("mask /proc file"))?;
        }
    }
    for read_only in ["sys", "irq", "bus", "fs"] {
        let path = proc_dir.join(read_only);
        if path.exists() {
            sys::mount(
                Some(&path.display().to_string()),
                &path,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(step("bind /proc dir"))?;
            sys::mount(
                None,
                &path,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nosuid_nodev | libc::MS_NOEXEC,
                None,
            )
            .map_err(step("make /proc dir read-only"))?;
        }
    }

    std::env::set_current_dir(root).map_err(step("chdir to new root"))?;
    sys::pivot_root(Path::new("."), Path::new(".")).map_err(step("pivot_root"))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH).map_err(step("detach old root"))?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    Ok(())
}

/// Mounts one tmpfs as `/dev`, `/dev/shm` and `/tmp` of `root`: three bind mounts of its
/// directories `dev`, `shm` and `tmp`, each with its own flags (`/dev` `nosuid,noexec`, the
/// other two `nosuid,nodev`). `staging` is an empty directory of `root` where the tmpfs is
/// mounted first and detached from again.
///
/// One file system instead of three because every superblock registers a shrinker with the
/// kernel, and every memory cgroup holds a slot for every shrinker: a cost that grows with
/// sessions × superblocks (see the operations guide on density). tmpfs pages are charged to
/// the memory cgroup of whoever writes them; the claim sizes the tmpfs to a share of the
/// session's memory limit (see [`tmpfs_size`]), so a full `/tmp` is `ENOSPC`, as on disk, long
/// before the limit. `/tmp`, `/dev/shm` and `/dev` share that size.
fn mount_scratch(root: &Path, staging: &Path, size_mb: Option<u64>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let options = match size_mb {
        Some(mb) => format!("mode=755,size={mb}m"),
        None => "mode=755".to_owned(),
    };
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    sys::mount(
        Some("tmpfs"),
        staging,
        Some("tmpfs"),
        nosuid_nodev,
        Some(&options),
    )?;
    let dir = |name: &str, mode: u32| -> io::Result<PathBuf> {
        let path = staging.join(name);
        fs::create_dir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(path)
    };
    let dev = dir("dev", 0o755)?;
    dir("dev/shm", 0o755)?; // where `shm` is bound
    let shm = dir("shm", 0o1777)?;
    let tmp = dir("tmp", 0o1777)?;
    for (source, target, flags) in [
        (dev, root.join("dev"), libc::MS_NOSUID | libc::MS_NOEXEC),
        (shm, root.join("dev/shm"), nosuid_nodev),
        (tmp, root.join("tmp"), nosuid_nodev),
    ] {
        sys::mount(
            Some(&source.display().to_string()),
            &target,
            None,
            libc::MS_BIND,
            None,
        )?;
        sys::mount(
            None,
            &target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | flags,
            None,
        )?;
    }
    sys::umount2(staging, libc::MNT_DETACH)
}

/// Points the sandbox's DNS at its resolver (replacing the image's file or link).
fn write_resolv_conf(nameserver: std::net::Ipv4Addr) -> io::Result<()> {
    let path = Path::new("/etc/resolv.conf");
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::write(
        path,
        format!(
            "# written by hutch: the session's resolver\nnameserver {nameserver}\noptions timeout:2 attempts:2\n"
        ),
    )
}

/// Longest option string handed to `mount(2)` (the kernel copies one page of it).
const MOUNT_OPTIONS_MAX: usize = 4000;

/// Mounts one overlay. The classic `mount(2)` with a `lowerdir=a:b:…` option string is used
/// while the options fit in a page; an image with more or longer layer paths is mounted with
/// the new mount API, one `lowerdir+` per layer.
fn mount_overlay(target: &Path, overlay: &OverlayMount) -> io::Result<()> {
    let lower: Vec<String> = overlay
        .lower
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr,volatile",
        lower.join(":"),
        overlay.upper.display(),
        overlay.work.display()
    );
    if data.len() <= MOUNT_OPTIONS_MAX {
        return sys::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&data),
        );
    }
    sys::mount_overlay(
        target,
        &sys::OverlaySpec {
            lower: &overlay.lower,
            upper: &overlay.upper,
            work: &overlay.work,
        },
    )
}

/// Resizes the tmpfs of `/tmp`, `/dev/shm` and `/dev` to the session's size in MiB (a pooled
/// sandbox is built before its session's memory limit is known). Remounting `/tmp` without
/// `MS_BIND` changes the file system's own options, which its other two mounts share.
fn size_tmpfs(mb: u64) -> io::Result<()> {
    sys::mount(
        None,
        Path::new("/tmp"),
        None,
        libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
        Some(&format!("size={mb}m")),
    )
}

/// Capabilities root inside a sandbox keeps (within its user namespace): Docker's default
/// set less `NET_RAW` and `MKNOD`.
const KEPT_CAPABILITIES: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    18, // CAP_SYS_CHROOT
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

fn lock_down(claim: &Claim, seccomp_allow: &[String]) -> Result<(), InitError> {
    sys::sethostname(&claim.hostname).map_err(step("set hostname"))?;
    if let Some(nameserver) = claim.nameserver {
        write_resolv_conf(nameserver).map_err(step("write /etc/resolv.conf"))?;
    }
    sys::loopback_up().map_err(step("bring lo up"))?;

    let last_cap: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let mut kept: u64 = 0;
    for cap in 0..=last_cap.min(63) {
        if KEPT_CAPABILITIES.contains(&cap) {
            kept |= 1 << cap;
        } else {
            sys::prctl(
                libc::PR_CAPBSET_DROP,
                cap.into(),
                "drop capability from bounding set",
            )
            .map_err(step("drop capabilities"))?;
        }
    }
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        "clear ambient capabilities",
    )
    .map_err(step("drop capabilities"))?;
    sys::capset(kept, kept, 0).map_err(step("drop capabilities"))?;
    // Keeps user code from reading the agent's memory or descriptors through /proc/1.
    sys::prctl(libc::PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE").map_err(step("set non-dumpable"))?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
        .map_err(step("set no_new_privs"))?;
    crate::seccomp::install(seccomp_allow).map_err(step("install seccomp filter"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tmpfs_size;

    #[test]
    fn the_scratch_tmpfs_holds_three_quarters_of_the_memory_at_most_the_disk_quota() {
        assert_eq!(tmpfs_size(256, None), 192);
        assert_eq!(tmpfs_size(512, Some(10240)), 384);
        assert_eq!(
            tmpfs_size(4096, Some(100)),
            100,
            "never past the disk quota"
        );
        assert_eq!(
            tmpfs_size(1, None),
            1,
            "never zero (a tmpfs of size 0 is unbounded)"
        );
    }
}
