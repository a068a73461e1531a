//! Replicas sharing one store (`migrations/0005_replicas.sql`): each registers a row and
//! refreshes its heartbeat; a replica whose heartbeat is older than [`REPLICA_LEASE`] counts
//! as dead, and the sessions it owned may be taken over by the others.
//!
//! Only a server with a replica identity ([`Store::with_replica`], given on PostgreSQL)
//! registers. Without one (SQLite) the table stays empty, rows have no owner, and every
//! ownership condition holds: one server owns everything, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use uuid::Uuid;

use super::{Store, now_ms, on_pool, query};
use crate::store::StoreError;

/// How often a replica refreshes its heartbeat.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How old a replica's heartbeat may be before the others count it as dead (three missed
/// heartbeats).
pub(crate) const REPLICA_LEASE: Duration = Duration::from_secs(15);

/// [`REPLICA_LEASE`] in milliseconds.
const LEASE_MS: i64 = REPLICA_LEASE.as_millis() as i64;

/// The condition that the row's `owner` is `$me`, nobody, or a replica without a heartbeat
/// after `$cutoff`: a row this replica may act on. `$me` and `$cutoff` are the parameters
/// numbered by the caller.
macro_rules! mine_or_orphaned {
    ($me:literal, $cutoff:literal) => {
        concat!(
            "(owner IS NULL OR owner = ",
            $me,
            " OR owner NOT IN (SELECT id FROM replicas WHERE heartbeat_at > ",
            $cutoff,
            "))"
        )
    };
}
pub(crate) use mine_or_orphaned;

/// This server's identity among the replicas sharing the store.
#[derive(Debug)]
pub(crate) struct Membership {
    /// The replica id (`--replica`, or a generated one).
    pub(crate) id: String,
    /// Its runtime's name for this process ([`hutch_sandbox::Runtime::process_id`]), written
    /// with each heartbeat.
    process: Option<String>,
    /// Since when (unix ms) every heartbeat has succeeded; `i64::MAX` while the last failed or
    /// none was written yet.
    steady_since: AtomicI64,
}

impl Store {
    /// The same store, for replica `id` whose runtime names this process `process`: rows it
    /// inserts name it as their owner, and it acts only on rows it owns or whose owner is dead
    /// (see [`Store::heartbeat`]).
    pub(crate) fn with_replica(mut self, id: &str, process: Option<String>) -> Store {
        self.membership = Some(Arc::new(Membership {
            id: id.to_owned(),
            process,
            steady_since: AtomicI64::new(i64::MAX),
        }));
        self
    }

    /// This replica's id; `None` on a server without one (SQLite).
    pub(crate) fn replica(&self) -> Option<&str> {
        self.membership.as_ref().map(|m| m.id.as_str())
    }

    /// The heartbeat time before which (at `now`) a replica counts as dead.
    ///
    /// A replica that has not itself written heartbeats without a gap for a whole lease (it
    /// just started, or the store was unreachable) counts every registered replica as alive:
    /// after an outage of the database every heartbeat is stale, and the first replica back
    /// must not take over the sessions of the others before they had the chance to write
    /// theirs. Only deregistered owners (or none) count as dead then.
    pub(crate) fn death_cutoff(&self, now: i64) -> i64 {
        match &self.membership {
            Some(m) if now.saturating_sub(m.steady_since.load(Ordering::Acquire)) >= LEASE_MS => {
                now.saturating_sub(LEASE_MS)
            }
            Some(_) => i64::MIN,
            None => now.saturating_sub(LEASE_MS),
        }
    }

