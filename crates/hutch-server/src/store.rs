//! The sessions store: every SQL statement of the control plane, behind [`Store`].
//!
//! Two databases, one set of statements: SQLite (the default, a file in the data directory, WAL
//! mode with `synchronous=NORMAL`) and PostgreSQL (`--store postgres://…`, shared by several
//! replicas). Each has its schema in its own migrations (`migrations/`,
//! `migrations-postgres/`), applied on open. Statements use `$N` parameters, which both
//! drivers read, and portable SQL; the few that differ are chosen per database. Times are unix
//! milliseconds; ids, metadata, resources, env and the runtime's [`SandboxRecord`] are text
//! (JSON for the structured ones). Queries are checked at run time (no `DATABASE_URL` needed to
//! build).
//!
//! The store knows rows and their states; it knows nothing of HTTP, tokens, or what a sandbox
//! is beyond the opaque record it keeps for the runtime. State changes that must not race are
//! single conditional statements (`UPDATE … WHERE status IN (…) RETURNING …`), which are
//! atomic on both databases (PostgreSQL re-checks the `WHERE` of a row another transaction
//! changed meanwhile). Inserts bounded by a count (quotas) are the exception: on PostgreSQL,
//! under READ COMMITTED, two such statements could both see the count before either insert, so
//! they run in a transaction that first takes a transaction-scoped advisory lock (see
//! [`Store::insert_creating_within`] and `docs/architecture.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hutch_api::{AutoPause, NetworkPolicy, Resources, Session, SessionStatus};
use hutch_sandbox::SandboxRecord;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use time::OffsetDateTime;
use uuid::Uuid;

mod contexts;
pub(crate) mod replicas;
mod running;
pub(crate) mod scratch;
#[cfg(test)]
pub(crate) mod testing;

pub(crate) use contexts::{ContextInsert, StoredContext, TaskFilter};
use replicas::mine_or_orphaned;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long (ms) the destroy of a row marked DELETING belongs to whoever marked it; after
/// that (its destroy failed, or its replica died) the reaper of any replica may take it.
pub(crate) const DESTROY_CLAIM_MS: i64 = 30_000;
/// How many times a create whose row did not fit, but would by the time the usage is read
/// again, is tried.
const INSERT_ATTEMPTS: usize = 3;
/// PostgreSQL: how long a request waits for a connection, and for one statement, before it
/// fails with 503 `store_unavailable` (the database is down or unreachable).
pub const POSTGRES_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL: connections each replica keeps at most.
const POSTGRES_CONNECTIONS: u32 = 16;
/// PostgreSQL: a pooled connection idle longer than this, or since before a statement last
/// failed for want of the database, is pinged before it is used (one round trip), so that one
/// the server dropped meanwhile is replaced rather than failing a request. Connections in
/// steady use are not: pinging before every statement (sqlx's default) would double the round
/// trips of each request.
const POSTGRES_PING_IDLE: Duration = Duration::from_secs(1);
/// The advisory lock (`pg_advisory_xact_lock`) that serialises the inserts of session rows
/// across replicas, so the counts each checks (capacity and tenant quotas) are exact.
const SESSIONS_INSERT_LOCK: i64 = 0x6875_7463_6801;
/// The first key of the advisory locks (`pg_advisory_xact_lock(key, hashtext(tenant))`) that
/// serialise the inserts of one tenant's storage contexts.
const CONTEXTS_INSERT_LOCK: i32 = 0x6863_7478;

/// The statement inserting a session row if it fits in the limits, with the expression that
/// reads a row's `memoryMb` out of its JSON `resources` (the one thing SQLite and PostgreSQL
/// spell differently).
macro_rules! insert_within {
    ($($memory:tt)*) => {
        concat!(
            "INSERT INTO sessions (",
            columns!(),
            ", owner) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, NULL, NULL, $11, $18 ",
            "WHERE (SELECT COUNT(*) FROM sessions) < $12 ",
            "AND (SELECT COUNT(*) FROM sessions WHERE tenant = $13) < $14 ",
            "AND (SELECT CAST(COALESCE(SUM(",
            $($memory)*,
            "), 0) AS BIGINT) FROM sessions WHERE tenant = $15) + $16 <= $17"
        )
    };
}

/// The statement reading what [`insert_within!`] checks: rows in all, and the tenant's rows
/// and memory.
macro_rules! usage {
    ($($memory:tt)*) => {
        concat!(
            "SELECT (SELECT COUNT(*) FROM sessions), ",
            "(SELECT COUNT(*) FROM sessions WHERE tenant = $1), ",
            "(SELECT CAST(COALESCE(SUM(",
            $($memory)*,
            "), 0) AS BIGINT) FROM sessions WHERE tenant = $2)"
        )
    };
}

/// A row's `memoryMb`, in SQLite.
macro_rules! sqlite_memory {
    () => {
        "json_extract(resources, '$.memoryMb')"
    };
}

/// A row's `memoryMb`, in PostgreSQL.
macro_rules! postgres_memory {
    () => {
        "CAST(CAST(resources AS jsonb) ->> 'memoryMb' AS BIGINT)"
    };
}

