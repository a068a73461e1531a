//! The idle scenario: what a session costs while nobody uses it, and how many fit.
//!
//! Three parts, in one run:
//! - pause and resume latency through the API on one session (target: each ≤ 5 ms at p50);
//! - density: sessions are created one after another until a stop condition ([`Stop`]): the
//!   `--sessions` cap, a memory budget the sessions have filled (`--memory-budget-mb`, so that
//!   "how many fit in 16 GiB" is measured, not extrapolated), a `MemAvailable` floor that
//!   keeps the machine safe, or a failed create; each has its `default` interpreter context
//!   started but unused. Host memory of the sessions is the private memory of their agents
//!   and workers plus the kernel's growth, in all and per session, beside the drop of
//!   `MemAvailable`, the mean of the sessions' own cgroup figures
//!   (`GET /v1/sessions/{id}/stats`) and the slab caches that grew most; then all are paused
//!   and measured again, resumed, each runs `true` and has its `default` context ready again
//!   (every one must), and all are deleted;
//! - peers: the same `MemAvailable` drop per container for `podman run -d … sleep infinity`
//!   of an image imported from a local root file system tarball, and per plain `unshare`d
//!   `sleep infinity` (new pid, mount, net, ipc and uts namespaces).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hutch_api::{CommandRequest, CreateSessionRequest};
use hutch_client::HutchClient;
use uuid::Uuid;

use crate::soak::{Resources, Watched};
use crate::{BenchError, Samples};

/// How long memory is left to settle (freed pages returned, reclaim done) before a reading.
const SETTLE: Duration = Duration::from_secs(2);

/// Time to live of the sessions the density run holds (the most a session may ask for).
const HELD_TTL_SECONDS: u64 = 28_800;

/// Sessions created between two readings of the memory they hold against a budget.
const BUDGET_CHECK_EVERY: usize = 25;

/// Slab caches listed, those that grew most.
const SLAB_CACHES_SHOWN: usize = 12;

/// The host's `MemAvailable`, in KiB.
pub fn mem_available_kib() -> io::Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no MemAvailable in /proc/meminfo"))
}

fn meminfo(e: io::Error) -> BenchError {
    BenchError::Server(format!("reading /proc/meminfo: {e}"))
}

fn api(step: &'static str) -> impl FnOnce(hutch_client::ClientError) -> BenchError {
    move |source| BenchError::Api { step, source }
}

/// Pause and resume latencies.
#[derive(Debug, Default)]
pub struct LatencyReport {
    /// `POST /v1/sessions/{id}/pause` of a running session.
    pub pause: Samples,
    /// `POST /v1/sessions/{id}/resume` of a paused session.
    pub resume: Samples,
}

/// Pauses and resumes one new idle session `warmup` + `iterations` times, then deletes it.
pub async fn pause_resume(
    client: &HutchClient,
    warmup: usize,
    iterations: usize,
) -> Result<LatencyReport, BenchError> {
    let session = client
        .create_session(&CreateSessionRequest::default())
        .await
        .map_err(api("create"))?;
    let id = session.session_id;
    wait_default_context(client, id).await?;
    let measured = async {
        let mut report = LatencyReport::default();
        for i in 0..warmup + iterations {
            let start = Instant::now();
            client.pause_session(id).await.map_err(api("pause"))?;
            let paused = Instant::now();
            client.resume_session(id).await.map_err(api("resume"))?;
            let resumed = Instant::now();
            if i >= warmup {
                report.pause.push(paused - start);
                report.resume.push(resumed - paused);
            }
        }
        Ok::<_, BenchError>(report)
    }
    .await;
    let deleted = client.delete_session(id).await;
    let report = measured?;
    deleted.map_err(api("delete"))?;
    Ok(report)
}

/// Why the density run stopped creating sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// It reached the `--sessions` cap.
    Cap,
    /// `MemAvailable` fell under the floor.
    MemoryFloor,
    /// The sessions held the memory budget ([`Limits::budget_kib`]); once every `default`
    /// context was ready, this many of the newest were deleted so that the rest held at most
    /// the budget.
    Budget {
        /// The sessions deleted past the budget.
        trimmed: usize,
    },
    /// A create failed; its error.
    CreateFailed(String),
    /// Reading the host's memory failed; its error.
    ReadFailed(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Cap => f.write_str("reached the --sessions cap"),
            Stop::MemoryFloor => f.write_str("MemAvailable fell under the floor"),
            Stop::Budget { trimmed: 0 } => f.write_str("the sessions filled the memory budget"),
            Stop::Budget { trimmed } => write!(
                f,
                "the sessions filled the memory budget; the {trimmed} newest were then deleted, so that the rest held at most the budget"
            ),
            Stop::CreateFailed(e) => write!(f, "a create failed: {e}"),
            Stop::ReadFailed(e) => write!(f, "reading the host's memory failed: {e}"),
        }
    }
}

