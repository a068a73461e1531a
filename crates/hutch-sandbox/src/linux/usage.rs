//! What a sandbox's processes use now, read from its cgroup counters: memory (v2
//! `memory.current`/`memory.stat`, or v1 `memory.usage_in_bytes`/`memory.stat`), CPU time (v2
//! `cpu.stat`, or v1 `cpuacct.usage`) and tasks (`pids.current`), on v1, v2 and hybrid hosts.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use hutch_api::SessionStats;
use uuid::Uuid;

use crate::{SandboxError, SandboxRecord};

use super::cgroups::UsageDirs;
use super::{LinuxRuntime, lock};

impl LinuxRuntime {
    /// [`crate::Runtime::stats`].
    pub(super) fn sandbox_stats(
        &self,
        record: &SandboxRecord,
    ) -> Result<SessionStats, SandboxError> {
        let cgroup = self.inner.cgroups.existing(record.sandbox_id);
        if !self.inner.cgroups.present(&cgroup) {
            return Err(SandboxError::Gone(record.id));
        }
        Ok(read(&self.inner.cgroups.usage_dirs(record.sandbox_id)))
    }

    /// [`crate::Runtime::all_stats`].
    pub(super) fn every_sandbox_stats(&self) -> HashMap<Uuid, SessionStats> {
        let live: Vec<(Uuid, Uuid)> = lock(&self.inner.live)
            .iter()
            .map(|(session, live)| (*session, live.sandbox_id))
            .collect();
        live.into_iter()
            .map(|(session, sandbox)| (session, read(&self.inner.cgroups.usage_dirs(sandbox))))
            .collect()
    }
}

/// Reads the counters in `dirs`; a counter the host does not keep reads as zero.
fn read(dirs: &UsageDirs) -> SessionStats {
    let mut stats = SessionStats {
        memory_bytes: 0,
        rss_bytes: 0,
        cache_bytes: 0,
        cpu_seconds: 0.0,
        pids: 0,
    };
    if let Some(memory) = &dirs.memory {
        stats.memory_bytes = number(&memory.join("memory.usage_in_bytes"));
        let stat = keyed(&memory.join("memory.stat"));
        stats.rss_bytes = stat.get("total_rss").copied().unwrap_or_default();
        stats.cache_bytes = stat.get("total_cache").copied().unwrap_or_default();
    } else if let Some(v2) = &dirs.v2 {
        stats.memory_bytes = number(&v2.join("memory.current"));
        let stat = keyed(&v2.join("memory.stat"));
        stats.rss_bytes = stat.get("anon").copied().unwrap_or_default();
        stats.cache_bytes = stat.get("file").copied().unwrap_or_default();
    }
    let v2_cpu = dirs
        .v2
        .as_ref()
        .and_then(|v2| keyed(&v2.join("cpu.stat")).get("usage_usec").copied());
    stats.cpu_seconds = match (v2_cpu, &dirs.cpu) {
        (Some(usec), _) => usec as f64 / 1e6,
        (None, Some(cpu)) => number(&cpu.join("cpuacct.usage")) as f64 / 1e9,
        (None, None) => 0.0,
    };
    stats.pids = match (&dirs.pids, &dirs.v2) {
        (Some(pids), _) => number(&pids.join("pids.current")),
        (None, Some(v2)) => number(&v2.join("pids.current")),
        (None, None) => 0,
    };
    stats
}

/// A file holding one number; 0 when missing or unreadable.
fn number(file: &Path) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_default()
}

/// A file of `key value` lines (`memory.stat`, `cpu.stat`); empty when missing.
fn keyed(file: &Path) -> HashMap<String, u64> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_and_v2_cpu_are_read_on_a_hybrid_host() {
        let dir = tempfile::tempdir().unwrap();
        let (v2, memory, pids) = (
            dir.path().join("v2"),
            dir.path().join("mem"),
            dir.path().join("pids"),
        );
        for d in [&v2, &memory, &pids] {
            fs::create_dir(d).unwrap();
        }
        fs::write(
            v2.join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\n",
        )
        .unwrap();
        fs::write(memory.join("memory.usage_in_bytes"), "9000\n").unwrap();
        fs::write(
            memory.join("memory.stat"),
            "cache 1\nrss 2\ntotal_cache 3000\ntotal_rss 5000\n",
        )
        .unwrap();
        fs::write(pids.join("pids.current"), "4\n").unwrap();
        let stats = read(&UsageDirs {
            v2: Some(v2),
            memory: Some(memory),
            pids: Some(pids),
            cpu: None,
        });
        assert_eq!(
            stats,
            SessionStats {
                memory_bytes: 9000,
                rss_bytes: 5000,
                cache_bytes: 3000,
                cpu_seconds: 1.5,
                pids: 4,
            }
        );
    }
}
