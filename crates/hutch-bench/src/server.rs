//! A `hutch serve` started by the benchmark itself: private data directory, free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::BenchError;

/// A server process, stopped (with its sandboxes destroyed) when dropped.
pub struct ServerProcess {
    child: Child,
    data_dir: PathBuf,
    /// Whether dropping the server removes its data directory (not one it shares).
    owns_data_dir: bool,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A token valid for the benchmark's tenant.
    pub token: String,
}

impl ServerProcess {
    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `binary serve` with `warm_pool` pre-built sandboxes, and waits until it
    /// listens and its pool is full.
    pub fn start(binary: &Path, warm_pool: usize) -> Result<ServerProcess, BenchError> {
        ServerProcess::start_with(binary, warm_pool, &[])
    }

    /// As [`ServerProcess::start`], with extra `hutch serve` arguments.
    pub fn start_with(
        binary: &Path,
        warm_pool: usize,
        extra: &[&str],
    ) -> Result<ServerProcess, BenchError> {
        // Several servers of one benchmark run side by side: each has a directory of its own.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let name = match n {
            0 => format!("hutch-bench-{}", std::process::id()),
            n => format!("hutch-bench-{}-{n}", std::process::id()),
        };
        let data_dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut server = ServerProcess::start_in(binary, warm_pool, data_dir, extra)?;
        server.owns_data_dir = true;
        Ok(server)
    }

    /// As [`ServerProcess::start_with`], on the data directory `data_dir` (a replica beside
    /// another server on the same one; left in place when the server is dropped).
    pub fn start_in(
        binary: &Path,
        warm_pool: usize,
        data_dir: PathBuf,
        extra: &[&str],
    ) -> Result<ServerProcess, BenchError> {
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--on-exit", "destroy"])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--warm-pool")
            .arg(warm_pool.to_string())
            .args(extra)
            .env("HUTCH_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Server(format!("starting {}: {e}", binary.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Server("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut token) = (None, None);
        while url.is_none() || token.is_none() {
            let Some(Ok(line)) = lines.next() else {
                return Err(BenchError::Server(
                    "hutch serve exited before it was ready".into(),
                ));
            };
            if let Some(u) = line.split("listening on ").nth(1) {
                url = Some(u.trim().to_owned());
            }
            // `hutch serve` prints the token as a line to paste: `export TOKEN=…`.
            if let Some(t) = line.trim().strip_prefix("export TOKEN=") {
                token = Some(t.to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        // Let the warm pool fill before measuring.
        std::thread::sleep(Duration::from_millis(200 + 60 * warm_pool as u64));
        Ok(ServerProcess {
            child,
            data_dir,
            owns_data_dir: false,
            url: url.unwrap_or_default(),
            token: token.unwrap_or_default(),
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..500 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