/// What the density run measured.
#[derive(Debug)]
pub struct DensityReport {
    /// Idle sessions held at once.
    pub sessions: usize,
    /// Why it stopped there.
    pub stop: Stop,
    /// Wall time from the first create until every `default` context was ready.
    pub fill: Duration,
    /// Drop of `MemAvailable` per idle session, KiB (see [`drop_per`]).
    pub idle_kib: f64,
    /// Drop of `MemAvailable` per paused session, KiB.
    pub paused_kib: f64,
    /// Mean `memoryBytes` of the stats route while idle, KiB.
    pub idle_cgroup_kib: f64,
    /// Mean `rssBytes` of the stats route while idle, KiB.
    pub idle_cgroup_rss_kib: f64,
    /// Mean `memoryBytes` of the stats route while paused, KiB.
    pub paused_cgroup_kib: f64,
    /// Mean processes and threads per session.
    pub pids: f64,
    /// Sessions that ran `true` after the resume (all of them, or the run fails).
    pub answered: usize,
    /// What the server and the host held before the first create and with every session
    /// held, when the benchmark started the server itself.
    pub kernel: Option<(Held, Held)>,
    /// The kernel's own memory per idle session (see [`KernelMemory`]), KiB.
    pub kernel_memory: KernelMemory,
    /// The same while the sessions are paused.
    pub paused_kernel_memory: KernelMemory,
    /// The sessions' processes while idle, when the benchmark started the server itself.
    pub processes: Option<SessionProcesses>,
    /// The same while the sessions are paused.
    pub paused_processes: Option<SessionProcesses>,
    /// Times a session's agent and worker were switched out in a minute while idle (each
    /// wake-up is one), when the benchmark started the server itself.
    pub idle_switches_per_minute: Option<f64>,
    /// The same while paused.
    pub paused_switches_per_minute: Option<f64>,
    /// Drop of `MemAvailable` with every session idle, in all, KiB.
    pub idle_drop_kib: f64,
    /// The kernel's growth with every session idle, in all (not per session), KiB.
    pub kernel_total: KernelMemory,
    /// Growth of each slab cache per idle session, KiB, those that grew most first (empty
    /// where `/proc/slabinfo` is not readable).
    pub slab_growth: Vec<(String, f64)>,
    /// The slab caches with every session idle.
    slab_idle: Option<BTreeMap<String, f64>>,
}

impl DensityReport {
    /// Host memory per idle session, KiB: its processes' private memory and the kernel's
    /// growth, when the processes were measured.
    pub fn idle_host_kib(&self) -> Option<f64> {
        Some(self.processes?.private_per_session() + self.kernel_memory.total())
    }

    /// The same per paused session.
    pub fn paused_host_kib(&self) -> Option<f64> {
        Some(self.paused_processes?.private_per_session() + self.paused_kernel_memory.total())
    }

    /// Host memory of all the idle sessions together, KiB: the sum of their processes'
    /// private memory and the kernel's whole growth, when the processes were measured.
    pub fn idle_total_kib(&self) -> Option<f64> {
        Some(self.processes?.private_total() + self.kernel_total.total())
    }
}

/// What the kernel holds for itself, from `/proc/meminfo` (KiB): at one moment, or its
/// growth per session.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelMemory {
    /// `Slab`: kernel objects (cgroups, namespaces, mounts, inodes, dentries, …).
    pub slab: f64,
    /// `KernelStack`: a kernel stack per thread.
    pub kernel_stack: f64,
    /// `PageTables`: the processes' page tables.
    pub page_tables: f64,
    /// `Percpu`: per-CPU allocations (cgroup statistics among them).
    pub percpu: f64,
}

