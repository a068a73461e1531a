//! The soak scenario: many create → run `true` → delete cycles from concurrent clients, with
//! the server's resources counted before and after, and the latency tail per window of the
//! run.
//!
//! Targets: nothing the server holds grows (open descriptors, cgroups, mounts, directories of
//! its data directory; RSS within allocator noise) once the warm pool is full again, and the
//! p99 of the last window is that of the first (no slowdown as the run goes on).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hutch_api::{CommandRequest, CreateSessionRequest};
use hutch_client::HutchClient;
use tokio::sync::Mutex;

use crate::{BenchError, Samples};

/// How a soak runs.
#[derive(Debug, Clone, Copy)]
pub struct SoakConfig {
    /// Cycles in all.
    pub cycles: usize,
    /// Concurrent clients, each running cycles one after another.
    pub clients: usize,
    /// Windows the run is cut into, in order of completion, for the latency over time.
    pub windows: usize,
}

/// The server a soak watches: its process, data directory and cgroup parent (relative to the
/// root of each cgroup hierarchy, see `hutch_sandbox::linux::cgroup_parent`).
#[derive(Debug, Clone)]
pub struct Watched {
    /// The `hutch serve` process.
    pub pid: u32,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    /// `hutch/<instance>`.
    pub cgroup_parent: PathBuf,
}

/// What a server holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Resident memory of the server process, KiB.
    pub rss_kib: u64,
    /// Its open file descriptors.
    pub fds: u64,
    /// Cgroups below its parent, in all hierarchies.
    pub cgroups: u64,
    /// Mounts that name its data directory, as it sees them.
    pub mounts: u64,
    /// Directories in its data directory, two levels deep.
    pub dirs: u64,
}

impl Resources {
    /// Counts what `server` holds now.
    pub fn measure(server: &Watched) -> io::Result<Resources> {
        let proc_dir = PathBuf::from(format!("/proc/{}", server.pid));
        let status = fs::read_to_string(proc_dir.join("status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let fds = fs::read_dir(proc_dir.join("fd"))?.count() as u64;
        let data_dir = server.data_dir.to_string_lossy().into_owned();
        let mounts = fs::read_to_string(proc_dir.join("mountinfo"))?
            .lines()
            .filter(|l| l.contains(data_dir.as_str()))
            .count() as u64;
        let mut cgroups = 0;
        for hierarchy in fs::read_dir("/sys/fs/cgroup")?.flatten() {
            cgroups += count_dirs(&hierarchy.path().join(&server.cgroup_parent), u32::MAX);
        }
        Ok(Resources {
            rss_kib,
            fds,
            cgroups,
            mounts,
            dirs: count_dirs(&server.data_dir, 2),
        })
    }

    /// Whether any count (RSS aside) is above `start`'s.
    pub fn grew_from(&self, start: &Resources) -> bool {
        self.fds > start.fds
            || self.cgroups > start.cgroups
            || self.mounts > start.mounts
            || self.dirs > start.dirs
    }
}

/// Directories below `dir` (not counting it), down to `depth` levels; 0 when it is missing.
fn count_dirs(dir: &Path, depth: u32) -> u64 {
    if depth == 0 {
        return 0;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| 1 + count_dirs(&e.path(), depth - 1))
        .sum()
}

/// The latency of one window of cycles.
#[derive(Debug, Clone)]
pub struct Window {
    /// Cycles in it.
    pub cycles: usize,
    /// Median cycle.
    pub p50: Duration,
    /// 99th percentile cycle.
    pub p99: Duration,
    /// Cycles completed per second while it ran (all clients together).
    pub per_second: f64,
}

/// What a soak measured.
#[derive(Debug)]
pub struct SoakReport {
    /// Every cycle.
    pub cycles: Samples,
    /// The run cut into windows in order of completion.
    pub windows: Vec<Window>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs `config.cycles` create → run `true` → delete cycles from `config.clients` clients at
/// once; the first failing call ends the run with its error.
pub async fn run(client: &HutchClient, config: SoakConfig) -> Result<SoakReport, BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    // (when it finished, how long it took), in order of completion.
    let done: Arc<Mutex<Vec<(Instant, Duration)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(config.cycles)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..config.clients.max(1) {
        let (client, next, done) = (client.clone(), Arc::clone(&next), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < config.cycles {
                let began = Instant::now();
                cycle(&client).await?;
                let finished = Instant::now();
                done.lock().await.push((finished, finished - began));
            }
            Ok::<(), BenchError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| BenchError::Server(format!("a soak client failed: {e}")))??;
    }
    let elapsed = start.elapsed();
    let done = std::mem::take(&mut *done.lock().await);
    let mut cycles = Samples::new();
    for (_, took) in &done {
        cycles.push(*took);
    }
    let per_window = done.len().div_ceil(config.windows.max(1)).max(1);
    let mut windows = Vec::new();
    let mut window_start = start;
    for chunk in done.chunks(per_window) {
        let mut samples = Samples::new();
        for (_, took) in chunk {
            samples.push(*took);
        }
        let end = chunk.last().map(|(at, _)| *at).unwrap_or(window_start);
        let span = (end - window_start).as_secs_f64().max(1e-9);
        windows.push(Window {
            cycles: chunk.len(),
            p50: samples.p50(),
            p99: samples.p99(),
            per_second: chunk.len() as f64 / span,
        });
        window_start = end;
    }
    Ok(SoakReport {
        cycles,
        windows,
        elapsed,
    })
}

/// One create → run `true` → delete.
async fn cycle(client: &HutchClient) -> Result<(), BenchError> {
    let session = client
        .create_session(&CreateSessionRequest::default())
        .await
        .map_err(|source| BenchError::Api {
            step: "create",
            source,
        })?;
    let command = CommandRequest {
        argv: Some(vec!["true".into()]),
        ..CommandRequest::default()
    };
    let ran = client.run_command(session.session_id, &command).await;
    // Delete even when the command failed, so that a failure leaves nothing behind.
    let deleted = client.delete_session(session.session_id).await;
    let result = ran.map_err(|source| BenchError::Api {
        step: "run",
        source,
    })?;
    deleted.map_err(|source| BenchError::Api {
        step: "delete",
        source,
    })?;
    if result.exit_code != 0 {
        return Err(BenchError::Server(format!(
            "`true` exited with {}",
            result.exit_code
        )));
    }
    Ok(())
}

/// Waits up to `limit` for `server`'s counts to come back to `start`'s (sandboxes of deleted
/// sessions are torn down, the warm pool refills), and answers the last counts.
pub async fn settle(server: &Watched, start: &Resources, limit: Duration) -> io::Result<Resources> {
    let deadline = Instant::now() + limit;
    loop {
        let now = Resources::measure(server)?;
        if !now.grew_from(start) || Instant::now() >= deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_of_this_process_are_counted() {
        let dir = tempfile_dir();
        fs::create_dir_all(dir.join("a/b/c")).expect("a scratch tree");
        fs::create_dir_all(dir.join("d")).expect("a scratch tree");
        let watched = Watched {
            pid: std::process::id(),
            data_dir: dir.clone(),
            cgroup_parent: PathBuf::from("hutch/no-such-instance"),
        };
        let now = Resources::measure(&watched).expect("counts of this process");
        assert!(now.rss_kib > 0);
        assert!(now.fds >= 3);
        assert_eq!(now.cgroups, 0);
        assert_eq!(now.dirs, 3, "a, a/b and d: two levels deep");
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hutch-soak-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }
}
