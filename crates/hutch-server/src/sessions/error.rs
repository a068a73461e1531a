//! What a session operation can fail with.

use hutch_sandbox::SandboxError;
use uuid::Uuid;

use crate::storage::{StorageError, TransferError};
use crate::store::StoreError;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session for this caller.
    #[error("no session {0}")]
    NotFound(Uuid),
    /// The session is in a state that does not allow this.
    #[error("{0}")]
    Conflict(String),
    /// The session is paused on request: nothing runs in it until it is resumed.
    #[error("session {0} is paused; resume it (POST /v1/sessions/{0}/resume) to use it")]
    Paused(Uuid),
    /// The network policy asks for more than the server's operator allows.
    #[error("{0}")]
    NetworkNotAllowed(String),
    /// `max_sessions` sessions exist already.
    #[error("the server holds its maximum of {0} sessions")]
    Capacity(usize),
    /// The tenant holds as many sessions as its quota allows.
    #[error(
        "the tenant holds {used} sessions, as many as its quota of {limit} allows; delete one first"
    )]
    TenantSessions {
        /// The quota.
        limit: u64,
        /// The tenant's sessions.
        used: u64,
    },
    /// Another session of this size would take the tenant past its memory quota.
    #[error(
        "the tenant's sessions hold {used} MiB of memory; {requested} MiB more would pass its quota of {limit} MiB"
    )]
    TenantMemory {
        /// The quota, in MiB.
        limit: u64,
        /// The memory of the tenant's sessions, in MiB.
        used: u64,
        /// The memory the new session asks for, in MiB.
        requested: u64,
    },
    /// The session's agent could not be reached.
    #[error("cannot connect to the sandbox of session {id}")]
    Unavailable {
        /// The session id.
        id: Uuid,
        /// What the runtime said.
        #[source]
        source: SandboxError,
    },
    /// A storage context named by the request is not the caller's.
    #[error("no storage context {0}")]
    StorageContextNotFound(Uuid),
    /// Moving content between the session and a storage context failed.
    #[error("{task} of storage context {context} at {path} failed: {source}")]
    SyncFailed {
        /// `upload` or `download`.
        task: &'static str,
        /// The context.
        context: Uuid,
        /// The path in the session.
        path: String,
        /// Why.
        #[source]
        source: TransferError,
    },
    /// The session's image could not be resolved, found or pulled.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// The runtime failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StorageError> for SessionError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(id) => SessionError::StorageContextNotFound(id),
            StorageError::Store(err) => SessionError::Store(err),
            other => SessionError::Conflict(other.to_string()),
        }
    }
}