    /// Writes this replica's heartbeat (registering it when its row is missing). Without a
    /// replica identity, does nothing. A failure resets the steady period of
    /// [`Store::death_cutoff`].
    pub(crate) async fn heartbeat(&self) -> Result<(), StoreError> {
        let Some(member) = &self.membership else {
            return Ok(());
        };
        let now = now_ms();
        let written = on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO replicas (id, started_at, heartbeat_at, process) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE \
                 SET heartbeat_at = excluded.heartbeat_at, process = excluded.process",
            )
            .bind(&member.id)
            .bind(now)
            .bind(now)
            .bind(member.process.as_deref())
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(query("replica heartbeat"))
        });
        match written {
            Ok(()) => {
                // The first success after a failure (or ever) starts the steady period.
                let _ = member.steady_since.compare_exchange(
                    i64::MAX,
                    now,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                Ok(())
            }
            Err(err) => {
                member.steady_since.store(i64::MAX, Ordering::Release);
                Err(err)
            }
        }
    }

    /// Removes this replica's row (a clean stop): the others count it as dead at once.
    pub(crate) async fn leave(&self) -> Result<(), StoreError> {
        let Some(member) = &self.membership else {
            return Ok(());
        };
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM replicas WHERE id = $1")
                .bind(&member.id)
                .execute(pool)
                .await
                .map_err(query("replica leave"))?;
            Ok(())
        })
    }

    /// Deregisters the other replicas whose runtime process is `process` (one that the
    /// runtime saw die: [`hutch_sandbox::Runtime::dead_processes`]), as a clean stop would:
    /// every replica counts them as dead at once, without waiting for their lease to lapse.
    /// A replica restarted under the same id wrote its new process with its first heartbeat,
    /// before its recovery, so it is not matched. Returns the ids removed.
    pub(crate) async fn forget_process(&self, process: &str) -> Result<Vec<String>, StoreError> {
        let Some(member) = &self.membership else {
            return Ok(Vec::new());
        };
        on_pool!(self, |pool| {
            sqlx::query_scalar("DELETE FROM replicas WHERE process = $1 AND id <> $2 RETURNING id")
                .bind(process)
                .bind(&member.id)
                .fetch_all(pool)
                .await
                .map_err(query("forget a dead replica"))
        })
    }

    /// The ids of the replicas alive at `now` (heartbeat within the lease), sorted.
    pub(crate) async fn live_replicas(&self, now: i64) -> Result<Vec<String>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT id FROM replicas WHERE heartbeat_at > $1 ORDER BY id")
                .bind(now.saturating_sub(LEASE_MS))
                .fetch_all(pool)
                .await
                .map_err(query("list live replicas"))
        })
    }

    /// The replica that owns session `id` (`None`: no such row, or no owner).
    pub(crate) async fn owner_of(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        on_pool!(self, |pool| {
            let owner: Option<Option<String>> =
                sqlx::query_scalar("SELECT owner FROM sessions WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(pool)
                    .await
                    .map_err(query("read session owner"))?;
            Ok(owner.flatten())
        })
    }

    /// Makes this replica the owner of session `id` if it may act on it (it owns it, nobody
    /// does, or its owner is dead): one conditional statement, so of two replicas taking over
    /// one row, one wins. Returns whether this replica owns it now.
    pub(crate) async fn take_over(&self, id: Uuid) -> Result<bool, StoreError> {
        let cutoff = self.death_cutoff(now_ms());
        on_pool!(self, |pool| {
            let done = sqlx::query(concat!(
                "UPDATE sessions SET owner = COALESCE($1, owner) WHERE id = $2 AND ",
                mine_or_orphaned!("$3", "$4")
            ))
            .bind(self.replica())
            .bind(id.to_string())
            .bind(self.replica())
            .bind(cutoff)
            .execute(pool)
            .await
            .map_err(query("take over session"))?;
            Ok(done.rows_affected() == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hutch_api::{NetworkPolicy, Resources, SessionStatus};
    use hutch_sandbox::SandboxRecord;

    use super::*;
    use crate::store::testing::{self, on_both};
    use crate::store::{InsertOutcome, RowLimits, StoredSession};

    on_both!(
        racing_marks_delete_once,
        a_live_replica_keeps_its_sessions,
        after_an_outage_only_deregistered_owners_count_as_dead,
        a_live_replicas_session_is_marked_by_another_only_when_asked,
        a_dead_replicas_sessions_are_orphans,
        a_replica_whose_process_died_is_dead_at_once,
        a_starting_replica_fails_only_transfers_no_live_replica_runs,
    );

    /// Two replicas (two pools) on one store, each with a first heartbeat; the second is
    /// steady (it may count the dead) unless `steady` is false.
    async fn two_replicas(store: Store, steady: bool) -> (Store, Store) {
        let a = store.with_replica("a", Some("process-a".to_owned()));
        let b = testing::reopen(&a)
            .await
            .with_replica("b", Some("process-b".to_owned()));
        a.heartbeat().await.unwrap();
        b.heartbeat().await.unwrap();
        if steady && let Some(m) = &b.membership {
            m.steady_since.store(0, Ordering::Release);
        }
        (a, b)
    }

    /// A RUNNING row inserted through `store` (owned by its replica), expired at `now`.
    async fn running_expired(store: &Store) -> Uuid {
        let now = now_ms();
        let row = StoredSession {
            id: Uuid::now_v7(),
            tenant: "t".to_owned(),
            status: SessionStatus::Creating,
            image: "default".to_owned(),
            metadata: BTreeMap::new(),
            resources: Resources::default(),
            env: BTreeMap::new(),
            created_at_ms: now - 10_000,
            expires_at_ms: now - 1,
            record: None,
            network: NetworkPolicy::default(),
            paused: None,
            auto_pause: None,
        };
        let limits = RowLimits {
            max_rows: 100,
            tenant_max_rows: 100,
            tenant_max_memory_mb: u64::MAX,
        };
        assert_eq!(
            store.insert_creating_within(&row, limits).await.unwrap(),
            InsertOutcome::Inserted
        );
        let record = SandboxRecord {
            id: row.id,
            sandbox_id: Uuid::now_v7(),
            runtime: Default::default(),
        };
        store.set_running(row.id, &record).await.unwrap().unwrap();
        row.id
    }

    /// Makes replica `id`'s heartbeat as old as the epoch: it counts as dead.
    async fn kill(store: &Store, id: &str) {
        on_pool!(store, |pool| sqlx::query(
            "UPDATE replicas SET heartbeat_at = 0 WHERE id = $1"
        )
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
        .unwrap());
    }

    /// A Running upload task of session `id`.
    async fn running_task(store: &Store, id: Uuid) {
        let data = hutch_api::ContextStatusData {
            context_id: Uuid::now_v7(),
            path: "/workspace".to_owned(),
            status: hutch_api::TaskStatus::Running,
            task_type: hutch_api::TaskType::Upload,
            start_time: 1,
            finish_time: 0,
            error_message: String::new(),
            version: 0,
        };
        store.insert_task(id, &data, 10).await.unwrap();
    }

    /// The start-up recovery of storage fails the transfers a stopped server left, but not
    /// those a live replica runs now; once that replica is dead and its session taken over,
    /// the taker fails them.
    async fn a_starting_replica_fails_only_transfers_no_live_replica_runs(store: Store) {
        let (a, b) = two_replicas(store, true).await;
        let of_a = running_expired(&a).await;
        let of_b = running_expired(&b).await;
        running_task(&a, of_a).await;
        running_task(&b, of_b).await;
        assert_eq!(b.fail_unfinished_tasks(2, "stopped").await.unwrap(), 1);
        assert_eq!(
            a.unfinished_tasks(of_a).await.unwrap(),
            1,
            "a's upload runs on"
        );
        assert_eq!(b.unfinished_tasks(of_b).await.unwrap(), 0);
        kill(&b, "a").await;
        assert!(b.take_over(of_a).await.unwrap());
        assert_eq!(
            b.fail_unfinished_tasks_of(of_a, 3, "stopped")
                .await
                .unwrap(),
            1
        );
        assert_eq!(b.unfinished_tasks(of_a).await.unwrap(), 0);
        b.close().await;
    }

    /// 20 deletes and reaper passes at once, from two replicas, of one expired session:
    /// exactly one marks it DELETING (so one destroys it). Its claim keeps everyone else off
    /// until it lapses (a failed destroy, or its claimer died); then one takes it again.
    async fn racing_marks_delete_once(store: Store) {
        let (a, b) = two_replicas(store, true).await;
        let id = running_expired(&a).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let expired_by = (i % 4 < 2).then(now_ms);
            tasks.spawn(async move { store.mark_deleting(id, expired_by).await.unwrap() });
        }
        let marked: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
        assert_eq!(marked.len(), 1, "{marked:?}");
        assert_eq!(marked[0].status, SessionStatus::Deleting);
        assert!(a.mark_deleting(id, None).await.unwrap().is_none());
        assert!(a.due(now_ms()).await.unwrap().is_empty());
        // The destroy failed: due again once its retry time passes, for one taker.
        a.retry_at(id, now_ms() - 1).await.unwrap();
        assert_eq!(a.due(now_ms()).await.unwrap().len(), 1);
        let (first, second) = tokio::join!(a.mark_deleting(id, None), b.mark_deleting(id, None));
        assert_eq!(
            usize::from(first.unwrap().is_some()) + usize::from(second.unwrap().is_some()),
            1
        );
        b.close().await;
    }

    /// A session of a live replica is neither reaped, deleted nor taken over by another; once
    /// its replica is dead, another takes it over, and then the first may not act on it.
    async fn a_live_replica_keeps_its_sessions(store: Store) {
        let (a, b) = two_replicas(store, true).await;
        let id = running_expired(&a).await;
        assert_eq!(a.owner_of(id).await.unwrap().as_deref(), Some("a"));
        assert_eq!(b.live_replicas(now_ms()).await.unwrap(), ["a", "b"]);
        assert!(b.due(now_ms()).await.unwrap().is_empty());
        assert!(b.mark_deleting(id, Some(now_ms())).await.unwrap().is_none());
        assert!(b.mark_deleting(id, None).await.unwrap().is_none());
        assert!(!b.take_over(id).await.unwrap());
        assert_eq!(a.due(now_ms()).await.unwrap().len(), 1);

        kill(&b, "a").await;
        assert_eq!(b.live_replicas(now_ms()).await.unwrap(), ["b"]);
        assert_eq!(b.due(now_ms()).await.unwrap().len(), 1);
        assert!(b.take_over(id).await.unwrap());
        assert_eq!(b.owner_of(id).await.unwrap().as_deref(), Some("b"));
        // `a` comes back: the session is `b`'s now.
        a.heartbeat().await.unwrap();
        assert!(a.due(now_ms()).await.unwrap().is_empty());
        assert!(a.mark_deleting(id, None).await.unwrap().is_none());
        assert!(b.mark_deleting(id, Some(now_ms())).await.unwrap().is_some());
        b.close().await;
    }

    /// A replica that has not written heartbeats for a whole lease (it just started, or the
    /// store was unreachable) takes over no session of a registered replica, however stale its
    /// heartbeat: only one that left (deregistered) counts as dead.
    async fn after_an_outage_only_deregistered_owners_count_as_dead(store: Store) {
        let (a, b) = two_replicas(store, false).await;
        let id = running_expired(&a).await;
        kill(&b, "a").await;
        assert!(b.due(now_ms()).await.unwrap().is_empty());
        assert!(!b.take_over(id).await.unwrap());
        a.leave().await.unwrap();
        assert_eq!(b.due(now_ms()).await.unwrap().len(), 1);
        assert!(b.take_over(id).await.unwrap());
        b.close().await;
    }

    /// A replica whose runtime reaches another's sandboxes marks a live replica's session
    /// DELETING (and owns it then) only through `mark_deleting_any_owner`; a claimed destroy
    /// stays the claimer's.
    async fn a_live_replicas_session_is_marked_by_another_only_when_asked(store: Store) {
        let (a, b) = two_replicas(store, true).await;
        let id = running_expired(&a).await;
        assert!(b.mark_deleting(id, None).await.unwrap().is_none());
        let marked = b.mark_deleting_any_owner(id).await.unwrap().unwrap();
        assert_eq!(marked.status, SessionStatus::Deleting);
        assert_eq!(b.owner_of(id).await.unwrap().as_deref(), Some("b"));
        assert!(
            a.mark_deleting_any_owner(id).await.unwrap().is_none(),
            "claimed"
        );
        assert!(a.mark_deleting(id, None).await.unwrap().is_none());
        b.close().await;
    }

    /// The sessions of a dead replica are orphans to the others (not to itself, nor while it
    /// lives), until one takes them over.
    async fn a_dead_replicas_sessions_are_orphans(store: Store) {
        let (a, b) = two_replicas(store, true).await;
        let id = running_expired(&a).await;
        assert!(b.orphans(now_ms()).await.unwrap().is_empty(), "a lives");
        assert!(a.orphans(now_ms()).await.unwrap().is_empty(), "a's own");
        kill(&b, "a").await;
        let orphans = b.orphans(now_ms()).await.unwrap();
        assert_eq!(orphans.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
        assert!(b.take_over(id).await.unwrap());
        assert!(b.orphans(now_ms()).await.unwrap().is_empty(), "b's now");
        b.close().await;
    }

    /// A replica whose runtime process another saw die is deregistered by that one, and its
    /// sessions are orphans at once, even to a replica that is not yet steady; a process id
    /// no replica wrote, or the replica's own, removes nothing. A replica restarted under the
    /// same id wrote its new process: the old one's death no longer removes it.
    async fn a_replica_whose_process_died_is_dead_at_once(store: Store) {
        let (a, b) = two_replicas(store, false).await;
        let id = running_expired(&a).await;
        assert!(b.orphans(now_ms()).await.unwrap().is_empty(), "a lives");
        assert!(b.forget_process("nobody").await.unwrap().is_empty());
        assert!(b.forget_process("process-b").await.unwrap().is_empty());
        let restarted = testing::reopen(&a)
            .await
            .with_replica("a", Some("process-a2".to_owned()));
        restarted.heartbeat().await.unwrap();
        assert!(b.forget_process("process-a").await.unwrap().is_empty());
        assert!(b.orphans(now_ms()).await.unwrap().is_empty(), "a is back");
        assert_eq!(b.forget_process("process-a2").await.unwrap(), ["a"]);
        assert_eq!(b.live_replicas(now_ms()).await.unwrap(), ["b"]);
        let orphans = b.orphans(now_ms()).await.unwrap();
        assert_eq!(orphans.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
        assert!(b.take_over(id).await.unwrap());
        restarted.close().await;
        b.close().await;
    }
}
