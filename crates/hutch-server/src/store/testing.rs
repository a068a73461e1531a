//! Stores for tests: SQLite in a temporary directory, and databases in a real PostgreSQL
//! cluster that the test binary starts itself (once, on first use).
//!
//! The cluster: `initdb` into a temporary directory, `postgres` listening only on a Unix socket
//! in that directory (no TCP port to collide on), as the `postgres` user when the tests run as
//! root. A shell supervises it, reading its standard input: when the test process ends, however
//! it ends, the pipe closes and the shell stops the server (immediate shutdown) and removes the
//! directory. Each test gets a database of its own.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Store, StoreLocation};

/// How long the cluster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster.
struct Cluster {
    /// The directory of its socket (and of its data).
    socket_dir: PathBuf,
    /// The shell supervising the server; its standard input is held open until the process
    /// ends.
    _supervisor: Mutex<Child>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// A fresh SQLite store in a temporary directory (kept alive by the returned guard).
pub(crate) async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(&StoreLocation::Sqlite(dir.path().join("hutch.db")), true)
        .await
        .expect("opening a SQLite store");
    (store, dir)
}

/// The URL of database `name` in the test cluster, starting the cluster on first use.
pub(crate) fn postgres_url(name: &str) -> String {
    let cluster = CLUSTER
        .get_or_init(start)
        .as_ref()
        .unwrap_or_else(|err| panic!("starting the test PostgreSQL cluster: {err}"));
    format!(
        "postgres://postgres@localhost/{name}?host={}",
        cluster.socket_dir.display()
    )
}

/// A new, empty database in the test cluster; returns its URL.
pub(crate) async fn postgres_database() -> String {
    let name = format!("t_{}", Uuid::new_v4().simple());
    admin(&[&format!("CREATE DATABASE {name}")]).await;
    postgres_url(&name)
}

/// A new, empty database owned by a new role that is not a superuser (so that limits on
/// roles apply to it); returns its URL, connecting as that role, and the role's name.
pub(crate) async fn postgres_database_of_a_role() -> (String, String) {
    let name = format!("t_{}", Uuid::new_v4().simple());
    admin(&[
        &format!("CREATE ROLE {name} LOGIN"),
        &format!("CREATE DATABASE {name} OWNER {name}"),
    ])
    .await;
    let url =
        postgres_url(&name).replacen("postgres://postgres@", &format!("postgres://{name}@"), 1);
    (url, name)
}

/// Runs statements as the cluster's superuser.
pub(crate) async fn admin(statements: &[&str]) {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&postgres_url("postgres"))
        .await
        .expect("connecting to the test cluster");
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    admin.close().await.expect("closing the admin connection");
}

/// A fresh PostgreSQL store (a database of its own in the test cluster), migrated.
pub(crate) async fn postgres() -> Store {
    let url = postgres_database().await;
    Store::open(&StoreLocation::Postgres(url), true)
        .await
        .expect("opening a PostgreSQL store")
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
fn start() -> Result<Cluster, String> {
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

/// Another store on the same database as `store` (as a second replica would open it).
pub(crate) async fn reopen(store: &Store) -> Store {
    Store::open(store.location(), true)
        .await
        .expect("opening the store again")
}

/// An empty database of the same kind as `store`'s, not migrated.
pub(crate) async fn empty_like(store: &Store) -> StoreLocation {
    match store.location() {
        StoreLocation::Sqlite(path) => {
            let dir = path.parent().expect("the database's directory");
            StoreLocation::Sqlite(dir.join(format!("{}.db", Uuid::new_v4().simple())))
        }
        StoreLocation::Postgres(_) => StoreLocation::Postgres(postgres_database().await),
    }
}

/// Runs one statement on `store` (tests that set up rows the API cannot make).
pub(crate) async fn execute(store: &Store, sql: &'static str) {
    super::on_pool!(store, |pool| sqlx::query(sql)
        .execute(pool)
        .await
        .map(|_| ()))
    .expect("executing a test statement");
}

/// Defines, for each `async fn name(store: Store)` named, a module `name` with two tests:
/// `sqlite` runs it on a fresh SQLite store, `postgres` on a fresh PostgreSQL database.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (store, _dir) = $crate::store::testing::sqlite().await;
                super::$name(store.clone()).await;
                store.close().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let store = $crate::store::testing::postgres().await;
                super::$name(store.clone()).await;
                store.close().await;
            }
        }
    )*};
}
pub(crate) use on_both;
