//! cgroups for sandboxes, on cgroup v1, v2 and hybrid hosts.
//!
//! Every sandbox gets a cgroup named after its sandbox id under hutch's own parent,
//! `hutch/<instance>/`, in each hierarchy it uses (the instance name keeps two servers with
//! different data directories from touching each other's sandboxes). Limits (memory with swap
//! off, pids, and cpu where the controller exists) go through v2 when the v2 tree has the
//! memory and pids controllers, otherwise through the v1 hierarchies. The v2 tree, even
//! without controllers (as on hybrid hosts), is used to track the sandbox's processes, to
//! start the sandbox straight inside its cgroup (`CLONE_INTO_CGROUP`), to kill everything at
//! once (`cgroup.kill`), and is delegated to the sandbox's root user so the agent can put
//! each command in a cgroup of its own.
//!
//! Hosts with no v2 tree at all still get limits through v1 and killing through the v1
//! freezer; the agent then falls back to process groups for commands.
//!
//! Inside its sandbox cgroup `<id>/`, in every hierarchy, the agent and the code it runs live
//! apart: the agent in `<id>/agent/`, everything it starts in `<id>/user/`. The session's
//! limits (`memoryMb`, `pids`) hold `user/`; `<id>/` holds them plus a small reserve for the
//! agent ([`AGENT_MEMORY_MB`], [`AGENT_PIDS`]) and the session's CPU quota, which the agent and
//! `user/` share as two equal parts. So a fork bomb at the pids limit or a memory hog (or a
//! full tmpfs, whose pages are charged to the writer's cgroup) stays in `user/`, and the agent
//! keeps answering. The v1 hierarchies need fewer cgroups for the same (see
//! [`Cgroups::agent_dir`]): in v1 memory `<id>/` itself is the user's side, with the session's
//! limit, and the agent lives in the instance's memory cgroup, `hutch/<instance>/`, beside
//! every other sandbox's agent; in the other v1 hierarchies the agent lives in `<id>/` itself,
//! beside `user/`, with no `agent/`. Commands start straight in `user/…` through v2
//! (`CLONE_INTO_CGROUP` into the delegated `user/`); where the limits are v1, each new process
//! also moves itself into the v1 user cgroups through descriptors of their `tasks` files,
//! opened by the host (see [`SandboxCgroup::user_tasks`]). Killing and freezing act on
//! `<id>/`, so on both.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hutch_api::Resources;
use uuid::Uuid;

use crate::sys;

/// The child cgroup the agent lives in.
const AGENT: &str = "agent";
/// The child cgroup everything the agent starts lives in; the session's limits hold it.
const USER: &str = "user";
/// Memory the sandbox's cgroup allows beyond the session's `memoryMb`, for the agent, where
/// the agent has a memory cgroup in the sandbox's (v2; on the v1 memory hierarchy the agent
/// lives in the instance's memory cgroup and this reserve is not added).
pub(crate) const AGENT_MEMORY_MB: u64 = 64;
/// Processes and threads the sandbox's cgroup allows beyond the session's `pids`, for the
/// agent.
pub(crate) const AGENT_PIDS: u64 = 64;

/// Where the cgroup hierarchies hutch uses are mounted, read from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Mounts {
    /// The cgroup2 mount, if any.
    pub(crate) v2: Option<PathBuf>,
    /// v1 `memory` controller mount.
    pub(crate) memory: Option<PathBuf>,
    /// v1 `pids` controller mount.
    pub(crate) pids: Option<PathBuf>,
    /// v1 `cpu` controller mount (possibly shared with cpuacct).
    pub(crate) cpu: Option<PathBuf>,
    /// v1 `freezer` controller mount.
    pub(crate) freezer: Option<PathBuf>,
}