/// Runs `$body` (a closure-shaped block) with `$pool` bound to the store's pool, whichever
/// database it is: the body is written once and compiled for each driver.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The columns of a session row, in the order [`decode`] reads them.
macro_rules! columns {
    () => {
        "id, tenant, status, image, metadata, resources, env, created_at, expires_at, runtime_record, \
         network, paused_at, pause_cause, auto_pause"
    };
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (or reached).
    #[error("opening the store at {location}")]
    Open {
        /// The database file, or PostgreSQL's URL without its password.
        location: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema is older than this version (and migrations were not to be applied).
    #[error(
        "the store's schema is at migration {applied}, this version needs {latest}: run `hutch migrate`"
    )]
    Unmigrated {
        /// The latest migration applied.
        applied: i64,
        /// The latest this version knows.
        latest: i64,
    },
    /// The store's location is not a PostgreSQL URL.
    #[error("--store must be a postgres:// or postgresql:// URL: {0}")]
    Location(String),
    /// The schema could not be brought up to date.
    #[error("migrating the store")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("store query {op} failed")]
    Query {
        /// What was being done.
        op: &'static str,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// A value could not be encoded as JSON for storage.
    #[error("encoding {what} of session {id} as JSON")]
    Encode {
        /// The session id.
        id: Uuid,
        /// Which column.
        what: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored row holds data this version cannot read.
    #[error("session row {id}: column {column} is invalid: {reason}")]
    Corrupt {
        /// The row's id as stored.
        id: String,
        /// The column at fault.
        column: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// Whether the database could not be reached or did not answer in time (PostgreSQL down,
    /// restarting, unreachable, or every connection busy past the timeout), as opposed to a
    /// fault in what was asked: the request may succeed when retried later.
    pub fn is_unavailable(&self) -> bool {
        let source = match self {
            StoreError::Open { source, .. } | StoreError::Query { source, .. } => source,
            _ => return false,
        };
        match source {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // PostgreSQL's SQLSTATEs: class 08 (connection exception), 57P01..57P03 (the
            // server is shutting down or starting), 57014 (statement_timeout), 55P03
            // (lock_timeout), 53300 (too many connections).
            sqlx::Error::Database(err) => err.code().is_some_and(|code| {
                code.starts_with("08")
                    || matches!(
                        &*code,
                        "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "53300"
                    )
            }),
            _ => false,
        }
    }
}

/// The limits a new row must fit in (see [`Store::insert_creating_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowLimits {
    /// Most rows in all.
    pub(crate) max_rows: usize,
    /// Most rows of one tenant.
    pub(crate) tenant_max_rows: usize,
    /// Most `memoryMb`, summed over one tenant's rows.
    pub(crate) tenant_max_memory_mb: u64,
}

/// What an insert did, or which limit kept the row out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertOutcome {
    /// The row was inserted.
    Inserted,
    /// The tenant holds `rows` rows, its most.
    TenantRows {
        /// The tenant's rows.
        rows: u64,
    },
    /// The tenant's rows ask for `memory_mb` MiB, and the new row would take it past its most.
    TenantMemory {
        /// The memory of the tenant's rows, in MiB.
        memory_mb: u64,
    },
    /// `rows` rows exist, the most in all.
    Capacity {
        /// Every row.
        rows: u64,
    },
}

/// A session row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredSession {
    /// Session id (v7).
    pub(crate) id: Uuid,
    /// Owning tenant (the token's `sub`).
    pub(crate) tenant: String,
    /// Lifecycle state.
    pub(crate) status: SessionStatus,
    /// Image name.
    pub(crate) image: String,
    /// Labels.
    pub(crate) metadata: BTreeMap<String, String>,
    /// Granted limits.
    pub(crate) resources: Resources,
    /// Environment of the session's processes.
    pub(crate) env: BTreeMap<String, String>,
    /// Creation time, unix ms.
    pub(crate) created_at_ms: i64,
    /// Expiry time, unix ms.
    pub(crate) expires_at_ms: i64,
    /// What the runtime needs to find the sandbox again; `None` while creating.
    pub(crate) record: Option<SandboxRecord>,
    /// The effective network policy (`egress: none` on rows that kept none).
    pub(crate) network: NetworkPolicy,
    /// When and why a PAUSED row was paused; `None` in every other state.
    pub(crate) paused: Option<Paused>,
    /// When the session pauses itself; `None`: never.
    pub(crate) auto_pause: Option<AutoPause>,
}

/// Why a session is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseCause {
    /// `POST /v1/sessions/{id}/pause`: only a resume undoes it.
    Request,
    /// Auto-pause: any request to the session resumes it.
    Idle,
}

impl PauseCause {
    /// The name stored.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PauseCause::Request => "request",
            PauseCause::Idle => "idle",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "request" => Some(PauseCause::Request),
            "idle" => Some(PauseCause::Idle),
            _ => None,
        }
    }
}

/// When and why a session was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paused {
    /// Unix ms.
    pub(crate) at_ms: i64,
    /// Why.
    pub(crate) cause: PauseCause,
}

impl StoredSession {
    /// The session as the API shows it.
    pub(crate) fn to_api(&self) -> Session {
        Session {
            session_id: self.id,
            status: self.status,
            image: self.image.clone(),
            metadata: self.metadata.clone(),
            resources: self.resources,
            created_at: ms_to_time(self.created_at_ms),
            expires_at: ms_to_time(self.expires_at_ms),
            network: self.network.clone(),
            auto_pause: self.auto_pause,
            paused_at: self.paused.map(|p| ms_to_time(p.at_ms)),
        }
    }
}

pub(crate) use crate::clock::now_ms;

/// A unix-ms time as a date; out-of-range values (refused when rows are read) clamp to the epoch.
fn ms_to_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Where the store keeps its rows.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file (the default: `hutch.db` in the data directory).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL (`postgres://user:password@host:port/database`).
    Postgres(String),
}

impl StoreLocation {
    /// A PostgreSQL location from `--store`/`HUTCH_STORE`; refuses anything but a
    /// `postgres://` or `postgresql://` URL.
    pub fn postgres(url: &str) -> Result<StoreLocation, StoreError> {
        let parsed = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Location(format!("{}: {e}", redact(url))))?;
        drop(parsed);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreLocation::Postgres(url.to_owned()))
        } else {
            Err(StoreError::Location(redact(url)))
        }
    }

    /// The location as logs show it: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => redact(url),
        }
    }

    /// Which database: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreLocation::Sqlite(_) => "sqlite",
            StoreLocation::Postgres(_) => "postgres",
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.display())
    }
}

/// A URL with its password (if any) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// The pool of one of the two databases.
#[derive(Debug, Clone)]
enum Pool {
    /// SQLite: one file, one process.
    Sqlite(SqlitePool),
    /// PostgreSQL: shared by every replica.
    Postgres(PgPool),
}

/// The sessions table.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: Pool,
    /// Where it is.
    location: StoreLocation,
    /// This server among the replicas sharing the store; `None`: the only server (SQLite).
    membership: Option<std::sync::Arc<replicas::Membership>>,
    /// The sessions known to be RUNNING (SQLite only, whose only writer is this process).
    running: Option<std::sync::Arc<running::RunningSessions>>,
}

