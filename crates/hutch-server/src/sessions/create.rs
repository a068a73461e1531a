//! Creating a session: the quota-checked row, the sandbox, the downloads of its contexts.

use hutch_api::{Egress, Session, SessionStatus, TaskType};
use hutch_sandbox::SandboxSpec;
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::auth::Caller;
use crate::store::{InsertOutcome, RowLimits, StoredSession, now_ms};
use crate::validate::NewSession;

impl Sessions {
    /// Creates a session and its sandbox; returns once the sandbox's agent accepts connections.
    pub(crate) async fn create(
        &self,
        caller: &Caller,
        new: NewSession,
    ) -> Result<Session, SessionError> {
        if new.auto_pause.is_some() && !self.runtime.can_pause() {
            return Err(super::pause::cannot_pause());
        }
        for sync in &new.context_syncs {
            self.storage.visible(caller, sync.context_id).await?;
        }
        let network = self
            .network_for(new.network)
            .map_err(SessionError::NetworkNotAllowed)?;
        let id = Uuid::now_v7();
        let claim = self.claims.try_claim(id).ok_or_else(|| {
            SessionError::Conflict(format!("session id {id} is already in use; retry"))
        })?;
        let created_at_ms = now_ms();
        let ttl_ms = i64::try_from(new.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let row = StoredSession {
            id,
            tenant: caller.tenant.clone(),
            status: SessionStatus::Creating,
            image: new.image,
            metadata: new.metadata,
            resources: new.resources,
            env: new.env,
            created_at_ms,
            expires_at_ms: created_at_ms.saturating_add(ttl_ms),
            record: None,
            network: network.clone(),
            paused: None,
            // A server-wide default means nothing to a runtime that cannot pause.
            auto_pause: new
                .auto_pause
                .or(self.auto_pause_default.filter(|_| self.runtime.can_pause())),
        };
        let limits = RowLimits {
            max_rows: self.max_sessions,
            tenant_max_rows: self.tenant_max_sessions,
            tenant_max_memory_mb: self.tenant_max_memory_mb,
        };
        let inserted = self.store.insert_creating_within(&row, limits).await;
        if let Err(err) = &inserted
            && err.is_unavailable()
        {
            // The connection may have gone after the insert was committed.
            self.forget_later(id);
        }
        match inserted? {
            InsertOutcome::Inserted => {}
            InsertOutcome::Capacity { .. } => {
                return Err(SessionError::Capacity(self.max_sessions));
            }
            InsertOutcome::TenantRows { rows } => {
                return Err(SessionError::TenantSessions {
                    limit: u64::try_from(self.tenant_max_sessions).unwrap_or(u64::MAX),
                    used: rows,
                });
            }
            InsertOutcome::TenantMemory { memory_mb } => {
                return Err(SessionError::TenantMemory {
                    limit: self.tenant_max_memory_mb,
                    used: memory_mb,
                    requested: row.resources.memory_mb,
                });
            }
        }
        if let Err(err) = self.store.insert_syncs(id, &new.context_syncs).await {
            self.forget(id).await;
            return Err(err.into());
        }
        let (image, lease) = match self.resolve_image(&caller.tenant, &row.image).await {
            Ok(resolved) => resolved,
            Err(err) => {
                self.forget(id).await;
                return Err(err);
            }
        };
        let spec = SandboxSpec {
            id,
            hostname: hostname(id),
            image,
            resources: row.resources,
            env: row.env.clone(),
            network: (network.egress != Egress::None).then_some(network),
        };
        let record = match self.runtime.create(&spec).await {
            Ok(record) => record,
            Err(err) => {
                self.forget(id).await;
                return Err(err.into());
            }
        };
        if let Err(err) = self.set_deadline(id, row.expires_at_ms).await {
            // The agent then ends the sandbox at the longest TTL plus its own grace.
            tracing::error!(session = %id, error = %crate::error::chain(&err), "setting a new sandbox's deadline");
        }
        if let Some(lease) = lease {
            self.leases.hold(id, lease);
        }
        if let Err(err) = self
            .transfer_all(id, &caller.tenant, &new.context_syncs, TaskType::Download)
            .await
        {
            if let Err(destroy_err) = self.runtime.destroy(&record).await {
                tracing::error!(session = %id, error = %crate::error::chain(&destroy_err), "destroying a sandbox whose download failed");
            }
            self.forget(id).await;
            return Err(err);
        }
        let running = match self.store.set_running(id, &record).await {
            Ok(Some(running)) => running,
            outcome => {
                if let Err(err) = self.runtime.destroy(&record).await {
                    tracing::error!(session = %id, error = %crate::error::chain(&err), "destroying a sandbox whose session could not be recorded");
                }
                self.forget(id).await;
                return Err(match outcome {
                    Err(err) => err.into(),
                    Ok(_) => SessionError::Conflict(format!("session {id} vanished while created")),
                });
            }
        };
        drop(claim);
        tracing::info!(session = %id, tenant = %caller.tenant, "session created");
        Ok(running.to_api())
    }
}

/// The sandbox's host name: the first 12 hex digits of the session id.
fn hostname(id: Uuid) -> String {
    let mut name = id.simple().to_string();
    name.truncate(12);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_twelve_hex_digits() {
        let id = Uuid::parse_str("01234567-89ab-7def-8123-456789abcdef").unwrap();
        assert_eq!(hostname(id), "0123456789ab");
    }
}