impl KernelMemory {
    /// Reads it now.
    pub fn read() -> io::Result<KernelMemory> {
        let meminfo = fs::read_to_string("/proc/meminfo")?;
        let field = |name: &str| -> f64 {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        Ok(KernelMemory {
            slab: field("Slab"),
            kernel_stack: field("KernelStack"),
            page_tables: field("PageTables"),
            percpu: field("Percpu"),
        })
    }

    /// The growth from `before` to `self`.
    pub fn since(&self, before: &KernelMemory) -> KernelMemory {
        self.per(before, 1)
    }

    /// All four, KiB.
    pub fn total(&self) -> f64 {
        self.slab + self.kernel_stack + self.page_tables + self.percpu
    }

    /// The growth from `before` to `self`, shared by `count`.
    fn per(&self, before: &KernelMemory, count: usize) -> KernelMemory {
        let n = count.max(1) as f64;
        KernelMemory {
            slab: (self.slab - before.slab) / n,
            kernel_stack: (self.kernel_stack - before.kernel_stack) / n,
            page_tables: (self.page_tables - before.page_tables) / n,
            percpu: (self.percpu - before.percpu) / n,
        }
    }
}

/// The mean memory of the sessions' agents (the server's children that run under a seccomp
/// filter, which an agent installs when a session claims its sandbox: the warm pool's are
/// left out) and of their `default` context workers (the agents' python children), from
/// `smaps_rollup`, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionProcesses {
    /// Agents measured.
    pub agents: usize,
    /// Their mean `Rss`, `Pss` and `Private_Dirty` (memory no other process shares: the
    /// heap, the stacks, and the pages of the executable the loader relocated).
    pub agent: ProcessMemory,
    /// Workers measured.
    pub workers: usize,
    /// Their mean `Rss`, `Pss` and `Private_Dirty`.
    pub worker: ProcessMemory,
}

impl SessionProcesses {
    /// Private memory per session, KiB: its agent's, and its worker's when it has one.
    pub fn private_per_session(&self) -> f64 {
        self.private_total() / self.agents.max(1) as f64
    }

    /// Private memory of every agent and worker measured, KiB.
    pub fn private_total(&self) -> f64 {
        self.agent.private_dirty * self.agents as f64
            + self.worker.private_dirty * self.workers as f64
    }
}

/// One process's (or a mean) resident, proportional and private dirty memory, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessMemory {
    /// `Rss`.
    pub rss: f64,
    /// `Pss`.
    pub pss: f64,
    /// `Private_Dirty`.
    pub private_dirty: f64,
}

