//! A PostgreSQL cluster for tests: `initdb` into a temporary directory, `postgres` listening
//! only on a Unix socket in that directory (no TCP port to collide on), as the `postgres` user
//! when the tests run as root. A shell supervises it, reading its standard input: when the
//! test process ends, however it ends, the pipe closes and the shell stops the server
//! (immediate shutdown) and removes the directory.
//!
//! Standalone (the standard library, `rustix` and `tempfile` only), so that the end-to-end
//! tests of `hutch` include it too.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the cluster may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster.
pub struct Cluster {
    /// The directory of its socket (and of its data).
    pub socket_dir: PathBuf,
    /// The shell supervising the server; its standard input is held open until the process
    /// ends.
    _supervisor: Mutex<Child>,
}

/// The directory of the PostgreSQL server programs: the newest Debian install, or
/// `pg_config --bindir`.
fn bindir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|e| format!("PostgreSQL is not installed (scripts/deps.sh test): {e}"))?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `setpriv` arguments that run a program as `postgres` when we are root (PostgreSQL refuses
/// to run as root); nothing otherwise.
fn as_postgres() -> Vec<&'static str> {
    if rustix::process::geteuid().is_root() {
        vec![
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]
    } else {
        Vec::new()
    }
}

/// Runs `program args…` (as `postgres` when root) to completion.
fn run(program: &Path, args: &[&str]) -> Result<(), String> {
    let prefix = as_postgres();
    let mut command = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    let out = command
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Creates and starts the cluster.
pub fn start() -> Result<Cluster, String> {
    let bin = bindir()?;
    let dir = tempfile::Builder::new()
        .prefix("hutch-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = dir.join("data");
    if rustix::process::geteuid().is_root() {
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("chown postgres {}: {status}", dir.display()));
        }
    }
    let (dir_s, data_s) = (dir.display().to_string(), data.display().to_string());
    run(
        &bin.join("initdb"),
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
    )?;
    // The server in the background; `read` returns when our end of the pipe closes.
    let script = r#"trap '' INT
"$@" >"$HUTCH_PG_DIR/log" 2>&1 &
pid=$!
read -r _
kill -QUIT "$pid"
wait "$pid"
rm -rf "$HUTCH_PG_DIR""#;
    let mut supervisor = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(as_postgres())
        .arg(bin.join("postgres"))
        .args(["-D", &data_s, "-k", &dir_s, "-c", "listen_addresses="])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
        .env("HUTCH_PG_DIR", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let socket = dir.join(".s.PGSQL.5432");
    let started = Instant::now();
    while !ready(&bin, &dir_s, &socket) {
        if started.elapsed() > START_TIMEOUT {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            if let Some(stdin) = supervisor.stdin.as_mut() {
                let _ = stdin.write_all(b"stop\n");
            }
            return Err(format!("postgres did not start: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Cluster {
        socket_dir: dir,
        _supervisor: Mutex::new(supervisor),
    })
}

/// Whether the server accepts connections.
fn ready(bin: &Path, dir: &str, socket: &Path) -> bool {
    socket.exists()
        && Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", dir, "-U", "postgres"])
            .status()
            .is_ok_and(|s| s.success())
}

impl Cluster {
    /// The URL of database `name` in the cluster, as user `postgres`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost/{name}?host={}",
            self.socket_dir.display()
        )
    }
}