impl Mounts {
    /// Parses mountinfo text (see proc(5)).
    pub(crate) fn parse(mountinfo: &str) -> Mounts {
        let mut mounts = Mounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(unescape_octal);
            let mut right = right.split(' ');
            let fstype = right.next();
            let super_opts = right.nth(1).unwrap_or("");
            let Some(mount_point) = mount_point else {
                continue;
            };
            match fstype {
                Some("cgroup2") if mounts.v2.is_none() => mounts.v2 = Some(mount_point),
                Some("cgroup") => {
                    for opt in super_opts.split(',') {
                        let slot = match opt {
                            "memory" => &mut mounts.memory,
                            "pids" => &mut mounts.pids,
                            "cpu" => &mut mounts.cpu,
                            "freezer" => &mut mounts.freezer,
                            _ => continue,
                        };
                        if slot.is_none() {
                            *slot = Some(mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    }
}

fn unescape_octal(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// How limits are enforced on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitsVia {
    /// The v2 tree has the memory, pids and cpu controllers.
    V2,
    /// The v1 memory, pids and cpu hierarchies.
    V1,
}

/// hutch's cgroups on this host.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    mounts: Mounts,
    limits: LimitsVia,
    /// Relative path of hutch's parent in every hierarchy: `hutch/<instance>`.
    parent: PathBuf,
}

/// The cgroups of one sandbox.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    /// The sandbox's v2 directory, if the host has a v2 tree.
    pub(crate) v2_dir: Option<PathBuf>,
    /// An open descriptor of `v2_dir`, for `CLONE_INTO_CGROUP` of the sandbox's first process.
    pub(crate) spawn_fd: Option<OwnedFd>,
    /// An open descriptor of the delegated v2 `user/`, for the agent's command cgroups.
    pub(crate) v2_fd: Option<OwnedFd>,
    /// Write-only descriptors of the `tasks` files of the user's cgroups in the v1 hierarchies
    /// that hold limits (`user/`, and `<id>/` itself for memory; empty where v2 holds them): a
    /// process the agent starts writes `0` to each to move itself there before it runs
    /// anything.
    pub(crate) user_tasks: Vec<OwnedFd>,
    /// The out-of-memory counters of the cgroup that holds the memory limit, opened
    /// read-only for the agent: `memory.events` (v2) or `memory.oom_control` (v1).
    pub(crate) memory_events: Option<OwnedFd>,
    /// The sandbox's v1 directories (limits and freezer).
    v1_dirs: Vec<PathBuf>,
}

/// Where a sandbox's usage counters are: its v2 directory, and its v1 directories of the
/// controllers that enforce its limits (`None` where v2 enforces them or the host lacks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageDirs {
    /// The v2 directory (`cpu.stat` is there even without the cpu controller).
    pub(crate) v2: Option<PathBuf>,
    /// The v1 memory directory.
    pub(crate) memory: Option<PathBuf>,
    /// The v1 pids directory.
    pub(crate) pids: Option<PathBuf>,
    /// The v1 cpu directory (with `cpuacct.usage` where cpuacct shares its mount).
    pub(crate) cpu: Option<PathBuf>,
}

/// A cgroup error, naming the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    /// No hierarchy can enforce the limits hutch needs.
    #[error(
        "no cgroup hierarchy with memory and pids controllers is mounted (need cgroup v2 with them enabled, or v1 memory+pids+cpu)"
    )]
    Unsupported,
    /// A cgroup file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err("write", path))
}

impl Cgroups {
    /// Chooses how to use the hierarchies in `mounts`. `instance` names this server's parent.
    pub(crate) fn new(mounts: Mounts, instance: &str) -> Result<Cgroups, CgroupError> {
        let v2_controllers = mounts
            .v2
            .as_ref()
            .and_then(|root| fs::read_to_string(root.join("cgroup.controllers")).ok())
            .unwrap_or_default();
        let has = |c: &str| v2_controllers.split_whitespace().any(|x| x == c);
        let limits = if has("memory") && has("pids") {
            LimitsVia::V2
        } else if mounts.memory.is_some() && mounts.pids.is_some() {
            LimitsVia::V1
        } else {
            return Err(CgroupError::Unsupported);
        };
        let cgroups = Cgroups {
            mounts,
            limits,
            parent: Path::new("hutch").join(instance),
        };
        cgroups.prepare_parents()?;
        Ok(cgroups)
    }

