//! A throw-away PostgreSQL cluster, for tests and benchmarks: `initdb` into a temporary
//! directory, `postgres` listening only on a Unix socket in that directory (no TCP port to
//! collide on), as the `postgres` user when run as root (PostgreSQL refuses to run as root).
//!
//! A shell supervises the server, reading commands on its standard input: `stop` shuts the
//! server down (fast shutdown: connections are closed, as when the database goes away) and
//! `start` starts it again on the same data. When the owning process ends, however it ends,
//! the pipe closes and the shell stops the server (immediate shutdown) and removes the
//! directory. Durability is off (`fsync=off`, `synchronous_commit=off`): nothing here
//! outlives the process.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the cluster may take to accept connections, or to shut down.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The supervising shell: runs the server in the background, then obeys its standard input.
/// `wait` after a stop lets the server finish its shutdown before the next command.
const SUPERVISOR: &str = r#"trap '' INT
run() { "$@" >>"$HUTCH_PG_DIR/log" 2>&1 & pid=$!; }
run "$@"
while read -r command; do
  case "$command" in
    stop) kill -INT "$pid"; wait "$pid" ;;
    start) run "$@" ;;
  esac
done
kill -QUIT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$HUTCH_PG_DIR""#;

/// A running (or stopped) scratch cluster; dropping it (or ending the process) stops the
/// server and removes its directory.
#[derive(Debug)]
pub struct ScratchPostgres {
    /// The directory of its socket and data.
    dir: PathBuf,
    /// The server programs.
    bin: PathBuf,
    /// The supervising shell.
    supervisor: Child,
    /// Its standard input: commands, and the end of the process when closed.
    commands: Mutex<Option<ChildStdin>>,
}

impl ScratchPostgres {
    /// Creates the cluster and starts its server; returns once it accepts connections.
    pub fn start() -> Result<ScratchPostgres, String> {
        let bin = bindir()?;
        let dir = std::env::temp_dir().join(format!("hutch-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cluster = ScratchPostgres::supervise(bin, dir);
        cluster.and_then(|cluster| {
            cluster.wait_until(true)?;
            Ok(cluster)
        })
    }

    /// Runs `initdb` in `dir` and starts the supervising shell (which removes `dir` when it
    /// ends); removes `dir` itself if it cannot get that far.
    fn supervise(bin: PathBuf, dir: PathBuf) -> Result<ScratchPostgres, String> {
        let prepared = (|| {
            if rustix::process::geteuid().is_root() {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&dir)
                    .status()
                    .map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err(format!("chown postgres {}: {status}", dir.display()));
                }
            }
            let data = dir.join("data").display().to_string();
            run(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
            )?;
            let dir_s = dir.display().to_string();
            Command::new("sh")
                .arg("-c")
                .arg(SUPERVISOR)
                .arg("sh")
                .args(as_postgres())
                .arg(bin.join("postgres"))
                .args(["-D", &data, "-k", &dir_s, "-c", "listen_addresses="])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                .env("HUTCH_PG_DIR", &dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting postgres: {e}"))
        })();
        let mut supervisor = match prepared {
            Ok(supervisor) => supervisor,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        let commands = supervisor
            .stdin
            .take()
            .ok_or_else(|| "the supervisor has no stdin".to_owned())?;
        Ok(ScratchPostgres {
            dir,
            bin,
            supervisor,
            commands: Mutex::new(Some(commands)),
        })
    }

    /// The URL of `database` (as the `postgres` superuser, over the Unix socket).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}",
            self.dir.display()
        )
    }

    /// Stops the server (fast shutdown: open connections are closed) and returns once it
    /// has exited; the data stays for [`ScratchPostgres::resume`].
    pub fn stop(&self) -> Result<(), String> {
        self.command("stop")?;
        self.wait_until(false)
    }

    /// Starts the stopped server again on the same data, and returns once it accepts
    /// connections.
    pub fn resume(&self) -> Result<(), String> {
        self.command("start")?;
        self.wait_until(true)
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Sends `command` to the supervisor.
    fn command(&self, command: &str) -> Result<(), String> {
        let mut commands = self
            .commands
            .lock()
            .map_err(|_| "the supervisor's pipe is poisoned".to_owned())?;
        let commands = commands
            .as_mut()
            .ok_or_else(|| "the supervisor is gone".to_owned())?;
        writeln!(commands, "{command}").map_err(|e| format!("{command} postgres: {e}"))
    }

    /// Waits (bounded) until the server accepts connections (`up`), or until it has exited
    /// (no `postmaster.pid`).
    fn wait_until(&self, up: bool) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let reached = if up {
                self.ready()
            } else {
                !self.dir.join("data/postmaster.pid").exists()
            };
            if reached {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let what = if up { "start" } else { "stop" };
                return Err(format!("postgres did not {what}: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server accepts connections.
    fn ready(&self) -> bool {
        self.dir.join(".s.PGSQL.5432").exists()
            && Command::new(self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&self.dir)
                .args(["-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success())
    }
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

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        // Closing the pipe tells the supervisor to stop the server and remove the directory.
        let commands = self.commands.get_mut().map(Option::take);
        drop(commands);
        let _ = self.supervisor.wait();
    }
}