/// Creates `path` with mode 0600 if missing, and makes it 0600 if not.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl Store {
    /// Opens the store at `location` and, with `migrate`, applies pending migrations (without,
    /// the schema must be up to date already: see `hutch migrate`).
    pub(crate) async fn open(location: &StoreLocation, migrate: bool) -> Result<Store, StoreError> {
        let store = match location {
            StoreLocation::Sqlite(path) => Store::open_sqlite(path).await?,
            StoreLocation::Postgres(url) => Store::open_postgres(url).await?,
        };
        if migrate {
            store.migrate().await?;
        } else {
            store.check_migrated().await?;
        }
        Ok(store)
    }

    /// Opens (creating if needed) the SQLite database at `path`.
    async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            location: path.display().to_string(),
            source,
        };
        // Sessions carry tenants' environment and metadata: only root may read the database.
        // SQLite gives its -wal and -shm files the mode of the database file.
        private_file(path).map_err(|source| open_error(sqlx::Error::Io(source)))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            location: StoreLocation::Sqlite(path.to_owned()),
            membership: None,
            running: Some(std::sync::Arc::default()),
        })
    }

    /// Connects to the PostgreSQL database at `url`. Every statement is bounded by
    /// [`POSTGRES_TIMEOUT`] (`statement_timeout`), as is the wait for a connection.
    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            location: redact(url),
            source,
        };
        let timeout_ms = POSTGRES_TIMEOUT.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)
            .map_err(open_error)?
            .application_name("hutch")
            .options([
                ("statement_timeout", timeout_ms.as_str()),
                ("lock_timeout", timeout_ms.as_str()),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(POSTGRES_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if ping_before_use(meta.idle_for) {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            location: StoreLocation::Postgres(url.to_owned()),
            membership: None,
            running: None,
        })
    }

    /// Applies pending migrations. On PostgreSQL the migrator holds an advisory lock, so
    /// replicas starting together migrate once.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("./migrations").run(pool).await,
            Pool::Postgres(pool) => sqlx::migrate!("./migrations-postgres").run(pool).await,
        }
        .map_err(StoreError::Migrate)
    }

    /// Fails unless every migration this version knows has been applied.
    async fn check_migrated(&self) -> Result<(), StoreError> {
        let migrator = match &self.pool {
            Pool::Sqlite(_) => sqlx::migrate!("./migrations"),
            Pool::Postgres(_) => sqlx::migrate!("./migrations-postgres"),
        };
        let latest = migrator.iter().map(|m| m.version).max().unwrap_or_default();
        let applied: Result<Option<i64>, sqlx::Error> = on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
        });
        let applied = match applied {
            Ok(applied) => applied.unwrap_or_default(),
            // No migrations table: nothing was ever applied.
            Err(sqlx::Error::Database(_)) => 0,
            Err(source) => return Err(query("read applied migrations")(source)),
        };
        if applied < latest {
            return Err(StoreError::Unmigrated { applied, latest });
        }
        Ok(())
    }

    /// Where the store is.
    #[cfg(test)]
    pub(crate) fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Whether the database answers a trivial statement (for `/health/ready`).
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map_err(query("ping"))?;
            Ok(())
        })
    }

    /// Closes every connection (checkpointing SQLite's WAL).
    pub(crate) async fn close(&self) {
        on_pool!(self, |pool| pool.close().await);
        tracing::debug!(store = %self.location.display(), "store closed");
    }

    /// Inserts a new row in state CREATING unless `max_rows` rows exist already.
    ///
    /// Returns `false` (and inserts nothing) at capacity. The count and the insert are one
    /// statement, so concurrent creates cannot overshoot.
    #[cfg(test)]
    pub(crate) async fn insert_creating(
        &self,
        session: &StoredSession,
        max_rows: usize,
    ) -> Result<bool, StoreError> {
        let limits = RowLimits {
            max_rows,
            tenant_max_rows: usize::MAX,
            tenant_max_memory_mb: u64::MAX,
        };
        Ok(self.insert_creating_within(session, limits).await? == InsertOutcome::Inserted)
    }

    /// Inserts a new row in state CREATING if it fits in `limits`: fewer than `max_rows` rows
    /// in all, fewer than `tenant_max_rows` of its tenant, and its tenant's rows' `memoryMb`
    /// plus its own at most `tenant_max_memory_mb`. Rows count in every state.
    ///
    /// The counts and the insert are one statement, so concurrent creates cannot overshoot.
    /// When the row does not fit, the usage is read again to say which limit it hit; if by
    /// then it would fit (a row went away meanwhile), the insert is tried again.
    pub(crate) async fn insert_creating_within(
        &self,
        session: &StoredSession,
        limits: RowLimits,
    ) -> Result<InsertOutcome, StoreError> {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let max_rows = as_i64(u64::try_from(limits.max_rows).unwrap_or(u64::MAX));
        let tenant_max_rows = as_i64(u64::try_from(limits.tenant_max_rows).unwrap_or(u64::MAX));
        let tenant_max_memory_mb = as_i64(limits.tenant_max_memory_mb);
        let memory_mb = as_i64(session.resources.memory_mb);
        let auto_pause = session
            .auto_pause
            .map(|a| encode(session.id, "auto_pause", &a))
            .transpose()?;
        let mut outcome = InsertOutcome::Inserted;
        for _ in 0..INSERT_ATTEMPTS {
            /// Binds the parameters of [`insert_within!`].
            macro_rules! bind_insert {
                ($sql:expr) => {
                    sqlx::query($sql)
                        .bind(session.id.to_string())
                        .bind(&session.tenant)
                        .bind(SessionStatus::Creating.as_str())
                        .bind(&session.image)
                        .bind(encode(session.id, "metadata", &session.metadata)?)
                        .bind(encode(session.id, "resources", &session.resources)?)
                        .bind(encode(session.id, "env", &session.env)?)
                        .bind(session.created_at_ms)
                        .bind(session.expires_at_ms)
                        .bind(encode(session.id, "network", &session.network)?)
                        .bind(auto_pause.as_deref())
                        .bind(max_rows)
                        .bind(&session.tenant)
                        .bind(tenant_max_rows)
                        .bind(&session.tenant)
                        .bind(memory_mb)
                        .bind(tenant_max_memory_mb)
                        .bind(self.replica())
                };
            }
            let inserted = match &self.pool {
                // One statement: SQLite's single writer makes the counts and the insert atomic.
                Pool::Sqlite(pool) => bind_insert!(insert_within!(sqlite_memory!()))
                    .execute(pool)
                    .await
                    .map_err(query("insert session"))?
                    .rows_affected(),
                // Several writers: under READ COMMITTED each statement sees the rows committed
                // when it began, so two concurrent inserts could both fit. The advisory lock,
                // taken before the statement, makes every insert see all the rows inserted
                // before it; it is released at commit (or when the connection drops).
                Pool::Postgres(pool) => {
                    let mut tx = pool.begin().await.map_err(query("begin insert session"))?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(SESSIONS_INSERT_LOCK)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("lock session inserts"))?;
                    let done = bind_insert!(insert_within!(postgres_memory!()))
                        .execute(&mut *tx)
                        .await
                        .map_err(query("insert session"))?;
                    tx.commit().await.map_err(query("commit insert session"))?;
                    done.rows_affected()
                }
            };
            if inserted == 1 {
                return Ok(InsertOutcome::Inserted);
            }
            let (rows, tenant_rows, tenant_memory_mb): (i64, i64, i64) = match &self.pool {
                Pool::Sqlite(pool) => {
                    sqlx::query_as(usage!(sqlite_memory!()))
                        .bind(&session.tenant)
                        .bind(&session.tenant)
                        .fetch_one(pool)
                        .await
                }
                Pool::Postgres(pool) => {
                    sqlx::query_as(usage!(postgres_memory!()))
                        .bind(&session.tenant)
                        .bind(&session.tenant)
                        .fetch_one(pool)
                        .await
                }
            }
            .map_err(query("count sessions of a tenant"))?;
            let as_u64 = |n: i64| u64::try_from(n).unwrap_or_default();
            outcome = if tenant_rows >= tenant_max_rows {
                InsertOutcome::TenantRows {
                    rows: as_u64(tenant_rows),
                }
            } else if tenant_memory_mb.saturating_add(memory_mb) > tenant_max_memory_mb {
                InsertOutcome::TenantMemory {
                    memory_mb: as_u64(tenant_memory_mb),
                }
            } else if rows >= max_rows {
                InsertOutcome::Capacity { rows: as_u64(rows) }
            } else {
                continue;
            };
            break;
        }
        if outcome == InsertOutcome::Inserted {
            // Every attempt lost a race to a row that came and went; report capacity.
            outcome = InsertOutcome::Capacity {
                rows: u64::try_from(limits.max_rows).unwrap_or(u64::MAX),
            };
        }
        Ok(outcome)
    }

    /// Moves a CREATING row to RUNNING with the runtime's record. `None` if no such row.
    pub(crate) async fn set_running(
        &self,
        id: Uuid,
        record: &SandboxRecord,
    ) -> Result<Option<StoredSession>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "UPDATE sessions SET status = 'RUNNING', runtime_record = $1 ",
                "WHERE id = $2 AND status = 'CREATING' RETURNING ",
                columns!()
            ))
            .bind(encode(id, "runtime_record", record)?)
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("set session running"))?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// One row by id.
    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<StoredSession>, StoreError> {
        let generation = self
            .running
            .as_deref()
            .map(running::RunningSessions::generation);
        let row = on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE id = $1"
            ))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("get session"))?;
            row.as_ref().map(decode).transpose()
        })?;
        if let (Some(running), Some(generation), Some(row)) = (&self.running, generation, &row)
            && row.status == SessionStatus::Running
            && row.paused.is_none()
        {
            running.remember(id, &row.tenant, generation);
        }
        Ok(row)
    }

    /// Whether session `id` is RUNNING (not paused) and `may_see` takes its tenant, when that
    /// is known without reading the store (see [`running`]); `None` otherwise: read the row.
    pub(crate) fn known_running(
        &self,
        id: Uuid,
        may_see: impl FnOnce(&str) -> bool,
    ) -> Option<bool> {
        self.running.as_deref()?.check(id, may_see)
    }

    /// Held across a write that may move row `id` out of RUNNING: forgets it once the write
    /// is over, however it ends.
    fn forget_after(&self, id: Uuid) -> Option<running::Forget<'_>> {
        self.running
            .as_deref()
            .map(|running| running::Forget { running, id })
    }

    /// One page of rows, oldest first, of one tenant (or of all with `None`) and, with
    /// `status`, in that state only; and the total of such rows.
    pub(crate) async fn list(
        &self,
        tenant: Option<&str>,
        status: Option<SessionStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<StoredSession>, u64), StoreError> {
        on_pool!(self, |pool| {
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let status = status.map(SessionStatus::as_str);
            let rows = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE ($1 IS NULL OR tenant = $2) AND ($3 IS NULL OR status = $4) ",
                "ORDER BY created_at, id LIMIT $5 OFFSET $6"
            ))
            .bind(tenant)
            .bind(tenant)
            .bind(status)
            .bind(status)
            .bind(i64::from(limit))
            .bind(offset)
            .fetch_all(pool)
            .await
            .map_err(query("list sessions"))?;
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sessions WHERE ($1 IS NULL OR tenant = $2) \
             AND ($3 IS NULL OR status = $4)",
            )
            .bind(tenant)
            .bind(tenant)
            .bind(status)
            .bind(status)
            .fetch_one(pool)
            .await
            .map_err(query("count sessions"))?;
            let sessions = rows.iter().map(decode).collect::<Result<_, _>>()?;
            Ok((sessions, u64::try_from(total).unwrap_or_default()))
        })
    }

    /// How many rows are in each state (states without rows are left out), for metrics.
    pub(crate) async fn count_by_status(&self) -> Result<Vec<(SessionStatus, u64)>, StoreError> {
        on_pool!(self, |pool| {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM sessions GROUP BY status")
                    .fetch_all(pool)
                    .await
                    .map_err(query("count sessions by status"))?;
            rows.into_iter()
                .map(|(status, n)| {
                    let state =
                        SessionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                            id: "*".to_owned(),
                            column: "status",
                            reason: format!("unknown status {status:?}"),
                        })?;
                    Ok((state, u64::try_from(n).unwrap_or_default()))
                })
                .collect()
        })
    }

    /// Every row, for crash recovery.
    pub(crate) async fn all(&self) -> Result<Vec<StoredSession>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions ORDER BY created_at, id"
            ))
            .fetch_all(pool)
            .await
            .map_err(query("list all sessions"))?;
            rows.iter().map(decode).collect()
        })
    }

    /// Changes the expiry, metadata and/or network policy of a row that is not being deleted.
    ///
    /// Returns the updated row, or `None` if there is no such row or it is DELETING.
    pub(crate) async fn update(
        &self,
        id: Uuid,
        expires_at_ms: Option<i64>,
        metadata: Option<&BTreeMap<String, String>>,
        network: Option<&NetworkPolicy>,
    ) -> Result<Option<StoredSession>, StoreError> {
        on_pool!(self, |pool| {
            let metadata = metadata.map(|m| encode(id, "metadata", m)).transpose()?;
            let network = network.map(|n| encode(id, "network", n)).transpose()?;
            let row = sqlx::query(concat!(
                "UPDATE sessions SET expires_at = COALESCE($1, expires_at), ",
                "metadata = COALESCE($2, metadata), network = COALESCE($3, network) ",
                "WHERE id = $4 AND status IN ('CREATING', 'RUNNING', 'PAUSED') RETURNING ",
                columns!()
            ))
            .bind(expires_at_ms)
            .bind(metadata)
            .bind(network)
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("update session"))?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// Marks a RUNNING row PAUSED at `at_ms` for `cause` and returns it; `None` if there is no
    /// such row or it is not RUNNING.
    pub(crate) async fn set_paused(
        &self,
        id: Uuid,
        at_ms: i64,
        cause: PauseCause,
    ) -> Result<Option<StoredSession>, StoreError> {
        let _forget = self.forget_after(id);
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "UPDATE sessions SET status = 'PAUSED', paused_at = $1, pause_cause = $2 ",
                "WHERE id = $3 AND status = 'RUNNING' RETURNING ",
                columns!()
            ))
            .bind(at_ms)
            .bind(cause.as_str())
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("set session paused"))?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// Records a new cause for a PAUSED row (a client's pause of a session that paused itself
    /// for idleness) and returns the row; `None` if there is no such row or it is not PAUSED.
    pub(crate) async fn set_pause_cause(
        &self,
        id: Uuid,
        cause: PauseCause,
    ) -> Result<Option<StoredSession>, StoreError> {
        let _forget = self.forget_after(id);
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "UPDATE sessions SET pause_cause = $1 ",
                "WHERE id = $2 AND status = 'PAUSED' RETURNING ",
                columns!()
            ))
            .bind(cause.as_str())
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("set a paused session's cause"))?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// Marks a PAUSED row RUNNING again and returns it; `None` if there is no such row or it
    /// is not PAUSED.
    pub(crate) async fn set_resumed(&self, id: Uuid) -> Result<Option<StoredSession>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "UPDATE sessions SET status = 'RUNNING', paused_at = NULL, pause_cause = NULL ",
                "WHERE id = $1 AND status = 'PAUSED' RETURNING ",
                columns!()
            ))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("set session resumed"))?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// RUNNING rows that pause themselves when idle, for the auto-pause pass.
    pub(crate) async fn auto_pausing(&self) -> Result<Vec<StoredSession>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE status = 'RUNNING' AND auto_pause IS NOT NULL"
            ))
            .fetch_all(pool)
            .await
            .map_err(query("list auto-pausing sessions"))?;
            rows.iter().map(decode).collect()
        })
    }

    /// Marks a row DELETING and returns it, claiming its destroy for [`DESTROY_CLAIM_MS`]: if
    /// it is RUNNING or PAUSED (and, with `expired_by`, its expiry is at or before that time),
    /// or DELETING with a claim that lapsed (its destroy failed, or whoever marked it died).
    /// Only rows this replica may act on (it owns them, nobody does, or their owner is dead)
    /// are marked, and they become its own.
    ///
    /// One conditional statement: of two callers racing for one row (two replicas deleting
    /// it, a delete and the reaper), exactly one gets it. `None` when the row is gone, still
    /// CREATING, (with `expired_by`) was extended, is being destroyed by someone else, or
    /// belongs to a live replica.
    pub(crate) async fn mark_deleting(
        &self,
        id: Uuid,
        expired_by: Option<i64>,
    ) -> Result<Option<StoredSession>, StoreError> {
        self.mark_deleting_of(id, expired_by, false).await
    }

    /// [`Store::mark_deleting`] whoever owns the row, a live replica included: for a replica
    /// whose runtime reaches that replica's sandboxes (one data directory), which then
    /// destroys the sandbox itself. The row becomes this replica's.
    pub(crate) async fn mark_deleting_any_owner(
        &self,
        id: Uuid,
    ) -> Result<Option<StoredSession>, StoreError> {
        self.mark_deleting_of(id, None, true).await
    }

    async fn mark_deleting_of(
        &self,
        id: Uuid,
        expired_by: Option<i64>,
        any_owner: bool,
    ) -> Result<Option<StoredSession>, StoreError> {
        let _forget = self.forget_after(id);
        let now = now_ms();
        let cutoff = self.death_cutoff(now);
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "UPDATE sessions SET status = 'DELETING', claimed_until = $1, ",
                "owner = COALESCE($2, owner) WHERE id = $3 ",
                "AND ((status IN ('RUNNING', 'PAUSED') AND ($4 IS NULL OR expires_at <= $5)) ",
                "OR (status = 'DELETING' AND COALESCE(claimed_until, 0) <= $6)) AND ($9 OR ",
                mine_or_orphaned!("$7", "$8"),
                ") RETURNING ",
                columns!()
            ))
            .bind(now.saturating_add(DESTROY_CLAIM_MS))
            .bind(self.replica())
            .bind(id.to_string())
            .bind(expired_by)
            .bind(expired_by)
            .bind(now)
            .bind(self.replica())
            .bind(cutoff)
            .bind(any_owner)
            .fetch_optional(pool)
            .await
            .map_err(query("mark session deleting"))?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// Sets when the destroy of a DELETING row may be claimed again, so that the reaper comes
    /// back to it then (used to retry a destroy that failed).
    pub(crate) async fn retry_at(&self, id: Uuid, at_ms: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query("UPDATE sessions SET claimed_until = $1 WHERE id = $2")
                .bind(at_ms)
                .bind(id.to_string())
                .execute(pool)
                .await
                .map_err(query("postpone session"))?;
            Ok(())
        })
    }

    /// Rows due for destruction at `now_ms` that this replica may act on (see
    /// [`Store::mark_deleting`]): RUNNING or PAUSED past their expiry, and DELETING rows whose
    /// destroy claim lapsed (it failed and is due for a retry, or its claimer died).
    pub(crate) async fn due(&self, now_ms: i64) -> Result<Vec<StoredSession>, StoreError> {
        let cutoff = self.death_cutoff(now_ms);
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE ((expires_at <= $1 AND status IN ('RUNNING', 'PAUSED')) ",
                "OR (status = 'DELETING' AND COALESCE(claimed_until, 0) <= $2)) AND ",
                mine_or_orphaned!("$3", "$4"),
                " ORDER BY expires_at LIMIT 1000"
            ))
            .bind(now_ms)
            .bind(now_ms)
            .bind(self.replica())
            .bind(cutoff)
            .fetch_all(pool)
            .await
            .map_err(query("find expired sessions"))?;
            rows.iter().map(decode).collect()
        })
    }

    /// The rows, being created or live, whose owner is another replica that is dead at `now`
    /// (see [`Store::death_cutoff`]): the sessions this replica may take over. Empty without
    /// a replica identity.
    pub(crate) async fn orphans(&self, now_ms: i64) -> Result<Vec<StoredSession>, StoreError> {
        let Some(me) = self.replica() else {
            return Ok(Vec::new());
        };
        let cutoff = self.death_cutoff(now_ms);
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE status IN ('CREATING', 'RUNNING', 'PAUSED') ",
                "AND owner IS NOT NULL AND owner <> $1 AND ",
                "owner NOT IN (SELECT id FROM replicas WHERE heartbeat_at > $2) ",
                "ORDER BY created_at, id LIMIT 1000"
            ))
            .bind(me)
            .bind(cutoff)
            .fetch_all(pool)
            .await
            .map_err(query("find sessions of dead replicas"))?;
            rows.iter().map(decode).collect()
        })
    }

    /// Deletes a row. Returns whether it existed.
    pub(crate) async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        let _forget = self.forget_after(id);
        on_pool!(self, |pool| {
            let result = sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(id.to_string())
                .execute(pool)
                .await
                .map_err(query("delete session"))?;
            Ok(result.rows_affected() == 1)
        })
    }

    /// Inserts a row as it is, in any state (tests and recovery scenarios).
    #[cfg(test)]
    pub(crate) async fn insert_raw(&self, session: &StoredSession) -> Result<(), StoreError> {
        let _forget = self.forget_after(session.id);
        on_pool!(self, |pool| {
            let record = session
                .record
                .as_ref()
                .map(|r| encode(session.id, "runtime_record", r))
                .transpose()?;
            sqlx::query(concat!(
                "INSERT INTO sessions (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ))
            .bind(session.id.to_string())
            .bind(&session.tenant)
            .bind(session.status.as_str())
            .bind(&session.image)
            .bind(encode(session.id, "metadata", &session.metadata)?)
            .bind(encode(session.id, "resources", &session.resources)?)
            .bind(encode(session.id, "env", &session.env)?)
            .bind(session.created_at_ms)
            .bind(session.expires_at_ms)
            .bind(record)
            .bind(encode(session.id, "network", &session.network)?)
            .bind(session.paused.map(|p| p.at_ms))
            .bind(session.paused.map(|p| p.cause.as_str()))
            .bind(
                session
                    .auto_pause
                    .map(|a| encode(session.id, "auto_pause", &a))
                    .transpose()?,
            )
            .execute(pool)
            .await
            .map_err(query("insert raw session"))?;
            Ok(())
        })
    }
}

/// Wraps a sqlx error with what was being done.
fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        let err = StoreError::Query { op, source };
        if err.is_unavailable() {
            LAST_UNAVAILABLE_MS.fetch_max(now_ms(), Ordering::Relaxed);
        }
        err
    }
}