impl ProcessMemory {
    fn read(pid: u32) -> Option<ProcessMemory> {
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let field = |name: &str| -> Option<f64> {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        Some(ProcessMemory {
            rss: field("Rss")?,
            pss: field("Pss")?,
            private_dirty: field("Private_Dirty")?,
        })
    }

    fn mean(all: &[ProcessMemory]) -> ProcessMemory {
        let n = all.len().max(1) as f64;
        ProcessMemory {
            rss: all.iter().map(|m| m.rss).sum::<f64>() / n,
            pss: all.iter().map(|m| m.pss).sum::<f64>() / n,
            private_dirty: all.iter().map(|m| m.private_dirty).sum::<f64>() / n,
        }
    }
}

/// The host pids of the sessions' agents of the server `server_pid` (those locked down by
/// their claim, not the pool's) and of their python workers.
fn session_pids(server_pid: u32) -> io::Result<(Vec<u32>, Vec<u32>)> {
    // (pid, parent, name) of every process.
    let mut all = Vec::new();
    for entry in fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (name) state ppid …`; the name may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let parent = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(parent) = parent {
            all.push((pid, parent, name));
        }
    }
    // Only the agents of sessions (locked down by their claim), not those of the pool.
    let agents: Vec<u32> = all
        .iter()
        .filter(|(pid, parent, _)| *parent == server_pid && filtered(*pid))
        .map(|(pid, _, _)| *pid)
        .collect();
    let workers: Vec<u32> = all
        .iter()
        .filter(|(_, parent, name)| agents.contains(parent) && name.starts_with("python"))
        .map(|(pid, _, _)| *pid)
        .collect();
    Ok((agents, workers))
}

/// How often the sessions' processes were switched out (woke or were preempted), summed:
/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of each one's status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Switches {
    /// Sessions counted (their agents).
    pub sessions: usize,
    /// The sum over their agents and workers.
    pub count: u64,
}

impl Switches {
    /// Counts them now for the sessions of the server `server_pid`.
    pub fn read(server_pid: u32) -> io::Result<Switches> {
        let (agents, workers) = session_pids(server_pid)?;
        let count = agents
            .iter()
            .chain(&workers)
            .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .map(|status| {
                status
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix("voluntary_ctxt_switches:")
                            .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                    })
                    .filter_map(|v| v.trim().parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum();
        Ok(Switches {
            sessions: agents.len(),
            count,
        })
    }

    /// Switches per session per minute from `before` to this count, `window` apart.
    pub fn per_session_minute(&self, before: &Switches, window: Duration) -> f64 {
        let minutes = window.as_secs_f64() / 60.0;
        self.count.saturating_sub(before.count) as f64
            / self.sessions.max(1) as f64
            / minutes.max(f64::MIN_POSITIVE)
    }
}

impl SessionProcesses {
    /// Measures the agents of the server `server_pid` and their python workers now.
    pub fn measure(server_pid: u32) -> io::Result<SessionProcesses> {
        let (agents, workers) = session_pids(server_pid)?;
        let agent: Vec<ProcessMemory> = agents
            .iter()
            .filter_map(|p| ProcessMemory::read(*p))
            .collect();
        let worker: Vec<ProcessMemory> = workers
            .iter()
            .filter_map(|p| ProcessMemory::read(*p))
            .collect();
        Ok(SessionProcesses {
            agents: agent.len(),
            agent: ProcessMemory::mean(&agent),
            workers: worker.len(),
            worker: ProcessMemory::mean(&worker),
        })
    }
}

/// Whether process `pid` runs under a seccomp filter (`Seccomp: 2` in its status).
fn filtered(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.strip_prefix("Seccomp:").is_some_and(|v| v.trim() == "2"))
    })
}

/// Kernel objects a server's sessions hold, counted at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// The server's descriptors, cgroups and mounts (see [`Resources`]).
    pub server: Resources,
    /// Loop devices attached on the host (each session's disk is one).
    pub loop_devices: u64,
    /// Processes on the host.
    pub processes: u64,
}

impl Held {
    /// Counts them now.
    pub fn measure(server: &Watched) -> Result<Held, BenchError> {
        let failed = |e: io::Error| BenchError::Server(format!("counting kernel objects: {e}"));
        let loop_devices = fs::read_dir("/sys/block")
            .map_err(failed)?
            .flatten()
            .filter(|e| e.path().join("loop/backing_file").exists())
            .count() as u64;
        let processes = fs::read_dir("/proc")
            .map_err(failed)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .count() as u64;
        Ok(Held {
            server: Resources::measure(server).map_err(failed)?,
            loop_devices,
            processes,
        })
    }
}

/// Where the density run stops creating sessions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most sessions to create.
    pub cap: usize,
    /// Stop once `MemAvailable` is under this many KiB (keeps the machine safe).
    pub floor_kib: u64,
    /// Stop once the sessions hold this much memory, KiB: their processes' private memory
    /// and the kernel's growth when the benchmark started the server (and so finds the
    /// processes), else the drop of `MemAvailable`.
    pub budget_kib: Option<u64>,
    /// How long the sessions' processes are watched for wake-ups, idle and then paused.
    pub wake_window: Duration,
}

/// The memory budget of [`Limits::budget_kib`] and the readings it counts from; read every
/// [`BUDGET_CHECK_EVERY`] creates.
struct Budget {
    kib: u64,
    mem_available: u64,
    kernel: KernelMemory,
}

impl Budget {
    /// Whether the sessions hold at least the budget now.
    fn filled(&self, server: Option<&Watched>) -> Result<bool, BenchError> {
        Ok(self.held(server)? >= self.kib as f64)
    }

    /// What the sessions hold now, KiB.
    fn held(&self, server: Option<&Watched>) -> Result<f64, BenchError> {
        Ok(match server {
            Some(server) => {
                let processes = SessionProcesses::measure(server.pid).map_err(|e| {
                    BenchError::Server(format!("measuring the sessions' processes: {e}"))
                })?;
                let kernel = KernelMemory::read().map_err(meminfo)?.since(&self.kernel);
                processes.private_total() + kernel.total()
            }
            None => self.mem_available as f64 - mem_available_kib().map_err(meminfo)? as f64,
        })
    }

    /// Deletes the newest of `ids` until the rest hold at most the budget, once every
    /// `default` context is ready: the budget is read every [`BUDGET_CHECK_EVERY`] creates,
    /// while the newest sessions' workers are still starting, so filling stops past it.
    /// Returns how many it deleted; a session it could not delete stays in `ids`.
    async fn trim(
        &self,
        client: &HutchClient,
        ids: &mut Vec<Uuid>,
        server: Option<&Watched>,
    ) -> Result<usize, BenchError> {
        for id in ids.iter() {
            wait_default_context(client, *id).await?;
        }
        let mut deleted = 0;
        loop {
            tokio::time::sleep(SETTLE).await;
            let held = self.held(server)?;
            if held <= self.kib as f64 || ids.is_empty() {
                return Ok(deleted);
            }
            let each = held / ids.len() as f64;
            let excess = ((held - self.kib as f64) / each).ceil() as usize;
            for _ in 0..excess.clamp(1, ids.len()) {
                let Some(id) = ids.last().copied() else { break };
                client.delete_session(id).await.map_err(api("delete"))?;
                ids.pop();
                deleted += 1;
            }
        }
    }
}

/// Memory of each slab cache, KiB (`num_slabs × pagesperslab` pages of 4 KiB), from
/// `/proc/slabinfo` (readable by root only).
pub fn slab_caches() -> io::Result<BTreeMap<String, f64>> {
    Ok(parse_slabinfo(&fs::read_to_string("/proc/slabinfo")?))
}

/// The caches of a `/proc/slabinfo` text (version 2.1), KiB each.
fn parse_slabinfo(slabinfo: &str) -> BTreeMap<String, f64> {
    let mut caches = BTreeMap::new();
    for line in slabinfo.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // name active num objsize perslab pagesperslab : tunables l b s : slabdata active num shared
        let (Some(name), Some(pages), Some(slabs)) = (
            fields.first(),
            fields.get(5).and_then(|v| v.parse::<f64>().ok()),
            fields.get(14).and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        caches.insert((*name).to_owned(), pages * slabs * 4.0);
    }
    caches
}

/// The caches that grew most from `before` to `after`, KiB per one of `count`, largest
/// first.
fn slab_growth(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    count: usize,
) -> Vec<(String, f64)> {
    let n = count.max(1) as f64;
    let mut grown: Vec<(String, f64)> = after
        .iter()
        .map(|(name, kib)| {
            let was = before.get(name).copied().unwrap_or(0.0);
            (name.clone(), (kib - was) / n)
        })
        .filter(|(_, kib)| *kib > 0.0)
        .collect();
    grown.sort_by(|a, b| b.1.total_cmp(&a.1));
    grown.truncate(SLAB_CACHES_SHOWN);
    grown
}

/// Creates idle sessions until a stop condition of `limits`, measures them idle and paused,
/// checks that each answers a command, and deletes them all (also when a step fails).
pub async fn density(
    client: &HutchClient,
    limits: Limits,
    server: Option<&Watched>,
) -> Result<DensityReport, BenchError> {
    tokio::time::sleep(SETTLE).await;
    let baseline = mem_available_kib().map_err(meminfo)?;
    let kernel_baseline = KernelMemory::read().map_err(meminfo)?;
    let slab_baseline = slab_caches().ok();
    let held_before = server.map(Held::measure).transpose()?;
    let budget = limits.budget_kib.map(|kib| Budget {
        kib,
        mem_available: baseline,
        kernel: kernel_baseline,
    });
    let mut ids = Vec::new();
    // Alive until every one is measured and asked to answer, however long filling takes.
    let held_session = CreateSessionRequest {
        ttl: Some(HELD_TTL_SECONDS),
        ..CreateSessionRequest::default()
    };
    let started = Instant::now();
    // Every way out of this loop goes on to delete the sessions made so far.
    let mut stop = loop {
        if ids.len() >= limits.cap {
            break Stop::Cap;
        }
        match mem_available_kib() {
            Ok(kib) if kib < limits.floor_kib => break Stop::MemoryFloor,
            Ok(_) => {}
            Err(e) => break Stop::ReadFailed(e.to_string()),
        }
        if let Some(budget) = &budget
            && ids.len() % BUDGET_CHECK_EVERY == 0
        {
            match budget.filled(server) {
                Ok(true) => break Stop::Budget { trimmed: 0 },
                Ok(false) => {}
                Err(e) => break Stop::ReadFailed(e.to_string()),
            }
        }
        match client.create_session(&held_session).await {
            Ok(session) => ids.push(session.session_id),
            Err(e) => break Stop::CreateFailed(e.to_string()),
        }
    };
    let trimmed = match (&mut stop, &budget) {
        (Stop::Budget { trimmed }, Some(budget)) => budget
            .trim(client, &mut ids, server)
            .await
            .map(|deleted| *trimmed = deleted),
        _ => Ok(()),
    };
    let mut measured = match trimmed {
        Ok(()) => {
            measure_held(
                client,
                &ids,
                (baseline, kernel_baseline),
                started,
                server,
                limits.wake_window,
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Ok(report) = &mut measured {
        if let (Some(server), Some(before)) = (server, held_before) {
            // Measured while all sessions are still there (they were resumed).
            // (Not `?`: the sessions are deleted below whatever happens.)
            report.kernel = Held::measure(server).ok().map(|held| (before, held));
        }
        if let (Some(before), Some(idle)) = (&slab_baseline, &report.slab_idle) {
            report.slab_growth = slab_growth(before, idle, ids.len());
        }
    }
    let mut delete_failed = None;
    for id in &ids {
        if let Err(e) = client.delete_session(*id).await {
            delete_failed.get_or_insert(e);
        }
    }
    let mut report = measured?;
    if let Some(e) = delete_failed {
        return Err(api("delete")(e));
    }
    report.stop = stop;
    Ok(report)
}

/// The measuring part of [`density`], on the sessions `ids` it created.
async fn measure_held(
    client: &HutchClient,
    ids: &[Uuid],
    (baseline, kernel_baseline): (u64, KernelMemory),
    started: Instant,
    server: Option<&Watched>,
    wake_window: Duration,
) -> Result<DensityReport, BenchError> {
    let n = ids.len().max(1) as f64;
    for id in ids {
        wait_default_context(client, *id).await?;
    }
    let fill = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let idle = mem_available_kib().map_err(meminfo)?;
    let kernel_total = KernelMemory::read()
        .map_err(meminfo)?
        .since(&kernel_baseline);
    let slab_idle = slab_caches().ok();
    let kernel_memory = kernel_total.per(&KernelMemory::default(), ids.len());
    let processes = server
        .map(|s| SessionProcesses::measure(s.pid))
        .transpose()
        .map_err(|e| BenchError::Server(format!("measuring the sessions' processes: {e}")))?;
    let idle_switches_per_minute = switches_per_minute(server, wake_window).await?;
    let (idle_cgroup, idle_rss, pids) = stats_sums(client, ids).await?;
    for id in ids {
        client.pause_session(*id).await.map_err(api("pause"))?;
    }
    tokio::time::sleep(SETTLE).await;
    let paused = mem_available_kib().map_err(meminfo)?;
    let paused_kernel_memory = KernelMemory::read()
        .map_err(meminfo)?
        .per(&kernel_baseline, ids.len());
    let paused_processes = server
        .map(|s| SessionProcesses::measure(s.pid))
        .transpose()
        .map_err(|e| BenchError::Server(format!("measuring the sessions' processes: {e}")))?;
    let paused_switches_per_minute = switches_per_minute(server, wake_window).await?;
    let (paused_cgroup, _, _) = stats_sums(client, ids).await?;
    let command = CommandRequest {
        argv: Some(vec!["true".into()]),
        ..CommandRequest::default()
    };
    // Each answers a command, and its `default` context is ready again (a pause stops an
    // unused one, the resume starts it again).
    let mut answered = 0;
    for id in ids {
        client.resume_session(*id).await.map_err(api("resume"))?;
        let result = client
            .run_command(*id, &command)
            .await
            .map_err(api("run after resume"))?;
        if result.exit_code == 0 {
            answered += 1;
        }
    }
    for id in ids {
        wait_default_context(client, *id).await?;
    }
    let per = |before: u64, after: u64| drop_per(before, after, ids.len());
    Ok(DensityReport {
        sessions: ids.len(),
        stop: Stop::Cap,
        fill,
        idle_kib: per(baseline, idle),
        paused_kib: per(baseline, paused),
        idle_cgroup_kib: idle_cgroup as f64 / 1024.0 / n,
        idle_cgroup_rss_kib: idle_rss as f64 / 1024.0 / n,
        paused_cgroup_kib: paused_cgroup as f64 / 1024.0 / n,
        pids: pids as f64 / n,
        answered,
        kernel: None,
        kernel_memory,
        paused_kernel_memory,
        processes,
        paused_processes,
        idle_switches_per_minute,
        paused_switches_per_minute,
        idle_drop_kib: baseline as f64 - idle as f64,
        kernel_total,
        slab_growth: Vec::new(),
        slab_idle,
    })
}

/// How often a session's processes were switched out in a minute, watched for `window`
/// (`None` without the server's pid to find them).
async fn switches_per_minute(
    server: Option<&Watched>,
    window: Duration,
) -> Result<Option<f64>, BenchError> {
    let Some(server) = server else {
        return Ok(None);
    };
    let failed = |e: io::Error| BenchError::Server(format!("counting context switches: {e}"));
    let before = Switches::read(server.pid).map_err(failed)?;
    tokio::time::sleep(window).await;
    let after = Switches::read(server.pid).map_err(failed)?;
    Ok(Some(after.per_session_minute(&before, window)))
}

/// The drop from `before` to `after` (KiB) shared by `count`; negative when memory was freed
/// elsewhere meanwhile (the figure is then noise, not a cost).
fn drop_per(before: u64, after: u64, count: usize) -> f64 {
    (before as f64 - after as f64) / count.max(1) as f64
}

/// Sums of `memoryBytes`, `rssBytes` and `pids` over the sessions' stats.
async fn stats_sums(client: &HutchClient, ids: &[Uuid]) -> Result<(u64, u64, u64), BenchError> {
    let (mut memory, mut rss, mut pids) = (0, 0, 0);
    for id in ids {
        let stats = client.session_stats(*id).await.map_err(api("stats"))?;
        memory += stats.memory_bytes;
        rss += stats.rss_bytes;
        pids += stats.pids;
    }
    Ok((memory, rss, pids))
}

/// Waits until the session's `default` context has started its worker (the agent starts it
/// in the background shortly after the session is created).
async fn wait_default_context(client: &HutchClient, id: Uuid) -> Result<(), BenchError> {
    let path = format!("/v1/sessions/{id}/interpreter/contexts/default");
    for _ in 0..600 {
        let (status, body) = client
            .request(http::Method::GET, &path, None)
            .await
            .map_err(api("default context"))?;
        let context: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status.is_success() && context["active"] == true {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::Server(format!(
        "session {id}: the default context did not start within 30 s"
    )))
}

/// A peer's memory per container or process.
#[derive(Debug, Clone)]
pub struct PeerDensity {
    /// Containers or processes started and measured.
    pub count: usize,
    /// Drop of `MemAvailable` per one, KiB.
    pub kib: f64,
    /// The private memory of each one's processes and the kernel's growth per one, KiB, as
    /// hutch's sessions are measured (where the peer's processes can be found).
    pub host_kib: Option<(f64, KernelMemory)>,
}

/// Starts `count` `unshare`d `sleep infinity` (new pid, mount, net, ipc and uts namespaces,
/// a fresh `/proc`) and measures the drop of `MemAvailable` per process; all are killed
/// before it returns.
pub fn unshare_sleepers(count: usize) -> Result<PeerDensity, String> {
    std::thread::sleep(SETTLE);
    let before = mem_available_kib().map_err(|e| e.to_string())?;
    let mut children: Vec<Child> = Vec::new();
    let mut started = Ok(());
    for _ in 0..count {
        let spawned = Command::new("unshare")
            .args([
                "--fork",
                "--kill-child",
                "--pid",
                "--mount-proc",
                "--net",
                "--ipc",
                "--uts",
                "--mount",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                started = Err(format!("starting unshare: {e}"));
                break;
            }
        }
    }
    std::thread::sleep(SETTLE);
    let after = mem_available_kib().map_err(|e| e.to_string());
    // `--kill-child`: the sleeper dies with its unshare.
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    started?;
    Ok(PeerDensity {
        count,
        kib: drop_per(before, after?, count),
        host_kib: None,
    })
}

/// The image the podman peer imports.
const PODMAN_IMAGE: &str = "localhost/hutch-bench-idle:latest";

/// Imports a busybox root file system as an image (no registry), starts `count` `podman run
/// -d --network none … sleep infinity` containers and measures the drop of `MemAvailable` per
/// container (its conmon included); all are removed, and the image, before it returns. `Err`
/// says why podman could not run.
pub fn podman_sleepers(count: usize, scratch: &Path) -> Result<PeerDensity, String> {
    let busybox = which("busybox").ok_or("busybox is not installed")?;
    if which("podman").is_none() {
        return Err("podman is not installed (scripts/deps.sh test installs it)".into());
    }
    let dir = scratch.join(format!("hutch-bench-idle-rootfs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let rootfs = dir.join("rootfs");
    let tarball = dir.join("rootfs.tar");
    let built = (|| {
        fs::create_dir_all(rootfs.join("bin"))?;
        fs::copy(&busybox, rootfs.join("bin/busybox"))?;
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep"))?;
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))
    })()
    .map_err(|e| format!("building the root file system: {e}"));
    let result = built
        .and_then(|()| {
            output(
                Command::new("tar")
                    .arg("-C")
                    .arg(&rootfs)
                    .arg("-cf")
                    .arg(&tarball)
                    .arg("."),
            )
        })
        .and_then(|_| {
            output(
                Command::new("podman")
                    .arg("import")
                    .arg(&tarball)
                    .arg(PODMAN_IMAGE),
            )
        })
        .and_then(|_| podman_measure(count));
    let _ = output(Command::new("podman").args(["rmi", "-f", PODMAN_IMAGE]));
    let _ = fs::remove_dir_all(&dir);
    result
}

/// The measuring part of [`podman_sleepers`], once the image exists.
fn podman_measure(count: usize) -> Result<PeerDensity, String> {
    let name = |i: usize| format!("hutch-bench-idle-{}-{i}", std::process::id());
    // One container first, so that podman's own first-use state is not counted.
    let first = output(Command::new("podman").args(podman_run(&name(count))));
    let _ = output(Command::new("podman").args(["rm", "-f", "-t", "0", &name(count)]));
    first?;
    std::thread::sleep(SETTLE);
    let before = mem_available_kib().map_err(|e| e.to_string())?;
    let kernel_before = KernelMemory::read().map_err(|e| e.to_string())?;
    let mut started = Ok(());
    let mut names = Vec::new();
    for i in 0..count {
        names.push(name(i));
        if let Err(e) = output(Command::new("podman").args(podman_run(&name(i)))) {
            started = Err(e);
            break;
        }
    }
    std::thread::sleep(SETTLE);
    let after = mem_available_kib().map_err(|e| e.to_string());
    let host_kib = started
        .is_ok()
        .then(|| podman_host_kib(&names, &kernel_before))
        .flatten();
    // By name: a container whose start failed exists too.
    let _ = output(
        Command::new("podman")
            .args(["rm", "-f", "-t", "0", "--ignore"])
            .args(&names),
    );
    started?;
    Ok(PeerDensity {
        count,
        kib: drop_per(before, after?, count),
        host_kib,
    })
}

/// Per container in `names`: the private memory of its processes (its `conmon` and its
/// `sleep`, found through `podman inspect`), and the kernel's growth since `before`, KiB.
fn podman_host_kib(names: &[String], before: &KernelMemory) -> Option<(f64, KernelMemory)> {
    let kernel = KernelMemory::read().ok()?.per(before, names.len());
    let pids = output(
        Command::new("podman")
            .args(["inspect", "--format", "{{.State.Pid}} {{.State.ConmonPid}}"])
            .args(names),
    )
    .ok()?;
    let mut private = 0.0;
    for pid in pids.split_whitespace() {
        private += ProcessMemory::read(pid.parse().ok()?)?.private_dirty;
    }
    Some((private / names.len().max(1) as f64, kernel))
}

/// `podman run` arguments of one sleeper: runc (crun refuses hybrid cgroup hosts), limits
/// within the ones this process may set, no network.
fn podman_run(name: &str) -> Vec<&str> {
    vec![
        "run",
        "-d",
        "--name",
        name,
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
        "--network",
        "none",
        PODMAN_IMAGE,
        "sleep",
        "infinity",
    ]
}

/// Runs `cmd`; its stdout, or its stderr as the error.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The path of `program` in `PATH`.
fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLABINFO: &str = "slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
kernfs_node_cache  40000  40960    128   32    1 : tunables    0    0    0 : slabdata   1280   1280      0
mnt_cache           3000   3060    320   51    4 : tunables    0    0    0 : slabdata     60     60      0
";

    #[test]
    fn slabinfo_is_parsed_to_kib_per_cache() {
        let caches = parse_slabinfo(SLABINFO);
        assert_eq!(caches.len(), 2, "{caches:?}");
        assert_eq!(caches["kernfs_node_cache"], 1280.0 * 4.0);
        assert_eq!(caches["mnt_cache"], 60.0 * 4.0 * 4.0);
    }

    #[test]
    fn slab_growth_lists_the_largest_first_per_session() {
        let before = parse_slabinfo(SLABINFO);
        let mut after = before.clone();
        *after.get_mut("kernfs_node_cache").expect("parsed") += 400.0;
        *after.get_mut("mnt_cache").expect("parsed") += 1000.0;
        after.insert("new_cache".into(), 40.0);
        let grown = slab_growth(&before, &after, 10);
        let names: Vec<&str> = grown.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["mnt_cache", "kernfs_node_cache", "new_cache"]);
        assert_eq!(grown[0].1, 100.0);
    }

    #[test]
    fn switches_are_counted_per_session_and_minute() {
        let before = Switches {
            sessions: 4,
            count: 1_000,
        };
        let after = Switches {
            sessions: 4,
            count: 1_040,
        };
        let rate = after.per_session_minute(&before, Duration::from_secs(30));
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn a_process_without_sessions_counts_nothing() {
        // Not a server: no sessions, nothing counted, and no error.
        let none = Switches::read(std::process::id()).unwrap();
        assert_eq!((none.sessions, none.count), (0, 0));
    }

    #[test]
    fn private_total_counts_every_process() {
        let one = |private_dirty| ProcessMemory {
            rss: 0.0,
            pss: 0.0,
            private_dirty,
        };
        let p = SessionProcesses {
            agents: 4,
            agent: one(1000.0),
            workers: 2,
            worker: one(3000.0),
        };
        assert_eq!(p.private_total(), 10_000.0);
        assert_eq!(p.private_per_session(), 2_500.0);
    }

    #[test]
    fn mem_available_is_read() {
        let kib = mem_available_kib().expect("MemAvailable of this machine");
        assert!(kib > 0);
    }
}
