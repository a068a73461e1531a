//! SQL of storage contexts: the contexts themselves, the contexts each session binds, and the
//! transfer tasks between them (`migrations/0002_storage_contexts.sql`).

use std::str::FromStr;

use hutch_api::{ContextStatusData, ContextSync, StorageContext, TaskStatus, TaskType};
use uuid::Uuid;

use super::replicas::mine_or_orphaned;
use super::{
    CONTEXTS_INSERT_LOCK, Pool, Store, StoreError, StoreRow, column, encode, ms_to_time, now_ms,
    on_pool, query,
};

/// The columns of a storage context row, in the order [`decode_context`] reads them.
macro_rules! context_columns {
    () => {
        "id, tenant, name, version, size_bytes, blob, created_at, updated_at"
    };
}

/// The columns of a task row, in the order [`decode_task`] reads them.
macro_rules! task_columns {
    () => {
        "id, context_id, path, task_type, status, version, start_time, finish_time, error_message"
    };
}

/// A storage context row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredContext {
    /// Context id (v7).
    pub(crate) id: Uuid,
    /// Owning tenant.
    pub(crate) tenant: String,
    /// Name, unique per tenant.
    pub(crate) name: String,
    /// Completed uploads.
    pub(crate) version: u64,
    /// Bytes of file content in the current version.
    pub(crate) size_bytes: u64,
    /// The blob holding the current version; `None` while empty.
    pub(crate) blob: Option<String>,
    /// Creation time, unix ms.
    pub(crate) created_at_ms: i64,
    /// Time of the current version, unix ms.
    pub(crate) updated_at_ms: i64,
}

impl StoredContext {
    /// The context as the API shows it.
    pub(crate) fn to_api(&self) -> StorageContext {
        StorageContext {
            id: self.id,
            name: self.name.clone(),
            version: self.version,
            size_bytes: self.size_bytes,
            created_at: ms_to_time(self.created_at_ms),
            updated_at: ms_to_time(self.updated_at_ms),
        }
    }
}

/// What inserting a context did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextInsert {
    /// Inserted.
    Inserted,
    /// The tenant has a context of this name already.
    NameTaken,
    /// The tenant holds its most contexts.
    TooMany,
}

/// A task row, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredTask {
    /// Row id (increasing).
    pub(crate) id: i64,
    /// The task as the API shows it.
    pub(crate) data: ContextStatusData,
}

/// Which tasks `context/info` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskFilter {
    /// Only this context.
    pub(crate) context_id: Option<Uuid>,
    /// Only this path.
    pub(crate) path: Option<String>,
    /// Only this direction.
    pub(crate) task_type: Option<TaskType>,
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