/// When (unix ms) a statement of this process last failed for want of the database. A pooled
/// PostgreSQL connection that went idle before then is pinged before it is used: the server
/// may have dropped it too (a restart, a terminated backend), and a dead connection must be
/// replaced, not fail the request that draws it.
static LAST_UNAVAILABLE_MS: AtomicI64 = AtomicI64::new(0);

/// Whether a pooled PostgreSQL connection idle for `idle_for` is to be pinged before use.
fn ping_before_use(idle_for: Duration) -> bool {
    let idle_since =
        now_ms().saturating_sub(i64::try_from(idle_for.as_millis()).unwrap_or(i64::MAX));
    idle_for > POSTGRES_PING_IDLE || idle_since <= LAST_UNAVAILABLE_MS.load(Ordering::Relaxed)
}

fn encode<T: serde::Serialize>(
    id: Uuid,
    what: &'static str,
    value: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { id, what, source })
}

/// Reads a row selected with [`columns!`].
fn decode(row: &impl StoreRow) -> Result<StoredSession, StoreError> {
    let raw_id: String = column(row, "?", "id")?;
    let corrupt = |column: &'static str, reason: String| StoreError::Corrupt {
        id: raw_id.clone(),
        column,
        reason,
    };
    let id = Uuid::from_str(&raw_id).map_err(|e| corrupt("id", e.to_string()))?;
    let status: String = column(row, &raw_id, "status")?;
    let status = SessionStatus::parse(&status)
        .ok_or_else(|| corrupt("status", format!("unknown status {status:?}")))?;
    let json = |name: &'static str| -> Result<String, StoreError> { column(row, &raw_id, name) };
    let metadata =
        serde_json::from_str(&json("metadata")?).map_err(|e| corrupt("metadata", e.to_string()))?;
    let resources = serde_json::from_str(&json("resources")?)
        .map_err(|e| corrupt("resources", e.to_string()))?;
    let env = serde_json::from_str(&json("env")?).map_err(|e| corrupt("env", e.to_string()))?;
    let record: Option<String> = column(row, &raw_id, "runtime_record")?;
    let record = record
        .map(|r| serde_json::from_str(&r))
        .transpose()
        .map_err(|e| corrupt("runtime_record", e.to_string()))?;
    let network: Option<String> = column(row, &raw_id, "network")?;
    let network = network
        .map(|n| serde_json::from_str(&n))
        .transpose()
        .map_err(|e| corrupt("network", e.to_string()))?
        .unwrap_or_default();
    let auto_pause: Option<String> = column(row, &raw_id, "auto_pause")?;
    let auto_pause = auto_pause
        .map(|a| serde_json::from_str(&a))
        .transpose()
        .map_err(|e| corrupt("auto_pause", e.to_string()))?;
    let paused_at: Option<i64> = column(row, &raw_id, "paused_at")?;
    let pause_cause: Option<String> = column(row, &raw_id, "pause_cause")?;
    let paused = match (status, paused_at, pause_cause) {
        (SessionStatus::Paused, Some(at_ms), Some(cause)) => Some(Paused {
            at_ms,
            cause: PauseCause::parse(&cause)
                .ok_or_else(|| corrupt("pause_cause", format!("unknown cause {cause:?}")))?,
        }),
        (SessionStatus::Paused, _, _) => {
            return Err(corrupt(
                "paused_at",
                "a PAUSED row without its pause".to_owned(),
            ));
        }
        _ => None,
    };
    let created_at_ms: i64 = column(row, &raw_id, "created_at")?;
    let expires_at_ms: i64 = column(row, &raw_id, "expires_at")?;
    for (name, ms) in [("created_at", created_at_ms), ("expires_at", expires_at_ms)] {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|e| corrupt(name, e.to_string()))?;
    }
    Ok(StoredSession {
        id,
        tenant: column(row, &raw_id, "tenant")?,
        status,
        image: column(row, &raw_id, "image")?,
        metadata,
        resources,
        env,
        created_at_ms,
        expires_at_ms,
        record,
        network,
        paused,
        auto_pause,
    })
}

