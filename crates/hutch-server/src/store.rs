//! The sessions store: every SQL statement of the control plane, behind [`Store`].
//!
//! SQLite in WAL mode with `synchronous=NORMAL`, schema in `migrations/` applied on open. Times
//! are unix milliseconds; metadata, resources, env and the runtime's [`SandboxRecord`] are JSON
//! text. Queries are checked at run time (no `DATABASE_URL` needed to build).
//!
//! The store knows rows and their states; it knows nothing of HTTP, tokens, or what a sandbox
//! is beyond the opaque record it keeps for the runtime. State changes that must not race are
//! single conditional statements (`UPDATE … WHERE status IN (…) RETURNING …`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hutch_api::{AutoPause, NetworkPolicy, Resources, Session, SessionStatus};
use hutch_sandbox::SandboxRecord;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use time::OffsetDateTime;
use uuid::Uuid;

mod contexts;

pub(crate) use contexts::{ContextInsert, StoredContext, TaskFilter};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a create whose row did not fit, but would by the time the usage is read
/// again, is tried.
const INSERT_ATTEMPTS: usize = 3;

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
    /// The database file could not be opened.
    #[error("opening the store at {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("migrating the store")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("store query {op} failed")]
    Query {
        /// What was being done.
        op: &'static str,
        /// What SQLite said.
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

/// The sessions table.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: SqlitePool,
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
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub(crate) async fn open(path: &Path) -> Result<Store, StoreError> {
        // Sessions carry tenants' environment and metadata: only root may read the database.
        // SQLite gives its -wal and -shm files the mode of the database file.
        private_file(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source: sqlx::Error::Io(source),
        })?;
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
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(Store { pool })
    }

    /// Closes every connection, checkpointing the WAL.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
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
            let result = sqlx::query(concat!(
                "INSERT INTO sessions (",
                columns!(),
                ") SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL, ? ",
                "WHERE (SELECT COUNT(*) FROM sessions) < ? ",
                "AND (SELECT COUNT(*) FROM sessions WHERE tenant = ?) < ? ",
                "AND (SELECT COALESCE(SUM(json_extract(resources, '$.memoryMb')), 0) ",
                "FROM sessions WHERE tenant = ?) + ? <= ?"
            ))
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
            .execute(&self.pool)
            .await
            .map_err(query("insert session"))?;
            if result.rows_affected() == 1 {
                return Ok(InsertOutcome::Inserted);
            }
            let (rows, tenant_rows, tenant_memory_mb): (i64, i64, i64) = sqlx::query_as(concat!(
                "SELECT (SELECT COUNT(*) FROM sessions), ",
                "(SELECT COUNT(*) FROM sessions WHERE tenant = ?), ",
                "(SELECT COALESCE(SUM(json_extract(resources, '$.memoryMb')), 0) ",
                "FROM sessions WHERE tenant = ?)"
            ))
            .bind(&session.tenant)
            .bind(&session.tenant)
            .fetch_one(&self.pool)
            .await
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
        let row = sqlx::query(concat!(
            "UPDATE sessions SET status = 'RUNNING', runtime_record = ? ",
            "WHERE id = ? AND status = 'CREATING' RETURNING ",
            columns!()
        ))
        .bind(encode(id, "runtime_record", record)?)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(query("set session running"))?;
        row.as_ref().map(decode).transpose()
    }

    /// One row by id.
    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<StoredSession>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(query("get session"))?;
        row.as_ref().map(decode).transpose()
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
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let status = status.map(SessionStatus::as_str);
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE (? IS NULL OR tenant = ?) AND (? IS NULL OR status = ?) ",
            "ORDER BY created_at, id LIMIT ? OFFSET ?"
        ))
        .bind(tenant)
        .bind(tenant)
        .bind(status)
        .bind(status)
        .bind(i64::from(limit))
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(query("list sessions"))?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE (? IS NULL OR tenant = ?) \
             AND (? IS NULL OR status = ?)",
        )
        .bind(tenant)
        .bind(tenant)
        .bind(status)
        .bind(status)
        .fetch_one(&self.pool)
        .await
        .map_err(query("count sessions"))?;
        let sessions = rows.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((sessions, u64::try_from(total).unwrap_or_default()))
    }

    /// How many rows are in each state (states without rows are left out), for metrics.
    pub(crate) async fn count_by_status(&self) -> Result<Vec<(SessionStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM sessions GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(query("count sessions by status"))?;
        rows.into_iter()
            .map(|(status, n)| {
                let state = SessionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                    id: "*".to_owned(),
                    column: "status",
                    reason: format!("unknown status {status:?}"),
                })?;
                Ok((state, u64::try_from(n).unwrap_or_default()))
            })
            .collect()
    }

    /// Every row, for crash recovery.
    pub(crate) async fn all(&self) -> Result<Vec<StoredSession>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(query("list all sessions"))?;
        rows.iter().map(decode).collect()
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
        let metadata = metadata.map(|m| encode(id, "metadata", m)).transpose()?;
        let network = network.map(|n| encode(id, "network", n)).transpose()?;
        let row = sqlx::query(concat!(
            "UPDATE sessions SET expires_at = COALESCE(?, expires_at), ",
            "metadata = COALESCE(?, metadata), network = COALESCE(?, network) ",
            "WHERE id = ? AND status IN ('CREATING', 'RUNNING', 'PAUSED') RETURNING ",
            columns!()
        ))
        .bind(expires_at_ms)
        .bind(metadata)
        .bind(network)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(query("update session"))?;
        row.as_ref().map(decode).transpose()
    }

    /// Marks a RUNNING row PAUSED at `at_ms` for `cause` and returns it; `None` if there is no
    /// such row or it is not RUNNING.
    pub(crate) async fn set_paused(
        &self,
        id: Uuid,
        at_ms: i64,
        cause: PauseCause,
    ) -> Result<Option<StoredSession>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE sessions SET status = 'PAUSED', paused_at = ?, pause_cause = ? ",
            "WHERE id = ? AND status = 'RUNNING' RETURNING ",
            columns!()
        ))
        .bind(at_ms)
        .bind(cause.as_str())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(query("set session paused"))?;
        row.as_ref().map(decode).transpose()
    }

    /// Marks a PAUSED row RUNNING again and returns it; `None` if there is no such row or it
    /// is not PAUSED.
    pub(crate) async fn set_resumed(&self, id: Uuid) -> Result<Option<StoredSession>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE sessions SET status = 'RUNNING', paused_at = NULL, pause_cause = NULL ",
            "WHERE id = ? AND status = 'PAUSED' RETURNING ",
            columns!()
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(query("set session resumed"))?;
        row.as_ref().map(decode).transpose()
    }

    /// RUNNING rows that pause themselves when idle, for the auto-pause pass.
    pub(crate) async fn auto_pausing(&self) -> Result<Vec<StoredSession>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE status = 'RUNNING' AND auto_pause IS NOT NULL"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(query("list auto-pausing sessions"))?;
        rows.iter().map(decode).collect()
    }

    /// Marks a row DELETING and returns it, if it is RUNNING, PAUSED or already DELETING and,
    /// with `expired_by`, its expiry is at or before that time.
    ///
    /// `None` when the row is gone, still CREATING, or (with `expired_by`) was extended.
    pub(crate) async fn mark_deleting(
        &self,
        id: Uuid,
        expired_by: Option<i64>,
    ) -> Result<Option<StoredSession>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE sessions SET status = 'DELETING' ",
            "WHERE id = ? AND status IN ('RUNNING', 'PAUSED', 'DELETING') ",
            "AND (? IS NULL OR expires_at <= ?) RETURNING ",
            columns!()
        ))
        .bind(id.to_string())
        .bind(expired_by)
        .bind(expired_by)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("mark session deleting"))?;
        row.as_ref().map(decode).transpose()
    }

    /// Sets a row's expiry, so that the reaper comes back to it then (used to retry a destroy
    /// that failed).
    pub(crate) async fn retry_at(&self, id: Uuid, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET expires_at = ? WHERE id = ?")
            .bind(at_ms)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(query("postpone session"))?;
        Ok(())
    }

    /// Rows due for destruction at `now_ms`: RUNNING or PAUSED past their expiry, and DELETING
    /// rows whose destroy failed and is due for a retry.
    pub(crate) async fn due(&self, now_ms: i64) -> Result<Vec<StoredSession>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE expires_at <= ? ",
            "AND status IN ('RUNNING', 'PAUSED', 'DELETING') ORDER BY expires_at LIMIT 1000"
        ))
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(query("find expired sessions"))?;
        rows.iter().map(decode).collect()
    }

    /// Deletes a row. Returns whether it existed.
    pub(crate) async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(query("delete session"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Inserts a row as it is, in any state (tests and recovery scenarios).
    #[cfg(test)]
    pub(crate) async fn insert_raw(&self, session: &StoredSession) -> Result<(), StoreError> {
        let record = session
            .record
            .as_ref()
            .map(|r| encode(session.id, "runtime_record", r))
            .transpose()?;
        sqlx::query(concat!(
            "INSERT INTO sessions (",
            columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        .execute(&self.pool)
        .await
        .map_err(query("insert raw session"))?;
        Ok(())
    }
}

/// Wraps a sqlx error with what was being done.
fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

fn encode<T: serde::Serialize>(
    id: Uuid,
    what: &'static str,
    value: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { id, what, source })
}

/// Reads a row selected with [`columns!`].
fn decode(row: &SqliteRow) -> Result<StoredSession, StoreError> {
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

/// One typed column of a row.
fn column<'r, T>(row: &'r SqliteRow, id: &str, name: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        column: name,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    async fn open() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hutch.db")).await.unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn wal_mode_is_on() {
        let (store, _dir) = open().await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn lifecycle_round_trip() {
        let (store, _dir) = open().await;
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

    #[tokio::test]
    async fn the_network_policy_is_kept_changed_and_defaults_to_none() {
        let (store, _dir) = open().await;
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
        sqlx::query("UPDATE sessions SET network = NULL")
            .execute(&store.pool)
            .await
            .unwrap();
        let legacy = store.get(s.id).await.unwrap().unwrap();
        assert_eq!(legacy.network, NetworkPolicy::default());
    }

    #[tokio::test]
    async fn capacity_is_enforced_by_the_insert() {
        let (store, _dir) = open().await;
        assert!(store.insert_creating(&session("a", 1), 2).await.unwrap());
        assert!(store.insert_creating(&session("a", 2), 2).await.unwrap());
        assert!(!store.insert_creating(&session("a", 3), 2).await.unwrap());
    }

    #[tokio::test]
    async fn tenant_quotas_are_enforced_by_the_insert() {
        let (store, _dir) = open().await;
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

    #[tokio::test]
    async fn list_pages_by_tenant() {
        let (store, _dir) = open().await;
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

    #[tokio::test]
    async fn counts_rows_by_status() {
        let (store, _dir) = open().await;
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
}