    /// Reads the host's mounts and sets up hutch's parents.
    pub(crate) fn detect(instance: &str) -> Result<Cgroups, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let mountinfo = fs::read_to_string(path).map_err(io_err("read", path))?;
        Cgroups::new(Mounts::parse(&mountinfo), instance)
    }

    /// How limits are enforced.
    pub(crate) fn limits_via(&self) -> LimitsVia {
        self.limits
    }

    /// The v2 mount (if any) and the v1 hierarchies hutch uses.
    fn all_roots(&self) -> Vec<&Path> {
        let mut roots: Vec<&Path> = self.mounts.v2.iter().map(PathBuf::as_path).collect();
        roots.extend(self.v1_roots());
        roots
    }

    fn v1_roots(&self) -> Vec<&Path> {
        if self.limits == LimitsVia::V2 {
            return Vec::new();
        }
        let mut roots: Vec<&Path> = [&self.mounts.memory, &self.mounts.pids, &self.mounts.cpu]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect();
        if self.mounts.v2.is_none() {
            roots.extend(self.mounts.freezer.as_deref());
        }
        roots
    }

    fn prepare_parents(&self) -> Result<(), CgroupError> {
        if let Some(v2) = &self.mounts.v2 {
            let mut dir = v2.clone();
            for part in self.parent.components() {
                self.enable_v2_controllers(&dir)?;
                dir.push(part);
                create_dir(&dir)?;
            }
            // The instance directory holds the sandboxes: it enables the controllers too.
            self.enable_v2_controllers(&dir)?;
        }
        for root in self.v1_roots() {
            create_dir_all(&root.join(&self.parent))?;
        }
        Ok(())
    }

    /// Lets the children of `dir` use the controllers that enforce limits (v2 only): children
    /// can only use what their parent enables.
    fn enable_v2_controllers(&self, dir: &Path) -> Result<(), CgroupError> {
        if self.limits != LimitsVia::V2 {
            return Ok(());
        }
        let control = dir.join("cgroup.subtree_control");
        write_file(&control, "+memory +pids +cpu")
            .or_else(|_| write_file(&control, "+memory +pids"))
    }

    /// Removes this server's parent cgroups (`hutch/<instance>`, and `hutch` when no other
    /// instance uses it) from every hierarchy where they are empty.
    pub(crate) fn remove_parents_if_empty(&self) {
        let roots = self.all_roots();
        for root in roots {
            let instance = root.join(&self.parent);
            if fs::remove_dir(&instance).is_ok()
                && let Some(hutch) = instance.parent()
            {
                let _ = fs::remove_dir(hutch);
            }
        }
    }

    /// Creates the cgroups of sandbox `id` (its own and `user/` in each hierarchy but v1
    /// memory, where it is `<id>/` alone, and `agent/` in v2) with `resources` as limits;
    /// `owner` (the host uid and gid root inside maps to) owns the delegated v2 cgroup.
    pub(crate) fn create(
        &self,
        id: Uuid,
        resources: &Resources,
        owner: u32,
    ) -> Result<SandboxCgroup, CgroupError> {
        let mut cgroup = self.existing(id);
        for dir in cgroup.v2_dir.iter().chain(cgroup.v1_dirs.iter()) {
            create_dir(dir)?;
            for child in [self.agent_dir(dir), self.user_dir(dir)] {
                if child.parent() == Some(dir) {
                    create_dir(&child)?;
                }
            }
        }
        self.set_limits(&cgroup, resources)?;
        if let Some(dir) = &cgroup.v2_dir {
            // Delegate `user/` to the sandbox's root, as systemd delegates a unit's cgroup: it
            // may create children and move its own processes among them, but the limit files
            // stay the host's. The agent starts commands from `agent/` into `user/…`, which
            // needs write access to their common ancestor's `cgroup.procs` too.
            let user = dir.join(USER);
            let mut delegated = vec![dir.join("cgroup.procs"), user.clone()];
            for file in ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"] {
                delegated.push(user.join(file));
            }
            for path in delegated {
                sys::lchown(&path, owner, owner).map_err(io_err("chown", &path))?;
            }
            let open_dir = |d: &Path| {
                sys::open(d, libc::O_RDONLY | libc::O_DIRECTORY).map_err(io_err("open", d))
            };
            cgroup.spawn_fd = Some(open_dir(dir)?);
            cgroup.v2_fd = Some(open_dir(&user)?);
        }
        if self.limits == LimitsVia::V1 {
            for root in [&self.mounts.memory, &self.mounts.pids, &self.mounts.cpu] {
                let Some(dir) = root
                    .as_ref()
                    .and_then(|r| cgroup.v1_dirs.iter().find(|d| d.starts_with(r)))
                else {
                    continue;
                };
                let tasks = self.user_dir(dir).join("tasks");
                let fd = sys::open(&tasks, libc::O_WRONLY).map_err(io_err("open", &tasks))?;
                cgroup.user_tasks.push(fd);
            }
        }
        cgroup.memory_events = self.open_memory_events(&cgroup);
        Ok(cgroup)
    }

    /// Whether `dir` is in the v1 memory hierarchy that holds the limits. There a sandbox has
    /// one memory cgroup, `<id>/`, the user's side with the session's limit, and no `agent/`
    /// or `user/`: the agent lives in the instance's memory cgroup, `hutch/<instance>/`,
    /// shared by every sandbox's agent, and is never a candidate of its session's OOM killer.
    /// A memory cgroup is the dearest kernel object of a session: about 105 KiB of slab and
    /// per-CPU data, and a slot of the kernel's shrinker table for every superblock mounted on
    /// the host, so that a second one a session cost a share growing with the number of
    /// sessions (see `docs/operations.md`). v2 forbids processes in a cgroup whose children
    /// hold limits, so there `agent/` stays.
    fn is_v1_memory(&self, dir: &Path) -> bool {
        self.mounts
            .memory
            .as_ref()
            .is_some_and(|memory| self.limits == LimitsVia::V1 && dir.starts_with(memory))
    }

    /// The cgroup the agent of the sandbox's cgroup `dir` lives in once settled: the instance's
    /// in v1 memory (see [`Cgroups::is_v1_memory`]); `dir` itself in the other v1 hierarchies,
    /// which, unlike v2, let a cgroup with children hold processes, so the agent beside `user/`
    /// gets the same share of the CPU quota and the same pids reserve as an `agent/` would give
    /// it, for one cgroup less (a v1 `cpu` cgroup costs the kernel about 13 KiB); `agent/` in
    /// v2.
    fn agent_dir(&self, dir: &Path) -> PathBuf {
        match dir.parent() {
            Some(instance) if self.is_v1_memory(dir) => instance.to_owned(),
            _ if !self
                .mounts
                .v2
                .as_ref()
                .is_some_and(|v2| dir.starts_with(v2)) =>
            {
                dir.to_owned()
            }
            _ => dir.join(AGENT),
        }
    }

    /// The cgroup of the sandbox's cgroup `dir` that holds the processes the agent starts.
    fn user_dir(&self, dir: &Path) -> PathBuf {
        if self.is_v1_memory(dir) {
            dir.to_owned()
        } else {
            dir.join(USER)
        }
    }

    /// Moves the sandbox's first process, `pid`, from the sandbox's cgroups into the cgroups
    /// the agent lives in ([`Cgroups::agent_dir`]) once it has rooted its cgroup namespace in
    /// them (so that `user/` is inside that namespace, and no other sandbox's
    /// cgroup is), and, where v2 holds the limits, lets `user/` have limits of its own now
    /// that the sandbox's cgroup holds no process.
    pub(crate) fn settle_agent(
        &self,
        cgroup: &SandboxCgroup,
        pid: i32,
        resources: &Resources,
    ) -> Result<(), CgroupError> {
        for dir in cgroup.v2_dir.iter().chain(cgroup.v1_dirs.iter()) {
            let agent = self.agent_dir(dir);
            if agent != *dir {
                write_file(&agent.join("cgroup.procs"), &pid.to_string())?;
            }
        }
        if let (LimitsVia::V2, Some(dir)) = (self.limits, &cgroup.v2_dir) {
            self.enable_v2_controllers(dir)?;
            self.set_limits(cgroup, resources)?;
        }
        Ok(())
    }

    /// Opens the sandbox's out-of-memory counters read-only, where the limits are: the agent
    /// can read them but never write a limit (v1 is not even visible inside the sandbox).
    /// `None` when the file is missing (kernels before 4.13 count no `oom_kill`).
    fn open_memory_events(&self, cgroup: &SandboxCgroup) -> Option<OwnedFd> {
        let path = match self.limits {
            LimitsVia::V2 => cgroup.v2_dir.as_ref()?.join(USER).join("memory.events"),
            LimitsVia::V1 => {
                let memory = self.mounts.memory.as_ref()?;
                let dir = cgroup.v1_dirs.iter().find(|d| d.starts_with(memory))?;
                self.user_dir(dir).join("memory.oom_control")
            }
        };
        sys::open(&path, libc::O_RDONLY).ok()
    }

    /// Writes `resources` as the limits of the sandbox's cgroups: the session's own on
    /// `user/` (and on v1 memory's `<id>/`), those plus the agent's reserve and the CPU quota on
    /// the sandbox's cgroup elsewhere. On v2,
    /// `user/` gets its limits once the agent has left the sandbox's cgroup (see
    /// [`Cgroups::settle_agent`]); until then only the sandbox's cgroup has them.
    pub(crate) fn set_limits(
        &self,
        cgroup: &SandboxCgroup,
        resources: &Resources,
    ) -> Result<(), CgroupError> {
        let user_memory = resources.memory_mb.saturating_mul(1024 * 1024);
        let memory = resources
            .memory_mb
            .saturating_add(AGENT_MEMORY_MB)
            .saturating_mul(1024 * 1024);
        let pids = resources.pids.saturating_add(AGENT_PIDS);
        let cpu_period = 100_000u64;
        let cpu_quota = ((resources.cpus * cpu_period as f64).round() as u64).max(1000);
        match self.limits {
            LimitsVia::V2 => {
                let Some(dir) = &cgroup.v2_dir else {
                    return Ok(());
                };
                let user = dir.join(USER);
                let user_limits = user.join("memory.max").exists();
                for (dir, memory, pids) in
                    [(dir, memory, pids), (&user, user_memory, resources.pids)]
                {
                    if dir == &user && !user_limits {
                        continue;
                    }
                    write_file(&dir.join("memory.max"), &memory.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write_file(&swap, "0")?;
                    }
                    write_file(&dir.join("pids.max"), &pids.to_string())?;
                }
                let cpu = dir.join("cpu.max");
                if cpu.exists() {
                    write_file(&cpu, &format!("{cpu_quota} {cpu_period}"))?;
                }
            }
            LimitsVia::V1 => {
                let name = |root: &Option<PathBuf>| {
                    root.as_ref()
                        .and_then(|r| cgroup.v1_dirs.iter().find(|d| d.starts_with(r)))
                };
                if let Some(dir) = name(&self.mounts.memory) {
                    set_v1_memory(dir, user_memory)?;
                }
                if let Some(dir) = name(&self.mounts.pids) {
                    write_file(&dir.join("pids.max"), &pids.to_string())?;
                    write_file(
                        &dir.join(USER).join("pids.max"),
                        &resources.pids.to_string(),
                    )?;
                }
                if let Some(dir) = name(&self.mounts.cpu) {
                    write_file(&dir.join("cpu.cfs_period_us"), &cpu_period.to_string())?;
                    write_file(&dir.join("cpu.cfs_quota_us"), &cpu_quota.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Moves the sandbox's first process, `pid`, into the sandbox's v1 cgroups (v2 placement
    /// happens at clone time); [`Cgroups::settle_agent`] moves it on into `agent/`.
    pub(crate) fn attach_v1(&self, cgroup: &SandboxCgroup, pid: i32) -> Result<(), CgroupError> {
        for dir in &cgroup.v1_dirs {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The cgroups of sandbox `id`, whether or not they exist.
    pub(crate) fn existing(&self, id: Uuid) -> SandboxCgroup {
        let name = id.to_string();
        let v2_dir = self
            .mounts
            .v2
            .as_ref()
            .map(|v2| v2.join(&self.parent).join(&name));
        let v1_dirs: Vec<PathBuf> = self
            .v1_roots()
            .iter()
            .map(|root| root.join(&self.parent).join(&name))
            .collect();
        SandboxCgroup {
            v2_dir,
            spawn_fd: None,
            v2_fd: None,
            user_tasks: Vec::new(),
            memory_events: None,
            v1_dirs,
        }
    }

    /// The directories of sandbox `id` that hold its usage counters (see `usage.rs`).
    pub(crate) fn usage_dirs(&self, id: Uuid) -> UsageDirs {
        let name = id.to_string();
        let at = |root: &Option<PathBuf>| root.as_ref().map(|r| r.join(&self.parent).join(&name));
        let v1 = self.limits != LimitsVia::V2;
        UsageDirs {
            v2: at(&self.mounts.v2),
            memory: at(&self.mounts.memory).filter(|_| v1),
            pids: at(&self.mounts.pids).filter(|_| v1),
            cpu: at(&self.mounts.cpu).filter(|_| v1),
        }
    }

    /// Whether any of the sandbox's cgroup directories exists.
    pub(crate) fn present(&self, cgroup: &SandboxCgroup) -> bool {
        cgroup
            .v2_dir
            .iter()
            .chain(cgroup.v1_dirs.iter())
            .any(|dir| dir.exists())
    }

    /// Whether `pid` is the agent of the sandbox's tracking cgroup (v2, else the first v1 but
    /// memory, where the agent is not in the sandbox's cgroup): a member of its `agent/`, or of
    /// the cgroup itself (where v1 keeps the agent, and sandboxes built before the split kept
    /// theirs).
    pub(crate) fn contains(&self, cgroup: &SandboxCgroup, pid: i32) -> bool {
        let Some(dir) = cgroup
            .v2_dir
            .as_ref()
            .or_else(|| cgroup.v1_dirs.iter().find(|d| !self.is_v1_memory(d)))
        else {
            return false;
        };
        [dir.join(AGENT), dir.clone()].iter().any(|dir| {
            fs::read_to_string(dir.join("cgroup.procs"))
                .map(|procs| procs.lines().any(|l| l.trim() == pid.to_string()))
                .unwrap_or(false)
        })
    }

    /// Ids of every sandbox with a cgroup under hutch's parent, in any hierarchy.
    pub(crate) fn list(&self) -> Vec<Uuid> {
        let mut ids = Vec::new();
        let roots = self.all_roots();
        for root in roots {
            let Ok(entries) = fs::read_dir(root.join(&self.parent)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Uuid::parse_str(n).ok())
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Kills every process in the sandbox's cgroups and waits (up to `deadline`) until none is
    /// left.
    pub(crate) fn kill(
        &self,
        cgroup: &SandboxCgroup,
        deadline: Duration,
    ) -> Result<(), CgroupError> {
        let start = Instant::now();
        if let Some(dir) = cgroup.v2_dir.as_ref().filter(|d| d.exists()) {
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                write_file(&kill, "1")?;
            } else {
                kill_listed(dir)?;
            }
            return wait_empty(dir, start + deadline);
        }
        // v1 only: freeze so nothing forks while we kill, kill each member, thaw.
        let freezer = cgroup
            .v1_dirs
            .iter()
            .find(|d| d.join("freezer.state").exists());
        if let Some(freezer) = freezer {
            write_file(&freezer.join("freezer.state"), "FROZEN")?;
            kill_listed(freezer)?;
            write_file(&freezer.join("freezer.state"), "THAWED")?;
        }
        for dir in cgroup.v1_dirs.iter().filter(|d| d.exists()) {
            kill_listed(dir)?;
            wait_empty(dir, start + deadline)?;
        }
        Ok(())
    }

    /// Freezes (or thaws) every process of the sandbox, waiting up to `deadline` until the
    /// kernel reports them frozen. Uses `cgroup.freeze` (v2) or the v1 freezer.
    pub(crate) fn freeze(
        &self,
        cgroup: &SandboxCgroup,
        frozen: bool,
        deadline: Duration,
    ) -> Result<(), CgroupError> {
        let until = Instant::now() + deadline;
        if let Some(dir) = cgroup
            .v2_dir
            .as_ref()
            .filter(|d| d.join("cgroup.freeze").exists())
        {
            write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            return wait_for_line(&dir.join("cgroup.events"), want, until);
        }
        let Some(freezer) = cgroup
            .v1_dirs
            .iter()
            .find(|d| d.join("freezer.state").exists())
        else {
            return Err(CgroupError::Unsupported);
        };
        let state = freezer.join("freezer.state");
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write_file(&state, want)?;
        wait_for_line(&state, want, until)
    }

    /// Removes the sandbox's cgroups (and any child cgroups the agent made). Missing
    /// directories are fine; busy ones are retried until `deadline`.
    pub(crate) fn remove(
        &self,
        cgroup: &SandboxCgroup,
        deadline: Duration,
    ) -> Result<(), CgroupError> {
        let until = Instant::now() + deadline;
        for dir in cgroup.v2_dir.iter().chain(cgroup.v1_dirs.iter()) {
            remove_tree(dir, until)?;
        }
        Ok(())
    }
}

/// Polls `file` until one of its lines reads `want`, or fails once `until` has passed.
fn wait_for_line(file: &Path, want: &str, until: Instant) -> Result<(), CgroupError> {
    loop {
        let text = fs::read_to_string(file).map_err(io_err("read", file))?;
        if text.lines().any(|line| line.trim() == want) {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(CgroupError::Io {
                op: "wait for",
                path: file.to_owned(),
                source: io::Error::new(io::ErrorKind::TimedOut, want.to_owned()),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::Io {
            op: "mkdir",
            path: dir.to_owned(),
            source: e,
        }),
    }
}

fn create_dir_all(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(dir).map_err(io_err("mkdir", dir))
}

/// Sends SIGKILL to every process listed in `dir/cgroup.procs` and in its children.
fn kill_listed(dir: &Path) -> Result<(), CgroupError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_listed(&entry.path())?;
            }
        }
    }
    let procs = dir.join("cgroup.procs");
    let Ok(list) = fs::read_to_string(&procs) else {
        return Ok(());
    };
    for pid in list.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill takes integers only; the pid was read from the sandbox's cgroup.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    Ok(())
}

/// Whether any process is in `dir` or below it (v2 says so itself; v1 is asked cgroup by
/// cgroup).
fn populated(dir: &Path) -> bool {
    let events = dir.join("cgroup.events");
    if let Ok(text) = fs::read_to_string(&events) {
        return text.lines().any(|l| l.trim() == "populated 1");
    }
    let here = fs::read_to_string(dir.join("cgroup.procs"))
        .map(|p| !p.trim().is_empty())
        .unwrap_or(false);
    here || fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()) && populated(&e.path()))
    })
}

/// Sets a v1 memory limit with swap off. With swap accounting, memsw must stay >= the memory
/// limit: raise it first when growing, lower it last when shrinking.
fn set_v1_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let limit = dir.join("memory.limit_in_bytes");
    if memsw.exists() {
        let _ = fs::write(&memsw, bytes.to_string());
        write_file(&limit, &bytes.to_string())?;
        write_file(&memsw, &bytes.to_string())?;
    } else {
        write_file(&limit, &bytes.to_string())?;
    }
    let _ = fs::write(dir.join("memory.swappiness"), "0");
    Ok(())
}

fn wait_empty(dir: &Path, until: Instant) -> Result<(), CgroupError> {
    let mut pause = Duration::from_micros(50);
    while populated(dir) {
        if Instant::now() >= until {
            return Err(CgroupError::Io {
                op: "wait for empty",
                path: dir.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    "processes still running after SIGKILL",
                ),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    Ok(())
}

fn remove_tree(dir: &Path, until: Instant) -> Result<(), CgroupError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&entry.path(), until)?;
            }
        }
    }
    // A v1 memory cgroup outlives its rmdir, offline, for as long as any page charged to it
    // stays cached; thousands of those slow every later cgroup operation. With no process
    // left, reclaim what it still holds first.
    let force_empty = dir.join("memory.force_empty");
    if force_empty.exists() {
        let _ = fs::write(&force_empty, "0");
    }
    let mut pause = Duration::from_micros(100);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(CgroupError::Io {
                    op: "rmdir",
                    path: dir.to_owned(),
                    source: e,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
38 30 0:34 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,freezer
39 30 0:35 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,name=systemd
";

    #[test]
    fn parses_hybrid_mountinfo() {
        let m = Mounts::parse(HYBRID);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(m.pids.as_deref(), Some(Path::new("/sys/fs/cgroup/pids")));
        assert_eq!(
            m.cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            m.freezer.as_deref(),
            Some(Path::new("/sys/fs/cgroup/freezer"))
        );
    }

    #[test]
    fn parses_pure_v2_mountinfo() {
        let m = Mounts::parse(
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            m,
            Mounts {
                v2: Some("/sys/fs/cgroup".into()),
                ..Mounts::default()
            }
        );
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_octal("/a\\040b"), PathBuf::from("/a b"));
    }

    #[test]
    fn pure_v2_enables_controllers_down_to_the_instance() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().to_owned();
        fs::write(v2.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        let mounts = Mounts {
            v2: Some(v2.clone()),
            ..Mounts::default()
        };
        let cgroups = Cgroups::new(mounts, "test").unwrap();
        assert_eq!(cgroups.limits_via(), LimitsVia::V2);
        for dir in [v2.clone(), v2.join("hutch"), v2.join("hutch/test")] {
            let control = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert_eq!(control, "+memory +pids +cpu", "{}", dir.display());
        }
    }

    #[test]
    fn fixture_tree_gets_v1_limits_and_delegated_v2() {
        let root = tempfile::tempdir().unwrap();
        let mk = |p: &str| {
            let d = root.path().join(p);
            fs::create_dir_all(&d).unwrap();
            d
        };
        let v2 = mk("unified");
        fs::write(v2.join("cgroup.controllers"), "").unwrap();
        let memory = mk("memory");
        let pids = mk("pids");
        let cpu = mk("cpu");
        let mounts = Mounts {
            v2: Some(v2.clone()),
            memory: Some(memory.clone()),
            pids: Some(pids.clone()),
            cpu: Some(cpu.clone()),
            freezer: None,
        };
        // SAFETY: getuid has no arguments and cannot fail.
        let me = unsafe { libc::getuid() };
        let cgroups = Cgroups::new(mounts, "test").unwrap();
        assert_eq!(cgroups.limits_via(), LimitsVia::V1);
        let id = Uuid::now_v7();
        // A real cgroupfs creates the control files with the directory; the fixture must.
        let sandbox = |d: &Path| d.join("hutch/test").join(id.to_string());
        for d in [&pids, &cpu, &v2] {
            fs::create_dir_all(sandbox(d).join("user")).unwrap();
        }
        for d in [&pids, &cpu] {
            fs::write(sandbox(d).join("user/tasks"), "").unwrap();
        }
        fs::create_dir_all(sandbox(&memory)).unwrap();
        fs::write(sandbox(&memory).join("tasks"), "").unwrap();
        fs::write(sandbox(&v2).join("cgroup.procs"), "").unwrap();
        for f in ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"] {
            fs::write(sandbox(&v2).join("user").join(f), "").unwrap();
        }
        let res = Resources {
            cpus: 0.5,
            memory_mb: 64,
            pids: 32,
            disk_mb: None,
        };
        let cg = cgroups.create(id, &res, me).unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        // In v1 memory the sandbox's one memory cgroup is the user's, with the session's limit.
        assert_eq!(
            read(memory.join(format!("hutch/test/{id}/memory.limit_in_bytes"))),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read(pids.join(format!("hutch/test/{id}/user/pids.max"))),
            "32"
        );
        assert_eq!(
            read(pids.join(format!("hutch/test/{id}/pids.max"))),
            (32 + AGENT_PIDS).to_string()
        );
        // In the other v1 hierarchies the agent lives in the sandbox's cgroup, beside `user/`;
        // only v2 has an `agent/`.
        for d in [&pids, &cpu] {
            assert!(sandbox(d).join("user").is_dir());
            assert!(!sandbox(d).join("agent").exists(), "{}", d.display());
        }
        assert!(sandbox(&v2).join("agent").is_dir());
        // One v1 memory cgroup a sandbox: the agent's is the instance's.
        for child in ["agent", "user"] {
            assert!(!memory.join(format!("hutch/test/{id}/{child}")).exists());
        }
        assert_eq!(cg.user_tasks.len(), 3, "memory, pids and cpu");
        assert_eq!(
            read(cpu.join(format!("hutch/test/{id}/cpu.cfs_quota_us"))),
            "50000"
        );
        assert!(cg.v2_fd.is_some());
        assert_eq!(cgroups.list(), vec![id]);
        // Fixture directories hold regular files, so only the emptiness check is exercised here;
        // real removal is covered by the root-gated end-to-end tests.
        assert!(!populated(&v2.join(format!("hutch/test/{id}"))));
    }
}