impl Store {
    /// Inserts a context unless the tenant has one of that name or holds `tenant_max` already.
    pub(crate) async fn insert_context(
        &self,
        context: &StoredContext,
        tenant_max: usize,
    ) -> Result<ContextInsert, StoreError> {
        /// The insert, bound.
        macro_rules! insert {
            () => {
                sqlx::query(concat!(
                    "INSERT INTO storage_contexts (",
                    context_columns!(),
                    ") SELECT $1, $2, $3, $4, $5, $6, $7, $8 ",
                    "WHERE (SELECT COUNT(*) FROM storage_contexts WHERE tenant = $9) < $10"
                ))
                .bind(context.id.to_string())
                .bind(&context.tenant)
                .bind(&context.name)
                .bind(as_i64(context.version))
                .bind(as_i64(context.size_bytes))
                .bind(&context.blob)
                .bind(context.created_at_ms)
                .bind(context.updated_at_ms)
                .bind(&context.tenant)
                .bind(as_i64(u64::try_from(tenant_max).unwrap_or(u64::MAX)))
            };
        }
        let result = match &self.pool {
            Pool::Sqlite(pool) => insert!().execute(pool).await.map(|d| d.rows_affected()),
            // As for sessions (`Store::insert_creating_within`): the count must see every
            // context of the tenant inserted before, so inserts of one tenant take turns.
            Pool::Postgres(pool) => {
                async {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                        .bind(CONTEXTS_INSERT_LOCK)
                        .bind(&context.tenant)
                        .execute(&mut *tx)
                        .await?;
                    let done = insert!().execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }
                .await
            }
        };
        match result {
            Ok(1) => Ok(ContextInsert::Inserted),
            Ok(_) => Ok(ContextInsert::TooMany),
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                Ok(ContextInsert::NameTaken)
            }
            Err(source) => Err(StoreError::Query {
                op: "insert storage context",
                source,
            }),
        }
    }

    /// One context by id.
    pub(crate) async fn get_context(&self, id: Uuid) -> Result<Option<StoredContext>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                context_columns!(),
                " FROM storage_contexts WHERE id = $1"
            ))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("get storage context"))?;
            row.as_ref().map(decode_context).transpose()
        })
    }

    /// One page of contexts, oldest first, of one tenant (or of all with `None`), and the total.
    pub(crate) async fn list_contexts(
        &self,
        tenant: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<StoredContext>, u64), StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                context_columns!(),
                " FROM storage_contexts WHERE ($1 IS NULL OR tenant = $2) ",
                "ORDER BY created_at, id LIMIT $3 OFFSET $4"
            ))
            .bind(tenant)
            .bind(tenant)
            .bind(i64::from(limit))
            .bind(as_i64(offset))
            .fetch_all(pool)
            .await
            .map_err(query("list storage contexts"))?;
            let (total,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM storage_contexts WHERE ($1 IS NULL OR tenant = $2)",
            )
            .bind(tenant)
            .bind(tenant)
            .fetch_one(pool)
            .await
            .map_err(query("count storage contexts"))?;
            let contexts = rows.iter().map(decode_context).collect::<Result<_, _>>()?;
            Ok((contexts, as_u64(total)))
        })
    }

    /// Every context, for sweeping blobs at start.
    pub(crate) async fn all_contexts(&self) -> Result<Vec<StoredContext>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                context_columns!(),
                " FROM storage_contexts"
            ))
            .fetch_all(pool)
            .await
            .map_err(query("list all storage contexts"))?;
            rows.iter().map(decode_context).collect()
        })
    }

    /// Deletes a context; returns whether it existed.
    pub(crate) async fn delete_context(&self, id: Uuid) -> Result<bool, StoreError> {
        on_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM storage_contexts WHERE id = $1")
                .bind(id.to_string())
                .execute(pool)
                .await
                .map_err(query("delete storage context"))?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Bytes held by the tenant's contexts, all but `except`.
    pub(crate) async fn tenant_context_bytes(
        &self,
        tenant: &str,
        except: Uuid,
    ) -> Result<u64, StoreError> {
        on_pool!(self, |pool| {
            let (bytes,): (i64,) = sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM storage_contexts \
             WHERE tenant = $1 AND id != $2",
            )
            .bind(tenant)
            .bind(except.to_string())
            .fetch_one(pool)
            .await
            .map_err(query("sum storage context sizes"))?;
            Ok(as_u64(bytes))
        })
    }

    /// Makes `blob` the current version of a context, bumping its version: one statement, so
    /// readers see the old blob or the new one and concurrent commits each bump once (the
    /// last to commit wins). Returns the new version, or `None` if the context is gone.
    pub(crate) async fn commit_version(
        &self,
        id: Uuid,
        blob: &str,
        size_bytes: u64,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        on_pool!(self, |pool| {
            let version: Option<(i64,)> = sqlx::query_as(
                "UPDATE storage_contexts SET version = version + 1, blob = $1, size_bytes = $2, \
             updated_at = $3 WHERE id = $4 RETURNING version",
            )
            .bind(blob)
            .bind(as_i64(size_bytes))
            .bind(now_ms)
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(query("commit storage context version"))?;
            Ok(version.map(|(v,)| as_u64(v)))
        })
    }

    /// Records the contexts a new session binds, in order.
    pub(crate) async fn insert_syncs(
        &self,
        session: Uuid,
        syncs: &[ContextSync],
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            for (position, sync) in syncs.iter().enumerate() {
                sqlx::query(
                "INSERT INTO session_context_syncs (session_id, position, context_id, path, policy) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(session.to_string())
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(sync.context_id.to_string())
            .bind(&sync.path)
            .bind(encode(session, "policy", &sync.policy)?)
            .execute(pool)
            .await
            .map_err(query("insert session context sync"))?;
            }
            Ok(())
        })
    }

    /// The contexts a session binds, in order.
    pub(crate) async fn syncs(&self, session: Uuid) -> Result<Vec<ContextSync>, StoreError> {
        on_pool!(self, |pool| {
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT context_id, path, policy FROM session_context_syncs \
             WHERE session_id = $1 ORDER BY position",
            )
            .bind(session.to_string())
            .fetch_all(pool)
            .await
            .map_err(query("list session context syncs"))?;
            rows.into_iter()
                .map(|(context_id, path, policy)| {
                    let corrupt = |column: &'static str, reason: String| StoreError::Corrupt {
                        id: session.to_string(),
                        column,
                        reason,
                    };
                    Ok(ContextSync {
                        context_id: Uuid::from_str(&context_id)
                            .map_err(|e| corrupt("context_id", e.to_string()))?,
                        path,
                        policy: serde_json::from_str(&policy)
                            .map_err(|e| corrupt("policy", e.to_string()))?,
                    })
                })
                .collect()
        })
    }

    /// Records a new task of a session, forgetting the oldest finished ones past `keep`.
    pub(crate) async fn insert_task(
        &self,
        session: Uuid,
        data: &ContextStatusData,
        keep: usize,
    ) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO context_tasks (session_id, context_id, path, task_type, status, version, \
             start_time, finish_time, error_message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(session.to_string())
        .bind(data.context_id.to_string())
        .bind(&data.path)
        .bind(data.task_type.as_str())
        .bind(data.status.as_str())
        .bind(as_i64(data.version))
        .bind(data.start_time)
        .bind(data.finish_time)
        .bind(&data.error_message)
        .fetch_one(pool)
        .await
        .map_err(query("insert context task"))?;
            sqlx::query(
            "DELETE FROM context_tasks WHERE session_id = $1 AND status IN ('Success', 'Failed') \
             AND id NOT IN (SELECT id FROM context_tasks WHERE session_id = $2 ORDER BY id DESC LIMIT $3)",
        )
        .bind(session.to_string())
        .bind(session.to_string())
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(pool)
        .await
        .map_err(query("forget old context tasks"))?;
            Ok(id)
        })
    }

    /// Moves a task on: to `Running`, or to a final state with its version, finish time and
    /// error message.
    pub(crate) async fn update_task(
        &self,
        id: i64,
        status: TaskStatus,
        version: u64,
        finish_time: i64,
        error_message: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
            "UPDATE context_tasks SET status = $1, version = $2, finish_time = $3, error_message = $4 \
             WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(as_i64(version))
        .bind(finish_time)
        .bind(error_message)
        .bind(id)
        .execute(pool)
        .await
        .map_err(query("update context task"))?;
            Ok(())
        })
    }

    /// A session's tasks matching `filter`, oldest first.
    pub(crate) async fn tasks(
        &self,
        session: Uuid,
        filter: &TaskFilter,
    ) -> Result<Vec<StoredTask>, StoreError> {
        on_pool!(self, |pool| {
            let context = filter.context_id.map(|id| id.to_string());
            let task_type = filter.task_type.map(TaskType::as_str);
            let rows = sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM context_tasks WHERE session_id = $1 AND ($2 IS NULL OR context_id = $3) ",
                "AND ($4 IS NULL OR path = $5) AND ($6 IS NULL OR task_type = $7) ORDER BY id"
            ))
            .bind(session.to_string())
            .bind(&context)
            .bind(&context)
            .bind(&filter.path)
            .bind(&filter.path)
            .bind(task_type)
            .bind(task_type)
            .fetch_all(pool)
            .await
            .map_err(query("list context tasks"))?;
            rows.iter().map(decode_task).collect()
        })
    }

    /// How many of a session's tasks have not finished.
    pub(crate) async fn unfinished_tasks(&self, session: Uuid) -> Result<u64, StoreError> {
        on_pool!(self, |pool| {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM context_tasks WHERE session_id = $1 \
             AND status IN ('Pending', 'Running')",
            )
            .bind(session.to_string())
            .fetch_one(pool)
            .await
            .map_err(query("count unfinished context tasks"))?;
            Ok(as_u64(n))
        })
    }

    /// Marks Failed with `message` every unfinished task of the sessions this replica may act
    /// on: its own, those of no replica, and those of dead replicas (at start: a task of a
    /// server that stopped cannot be running). A live replica's tasks are left to it: its
    /// upload may be running now. Returns how many.
    pub(crate) async fn fail_unfinished_tasks(
        &self,
        now_secs: i64,
        message: &str,
    ) -> Result<u64, StoreError> {
        let cutoff = self.death_cutoff(now_ms());
        on_pool!(self, |pool| {
            let done = sqlx::query(concat!(
                "UPDATE context_tasks SET status = 'Failed', finish_time = $1, error_message = $2 \
                 WHERE status IN ('Pending', 'Running') \
                 AND session_id IN (SELECT id FROM sessions WHERE ",
                mine_or_orphaned!("$3", "$4"),
                ")"
            ))
            .bind(now_secs)
            .bind(message)
            .bind(self.replica())
            .bind(cutoff)
            .execute(pool)
            .await
            .map_err(query("fail unfinished context tasks"))?;
            Ok(done.rows_affected())
        })
    }

    /// Marks Failed with `message` every unfinished task of session `session` (taken over
    /// from a dead replica, whose transfers died with it). Returns how many.
    pub(crate) async fn fail_unfinished_tasks_of(
        &self,
        session: Uuid,
        now_secs: i64,
        message: &str,
    ) -> Result<u64, StoreError> {
        on_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE context_tasks SET status = 'Failed', finish_time = $1, error_message = $2 \
                 WHERE session_id = $3 AND status IN ('Pending', 'Running')",
            )
            .bind(now_secs)
            .bind(message)
            .bind(session.to_string())
            .execute(pool)
            .await
            .map_err(query("fail unfinished context tasks of a session"))?;
            Ok(done.rows_affected())
        })
    }
}

