//! Network policies of sessions: the operator's default and ceiling, and live changes.

use hutch_api::{Egress, NetworkPolicy, Session, SessionStatus};
use uuid::Uuid;

use super::{SessionError, Sessions};
use crate::auth::Caller;

/// What the operator allows sessions on the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkLimits {
    /// The egress of sessions that name no policy.
    pub default: Egress,
    /// The widest egress a session may ask for (`none` < `allow` < `all`).
    pub allowed: Egress,
}

impl Sessions {
    /// The same engine, with the operator's network limits.
    pub(crate) fn with_network(mut self, limits: NetworkLimits) -> Self {
        self.network = limits;
        self
    }

    /// The policy a new session gets: the asked one within the operator's ceiling, or the
    /// server's default. The error says what the operator allows.
    pub(super) fn network_for(
        &self,
        asked: Option<NetworkPolicy>,
    ) -> Result<NetworkPolicy, String> {
        let policy = asked.unwrap_or(NetworkPolicy {
            egress: self.network.default,
            allow: Vec::new(),
            deny: Vec::new(),
        });
        self.check_network(&policy)?;
        Ok(policy)
    }

    fn check_network(&self, policy: &NetworkPolicy) -> Result<(), String> {
        if policy.egress > self.network.allowed {
            return Err(format!(
                "network egress {:?} is not allowed on this server; its operator allows at most {:?}",
                policy.egress.as_str(),
                self.network.allowed.as_str()
            ));
        }
        Ok(())
    }

    /// Traffic counters of every networked session, by session id (blocking: reads the
    /// kernel's counters through `nft`).
    pub(crate) fn network_counters(
        &self,
    ) -> std::collections::HashMap<Uuid, hutch_sandbox::NetworkCounters> {
        self.runtime.network_counters()
    }

    /// Replaces the network policy of a RUNNING session the caller may see, in its sandbox
    /// and in the store; returns the session with its new policy.
    pub(crate) async fn update_network(
        &self,
        caller: &Caller,
        id: Uuid,
        policy: &NetworkPolicy,
    ) -> Result<Session, SessionError> {
        let row = self.visible(caller, id).await?;
        if row.network == *policy {
            // Nothing changes: a client that sends back the session it read is answered with
            // it, even where no network could be given (egress `none`, a server without one).
            return Ok(row.to_api());
        }
        self.check_network(policy)
            .map_err(SessionError::NetworkNotAllowed)?;
        let record = match (&row.record, row.status) {
            (Some(record), SessionStatus::Running | SessionStatus::Paused) => record,
            _ => {
                return Err(SessionError::Conflict(format!(
                    "session {id} is {}; its network can change once it runs",
                    row.status.as_str()
                )));
            }
        };
        self.runtime.set_network(record, policy).await?;
        tracing::info!(session = %id, egress = policy.egress.as_str(), "network policy changed");
        match self.store.update(id, None, None, Some(policy)).await? {
            Some(updated) => Ok(updated.to_api()),
            None => Err(SessionError::Conflict(format!(
                "session {id} is being deleted"
            ))),
        }
    }
}
