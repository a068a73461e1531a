//! Moving content between sessions and their storage contexts: the transfers run at create,
//! delete and expiry, and those a client starts (`POST …/context/sync`) or reads
//! (`GET …/context/info`).

use std::sync::Arc;

use hutch_api::limits::CONTEXT_SYNCS_MAX;
use hutch_api::{ContextInfo, ContextSync, SessionStatus, SyncStarted, TaskType};
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::auth::Caller;
use crate::store::TaskFilter;
use crate::validate::SyncTarget;

impl Sessions {
    /// Runs one transfer per binding whose policy allows `task_type`, in order, each recorded
    /// in the task log; stops at the first failure.
    pub(super) async fn transfer_all(
        &self,
        id: Uuid,
        tenant: &str,
        syncs: &[ContextSync],
        task_type: TaskType,
    ) -> Result<(), SessionError> {
        for sync in syncs {
            let wanted = match task_type {
                TaskType::Upload => sync.policy.upload,
                TaskType::Download => sync.policy.download,
            };
            if !wanted {
                continue;
            }
            let (task, _) = self.storage.record_task(id, sync, task_type, true).await?;
            let agent = self.runtime.connect(id).await.map_err(|e| e.to_string());
            self.storage
                .run_task(task, tenant, id, agent, sync, task_type)
                .await
                .map_err(|source| SessionError::SyncFailed {
                    task: task_type.as_str(),
                    context: sync.context_id,
                    path: sync.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Starts transfers between a RUNNING session and its contexts in the background, one
    /// after the other, and returns their task records (`POST …/context/sync`).
    ///
    /// With a context and a path, that pair is transferred whether or not it is bound; with
    /// only one of them, the bindings matching it; with neither, every binding. The
    /// policy's include and exclude globs apply to bound pairs.
    pub(crate) async fn sync(
        self: &Arc<Self>,
        caller: &Caller,
        id: Uuid,
        target: SyncTarget,
    ) -> Result<SyncStarted, SessionError> {
        // A request inside the session: it wakes one paused for idleness, as every in-session
        // route does (and one paused by request answers 409 `session_paused`).
        self.reachable(caller, id).await?;
        let row = self.visible(caller, id).await?;
        if row.status != SessionStatus::Running {
            return Err(SessionError::Conflict(format!(
                "session {id} is {}, not RUNNING",
                row.status.as_str()
            )));
        }
        let bound = self.store.syncs(id).await?;
        let mut chosen: Vec<ContextSync> = bound
            .into_iter()
            .filter(|s| target.context_id.is_none_or(|c| c == s.context_id))
            .filter(|s| target.path.as_ref().is_none_or(|p| *p == s.path))
            .collect();
        if let (Some(context_id), Some(path), true) =
            (target.context_id, &target.path, chosen.is_empty())
        {
            chosen.push(ContextSync {
                context_id,
                path: path.clone(),
                policy: hutch_api::SyncPolicy::default(),
            });
        }
        if chosen.is_empty() {
            return Err(SessionError::Conflict(
                "no storage context is bound to this session (or none matches); give contextId and path".to_owned(),
            ));
        }
        for sync in &chosen {
            self.storage.visible(caller, sync.context_id).await?;
        }
        let unfinished = self.store.unfinished_tasks(id).await?;
        if unfinished >= CONTEXT_SYNCS_MAX as u64 * 2 {
            return Err(SessionError::Conflict(format!(
                "session {id} has {unfinished} transfers under way; wait for them to finish"
            )));
        }
        let mut tasks = Vec::with_capacity(chosen.len());
        let mut records = Vec::with_capacity(chosen.len());
        for sync in chosen {
            let (task, data) = self
                .storage
                .record_task(id, &sync, target.mode, false)
                .await?;
            records.push(data);
            tasks.push((task, sync));
        }
        let this = Arc::clone(self);
        let tenant = row.tenant.clone();
        tokio::spawn(async move {
            // Transfers keep the session awake: an auto-pause would freeze the agent that
            // sends or takes them.
            let _busy = this.busy(id);
            for (task, sync) in tasks {
                let agent = this.runtime.connect(id).await.map_err(|e| e.to_string());
                // The outcome is in the task log.
                let _ = this
                    .storage
                    .run_task(task, &tenant, id, agent, &sync, target.mode)
                    .await;
            }
        });
        Ok(SyncStarted {
            success: true,
            tasks: records,
        })
    }

    /// The session's transfer tasks matching `filter` (`GET …/context/info`).
    pub(crate) async fn context_info(
        &self,
        caller: &Caller,
        id: Uuid,
        filter: &TaskFilter,
    ) -> Result<ContextInfo, SessionError> {
        self.visible(caller, id).await?;
        let tasks = self.store.tasks(id, filter).await?;
        Ok(ContextInfo {
            context_status_data: tasks.into_iter().map(|t| t.data).collect(),
        })
    }
}