/// Reads a row selected with [`context_columns!`].
fn decode_context(row: &impl StoreRow) -> Result<StoredContext, StoreError> {
    let raw_id: String = column(row, "?", "id")?;
    let id = Uuid::from_str(&raw_id).map_err(|e| StoreError::Corrupt {
        id: raw_id.clone(),
        column: "id",
        reason: e.to_string(),
    })?;
    let version: i64 = column(row, &raw_id, "version")?;
    let size_bytes: i64 = column(row, &raw_id, "size_bytes")?;
    Ok(StoredContext {
        id,
        tenant: column(row, &raw_id, "tenant")?,
        name: column(row, &raw_id, "name")?,
        version: as_u64(version),
        size_bytes: as_u64(size_bytes),
        blob: column(row, &raw_id, "blob")?,
        created_at_ms: column(row, &raw_id, "created_at")?,
        updated_at_ms: column(row, &raw_id, "updated_at")?,
    })
}

/// Reads a row selected with [`task_columns!`].
fn decode_task(row: &impl StoreRow) -> Result<StoredTask, StoreError> {
    let id: i64 = column(row, "?", "id")?;
    let raw_id = id.to_string();
    let corrupt = |column: &'static str, reason: String| StoreError::Corrupt {
        id: raw_id.clone(),
        column,
        reason,
    };
    let context_id: String = column(row, &raw_id, "context_id")?;
    let task_type: String = column(row, &raw_id, "task_type")?;
    let status: String = column(row, &raw_id, "status")?;
    let version: i64 = column(row, &raw_id, "version")?;
    Ok(StoredTask {
        id,
        data: ContextStatusData {
            context_id: Uuid::from_str(&context_id)
                .map_err(|e| corrupt("context_id", e.to_string()))?,
            path: column(row, &raw_id, "path")?,
            status: TaskStatus::parse(&status)
                .ok_or_else(|| corrupt("status", format!("unknown status {status:?}")))?,
            task_type: TaskType::parse(&task_type)
                .ok_or_else(|| corrupt("task_type", format!("unknown type {task_type:?}")))?,
            start_time: column(row, &raw_id, "start_time")?,
            finish_time: column(row, &raw_id, "finish_time")?,
            error_message: column(row, &raw_id, "error_message")?,
            version: as_u64(version),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::now_ms;
    use crate::store::testing::{self, on_both};

    on_both!(
        names_are_unique_per_tenant_and_counts_bounded,
        each_commit_bumps_the_version_once,
        concurrent_commits_from_two_pools_each_bump_once,
        the_context_quota_is_exact_under_concurrent_inserts,
    );

    fn context(tenant: &str, name: &str) -> StoredContext {
        let now = now_ms();
        StoredContext {
            id: Uuid::now_v7(),
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            version: 0,
            size_bytes: 0,
            blob: None,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    async fn names_are_unique_per_tenant_and_counts_bounded(store: Store) {
        let a = context("alice", "cache");
        assert_eq!(
            store.insert_context(&a, 2).await.unwrap(),
            ContextInsert::Inserted
        );
        assert_eq!(
            store
                .insert_context(&context("alice", "cache"), 2)
                .await
                .unwrap(),
            ContextInsert::NameTaken
        );
        assert_eq!(
            store
                .insert_context(&context("bob", "cache"), 2)
                .await
                .unwrap(),
            ContextInsert::Inserted
        );
        assert_eq!(
            store
                .insert_context(&context("alice", "other"), 2)
                .await
                .unwrap(),
            ContextInsert::Inserted
        );
        assert_eq!(
            store
                .insert_context(&context("alice", "third"), 2)
                .await
                .unwrap(),
            ContextInsert::TooMany
        );
        let (alice, total) = store.list_contexts(Some("alice"), 10, 0).await.unwrap();
        assert_eq!((alice.len(), total), (2, 2));
        assert_eq!(store.get_context(a.id).await.unwrap().unwrap(), a);
    }

    async fn each_commit_bumps_the_version_once(store: Store) {
        let a = context("alice", "cache");
        store.insert_context(&a, 10).await.unwrap();
        assert_eq!(
            store.commit_version(a.id, "b1", 10, 1).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            store.commit_version(a.id, "b2", 20, 2).await.unwrap(),
            Some(2)
        );
        let now = store.get_context(a.id).await.unwrap().unwrap();
        assert_eq!(
            (now.version, now.size_bytes, now.blob.as_deref()),
            (2, 20, Some("b2"))
        );
        assert_eq!(
            store
                .tenant_context_bytes("alice", Uuid::nil())
                .await
                .unwrap(),
            20
        );
        assert_eq!(store.tenant_context_bytes("alice", a.id).await.unwrap(), 0);
        assert!(store.delete_context(a.id).await.unwrap());
        assert_eq!(store.commit_version(a.id, "b3", 1, 3).await.unwrap(), None);
    }

    /// 20 commits at once through two pools: each gets its own version, 1 to 20, and the
    /// context ends at version 20.
    async fn concurrent_commits_from_two_pools_each_bump_once(store: Store) {
        let other = testing::reopen(&store).await;
        let a = context("alice", "cache");
        store.insert_context(&a, 10).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20_u64 {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tasks.spawn(async move {
                store
                    .commit_version(a.id, &format!("b{i}"), i, 1)
                    .await
                    .unwrap()
                    .unwrap()
            });
        }
        let mut versions = tasks.join_all().await;
        versions.sort_unstable();
        assert_eq!(versions, (1..=20).collect::<Vec<u64>>());
        assert_eq!(store.get_context(a.id).await.unwrap().unwrap().version, 20);
        other.close().await;
    }

    /// 20 inserts of different names at once, through two pools, for a tenant allowed 5:
    /// exactly 5 go in.
    async fn the_context_quota_is_exact_under_concurrent_inserts(store: Store) {
        let other = testing::reopen(&store).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tasks.spawn(async move {
                store
                    .insert_context(&context("alice", &format!("c{i}")), 5)
                    .await
                    .unwrap()
            });
        }
        let outcomes = tasks.join_all().await;
        let inserted = outcomes
            .iter()
            .filter(|o| **o == ContextInsert::Inserted)
            .count();
        assert_eq!(inserted, 5, "{outcomes:?}");
        let (_, total) = store.list_contexts(Some("alice"), 100, 0).await.unwrap();
        assert_eq!(total, 5);
        other.close().await;
    }
}