/// A row of either database, read by column name as the few types the store keeps.
pub(crate) trait StoreRow {
    /// A text column (`None` for NULL).
    fn text(&self, name: &'static str) -> Result<Option<String>, sqlx::Error>;
    /// An integer column (`None` for NULL).
    fn int(&self, name: &'static str) -> Result<Option<i64>, sqlx::Error>;
}

/// [`StoreRow`] for a driver's row type.
macro_rules! store_row {
    ($row:ty) => {
        impl StoreRow for $row {
            fn text(&self, name: &'static str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(name)
            }
            fn int(&self, name: &'static str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(name)
            }
        }
    };
}
store_row!(SqliteRow);
store_row!(PgRow);

/// A type a column is read as.
pub(crate) trait Column: Sized {
    /// Reads column `name`; `Err` says why it cannot be.
    fn read(row: &impl StoreRow, name: &'static str) -> Result<Self, String>;
}

impl Column for Option<String> {
    fn read(row: &impl StoreRow, name: &'static str) -> Result<Self, String> {
        row.text(name).map_err(|e| e.to_string())
    }
}

impl Column for Option<i64> {
    fn read(row: &impl StoreRow, name: &'static str) -> Result<Self, String> {
        row.int(name).map_err(|e| e.to_string())
    }
}

impl Column for String {
    fn read(row: &impl StoreRow, name: &'static str) -> Result<Self, String> {
        Option::<String>::read(row, name)?.ok_or_else(|| "NULL".to_owned())
    }
}

impl Column for i64 {
    fn read(row: &impl StoreRow, name: &'static str) -> Result<Self, String> {
        Option::<i64>::read(row, name)?.ok_or_else(|| "NULL".to_owned())
    }
}

/// One typed column of a row.
fn column<T: Column>(row: &impl StoreRow, id: &str, name: &'static str) -> Result<T, StoreError> {
    T::read(row, name).map_err(|reason| StoreError::Corrupt {
        id: id.to_owned(),
        column: name,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{self, on_both};

    on_both!(
        lifecycle_round_trip,
        the_network_policy_is_kept_changed_and_defaults_to_none,
        capacity_is_enforced_by_the_insert,
        tenant_quotas_are_enforced_by_the_insert,
        quotas_are_exact_under_concurrent_inserts_from_two_pools,
        list_pages_by_tenant,
        counts_rows_by_status,
        a_schema_not_migrated_is_refused,
    );

    fn session(tenant: &str, created_at_ms: i64) -> StoredSession {
        StoredSession {
            id: Uuid::now_v7(),
            tenant: tenant.to_owned(),
            status: SessionStatus::Creating,
            image: "default".to_owned(),
            metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            resources: Resources::default(),
            env: BTreeMap::new(),
            created_at_ms,
            expires_at_ms: created_at_ms + 60_000,
            record: None,
            network: NetworkPolicy::default(),
            paused: None,
            auto_pause: None,
        }
    }

    #[tokio::test]
    async fn wal_mode_is_on() {
        let (store, _dir) = testing::sqlite().await;
        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!("a SQLite store")
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    async fn lifecycle_round_trip(store: Store) {
        let s = session("a", 1_000);
        assert!(store.insert_creating(&s, 10).await.unwrap());
        assert_eq!(store.get(s.id).await.unwrap().unwrap(), s);
        // CREATING rows cannot be marked deleting.
        assert!(store.mark_deleting(s.id, None).await.unwrap().is_none());
        let record = SandboxRecord {
            id: s.id,
            sandbox_id: Uuid::new_v4(),
            runtime: hutch_sandbox::RuntimeData::encode(&serde_json::json!({"agentPid": 42}))
                .unwrap(),
        };
        let running = store.set_running(s.id, &record).await.unwrap().unwrap();
        assert_eq!(running.status, SessionStatus::Running);
        assert_eq!(running.record, Some(record));
        // Not yet expired at 1_000 + 59_999.
        assert!(
            store
                .mark_deleting(s.id, Some(60_999))
                .await
                .unwrap()
                .is_none()
        );
        let deleting = store.mark_deleting(s.id, Some(61_000)).await.unwrap();
        assert_eq!(deleting.unwrap().status, SessionStatus::Deleting);
        assert!(
            store
                .update(s.id, Some(5), None, None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.delete(s.id).await.unwrap());
        assert!(!store.delete(s.id).await.unwrap());
        assert!(store.get(s.id).await.unwrap().is_none());
    }

    async fn the_network_policy_is_kept_changed_and_defaults_to_none(store: Store) {
        let mut s = session("a", 1_000);
        s.network = NetworkPolicy {
            egress: hutch_api::Egress::Allow,
            allow: vec!["pypi.org".to_owned()],
            deny: Vec::new(),
        };
        assert!(store.insert_creating(&s, 10).await.unwrap());
        assert_eq!(store.get(s.id).await.unwrap().unwrap().network, s.network);
        let all = NetworkPolicy {
            egress: hutch_api::Egress::All,
            allow: Vec::new(),
            deny: vec!["example.com".to_owned()],
        };
        let updated = store.update(s.id, None, None, Some(&all)).await.unwrap();
        assert_eq!(updated.unwrap().network, all);
        assert_eq!(
            store.get(s.id).await.unwrap().unwrap().to_api().network,
            all
        );
        // A row written before the column existed reads as no network.
        testing::execute(&store, "UPDATE sessions SET network = NULL").await;
        let legacy = store.get(s.id).await.unwrap().unwrap();
        assert_eq!(legacy.network, NetworkPolicy::default());
    }

    async fn capacity_is_enforced_by_the_insert(store: Store) {
        assert!(store.insert_creating(&session("a", 1), 2).await.unwrap());
        assert!(store.insert_creating(&session("a", 2), 2).await.unwrap());
        assert!(!store.insert_creating(&session("a", 3), 2).await.unwrap());
    }

    async fn tenant_quotas_are_enforced_by_the_insert(store: Store) {
        let limits = RowLimits {
            max_rows: 10,
            tenant_max_rows: 2,
            tenant_max_memory_mb: 1000,
        };
        let with_memory = |tenant: &str, memory_mb: u64| {
            let mut row = session(tenant, 1);
            row.resources.memory_mb = memory_mb;
            row
        };
        let insert = |row: StoredSession| {
            let store = store.clone();
            async move { store.insert_creating_within(&row, limits).await.unwrap() }
        };
        assert_eq!(insert(with_memory("a", 400)).await, InsertOutcome::Inserted);
        // 400 + 700 > 1000.
        assert_eq!(
            insert(with_memory("a", 700)).await,
            InsertOutcome::TenantMemory { memory_mb: 400 }
        );
        assert_eq!(insert(with_memory("a", 600)).await, InsertOutcome::Inserted);
        assert_eq!(
            insert(with_memory("a", 32)).await,
            InsertOutcome::TenantRows { rows: 2 }
        );
        // Another tenant has its own quotas.
        assert_eq!(
            insert(with_memory("b", 1000)).await,
            InsertOutcome::Inserted
        );
        let full = RowLimits {
            max_rows: 3,
            ..limits
        };
        assert_eq!(
            store
                .insert_creating_within(&with_memory("c", 32), full)
                .await
                .unwrap(),
            InsertOutcome::Capacity { rows: 3 }
        );
    }

    async fn list_pages_by_tenant(store: Store) {
        for i in 0..5 {
            store.insert_creating(&session("a", i), 100).await.unwrap();
        }
        store.insert_creating(&session("b", 3), 100).await.unwrap();
        let (page, total) = store.list(Some("a"), None, 2, 1).await.unwrap();
        assert_eq!(total, 5);
        assert_eq!(
            page.iter().map(|s| s.created_at_ms).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let (all, total) = store.list(None, None, 100, 0).await.unwrap();
        assert_eq!((all.len(), total), (6, 6));
    }

    async fn counts_rows_by_status(store: Store) {
        assert!(store.count_by_status().await.unwrap().is_empty());
        let a = session("a", 1);
        store.insert_creating(&a, 100).await.unwrap();
        store.insert_creating(&session("b", 2), 100).await.unwrap();
        let record = SandboxRecord {
            id: a.id,
            sandbox_id: Uuid::new_v4(),
            runtime: hutch_sandbox::RuntimeData::encode(&serde_json::json!({"agentPid": 42}))
                .unwrap(),
        };
        store.set_running(a.id, &record).await.unwrap().unwrap();
        let mut counts = store.count_by_status().await.unwrap();
        counts.sort_by_key(|(state, _)| state.as_str());
        assert_eq!(
            counts,
            vec![(SessionStatus::Creating, 1), (SessionStatus::Running, 1)]
        );
    }

    /// 40 creates at once for a tenant allowed 10, through two pools (two replicas' worth of
    /// connections): exactly 10 rows go in, and every other insert says which quota it hit.
    async fn quotas_are_exact_under_concurrent_inserts_from_two_pools(store: Store) {
        let other = testing::reopen(&store).await;
        let limits = RowLimits {
            max_rows: 1000,
            tenant_max_rows: 10,
            tenant_max_memory_mb: u64::MAX,
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tasks.spawn(async move {
                store
                    .insert_creating_within(&session("a", i), limits)
                    .await
                    .unwrap()
            });
        }
        let outcomes = tasks.join_all().await;
        let inserted = outcomes
            .iter()
            .filter(|o| **o == InsertOutcome::Inserted)
            .count();
        assert_eq!(inserted, 10, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(
            o,
            InsertOutcome::Inserted | InsertOutcome::TenantRows { rows: 10 }
        )));
        let (_, total) = store.list(Some("a"), None, 100, 0).await.unwrap();
        assert_eq!(total, 10);
        other.close().await;
    }

    /// Opening without migrating refuses an empty database, and accepts it once migrated.
    async fn a_schema_not_migrated_is_refused(store: Store) {
        let fresh = testing::empty_like(&store).await;
        let err = Store::open(&fresh, false).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unmigrated { applied: 0, .. }),
            "{err:?}"
        );
        Store::open(&fresh, true).await.unwrap().close().await;
        Store::open(&fresh, false).await.unwrap().close().await;
    }

    /// PostgreSQL refusing this server's connections (its role held to 0 connections, those
    /// open ended): a statement fails within the store's timeout with an error that says
    /// "unavailable" (so requests answer 503 `store_unavailable`), and once PostgreSQL accepts
    /// connections again the same store works on its own, with its rows intact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_loss_is_unavailable_and_recovered_from() {
        let (url, role) = testing::postgres_database_of_a_role().await;
        let store = Store::open(&StoreLocation::Postgres(url), true)
            .await
            .unwrap();
        let s = session("a", 1);
        assert!(store.insert_creating(&s, 10).await.unwrap());
        testing::admin(&[
            &format!("ALTER ROLE {role} CONNECTION LIMIT 0"),
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            ),
        ])
        .await;
        let started = std::time::Instant::now();
        let err = store.get(s.id).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            started.elapsed() < POSTGRES_TIMEOUT * 3,
            "took {:?}",
            started.elapsed()
        );
        let api = crate::error::ApiError::from(err);
        assert_eq!(api.code(), hutch_api::ErrorCode::StoreUnavailable);
        testing::admin(&[&format!("ALTER ROLE {role} CONNECTION LIMIT -1")]).await;
        assert_eq!(store.get(s.id).await.unwrap().unwrap(), s);
        store.close().await;
    }

    /// Errors in what was asked are not "unavailable": they stay 500 `internal`.
    #[test]
    fn only_reachability_errors_are_unavailable() {
        let corrupt = StoreError::Corrupt {
            id: "x".to_owned(),
            column: "status",
            reason: "bad".to_owned(),
        };
        assert!(!corrupt.is_unavailable());
        let timed_out = StoreError::Query {
            op: "get session",
            source: sqlx::Error::PoolTimedOut,
        };
        assert!(timed_out.is_unavailable());
        let not_found = StoreError::Query {
            op: "get session",
            source: sqlx::Error::RowNotFound,
        };
        assert!(!not_found.is_unavailable());
    }

    /// `--store` takes PostgreSQL URLs only, and its password never reaches logs.
    #[test]
    fn store_locations_parse_strictly_and_hide_passwords() {
        let url = "postgres://hutch:s3cret@db.internal:5432/hutch?sslmode=disable";
        let location = StoreLocation::postgres(url).unwrap();
        assert_eq!(location, StoreLocation::Postgres(url.to_owned()));
        let shown = location.display();
        assert_eq!(
            shown,
            "postgres://hutch:***@db.internal:5432/hutch?sslmode=disable"
        );
        assert!(!format!("{location:?}").contains("s3cret"));
        assert_eq!(
            StoreLocation::postgres("postgresql://db/hutch")
                .unwrap()
                .display(),
            "postgresql://db/hutch"
        );
        for bad in ["sqlite:///tmp/x.db", "mysql://db/x", "db.internal:5432", ""] {
            let err = StoreLocation::postgres(bad).unwrap_err();
            assert!(matches!(err, StoreError::Location(_)), "{bad}: {err:?}");
        }
    }
}
